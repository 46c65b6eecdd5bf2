"""The OLM bundle in bundle/: current with manifests/, valid as operator-sdk would judge it, and saying
what kmm-dtk is to an OpenShift administrator (requires KMM's Module CRD, owns ModuleBuild, images by
digest). Each validator rule is also shown to fail on a bundle broken in that one way."""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools import bundle as generator
from tools.bundle_validate import validate
from tools.image_digest import set_image
from tools.kustomize_render import render

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "bundle"
CSV = "manifests/kmm-dtk.clusterserviceversion.yaml"
DIGEST = "sha256:" + "ab" * 32


def load(path: Path) -> Any:
    text = path.read_text()
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def csv() -> dict[str, Any]:
    return load(BUNDLE / CSV)


def test_bundle_is_up_to_date_with_the_manifests(tmp_path: Path) -> None:
    assert generator.main(["--output", str(tmp_path)]) == 0
    generated = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(BUNDLE).as_posix() for p in BUNDLE.rglob("*") if p.is_file())
    stale = [name for name in generated if name in committed
             and not filecmp.cmp(tmp_path / name, BUNDLE / name, shallow=False)]
    differs = stale or sorted(set(generated) ^ set(committed))
    assert not differs, f"bundle/ is out of date with manifests/: run make bundle (differs: {differs})"


def test_committed_bundle_is_valid() -> None:
    assert validate(BUNDLE) == []


def test_validator_cli_reports_problems_and_exits_1(tmp_path: Path) -> None:
    shutil.copytree(BUNDLE, tmp_path / "b")
    (tmp_path / "b" / "manifests" / "notes.txt").write_text("x")
    result = subprocess.run([sys.executable, "-m", "tools.bundle_validate", str(tmp_path / "b")],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"{tmp_path / 'b'}: manifests/notes.txt: unknown file type in manifests/ (only YAML or JSON manifests)"]


# --- each rule fails on a bundle broken in one way -------------------------------------------------


def edit_yaml(relative: str, change: Callable[[Any], object]) -> Callable[[Path], None]:
    def apply(bundle: Path) -> None:
        data = load(bundle / relative)
        change(data)
        (bundle / relative).write_text(yaml.safe_dump(data, sort_keys=False))
    return apply


def csv_edit(change: Callable[[dict[str, Any]], object]) -> Callable[[Path], None]:
    return edit_yaml(CSV, change)


def container(csv: dict[str, Any]) -> dict[str, Any]:
    return csv["spec"]["install"]["spec"]["deployments"][0]["spec"]["template"]["spec"]["containers"][0]


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        data = data[part]
    data[last] = value


BREAKAGES: dict[str, tuple[Callable[[Path], object], str]] = {
    "owned CRD missing": (lambda b: (b / "manifests/kmm-dtk.io_modulebuilds.yaml").unlink(),
                          "owned CRD modulebuilds.kmm-dtk.io is not in manifests/"),
    "CRD not owned": (csv_edit(lambda c: c["spec"]["customresourcedefinitions"].update(owned=[])),
                      "CRD modulebuilds.kmm-dtk.io is in manifests/ but not owned by the CSV"),
    "owned kind differs": (csv_edit(lambda c: c["spec"]["customresourcedefinitions"]["owned"][0].update(kind="MB")),
                           "kind 'MB' but"),
    "owned version not served": (
        csv_edit(lambda c: c["spec"]["customresourcedefinitions"]["owned"][0].update(version="v2")),
        "version 'v2' is not served"),
    "owned description missing": (
        csv_edit(lambda c: c["spec"]["customresourcedefinitions"]["owned"][0].pop("description")),
        "owned CRD modulebuilds.kmm-dtk.io: description missing"),
    "required CRD malformed": (
        csv_edit(lambda c: c["spec"]["customresourcedefinitions"]["required"][0].pop("version")),
        "needs a name <plural>.<group>, a version and a kind"),
    "name not package.vX.Y.Z": (csv_edit(lambda c: set_path(c, "metadata.name", "kmm-dtk-0.1.0")),
                                "is not <package>.v<spec.version>"),
    "version not semver": (csv_edit(lambda c: set_path(c, "spec.version", "0.1")), "spec.version '0.1' is not semver"),
    "displayName missing": (csv_edit(lambda c: c["spec"].pop("displayName")), "spec.displayName missing"),
    "description missing": (csv_edit(lambda c: set_path(c, "spec.description", " ")), "spec.description missing"),
    "install mode missing": (csv_edit(lambda c: c["spec"]["installModes"].pop(0)), "spec.installModes has"),
    "no install mode supported": (
        csv_edit(lambda c: [m.update(supported=False) for m in c["spec"]["installModes"]]),
        "no install mode is supported"),
    "strategy not deployment": (csv_edit(lambda c: set_path(c, "spec.install.strategy", "helm")),
                                "spec.install.strategy 'helm' is not deployment"),
    "permissions for another account": (
        csv_edit(lambda c: c["spec"]["install"]["spec"]["permissions"][0].update(serviceAccountName="other")),
        "serviceAccountName 'other' runs no deployment"),
    "image by tag": (csv_edit(lambda c: container(c).update(image="quay.io/kmm-dtk/kmm-dtk:latest")),
                     "image 'quay.io/kmm-dtk/kmm-dtk:latest' is not by digest"),
    "image not related": (csv_edit(lambda c: container(c).update(image="quay.io/other/x@" + DIGEST)),
                          "is not in spec.relatedImages"),
    "deployment name not DNS-1123": (
        csv_edit(lambda c: c["spec"]["install"]["spec"]["deployments"][0].update(name="KMM_DTK")),
        "deployment name 'KMM_DTK' is not a DNS-1123 subdomain"),
    "alm-example of a kind not owned": (
        csv_edit(lambda c: c["metadata"]["annotations"].update({"alm-examples": json.dumps(
            [{"apiVersion": "kmm.sigs.x-k8s.io/v1beta1", "kind": "Module"}])})),
        "alm-examples: kmm.sigs.x-k8s.io/v1beta1 Module is not an owned CRD"),
    "unknown file type": (lambda b: (b / "manifests/README.md").write_text("x"), "manifests/README.md: unknown file"),
    "unsupported kind": (lambda b: (b / "manifests/d.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"), "kind Deployment is not one OLM installs"),
    "two CSVs": (lambda b: shutil.copy(b / CSV, b / "manifests/copy.clusterserviceversion.yaml"),
                 "2 ClusterServiceVersions"),
    "annotation missing": (
        edit_yaml("metadata/annotations.yaml", lambda a: a["annotations"].pop(generator_key("package"))),
        "annotation operators.operatorframework.io.bundle.package.v1 missing"),
    "default channel not a channel": (
        edit_yaml("metadata/annotations.yaml", lambda a: a["annotations"].update(
            {generator_key("channel.default"): "stable"})),
        "default channel 'stable' is not one of the channels"),
    "Dockerfile label disagrees": (
        lambda b: (b / "bundle.Dockerfile").write_text(
            (b / "bundle.Dockerfile").read_text().replace("channels.v1=alpha", "channels.v1=beta")),
        "bundle.Dockerfile: LABEL operators.operatorframework.io.bundle.channels.v1=beta differs"),
}


def generator_key(name: str) -> str:
    return f"operators.operatorframework.io.bundle.{name}.v1"


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_validator_catches(breakage: str, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle)
    breaker, expected = BREAKAGES[breakage]
    breaker(bundle)
    problems = validate(bundle)
    assert any(expected in p for p in problems), problems


# --- what the CSV says -----------------------------------------------------------------------------


def test_csv_identity_comes_from_setup_cfg_and_the_readme(csv: dict[str, Any]) -> None:
    version = generator.package_version()
    import kmm_dtk

    assert version == kmm_dtk.__version__
    assert csv["metadata"]["name"] == f"kmm-dtk.v{version}" and csv["spec"]["version"] == version
    assert csv["metadata"]["annotations"]["olm.skipRange"] == f">=0.0.0 <{version}"
    assert csv["spec"]["description"].startswith("OpenShift clusters run out-of-tree kernel drivers")
    assert "](#" not in csv["spec"]["description"], "in-page README links mean nothing in the console"
    assert csv["spec"]["maturity"] == "alpha" and csv["spec"]["minKubeVersion"]
    assert csv["spec"]["provider"]["name"] and csv["spec"]["maintainers"] and csv["spec"]["links"]


def test_owns_modulebuild_and_requires_kmm_module(csv: dict[str, Any]) -> None:
    crds = csv["spec"]["customresourcedefinitions"]
    assert [(c["name"], c["version"], c["kind"]) for c in crds["owned"]] == [
        ("modulebuilds.kmm-dtk.io", "v1alpha1", "ModuleBuild")]
    assert [(c["name"], c["version"], c["kind"]) for c in crds["required"]] == [
        ("modules.kmm.sigs.x-k8s.io", "v1beta1", "Module")]
    assert not (BUNDLE / "manifests" / "kmm.sigs.x-k8s.io_modules.yaml").exists(), "KMM owns the Module CRD"


def test_install_modes_all_namespaces_only(csv: dict[str, Any]) -> None:
    modes = {m["type"]: m["supported"] for m in csv["spec"]["installModes"]}
    assert modes == {"AllNamespaces": True, "OwnNamespace": False, "SingleNamespace": False, "MultiNamespace": False}


def test_openshift_feature_annotations(csv: dict[str, Any]) -> None:
    annotations = csv["metadata"]["annotations"]
    assert json.loads(annotations["operators.openshift.io/infrastructure-features"]) == ["disconnected"]
    features = {k.rpartition("/")[2]: v for k, v in annotations.items()
                if k.startswith("features.operators.openshift.io/")}
    assert features["disconnected"] == "true"
    assert features["proxy-aware"] == "false", "nothing in the operator reads HTTP(S)_PROXY"
    assert set(features.values()) <= {"true", "false"} and len(features) == 10
    assert annotations["operatorframework.io/suggested-namespace"] == "kmm-dtk-system"


def test_deployment_and_permissions_come_from_the_with_kmm_overlay(csv: dict[str, Any]) -> None:
    objects = render(ROOT / "manifests" / "with-kmm")
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    strategy = csv["spec"]["install"]["spec"]
    [installed] = strategy["deployments"]
    ours = installed["spec"]["template"]["spec"]["containers"][0]
    theirs = deployment["spec"]["template"]["spec"]["containers"][0]
    assert ours["image"] == theirs["image"]
    # The namespace flag goes: OLM picks the namespace, and the operator then uses its pod's.
    assert ours["args"] == [a for a in theirs["args"] if not a.startswith("--leader-election-namespace=")]
    assert "--module-build-sections=ignore" in ours["args"]
    [cluster_role] = [o for o in objects if o["kind"] == "ClusterRole"]
    [cluster] = strategy["clusterPermissions"]
    assert cluster["rules"][: len(cluster_role["rules"])] == cluster_role["rules"]
    roles = {o["metadata"]["namespace"]: o["rules"] for o in objects if o["kind"] == "Role"}
    assert cluster["rules"][len(cluster_role["rules"]):] == roles["openshift"]
    assert strategy["permissions"] == [{"serviceAccountName": "kmm-dtk", "rules": roles["kmm-dtk-system"]}]


def test_operator_image_by_digest_from_the_kustomization(csv: dict[str, Any]) -> None:
    entry = next(i for i in load(ROOT / "manifests/manager/kustomization.yaml")["images"]
                 if i["name"] == "quay.io/kmm-dtk/kmm-dtk")
    image = f"{entry.get('newName', entry['name'])}@{entry['digest']}"
    assert csv["spec"]["relatedImages"] == [{"name": "kmm-dtk", "image": image}]
    assert csv["metadata"]["annotations"]["containerImage"] == image
    assert container(csv)["image"] == image


# --- the tools' command lines ----------------------------------------------------------------------


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_generator_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("kind: Kustomization\nresources:\n- gone.yaml\n")
    result = run_tool("tools.bundle", "--overlay", str(tmp_path), "--output", str(tmp_path / "out"))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert str(tmp_path / "kustomization.yaml") in line and "gone.yaml does not exist" in line
    assert not (tmp_path / "out").exists()


def test_generator_refuses_an_image_by_tag(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "kind": "Kustomization",
        "resources": [str(ROOT / "manifests" / "with-kmm")],
        "images": [{"name": "quay.io/kmm-dtk/kmm-dtk", "newTag": "v1"}],
    }))
    result = run_tool("tools.bundle", "--overlay", str(overlay), "--output", str(tmp_path / "out"))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "quay.io/kmm-dtk/kmm-dtk:v1 is not by digest" in line and str(overlay) in line


def test_image_digest_rewrites_only_the_entry(tmp_path: Path) -> None:
    kustomization = tmp_path / "kustomization.yaml"
    shutil.copy(ROOT / "manifests/manager/kustomization.yaml", kustomization)
    before = kustomization.read_text()
    (tmp_path / "digest").write_text(DIGEST + "\n")
    result = run_tool("tools.image_digest", "--digest-file", str(tmp_path / "digest"),
                      "--kustomization", str(kustomization), "--name", "registry.example:5000/ops/kmm-dtk")
    assert result.returncode == 0, result.stderr
    after = kustomization.read_text()
    entry = yaml.safe_load(after)["images"][0]
    assert entry == {"name": "quay.io/kmm-dtk/kmm-dtk", "newName": "registry.example:5000/ops/kmm-dtk",
                     "digest": DIGEST}
    assert [line for line in before.splitlines() if line.startswith("#")] == [
        line for line in after.splitlines() if line.startswith("#")], "comments kept"
    # Back to the default repository: newName goes again.
    set_image(kustomization, "sha256:" + "cd" * 32)
    assert yaml.safe_load(kustomization.read_text())["images"][0] == {
        "name": "quay.io/kmm-dtk/kmm-dtk", "digest": "sha256:" + "cd" * 32}


@pytest.mark.parametrize("content", ["", "sha256:abc", "latest"])
def test_image_digest_refuses_a_bad_digest_file(content: str, tmp_path: Path) -> None:
    kustomization = tmp_path / "kustomization.yaml"
    shutil.copy(ROOT / "manifests/manager/kustomization.yaml", kustomization)
    before = kustomization.read_text()
    (tmp_path / "digest").write_text(content)
    result = run_tool("tools.image_digest", "--digest-file", str(tmp_path / "digest"),
                      "--kustomization", str(kustomization))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert str(tmp_path / "digest") in line and "is not sha256:<64 hex digits>" in line
    assert kustomization.read_text() == before
