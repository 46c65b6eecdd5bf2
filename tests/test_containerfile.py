"""The operator image's Containerfile and its hashed locks: pinned bases, a minimal runtime stage,
the labels OpenShift and OCI tools read, the Deployment's ports, non-root. Read as text: there is no
container engine here. Each rule is also shown to fail on a Containerfile broken in that one way."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tools.bundle import package_version
from tools.kustomize_render import render

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = ROOT / "Containerfile"
LOCK = ROOT / "requirements.lock"
BUILD_LOCK = ROOT / "requirements-build.lock"
REQUIRED_LABELS = {
    "org.opencontainers.image.title", "org.opencontainers.image.description", "org.opencontainers.image.version",
    "org.opencontainers.image.vendor", "org.opencontainers.image.licenses", "org.opencontainers.image.url",
    "name", "summary", "description", "io.k8s.display-name", "io.k8s.description", "io.openshift.tags",
    "maintainer", "version", "vendor", "url",
}
COMPILERS = re.compile(r"\b(gcc|gcc-c\+\+|g\+\+|clang|make|cmake|[\w.-]+-devel|python3\.11-pip)\b")
BY_DIGEST = re.compile(r"[a-z0-9.-]+(:\d+)?/[a-z0-9./_-]+@sha256:[0-9a-f]{64}")


# --- reading ---------------------------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str, str]]:
    """(KEYWORD, arguments, the comment block just above) per instruction, continuations joined."""
    result: list[tuple[str, str, str]] = []
    comment: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and stripped.startswith("#"):
            comment.append(stripped.lstrip("# "))
            continue
        if not pending and not stripped:
            comment = []
            continue
        pending += " " + stripped.rstrip("\\").strip()
        if stripped.endswith("\\"):
            continue
        keyword, _, args = pending.strip().partition(" ")
        result.append((keyword.upper(), args.strip(), "\n".join(comment)))
        pending, comment = "", []
    return result


def stages(text: str) -> list[list[tuple[str, str, str]]]:
    found: list[list[tuple[str, str, str]]] = []
    for instruction in instructions(text):
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def labels(stage: list[tuple[str, str, str]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for keyword, args, _ in stage:
        if keyword == "LABEL":
            for key, quoted, bare in re.findall(r'([\w.-]+)=(?:"((?:[^"\\]|\\.)*)"|(\S+))', args):
                found[key] = quoted or bare
    return found


def deployment_ports() -> set[int]:
    objects = render(ROOT / "manifests" / "default")
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    return {p["containerPort"] for c in deployment["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports") or []}


def lock_entries(path: Path) -> dict[str, list[str]]:
    """Normalised name -> the entry's tokens (version pin and hashes), from a pip-compile lock."""
    text = re.sub(r"\\\n", " ", path.read_text())
    entries: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split()
        name = re.split(r"[=<>!~\[; ]", requirement, maxsplit=1)[0]
        entries[normalise(name)] = [requirement, *options]
    return entries


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalise(re.match(r"[A-Za-z0-9._-]+", r.strip()).group(0))  # type: ignore[union-attr]
            for r in requirements if r.strip() and not r.strip().startswith("#")}


def install_requires() -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return requirement_names(parser.get("options", "install_requires").splitlines())


# --- the rules -------------------------------------------------------------------------------------


def problems(text: str) -> list[str]:
    """Every rule the Containerfile text breaks, one line each."""
    found: list[str] = []
    all_stages = stages(text)
    if len(all_stages) < 2:
        return [f"{len(all_stages)} stage(s): expected a builder stage and a runtime stage"]
    bases = []
    for stage in all_stages:
        _, args, comment = stage[0]
        image = args.split()[0]
        bases.append(image)
        if not BY_DIGEST.fullmatch(image):
            found.append(f"FROM {image} is not by digest")
        elif not re.search(r"\btag \S+", comment) or image.split("@")[0] not in comment:
            found.append(f"FROM {image}: the comment above does not name the repository and its tag")
    builder, runtime = all_stages[0], all_stages[-1]
    if bases[-1] == bases[0]:
        found.append("the runtime stage starts from the builder's base image")
    if "ubi-minimal" not in bases[-1]:
        found.append(f"the runtime stage starts from {bases[-1]}, not ubi9/ubi-minimal")

    pip_installs = [args for keyword, args, _ in builder if keyword == "RUN"
                    for args in re.split(r"&&|;", args) if re.search(r"\bpip install\b", args)]
    if not any("--require-hashes" in c and "-r requirements.lock" in c and "--no-deps" in c for c in pip_installs):
        found.append("no `pip install --require-hashes --no-deps -r requirements.lock` in the builder stage")
    for command in pip_installs:
        if "--require-hashes" not in command and "--no-index" not in command:
            found.append(f"`{command.strip()}` installs from an index without hashes")
    copied = " ".join(args for keyword, args, _ in builder if keyword == "COPY")
    for lock in (LOCK.name, BUILD_LOCK.name):
        if lock not in copied:
            found.append(f"the builder stage does not COPY {lock}")
    if not any(k == "RUN" and "pip wheel" in a for k, a, _ in builder):
        found.append("the builder stage builds no wheel")

    for keyword, args, _ in runtime:
        if keyword == "RUN" and COMPILERS.search(args):
            found.append(f"the runtime stage installs a build tool: {COMPILERS.search(args).group(0)}")  # type: ignore[union-attr]
        if keyword == "RUN" and re.search(r"\bpip\b", args):
            found.append("the runtime stage runs pip: packages come installed from the builder")
        if keyword == "COPY" and args.startswith("--from=") and "/opt/kmm-dtk /opt/kmm-dtk" not in args:
            found.append(f"the runtime stage copies more than the installed packages: COPY {args}")
    users = [args for keyword, args, _ in runtime if keyword == "USER"]
    if not users or not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
        user = users[-1] if users else "unset (root)"
        found.append(f"the runtime stage's USER is {user}, not a numeric non-root UID")
    entrypoints = [args for keyword, args, _ in runtime if keyword == "ENTRYPOINT"]
    if entrypoints[-1:] != ['["kmm-dtk"]']:
        found.append(f"ENTRYPOINT is {entrypoints[-1:]}, expected [\"kmm-dtk\"]")

    present = labels(runtime)
    for label in sorted(REQUIRED_LABELS - {k for k, v in present.items() if v.strip()}):
        found.append(f"the runtime stage has no {label} label")
    arg_version = next((a.partition("=")[2] for k, a, _ in runtime if k == "ARG" and a.startswith("VERSION=")), None)
    if arg_version != package_version():
        found.append(f"ARG VERSION={arg_version} in the runtime stage is not the package version {package_version()}")
    for label in ("version", "org.opencontainers.image.version"):
        if present.get(label) not in ("${VERSION}", "$VERSION"):
            found.append(f"label {label} is {present.get(label)!r}, not ${{VERSION}}")

    exposed = {int(p.split("/")[0]) for k, a, _ in runtime if k == "EXPOSE" for p in a.split()}
    ports = deployment_ports()
    if exposed != ports:
        found.append(f"EXPOSE {sorted(exposed)} differs from the Deployment's container ports {sorted(ports)}")
    return found


# --- the tests -------------------------------------------------------------------------------------


def test_containerfile_follows_every_rule() -> None:
    assert problems(CONTAINERFILE.read_text()) == []


def replace(old: str, new: str) -> Any:
    def apply(text: str) -> str:
        assert old in text, f"the Containerfile no longer has {old!r}: update this breakage"
        return text.replace(old, new, 1)
    return apply


BREAKAGES = {
    "base by tag": (replace("ubi9/ubi-minimal@sha256:", "ubi9/ubi-minimal:9.6 #"), "is not by digest"),
    "no tag comment": (replace("# registry.access.redhat.com/ubi9/ubi-minimal, tag 9.6\n", ""),
                       "does not name the repository and its tag"),
    "one stage": (lambda t: t[: t.index("# registry.access.redhat.com/ubi9/ubi-minimal")], "1 stage(s)"),
    "runtime on the builder's base": (
        lambda t: t.replace(re.findall(r"ubi9/ubi-minimal@sha256:[0-9a-f]+", t)[0],
                            re.findall(r"ubi9/python-311@sha256:[0-9a-f]+", t)[0]),
        "the runtime stage starts from the builder's base image"),
    "no hashes": (replace("--require-hashes --no-deps -r requirements.lock", "-r requirements.lock"),
                  "no `pip install --require-hashes --no-deps -r requirements.lock`"),
    "unhashed extra install": (replace("bin/pip check", "bin/pip install requests"),
                               "installs from an index without hashes"),
    "compiler in runtime": (replace("install_weak_deps=0 python3.11", "install_weak_deps=0 python3.11 gcc"),
                            "installs a build tool: gcc"),
    "pip in runtime": (replace("microdnf clean all", "microdnf clean all && python3.11 -m pip install x"),
                       "the runtime stage runs pip"),
    "root user": (replace("USER 1001\nENTRYPOINT", "USER root\nENTRYPOINT"), "not a numeric non-root UID"),
    "label missing": (replace("io.openshift.tags=", "io.openshift.tagz="), "no io.openshift.tags label"),
    "wrong version": (replace("ARG VERSION=", "ARG VERSION=9"), "is not the package version"),
    "port missing": (replace("EXPOSE 8443", "EXPOSE 9999"), "differs from the Deployment's container ports"),
    "entrypoint": (replace('ENTRYPOINT ["kmm-dtk"]', 'ENTRYPOINT ["python3.11"]'), "ENTRYPOINT is"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_rule_catches(breakage: str) -> None:
    breaker, expected = BREAKAGES[breakage]
    found = problems(breaker(CONTAINERFILE.read_text()))
    assert any(expected in p for p in found), found


@pytest.mark.parametrize("lock", [LOCK, BUILD_LOCK], ids=lambda p: p.name)
def test_every_locked_requirement_is_pinned_and_hashed(lock: Path) -> None:
    entries = lock_entries(lock)
    assert entries, f"{lock.name} is empty: run make lock"
    for name, (requirement, *options) in entries.items():
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", requirement), f"{lock.name}: {requirement} not pinned"
        hashes = [o for o in options if o.startswith("--hash=")]
        assert hashes and all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", h) for h in hashes), (
            f"{lock.name}: {name} is not hashed")
        assert not set(options) - set(hashes), f"{lock.name}: {name} has options other than hashes: {options}"
    assert "--find-links" not in lock.read_text() and "--index-url" not in lock.read_text()


def test_lock_covers_install_requires() -> None:
    missing = install_requires() - set(lock_entries(LOCK))
    assert not missing, f"requirements.lock lacks {sorted(missing)} of setup.cfg's install_requires: run make lock"


def test_build_lock_covers_the_build_system() -> None:
    with (ROOT / "pyproject.toml").open("rb") as stream:
        requires = tomllib.load(stream)["build-system"]["requires"]
    missing = requirement_names(requires) - set(lock_entries(BUILD_LOCK))
    assert not missing, f"requirements-build.lock lacks {sorted(missing)}: run make lock"


def test_lock_parser_sees_a_missing_hash(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("pyyaml==6.0.2 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via kmm-dtk\ntenacity==9.0.0\n")
    entries = lock_entries(lock)
    assert entries["pyyaml"][1:] == ["--hash=sha256:" + "a" * 64]
    assert entries["tenacity"] == ["tenacity==9.0.0"]


def test_make_image_without_an_engine_names_the_package_to_install() -> None:
    if shutil.which("podman") or shutil.which("buildah"):
        pytest.skip("a container engine is installed: make image would build")
    result = subprocess.run(["make", "--no-print-directory", "image"], capture_output=True, text=True, cwd=ROOT,
                            timeout=60)
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == (
        "make image needs podman or buildah: install the podman package (dnf install podman, apt-get install podman)")
