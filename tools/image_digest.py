"""Record the operator image ``make image`` pushed in manifests/manager/kustomization.yaml.

That ``images:`` entry is the one place the operator image is named: the Deployment and the OLM
bundle take it from there, by digest. ``make image`` pushes the image with ``--digestfile`` and runs
``python -m tools.image_digest --digest-file FILE [--name REPO]``, which rewrites only the entry's
``digest:`` (and ``newName:`` when the image went to another repository), keeping the file's
comments. Bad input exits 1 with one line naming the file and the problem.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZATION = ROOT / "manifests" / "manager" / "kustomization.yaml"
IMAGE_NAME = "quay.io/kmm-dtk/kmm-dtk"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
REPOSITORY = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+")


class DigestError(ValueError):
    """The digest, the repository or the kustomization cannot be used; names the file."""


def set_image(kustomization: Path, digest: str, new_name: str | None = None) -> str:
    """Rewrite the ``images:`` entry for the operator; returns the new text (also written)."""
    if not DIGEST.fullmatch(digest):
        raise DigestError(f"digest {digest!r} is not sha256:<64 hex digits>")
    if new_name is not None and not REPOSITORY.fullmatch(new_name):
        raise DigestError(f"repository {new_name!r} is not an image repository (registry/path, lower case)")
    try:
        lines = kustomization.read_text().splitlines(keepends=True)
    except OSError as err:
        raise DigestError(f"{kustomization}: cannot read: {err.strerror}") from err
    start = next((i for i, line in enumerate(lines) if line.strip() == f"- name: {IMAGE_NAME}"), None)
    if start is None:
        raise DigestError(f"{kustomization}: no images entry '- name: {IMAGE_NAME}'")
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())] + "  "
    end = start + 1
    while end < len(lines) and lines[end].startswith(indent) and not lines[end].lstrip().startswith("- "):
        end += 1
    fields = [f"{indent}newName: {new_name}\n"] if new_name and new_name != IMAGE_NAME else []
    fields.append(f"{indent}digest: {digest}\n")
    text = "".join(lines[: start + 1] + fields + lines[end:])
    entries = yaml.safe_load(text).get("images") or []
    entry = next(e for e in entries if e.get("name") == IMAGE_NAME)
    assert entry.get("digest") == digest, "rewritten entry does not read back"
    kustomization.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.image_digest", description=__doc__.splitlines()[0])
    parser.add_argument("--digest-file", type=Path, required=True, help="what `podman push --digestfile` wrote")
    parser.add_argument("--name", default=None, help=f"repository pushed to (default {IMAGE_NAME})")
    parser.add_argument("--kustomization", type=Path, default=KUSTOMIZATION)
    args = parser.parse_args(argv)
    try:
        try:
            digest = args.digest_file.read_text().strip()
        except OSError as err:
            raise DigestError(f"{args.digest_file}: cannot read: {err.strerror}") from err
        if not DIGEST.fullmatch(digest):
            raise DigestError(f"{args.digest_file}: {digest[:80]!r} is not sha256:<64 hex digits>")
        set_image(args.kustomization, digest, args.name)
    except DigestError as err:
        print(f"tools.image_digest: {err}", file=sys.stderr)
        return 1
    print(f"{args.kustomization}: {args.name or IMAGE_NAME}@{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
