"""Generate the OLM bundle in bundle/ from the kustomize manifests: ``make bundle``.

The bundle is derived, never edited: ``tests/test_bundle.py`` regenerates it in a temporary
directory and fails when bundle/ differs. Its source is ``manifests/with-kmm``, the deployment for
clusters where the KMM operator is installed (as on OpenShift, where OLM installs KMM): kmm-dtk owns
its ModuleBuild CRD and requires KMM's Module CRD, which KMM's own bundle provides.

What the kustomize objects become, since OLM creates some of them itself:

- the Deployment -> ``spec.install.spec.deployments``, minus ``--leader-election-namespace``: OLM
  installs into the namespace the administrator picks, and without the flag the operator takes its
  pod's namespace, where OLM grants the Lease Role;
- the ServiceAccount, Roles, ClusterRoles and their bindings -> ``permissions`` (Roles in the
  operator's namespace) and ``clusterPermissions`` (ClusterRoles, and Roles in other namespaces:
  OLM creates a bundle's namespaced objects only in the install namespace, so the DTK ImageStream
  Role of ``openshift`` becomes cluster-wide list/watch on imagestreams, the one widening);
- the CRD -> a bundle manifest and ``owned``; Services, ConfigMaps and other kinds OLM accepts in a
  bundle -> bundle manifests without a namespace (OLM puts them in the install namespace);
- the Namespace -> ``operatorframework.io/suggested-namespace`` and its template (the Pod Security
  labels). Anything else is an error, so that no manifest silently drops out of the bundle.

Run ``python -m tools.bundle [--output DIR] [--overlay DIR]``; bad input exits 1 with one line naming
the file and the problem.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import copy
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from tools.kustomize_render import RenderError, pod_containers, render

ROOT = Path(__file__).resolve().parent.parent
OVERLAY = ROOT / "manifests" / "with-kmm"
OUTPUT = ROOT / "bundle"

PACKAGE = "kmm-dtk"
CHANNEL = "alpha"
# OpenShift 4.13 (Kubernetes 1.26) is the first with ImageDigestMirrorSet/ImageTagMirrorSet, which
# the operator reads on disconnected clusters.
MIN_KUBE_VERSION = "1.26.0"
OPENSHIFT_VERSIONS = "v4.13"
# The project's identity as the catalog shows it.
DISPLAY_NAME = "kmm-dtk: driver images for every kernel"
PROVIDER = {"name": "kmm-dtk"}
MAINTAINERS = [{"name": "kmm-dtk maintainers", "email": "maintainers@kmm-dtk.io"}]
KEYWORDS = ["kmm", "kernel module management", "driver-toolkit", "dtk", "out-of-tree driver", "kernel module",
            "openshift builds"]
# What the operator supports, as OpenShift's console and catalog filters read it. Disconnected: it
# resolves every image through the cluster's ICSP/IDMS/ITMS and needs nothing from the internet.
# Not proxy-aware: its registry client does not read HTTP(S)_PROXY (Builds get the cluster proxy
# from OpenShift). No FIPS validation, no TLS-profile handling, no cloud token auth, not a CNF,
# CNI or CSI component.
FEATURES = {
    "disconnected": "true",
    "fips-compliant": "false",
    "proxy-aware": "false",
    "tls-profiles": "false",
    "token-auth-aws": "false",
    "token-auth-azure": "false",
    "token-auth-gcp": "false",
    "cnf": "false",
    "cni": "false",
    "csi": "false",
}
# Namespaced kinds OLM (registry+v1) creates from a bundle besides the CSV, in the install namespace.
NAMESPACED_EXTRA_KINDS = {"ConfigMap", "Secret", "Service", "ServiceMonitor", "PrometheusRule",
                          "PodDisruptionBudget", "VerticalPodAutoscaler"}
REQUIRED_CRDS = [{
    "name": "modules.kmm.sigs.x-k8s.io",
    "version": "v1beta1",
    "kind": "Module",
    "displayName": "Module",
    "description": "A Kernel Module Management Module, owned by the KMM operator: KMM loads its driver images on"
                   " the nodes it selects, kmm-dtk builds the images of the Modules a ModuleBuild names.",
}]
# OpenShift APIs served by the platform (not CRDs) that the operator cannot run without.
NATIVE_APIS = [
    {"group": "build.openshift.io", "version": "v1", "kind": "Build"},
    {"group": "image.openshift.io", "version": "v1", "kind": "ImageStream"},
]
EXAMPLE_MODULEBUILD = {
    "apiVersion": "kmm-dtk.io/v1alpha1",
    "kind": "ModuleBuild",
    "metadata": {"name": "simple-kmod", "namespace": "drivers"},
    "spec": {
        "moduleName": "simple-kmod",
        "build": {"dockerfileConfigMap": {"name": "dockerfile"},
                  "buildArgs": [{"name": "KMOD_VERSION", "value": "1.0.2"}]},
    },
}
OLM_PARAGRAPH = (
    "Installed by OLM, kmm-dtk runs beside the Kernel Module Management operator, which this package"
    " requires (it owns the Module CRD): KMM loads every Module and builds the ones that carry `build`"
    " sections, kmm-dtk builds the Modules named by a ModuleBuild (`kmm-dtk migrate` splits a Module into"
    " the two), so each image has exactly one builder. Driver images are built with OpenShift Builds FROM"
    " the cluster's `openshift/driver-toolkit` ImageStream, through the cluster's mirror policies on"
    " disconnected clusters."
)


class BundleError(ValueError):
    """The manifests cannot be turned into a bundle; the message names the file and the problem."""


# --- inputs ----------------------------------------------------------------------------------------


def package_version(root: Path = ROOT) -> str:
    """setup.cfg's version (``attr: kmm_dtk.__version__`` is read from the module's source)."""
    setup_cfg = root / "setup.cfg"
    parser = configparser.ConfigParser()
    if not parser.read(setup_cfg):
        raise BundleError(f"{setup_cfg}: cannot read")
    value = parser.get("metadata", "version", fallback="").strip()
    if value.startswith("attr:"):
        module, _, attribute = value.removeprefix("attr:").strip().rpartition(".")
        source = root / Path(*module.split(".")) / "__init__.py"
        value = ""
        for node in ast.parse(source.read_text()).body:
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                    and any(isinstance(t, ast.Name) and t.id == attribute for t in node.targets)):
                value = str(node.value.value)
        if not value:
            raise BundleError(f"{source}: no {attribute} = '<version>'")
    if not re.fullmatch(r"\d+\.\d+\.\d+", value):
        raise BundleError(f"{setup_cfg}: version {value!r} is not X.Y.Z, which OLM needs")
    return value


def readme_description(readme: Path) -> str:
    """The README's "What it is" section (its first descriptive paragraphs), each paragraph on one
    line, in-page links unlinked: the console renders it as Markdown."""
    paragraphs: list[tuple[str, str]] = []  # (section, paragraph)
    section, fenced = "", False
    block: list[str] = []
    for line in readme.read_text().splitlines() + [""]:
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        if line.startswith("#"):
            section = line.lstrip("#").strip()
            block = []
        elif line.strip():
            block.append(line.rstrip())
        elif block:
            paragraphs.append((section, "\n".join(block)))
            block = []
    what = [" ".join(p.split()) for s, p in paragraphs if s == "What it is"]
    if not what:
        raise BundleError(f"{readme}: no '## What it is' section to describe the operator")
    text = "\n\n".join(what)
    return re.sub(r"\[([^\]]+)\]\(#[^)]*\)", r"\1", text)


# --- the CSV ---------------------------------------------------------------------------------------


def _rules(role: dict[str, Any]) -> list[dict[str, Any]]:
    return copy.deepcopy(role.get("rules") or [])


def build_bundle(overlay: Path, readme: Path, version: str) -> dict[str, Any]:
    """Relative path -> content (a YAML object, or text for the Dockerfile) of every bundle file."""
    objects = render(overlay)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj.get("kind", ""), []).append(obj)

    def one(kind: str) -> dict[str, Any]:
        found = by_kind.get(kind) or []
        if len(found) != 1:
            raise BundleError(f"{overlay}: expected one {kind}, found {len(found)}")
        return found[0]

    namespace_obj = one("Namespace")
    namespace = namespace_obj["metadata"]["name"]
    service_account = one("ServiceAccount")["metadata"]["name"]
    deployment = copy.deepcopy(one("Deployment"))
    pod = deployment["spec"]["template"]["spec"]
    if pod.get("serviceAccountName") != service_account:
        raise BundleError(f"{overlay}: the Deployment does not run as ServiceAccount {service_account}")
    images = []
    for container in pod_containers(deployment):
        container["args"] = [a for a in container.get("args") or []
                             if a != f"--leader-election-namespace={namespace}"]
        if not re.fullmatch(r"[^@:]+(:\d+)?/[^@]+@sha256:[0-9a-f]{64}", container["image"]):
            raise BundleError(f"{overlay}: container {container['name']} image {container['image']} is not by digest"
                              " (manifests/manager/kustomization.yaml images: digest, set by make image)")
        images.append(container["image"])

    subject = {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
    bound: set[tuple[str, str, str]] = set()
    for binding in (by_kind.get("ClusterRoleBinding") or []) + (by_kind.get("RoleBinding") or []):
        if binding.get("subjects") != [subject]:
            raise BundleError(f"{overlay}: {binding['kind']} {binding['metadata']['name']} binds someone other"
                              f" than ServiceAccount {namespace}/{service_account}")
        ref = binding["roleRef"]
        bound.add((ref["kind"], binding["metadata"].get("namespace", ""), ref["name"]))
    cluster_rules: list[dict[str, Any]] = []
    namespace_rules: list[dict[str, Any]] = []
    for role in by_kind.get("ClusterRole") or []:
        if ("ClusterRole", "", role["metadata"]["name"]) not in bound:
            raise BundleError(f"{overlay}: ClusterRole {role['metadata']['name']} is bound to nothing")
        cluster_rules += _rules(role)
    for role in by_kind.get("Role") or []:
        role_ns = role["metadata"]["namespace"]
        if ("Role", role_ns, role["metadata"]["name"]) not in bound:
            raise BundleError(f"{overlay}: Role {role_ns}/{role['metadata']['name']} is bound to nothing")
        (namespace_rules if role_ns == namespace else cluster_rules).extend(_rules(role))

    files: dict[str, Any] = {}
    owned = []
    for crd in by_kind.get("CustomResourceDefinition") or []:
        crd = copy.deepcopy(crd)
        spec = crd["spec"]
        [storage] = [v for v in spec["versions"] if v.get("storage")]
        schema = storage.get("schema", {}).get("openAPIV3Schema", {})
        owned.append({
            "name": crd["metadata"]["name"],
            "version": storage["name"],
            "kind": spec["names"]["kind"],
            "displayName": re.sub(r"(?<=[a-z])(?=[A-Z])", " ", spec["names"]["kind"]),
            "description": " ".join((schema.get("description") or spec["names"]["kind"]).split()),
            "resources": [{"kind": "Build", "name": "", "version": "v1"}],
            "specDescriptors": [{
                "path": "moduleName", "displayName": "Module",
                "description": "The KMM Module (same namespace) whose driver images to build.",
                "x-descriptors": ["urn:alm:descriptor:io.kubernetes:kmm.sigs.x-k8s.io:v1beta1:Module"],
            }] if "moduleName" in schema.get("properties", {}).get("spec", {}).get("properties", {}) else [],
            "statusDescriptors": [{
                "path": "conditions", "displayName": "Conditions",
                "description": "Ready, Progressing and Degraded, with reasons.",
                "x-descriptors": ["urn:alm:descriptor:io.kubernetes.conditions"],
            }],
        })
        files[f"manifests/{spec['group']}_{spec['names']['plural']}.yaml"] = crd

    handled = {"Namespace", "ServiceAccount", "Deployment", "ClusterRole", "ClusterRoleBinding", "Role",
               "RoleBinding", "CustomResourceDefinition"}
    for kind, items in sorted(by_kind.items()):
        if kind in handled:
            continue
        if kind not in NAMESPACED_EXTRA_KINDS:
            raise BundleError(f"{overlay}: {kind} {items[0]['metadata']['name']} has no place in an OLM bundle;"
                              " teach tools/bundle.py where it goes")
        for obj in items:
            obj = copy.deepcopy(obj)
            if obj["metadata"].pop("namespace", namespace) != namespace:
                raise BundleError(f"{overlay}: {kind} {obj['metadata']['name']} is outside {namespace}")
            version_part = obj["apiVersion"].replace("/", "_").replace(".", "-")
            files[f"manifests/{obj['metadata']['name']}_{version_part}_{kind.lower()}.yaml"] = obj

    operator_image = images[0]
    csv_name = f"{PACKAGE}.v{version}"
    ns_template = {"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": namespace, "labels": namespace_obj["metadata"].get("labels") or {}}}
    annotations = {
        "alm-examples": json.dumps([EXAMPLE_MODULEBUILD], indent=2),
        "capabilities": "Basic Install",
        "categories": "Drivers and plugins",
        "containerImage": operator_image,
        "description": _setup_cfg_description(),
        "olm.skipRange": f">=0.0.0 <{version}",
        "operatorframework.io/suggested-namespace": namespace,
        "operatorframework.io/suggested-namespace-template": json.dumps(ns_template, sort_keys=True),
        "operators.openshift.io/infrastructure-features": json.dumps(
            [name for name in ("disconnected", "proxy-aware", "fips") if FEATURES.get(name) == "true"]),
    }
    annotations.update({f"features.operators.openshift.io/{k}": v for k, v in FEATURES.items()})
    install_deployment = {"name": deployment["metadata"]["name"], "label": deployment["metadata"].get("labels") or {},
                          "spec": deployment["spec"]}
    csv = {
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        # No operatorframework.io/arch.* labels: OLM then assumes linux/amd64, the one architecture
        # `make image` builds (on an amd64 host).
        "metadata": {"name": csv_name, "annotations": annotations},
        "spec": {
            "displayName": DISPLAY_NAME,
            "description": readme_description(readme) + "\n\n" + OLM_PARAGRAPH,
            "version": version,
            "maturity": CHANNEL,
            "minKubeVersion": MIN_KUBE_VERSION,
            "keywords": KEYWORDS,
            "links": [{"name": "Operator image", "url": "https://quay.io/repository/kmm-dtk/kmm-dtk"}],
            "maintainers": MAINTAINERS,
            "provider": PROVIDER,
            # All namespaces only: the operator watches every namespace unless given --namespace flags,
            # and it does not read OLM's olm.targetNamespaces, so an OperatorGroup narrowing it would
            # grant namespaced permissions the process would still exceed.
            "installModes": [
                {"type": "OwnNamespace", "supported": False},
                {"type": "SingleNamespace", "supported": False},
                {"type": "MultiNamespace", "supported": False},
                {"type": "AllNamespaces", "supported": True},
            ],
            "install": {"strategy": "deployment", "spec": {
                "clusterPermissions": [{"serviceAccountName": service_account, "rules": cluster_rules}],
                "permissions": [{"serviceAccountName": service_account, "rules": namespace_rules}],
                "deployments": [install_deployment],
            }},
            "customresourcedefinitions": {"owned": owned, "required": REQUIRED_CRDS},
            "nativeAPIs": NATIVE_APIS,
            "relatedImages": [{"name": PACKAGE, "image": image} for image in dict.fromkeys(images)],
        },
    }
    files[f"manifests/{PACKAGE}.clusterserviceversion.yaml"] = csv
    bundle_annotations = {
        "operators.operatorframework.io.bundle.mediatype.v1": "registry+v1",
        "operators.operatorframework.io.bundle.manifests.v1": "manifests/",
        "operators.operatorframework.io.bundle.metadata.v1": "metadata/",
        "operators.operatorframework.io.bundle.package.v1": PACKAGE,
        "operators.operatorframework.io.bundle.channels.v1": CHANNEL,
        "operators.operatorframework.io.bundle.channel.default.v1": CHANNEL,
        "com.redhat.openshift.versions": OPENSHIFT_VERSIONS,
    }
    files["metadata/annotations.yaml"] = {"annotations": bundle_annotations}
    files["bundle.Dockerfile"] = bundle_dockerfile(bundle_annotations)
    return files


def _setup_cfg_description(root: Path = ROOT) -> str:
    parser = configparser.ConfigParser()
    parser.read(root / "setup.cfg")
    return parser.get("metadata", "description", fallback="").strip()


def bundle_dockerfile(annotations: dict[str, str]) -> str:
    """The bundle image: the annotations as labels (which OLM reads from the image), the two dirs."""
    lines = ["# Generated by `make bundle` (tools/bundle.py). Build from bundle/:",
             "#   podman build -f bundle.Dockerfile -t <bundle image> .",
             "FROM scratch", ""]
    lines += [f"LABEL {key}={value}" for key, value in annotations.items()]
    lines += ["", "COPY manifests /manifests/", "COPY metadata /metadata/", ""]
    return "\n".join(lines)


# --- writing ---------------------------------------------------------------------------------------

HEADER = "# Generated by `make bundle` (tools/bundle.py) from manifests/with-kmm: do not edit.\n"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the description, alm-examples) as literal blocks, readable in review."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def serialize(content: Any) -> str:
    if isinstance(content, str):
        return content
    return HEADER + yaml.dump(content, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def write_bundle(files: dict[str, Any], output: Path) -> None:
    """Write the bundle, removing files of earlier runs in its manifests/ and metadata/."""
    for sub in ("manifests", "metadata"):
        if (output / sub).exists():
            shutil.rmtree(output / sub)
    for relative, content in sorted(files.items()):
        path = output / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(serialize(content))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--overlay", type=Path, default=OVERLAY, help="kustomize overlay to package")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="bundle directory to (re)write")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md", help="where the description comes from")
    args = parser.parse_args(argv)
    try:
        files = build_bundle(args.overlay, args.readme, package_version())
        write_bundle(files, args.output)
    except (BundleError, RenderError) as err:
        print(f"tools.bundle: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"tools.bundle: {err.filename}: {err.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {len(files)} files to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
