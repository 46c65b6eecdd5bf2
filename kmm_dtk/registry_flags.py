"""The registry flags that ``plan``, ``run`` and ``dtk-image`` share, and reading what they name.

Defaults follow podman and skopeo: ``--registry-config``, else ``$REGISTRY_AUTH_FILE``, else
``$XDG_RUNTIME_DIR/containers/auth.json`` when it exists. A file that cannot be used is a usage
error naming the file (never a credential), raised before anything starts.
"""

from __future__ import annotations

import argparse
import os

from kmm_dtk.registry.auth import AuthConfig, AuthConfigError
from kmm_dtk.registry.tls import TrustStore


class UsageError(Exception):
    """Bad flags or unreadable files: one line, exit 2."""


def add_registry_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry-config", "-a", metavar="FILE", default=None,
                        help="registry credentials, containers auth.json or docker config.json (default: "
                        "$REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json if it exists)")
    parser.add_argument("--ca-file", action="append", default=[], metavar="PATH",
                        help="PEM file or directory of CAs trusted for every registry, besides the system's "
                        "(repeatable; e.g. the mounted trusted CA bundle)")


def auth_file(args: argparse.Namespace) -> tuple[str | None, str]:
    """(path, the flag or variable that chose it)."""
    if args.registry_config:
        return args.registry_config, "--registry-config"
    if os.environ.get("REGISTRY_AUTH_FILE"):
        return os.environ["REGISTRY_AUTH_FILE"], "$REGISTRY_AUTH_FILE"
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidate = os.path.join(os.environ["XDG_RUNTIME_DIR"], "containers", "auth.json")
        if os.path.exists(candidate):
            return candidate, "registry config"
    return None, ""


def registry_settings(args: argparse.Namespace) -> tuple[AuthConfig, TrustStore]:
    """The credentials and CAs the flags name; UsageError names a file that cannot be used."""
    path, chosen_by = auth_file(args)
    try:
        auth = AuthConfig.from_file(path) if path else AuthConfig.EMPTY
    except AuthConfigError as err:
        raise UsageError(f"{chosen_by}: {err}") from None
    try:
        trust = TrustStore(ca_paths=tuple(args.ca_file))
    except (ValueError, OSError) as err:
        raise UsageError(f"--ca-file: {err}") from None
    return auth, trust
