"""Finding, or building once per machine, the kube-apiserver and etcd the tests run.

Order: ``KUBEBUILDER_ASSETS`` (envtest's folder with ``kube-apiserver`` and ``etcd``), then
``TEST_ASSET_KUBE_APISERVER`` + ``TEST_ASSET_ETCD``, then this project's own multi-call binary built
from ``tests/controlplane`` into a cache outside the clone, keyed by the hash of its sources so the
multi-minute build happens once per machine and again only when the Go module changes.

``python -m tests.support.binaries`` builds (or reuses) it and prints the assets folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent.parent / "controlplane"
SOURCE_FILES = ("go.mod", "go.sum", "main.go")


@dataclass(frozen=True)
class Assets:
    kube_apiserver: Path
    etcd: Path
    origin: str


class AssetsError(RuntimeError):
    pass


def cache_root() -> Path:
    if os.environ.get("KMM_DTK_CACHE_DIR"):
        return Path(os.environ["KMM_DTK_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kmm-dtk"


def source_hash() -> str:
    digest = hashlib.sha256()
    for name in SOURCE_FILES:
        digest.update(name.encode() + b"\0" + (SOURCE_DIR / name).read_bytes() + b"\0")
    digest.update(_version_ldflags().encode())  # the build recipe is part of the key too
    return digest.hexdigest()[:16]


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_assets() -> Assets | None:
    """Binaries named by the environment, or already built; None if a build is needed."""
    folder = os.environ.get("KUBEBUILDER_ASSETS")
    if folder:
        api, etcd = Path(folder) / "kube-apiserver", Path(folder) / "etcd"
        if not (_executable(api) and _executable(etcd)):
            raise AssetsError(f"KUBEBUILDER_ASSETS={folder} has no executable kube-apiserver and etcd")
        return Assets(api, etcd, f"KUBEBUILDER_ASSETS={folder}")
    api_env, etcd_env = os.environ.get("TEST_ASSET_KUBE_APISERVER"), os.environ.get("TEST_ASSET_ETCD")
    if api_env or etcd_env:
        if not (api_env and etcd_env and _executable(Path(api_env)) and _executable(Path(etcd_env))):
            raise AssetsError("TEST_ASSET_KUBE_APISERVER and TEST_ASSET_ETCD must both name executables")
        return Assets(Path(api_env), Path(etcd_env), "TEST_ASSET_*")
    folder_path = cache_root() / f"controlplane-{source_hash()}"
    if _executable(folder_path / "kube-apiserver") and _executable(folder_path / "etcd"):
        return Assets(folder_path / "kube-apiserver", folder_path / "etcd", f"cache {folder_path}")
    return None


def kubernetes_version() -> str:
    for line in (SOURCE_DIR / "go.mod").read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "k8s.io/kubernetes" and words[1].startswith("v1."):
            return words[1]
    raise AssetsError(f"{SOURCE_DIR}/go.mod does not require k8s.io/kubernetes v1.x")


def _version_ldflags() -> str:
    """Stamp the release into the binary so /version reports it, as release builds do."""
    version = kubernetes_version()
    major, minor = version[1:].split(".")[:2]
    pkg = "k8s.io/component-base/version"
    return (f"-X {pkg}.gitVersion={version} -X {pkg}.gitMajor={major} -X {pkg}.gitMinor={minor} "
            f"-X {pkg}.gitTreeState=clean")


def build(log=sys.stderr) -> Assets:
    """Build the multi-call binary into the cache (under a lock, so parallel callers build once)."""
    found = find_assets()
    if found:
        return found
    if shutil.which("go") is None:
        raise AssetsError("no kube-apiserver found and no Go toolchain to build one; "
                          "install Go or set KUBEBUILDER_ASSETS")
    folder = cache_root() / f"controlplane-{source_hash()}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = find_assets()
        if found:
            return found
        staging = folder.parent / f".{folder.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        print(f"building kube-apiserver + etcd from {SOURCE_DIR} into {folder} (first time: several minutes)",
              file=log, flush=True)
        started = time.monotonic()
        env = dict(os.environ, CGO_ENABLED="0")
        result = subprocess.run(
            ["go", "build", "-trimpath", f"-ldflags=-s -w {_version_ldflags()}", "-o", str(staging / "controlplane"),
             "."],
            cwd=SOURCE_DIR, env=env, stdout=log, stderr=log,
        )
        if result.returncode != 0:
            raise AssetsError(f"go build in {SOURCE_DIR} failed with exit status {result.returncode}")
        for name in ("kube-apiserver", "etcd"):
            (staging / name).symlink_to("controlplane")
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
        print(f"built in {time.monotonic() - started:.0f} s", file=log, flush=True)
    found = find_assets()
    assert found is not None
    return found


KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"
KUSTOMIZE_VERSION = "v5.8.2"  # the newest that builds with Go 1.26 (v5.8.3 wants Go 1.27)


def kustomize_path() -> Path:
    return cache_root() / f"kustomize-{KUSTOMIZE_VERSION}" / "kustomize"


def find_kustomize() -> Path | None:
    """``$KUSTOMIZE``, else the cached build, else one on PATH."""
    for candidate in (os.environ.get("KUSTOMIZE"), str(kustomize_path()), shutil.which("kustomize")):
        if candidate and _executable(Path(candidate)):
            return Path(candidate)
    return None


def build_kustomize(log=sys.stderr) -> Path:
    """``go install`` kustomize from the Go module proxy into the cache, once per machine."""
    target = kustomize_path()
    if _executable(target):
        return target
    if shutil.which("go") is None:
        raise AssetsError("no Go toolchain to build kustomize")
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"building kustomize {KUSTOMIZE_VERSION} into {target.parent}", file=log, flush=True)
    env = dict(os.environ, GOBIN=str(target.parent), GOFLAGS="-mod=mod", CGO_ENABLED="0")
    result = subprocess.run(["go", "install", f"{KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION}"], env=env,
                            stdout=log, stderr=log, cwd=target.parent)
    if result.returncode != 0 or not _executable(target):
        raise AssetsError(f"go install {KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION} failed ({result.returncode})")
    return target


if __name__ == "__main__":
    try:
        assets = build()
        build_kustomize()
    except AssetsError as err:
        print(f"controlplane: {err}", file=sys.stderr)
        sys.exit(1)
    print(assets.kube_apiserver.parent)
