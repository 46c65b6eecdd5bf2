"""The API resources the operator reads and writes."""

from kmm_dtk.kube.client import Resource

NODES = Resource("", "v1", "nodes", namespaced=False, kind="Node")
CONFIGMAPS = Resource("", "v1", "configmaps", kind="ConfigMap")
EVENTS = Resource("", "v1", "events", kind="Event")
MODULES = Resource("kmm.sigs.x-k8s.io", "v1beta1", "modules", kind="Module")
IMAGESTREAMS = Resource("image.openshift.io", "v1", "imagestreams", kind="ImageStream")
BUILDS = Resource("build.openshift.io", "v1", "builds", kind="Build")

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "kmm-dtk"
