"""Check an OLM registry+v1 bundle the way ``operator-sdk bundle validate`` does, without it.

There is no operator-sdk (nor network) here, so the rules the bundle must meet are written out:
the layout (manifests/ with one ClusterServiceVersion and only kinds OLM installs, metadata/
annotations.yaml), the annotations and the bundle.Dockerfile labels agreeing, the CSV's required
fields (name ``<package>.v<version>``, semver version, displayName, description, all four install
modes, a deployment install strategy with its permissions), owned CRDs present with matching name,
version and kind and no CRD in manifests/ that the CSV does not own, required CRDs well formed,
alm-examples of owned kinds, every image by digest and listed in relatedImages, names valid DNS-1123.
Beyond operator-sdk's defaults it refuses images by tag, as a disconnected install needs digests.

``validate(bundle_dir)`` returns the problems, one line each; ``python -m tools.bundle_validate DIR``
prints them and exits 1 when there are any.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

MEDIATYPE = "operators.operatorframework.io.bundle.mediatype.v1"
MANIFESTS = "operators.operatorframework.io.bundle.manifests.v1"
METADATA = "operators.operatorframework.io.bundle.metadata.v1"
PACKAGE = "operators.operatorframework.io.bundle.package.v1"
CHANNELS = "operators.operatorframework.io.bundle.channels.v1"
DEFAULT_CHANNEL = "operators.operatorframework.io.bundle.channel.default.v1"
# Kinds OLM creates from a registry+v1 bundle (operator-registry's supported resources).
SUPPORTED_KINDS = {
    "ClusterServiceVersion", "CustomResourceDefinition", "Secret", "ClusterRole", "ClusterRoleBinding",
    "ConfigMap", "ServiceAccount", "Service", "Role", "RoleBinding", "PrometheusRule", "ServiceMonitor",
    "PodDisruptionBudget", "PriorityClass", "VerticalPodAutoscaler", "ConsoleYAMLSample", "ConsoleQuickStart",
    "ConsoleCLIDownload", "ConsoleLink",
}
INSTALL_MODES = {"OwnNamespace", "SingleNamespace", "MultiNamespace", "AllNamespaces"}
SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(-((0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(\+([0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*))?")
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
BY_DIGEST = re.compile(r"[^@\s]+@sha256:[0-9a-f]{64}")
SKIP_RANGE = re.compile(r"\s*(([<>]=?|=)?\s*\S+)(\s+([<>]=?|=)?\s*\S+)*\s*")


def is_label(name: Any) -> bool:
    return isinstance(name, str) and len(name) <= 63 and bool(DNS1123_LABEL.fullmatch(name))


def is_subdomain(name: Any) -> bool:
    return isinstance(name, str) and len(name) <= 253 and bool(DNS1123_SUBDOMAIN.fullmatch(name))


def _load(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
        docs = [json.loads(text)] if path.suffix == ".json" else list(yaml.safe_load_all(text))
    except (OSError, ValueError, yaml.YAMLError) as err:
        problems.append(f"{path.name}: cannot be read as {path.suffix[1:].upper()}: {' '.join(str(err).split())}")
        return []
    objects = [d for d in docs if d is not None]
    for doc in objects:
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            problems.append(f"{path.name}: a document is not a Kubernetes object (apiVersion, kind)")
            return []
    return objects


def validate(bundle: Path) -> list[str]:
    """Every problem found in the bundle directory, one line each naming the file."""
    problems: list[str] = []
    manifests_dir, annotations_path = bundle / "manifests", bundle / "metadata" / "annotations.yaml"
    if not manifests_dir.is_dir():
        return [f"{manifests_dir}: missing"]

    # --- metadata/annotations.yaml and bundle.Dockerfile ---
    annotations: dict[str, Any] = {}
    try:
        loaded = yaml.safe_load(annotations_path.read_text()) or {}
        annotations = loaded.get("annotations") or {} if isinstance(loaded, dict) else {}
    except (OSError, yaml.YAMLError) as err:
        problems.append(f"metadata/annotations.yaml: cannot be read: {' '.join(str(err).split())}")
    for key in (MEDIATYPE, MANIFESTS, METADATA, PACKAGE, CHANNELS):
        if not annotations.get(key):
            problems.append(f"metadata/annotations.yaml: annotation {key} missing")
    for key, expected in ((MEDIATYPE, "registry+v1"), (MANIFESTS, "manifests/"), (METADATA, "metadata/")):
        if annotations.get(key) and annotations[key] != expected:
            problems.append(f"metadata/annotations.yaml: {key} is {annotations[key]!r}, expected {expected!r}")
    package = str(annotations.get(PACKAGE, ""))
    if package and not is_label(package):
        problems.append(f"metadata/annotations.yaml: package {package!r} is not a DNS-1123 label")
    channels = [c.strip() for c in str(annotations.get(CHANNELS, "")).split(",") if c.strip()]
    if annotations.get(DEFAULT_CHANNEL) and annotations[DEFAULT_CHANNEL] not in channels:
        problems.append(f"metadata/annotations.yaml: default channel {annotations[DEFAULT_CHANNEL]!r}"
                        f" is not one of the channels {channels}")
    for extra in sorted(p.name for p in (bundle / "metadata").glob("*") if p.name != "annotations.yaml"):
        if not extra.endswith((".yaml", ".yml", ".json")):
            problems.append(f"metadata/{extra}: unknown file type in metadata/")
    dockerfile = bundle / "bundle.Dockerfile"
    if dockerfile.exists():
        labels = dict(re.findall(r"^LABEL\s+(\S+?)=(\S+)\s*$", dockerfile.read_text(), re.M))
        for key, value in annotations.items():
            if labels.get(key) != str(value):
                problems.append(f"bundle.Dockerfile: LABEL {key}={labels.get(key)} differs from annotations.yaml"
                                f" ({value})")
        for key in sorted(set(labels) - set(annotations)):
            if key.startswith("operators.operatorframework.io.bundle."):
                problems.append(f"bundle.Dockerfile: LABEL {key} is not in annotations.yaml")
        for source, target in (("manifests", "/manifests/"), ("metadata", "/metadata/")):
            if not re.search(rf"^COPY\s+\S*{source}/?\s+{target}\s*$", dockerfile.read_text(), re.M):
                problems.append(f"bundle.Dockerfile: no COPY of {source} to {target}")

    # --- manifests/ ---
    objects: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(manifests_dir.iterdir()):
        if not path.is_file() or path.suffix not in (".yaml", ".yml", ".json"):
            problems.append(f"manifests/{path.name}: unknown file type in manifests/ (only YAML or JSON manifests)")
            continue
        for obj in _load(path, problems):
            objects.append((path.name, obj))
            name = (obj.get("metadata") or {}).get("name")
            if obj["kind"] not in SUPPORTED_KINDS:
                problems.append(f"manifests/{path.name}: kind {obj['kind']} is not one OLM installs from a bundle")
            if not is_subdomain(name):
                problems.append(f"manifests/{path.name}: {obj['kind']} name {name!r} is not a DNS-1123 subdomain")
    csvs = [(f, o) for f, o in objects if o["kind"] == "ClusterServiceVersion"]
    if len(csvs) != 1:
        problems.append(f"manifests/: {len(csvs)} ClusterServiceVersions, expected exactly one")
        return problems
    csv_file, csv = csvs[0]
    crds = {str((o.get("metadata") or {}).get("name")): (f, o)
            for f, o in objects if o["kind"] == "CustomResourceDefinition"}
    problems += [f"manifests/{csv_file}: {p}" for p in validate_csv(csv, crds, package)]
    return problems


def validate_csv(csv: dict[str, Any], crds: dict[str, tuple[str, dict[str, Any]]], package: str) -> list[str]:
    """The CSV's own rules, and its agreement with the CRDs in the bundle."""
    problems: list[str] = []
    meta, spec = csv.get("metadata") or {}, csv.get("spec") or {}
    if csv.get("apiVersion") != "operators.coreos.com/v1alpha1":
        problems.append(f"apiVersion {csv.get('apiVersion')!r} is not operators.coreos.com/v1alpha1")
    version = str(spec.get("version", ""))
    if not SEMVER.fullmatch(version):
        problems.append(f"spec.version {version!r} is not semver")
    if meta.get("name") != f"{package}.v{version}":
        problems.append(f"metadata.name {meta.get('name')!r} is not <package>.v<spec.version> ({package}.v{version})")
    for field in ("displayName", "description"):
        if not str(spec.get(field) or "").strip():
            problems.append(f"spec.{field} missing")
    if not (spec.get("provider") or {}).get("name"):
        problems.append("spec.provider.name missing")
    for maintainer in spec.get("maintainers") or []:
        if not maintainer.get("name") or "@" not in str(maintainer.get("email", "")):
            problems.append(f"spec.maintainers entry {maintainer} needs a name and an email")
    for link in spec.get("links") or []:
        if not str(link.get("url", "")).startswith(("https://", "http://")):
            problems.append(f"spec.links entry {link} has no URL")
    if spec.get("minKubeVersion") and not SEMVER.fullmatch(str(spec["minKubeVersion"])):
        problems.append(f"spec.minKubeVersion {spec['minKubeVersion']!r} is not semver")
    annotations = meta.get("annotations") or {}
    if "olm.skipRange" in annotations and not SKIP_RANGE.fullmatch(str(annotations["olm.skipRange"])):
        problems.append(f"olm.skipRange {annotations['olm.skipRange']!r} is not a version range")

    modes = spec.get("installModes") or []
    types = [m.get("type") for m in modes]
    if sorted(types) != sorted(INSTALL_MODES):
        problems.append(f"spec.installModes has {sorted(map(str, types))},"
                        f" expected each of {sorted(INSTALL_MODES)} once")
    if any(not isinstance(m.get("supported"), bool) for m in modes):
        problems.append("spec.installModes: every supported is true or false")
    if not any(m.get("supported") is True for m in modes):
        problems.append("spec.installModes: no install mode is supported")

    install = spec.get("install") or {}
    if install.get("strategy") != "deployment":
        problems.append(f"spec.install.strategy {install.get('strategy')!r} is not deployment")
    strategy = install.get("spec") or {}
    deployments = strategy.get("deployments") or []
    if not deployments:
        problems.append("spec.install.spec.deployments is empty")
    service_accounts = set()
    images: list[str] = []
    for deployment in deployments:
        if not is_subdomain(deployment.get("name")):
            problems.append(f"deployment name {deployment.get('name')!r} is not a DNS-1123 subdomain")
        pod = (((deployment.get("spec") or {}).get("template") or {}).get("spec")) or {}
        service_accounts.add(pod.get("serviceAccountName", "default"))
        containers = (pod.get("containers") or []) + (pod.get("initContainers") or [])
        if not pod.get("containers"):
            problems.append(f"deployment {deployment.get('name')}: no containers")
        for container in containers:
            if not is_label(container.get("name")):
                problems.append(f"deployment {deployment.get('name')}: container name {container.get('name')!r}"
                                " is not a DNS-1123 label")
            images.append(str(container.get("image", "")))
    for field in ("permissions", "clusterPermissions"):
        for entry in strategy.get(field) or []:
            if entry.get("serviceAccountName") not in service_accounts:
                problems.append(f"spec.install.spec.{field}: serviceAccountName {entry.get('serviceAccountName')!r}"
                                " runs no deployment")
            for rule in entry.get("rules") or []:
                if not rule.get("verbs") or not (rule.get("resources") or rule.get("nonResourceURLs")):
                    problems.append(f"spec.install.spec.{field}: rule {rule} needs verbs and resources")
                if rule.get("resources") and "apiGroups" not in rule:
                    problems.append(f"spec.install.spec.{field}: rule {rule} has no apiGroups")
    if not strategy.get("permissions") and not strategy.get("clusterPermissions"):
        problems.append("spec.install.spec has neither permissions nor clusterPermissions")

    definitions = spec.get("customresourcedefinitions") or {}
    owned = definitions.get("owned") or []
    owned_names = set()
    for entry in owned:
        name, version, kind = entry.get("name"), entry.get("version"), entry.get("kind")
        owned_names.add(name)
        for field in ("displayName", "description"):
            if not entry.get(field):
                problems.append(f"owned CRD {name}: {field} missing")
        if name not in crds:
            problems.append(f"owned CRD {name} is not in manifests/")
            continue
        crd_file, crd = crds[name]
        crd_spec = crd.get("spec") or {}
        names = crd_spec.get("names") or {}
        if name != f"{names.get('plural')}.{crd_spec.get('group')}":
            problems.append(f"owned CRD {name}: {crd_file} is {names.get('plural')}.{crd_spec.get('group')}")
        if kind != names.get("kind"):
            problems.append(f"owned CRD {name}: kind {kind!r} but {crd_file} has {names.get('kind')!r}")
        served = [v.get("name") for v in crd_spec.get("versions") or [] if v.get("served")]
        if version not in served:
            problems.append(f"owned CRD {name}: version {version!r} is not served by {crd_file} ({served})")
    for name in sorted(set(crds) - owned_names):
        problems.append(f"CRD {name} is in manifests/ but not owned by the CSV")
    required = definitions.get("required") or []
    for entry in required:
        name = str(entry.get("name", ""))
        if not (entry.get("version") and entry.get("kind") and "." in name and is_subdomain(name)):
            problems.append(f"required CRD {entry} needs a name <plural>.<group>, a version and a kind")
        if name in owned_names or name in crds:
            problems.append(f"required CRD {name} is also owned or shipped by this bundle")

    if "alm-examples" in annotations:
        try:
            examples = json.loads(annotations["alm-examples"])
        except ValueError as err:
            problems.append(f"alm-examples is not JSON: {err}")
            examples = []
        owned_gvk = {(f"{e.get('name', '').partition('.')[2]}/{e.get('version')}", e.get("kind")) for e in owned}
        for example in examples:
            if (example.get("apiVersion"), example.get("kind")) not in owned_gvk:
                problems.append(f"alm-examples: {example.get('apiVersion')} {example.get('kind')} is not an owned CRD")

    related = spec.get("relatedImages") or []
    related_images = [str(r.get("image", "")) for r in related]
    if annotations.get("containerImage"):
        images.append(str(annotations["containerImage"]))
    for image in images + related_images:
        if not BY_DIGEST.fullmatch(image):
            problems.append(f"image {image!r} is not by digest (<repository>@sha256:<64 hex>)")
    for image in sorted(set(images) - set(related_images)):
        problems.append(f"image {image} is not in spec.relatedImages")
    related_names = [r.get("name") for r in related]
    if len(set(related_names)) != len(related_names) or not all(is_subdomain(n) for n in related_names):
        problems.append(f"spec.relatedImages names {related_names} are not unique DNS-1123 names")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tools.bundle_validate BUNDLE_DIR", file=sys.stderr)
        return 2
    problems = validate(Path(args[0]))
    for problem in problems:
        print(f"{args[0]}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args[0]}: valid registry+v1 bundle")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
