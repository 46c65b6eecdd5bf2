"""``kmm-dtk dtk-image``: which driver-toolkit image does an OpenShift release ship, and for which kernel?

The "pre-built" case: building driver images for a release before the cluster runs it. Answers what
``oc adm release info --image-for=driver-toolkit RELEASE`` answers, read natively from the registry
(no ``oc`` binary needed), plus the RHCOS build and, with ``--kernel``, the DTK's kernels.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from typing import Any, TextIO

from kmm_dtk.cmd.messages import clean_message
from kmm_dtk.cmd.output import print_data
from kmm_dtk.registry_flags import add_registry_flags, auth_file

EXIT_OK, EXIT_LOOKUP_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "kmm-dtk dtk-image"


class _Failure(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "dtk-image",
        help="print the driver-toolkit image of an OpenShift release (and its kernel)",
        description="Read an OpenShift release image's release-manifests/image-references from the registry "
        "and print its driver-toolkit pull spec, like `oc adm release info --image-for=driver-toolkit`. "
        "Exit status: 0 found, 1 the lookup failed (no such release or tag, registry unreachable), "
        "2 bad arguments or an unreadable file.",
    )
    parser.add_argument("release", nargs="?", metavar="RELEASE",
                        help="release image, e.g. quay.io/openshift-release-dev/ocp-release:4.18.1-x86_64 "
                        "or by digest (as `oc adm release info` takes it)")
    parser.add_argument("--release", dest="release_flag", metavar="PULLSPEC",
                        help="the release image, as a flag (the same as RELEASE)")
    add_registry_flags(parser)
    parser.add_argument("--insecure", action="store_true", help="plain HTTP to the registry")
    parser.add_argument("--insecure-skip-tls-verify", action="store_true",
                        help="HTTPS without verifying the registry's certificate")
    parser.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text",
                        help="text (the pull spec, and with --kernel the kernel variables), json or yaml")
    parser.add_argument("--kernel", action="store_true",
                        help="also read the DTK's kernels (/etc/driver-toolkit-release.json, else its labels)")
    parser.add_argument("--use-oc", action="store_true",
                        help="ask `oc adm release info` instead (needs the `oc` extra and the oc binary; "
                        "--ca-file then applies to --kernel only)")
    parser.set_defaults(func=run, parser=parser)
    return parser


def _release(args: argparse.Namespace) -> str:
    """RELEASE or --release, not two different ones; a usage error at this subcommand's level."""
    positional, flag = args.release, args.release_flag
    if positional and flag and positional != flag:
        args.parser.error(f"RELEASE {positional!r} and --release {flag!r} differ: give the release image once")
    release = positional or flag
    if not release:
        args.parser.error("the release image is required: kmm-dtk dtk-image RELEASE")
    args.release_name = "RELEASE" if positional else "--release"  # errors name what was given
    return str(release)


def _setup(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """(release ref, client, auth, tls policy); bad arguments and files raise _Failure(EXIT_USAGE)."""
    from kmm_dtk.registry.client import LinkAuth, RegistryClient
    from kmm_dtk.registry.reference import ImageRef, ReferenceError
    from kmm_dtk.registry.tls import TLSPolicy
    from kmm_dtk.registry_flags import UsageError, registry_settings

    try:
        ref = ImageRef.parse(args.release)
    except ReferenceError as err:
        raise _Failure(f"{args.release_name}: {err}", EXIT_USAGE) from None
    try:  # the files are checked now: an argument error, not a lookup failure
        auth, trust = registry_settings(args)
    except UsageError as err:
        raise _Failure(str(err), EXIT_USAGE) from None
    tls = TLSPolicy(insecure=args.insecure, skip_verify=args.insecure_skip_tls_verify)
    # Whoever runs this named both the weakened link (--insecure...) and the credentials for it.
    return ref, RegistryClient(trust, auth), LinkAuth(auth, weakened=auth), tls


def _dtk_with_oc(args: argparse.Namespace, release: str) -> str:
    try:
        import openshift_client as oc  # optional extra "oc"
    except ImportError:
        raise _Failure("--use-oc needs the openshift-client package (pip install 'kmm-dtk[oc]') "
                       "and the oc binary on PATH", EXIT_USAGE) from None
    if shutil.which("oc") is None:
        raise _Failure("--use-oc needs the oc binary on PATH (not found); "
                       "drop --use-oc to read the release natively", EXIT_USAGE)
    cmd = ["release", "info", "--image-for=driver-toolkit", release]
    path, _ = auth_file(args)
    if path:
        cmd += ["-a", path]
    if args.insecure or args.insecure_skip_tls_verify:
        cmd.append("--insecure=true")
    result = oc.invoke("adm", cmd, no_namespace=True, auto_raise=False)
    if result.status() != 0:
        lines = [line.strip() for line in (result.err() or "").splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit status {result.status()}"
        raise _Failure(f"release {release}: oc adm release info: {detail}", EXIT_LOOKUP_FAILED)
    pull_spec = (result.out() or "").strip()
    if not pull_spec:
        raise _Failure(f"release {release}: oc adm release info printed no image", EXIT_LOOKUP_FAILED)
    return pull_spec.splitlines()[-1].strip()


def _lookup(args: argparse.Namespace) -> dict[str, Any]:
    from kmm_dtk.registry.client import RegistryError
    from kmm_dtk.registry.reference import ImageRef, ReferenceError
    from kmm_dtk.registry.release import DtkInspector, ReleaseLookupError, release_info

    ref, client, auth, tls = _setup(args)
    try:
        if args.use_oc:
            data: dict[str, Any] = {"release": str(ref), "dtkImage": _dtk_with_oc(args, args.release),
                                    "rhcosVersion": None, "version": None}
        else:
            try:
                info = release_info(client, ref, auth=auth, tls=tls)
            except (ReleaseLookupError, RegistryError) as err:
                raise _Failure(str(err), EXIT_LOOKUP_FAILED) from None
            data = {"release": info.release, "dtkImage": info.dtk_image, "rhcosVersion": info.rhcos_version,
                    "version": info.version}
        data["kernel"] = data["rtKernel"] = None
        if args.kernel:
            try:
                kernels = DtkInspector(client).kernels(ImageRef.parse(data["dtkImage"]), auth=auth, tls=tls)
            except ReferenceError as err:
                raise _Failure(f"release {data['release']}: driver-toolkit {err}", EXIT_LOOKUP_FAILED) from None
            except (RegistryError, ValueError) as err:
                raise _Failure(str(err), EXIT_LOOKUP_FAILED) from None
            data["kernel"], data["rtKernel"] = kernels.kernel, kernels.rt_kernel
        return data
    finally:
        client.close()


def run(args: argparse.Namespace, out: TextIO) -> int:
    args.release = _release(args)
    try:
        data = _lookup(args)
    except _Failure as err:
        message = clean_message(str(err))  # always one line, no library internals
        print(f"{PROG}: {message}", file=sys.stderr)
        return err.code
    if args.output in ("json", "yaml"):
        print_data(data, args.output, out)
    else:
        out.write(f"{data['dtkImage']}\n")
        if args.kernel:
            out.write(f"KERNEL_VERSION={data['kernel'] or ''}\n")
            out.write(f"RT_KERNEL_VERSION={data['rtKernel'] or ''}\n")
    return EXIT_OK
