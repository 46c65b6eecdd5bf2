"""The API resources the operator reads and writes."""

from kmm_dtk.kube.client import Resource

NODES = Resource("", "v1", "nodes", namespaced=False, kind="Node")
CONFIGMAPS = Resource("", "v1", "configmaps", kind="ConfigMap")
EVENTS = Resource("", "v1", "events", kind="Event")
MODULES = Resource("kmm.sigs.x-k8s.io", "v1beta1", "modules", kind="Module")
IMAGESTREAMS = Resource("image.openshift.io", "v1", "imagestreams", kind="ImageStream")
BUILDS = Resource("build.openshift.io", "v1", "builds", kind="Build")
MODULEBUILDS = Resource("kmm-dtk.io", "v1alpha1", "modulebuilds", kind="ModuleBuild")

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "kmm-dtk"
SECRETS = Resource("", "v1", "secrets", kind="Secret")
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", kind="ServiceAccount")
IMAGE_CONFIGS = Resource("config.openshift.io", "v1", "images", namespaced=False, kind="Image")
CLUSTERVERSIONS = Resource("config.openshift.io", "v1", "clusterversions", namespaced=False, kind="ClusterVersion")
ICSPS = Resource("operator.openshift.io", "v1alpha1", "imagecontentsourcepolicies", namespaced=False,
                 kind="ImageContentSourcePolicy")
IDMSES = Resource("config.openshift.io", "v1", "imagedigestmirrorsets", namespaced=False, kind="ImageDigestMirrorSet")
ITMSES = Resource("config.openshift.io", "v1", "imagetagmirrorsets", namespaced=False, kind="ImageTagMirrorSet")
MIRROR_RESOURCES = (ICSPS, IDMSES, ITMSES)
