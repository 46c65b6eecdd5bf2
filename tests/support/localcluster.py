"""``make cluster``: the test control plane in the foreground, loaded with sample objects.

Writes an admin kubeconfig to ``.cache/kubeconfig`` in the repository; Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
from pathlib import Path

from kmm_dtk.dump import DumpError, load_files  # the same reader as `kmm-dtk plan`
from tests.support.binaries import AssetsError, build
from tests.support.cluster import REPO, api_client_from, install_crds
from tests.support.controlplane import ControlPlane
from tests.support.objects import load_objects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make cluster", description=__doc__)
    parser.add_argument("-f", "--filename", action="append", metavar="FILE",
                        help="sample objects to load (default: examples/design-cluster.yaml)")
    parser.add_argument("--workdir", type=Path, default=REPO / ".cache" / "controlplane")
    parser.add_argument("--kubeconfig", type=Path, default=REPO / ".cache" / "kubeconfig")
    args = parser.parse_args(argv)

    files = args.filename or [str(REPO / "examples" / "design-cluster.yaml")]
    try:
        objects = load_files(files)
        assets = build()
    except (DumpError, AssetsError) as err:
        print(f"make cluster: {err}", file=sys.stderr)
        return 2
    shutil.rmtree(args.workdir, ignore_errors=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with ControlPlane(args.workdir, assets) as plane:
        args.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        plane.admin_kubeconfig(args.kubeconfig)
        api = api_client_from(args.kubeconfig)
        install_crds(api)
        samples = objects.nodes + objects.imagestreams + objects.configmaps + objects.modules
        for line in load_objects(api, samples):
            print(f"created {line}")
        api.close()
        print(f"\nkube-apiserver {plane.host} is ready (logs in {args.workdir}).")
        print(f"  export KUBECONFIG={args.kubeconfig}")
        print("Press Ctrl-C to stop.", flush=True)
        while not stop.wait(1):  # a timed wait: signals are handled promptly on every platform
            pass
        print("stopping...", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
