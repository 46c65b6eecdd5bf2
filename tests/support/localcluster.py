"""``make cluster``: the test control plane in the foreground, loaded with sample objects, and
``make demo``: the same with the operator running against it.

Writes an admin kubeconfig to ``.cache/kubeconfig`` in the repository; Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from kmm_dtk.dump import DumpError, load_files  # the same reader as `kmm-dtk plan`
from tests.support.binaries import AssetsError, build
from tests.support.cluster import REPO, api_client_from, install_crds
from tests.support.controlplane import ControlPlane, free_port
from tests.support.objects import load_objects

SAMPLE = REPO / "examples" / "design-cluster.yaml"


@contextmanager
def local_cluster(workdir: Path, kubeconfig: Path, files: list[str]) -> Iterator[ControlPlane]:
    objects = load_files(files)
    assets = build()
    shutil.rmtree(workdir, ignore_errors=True)
    with ControlPlane(workdir, assets) as plane:
        kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        plane.admin_kubeconfig(kubeconfig)
        api = api_client_from(kubeconfig)
        install_crds(api)
        samples = objects.nodes + objects.imagestreams + objects.configmaps + objects.modules
        for line in load_objects(api, samples):
            print(f"created {line}")
        api.close()
        print(f"\nkube-apiserver {plane.host} is ready (logs in {workdir}).")
        print(f"  export KUBECONFIG={kubeconfig}", flush=True)
        yield plane


def _builds_table(kubeconfig: Path) -> list[str]:
    from kubernetes import client

    api = api_client_from(kubeconfig)
    items = client.CustomObjectsApi(api).list_cluster_custom_object("build.openshift.io", "v1", "builds")["items"]
    api.close()
    rows = [("BUILD", "KERNEL", "FROM (the DTK of the kernel's RHCOS)")]
    for b in sorted(items, key=lambda b: b["metadata"]["name"]):
        first_from = next((line.split()[1] for line in b["spec"]["source"]["dockerfile"].splitlines()
                           if line.upper().startswith("FROM ")), "-")
        rows.append((f"{b['metadata']['namespace']}/{b['metadata']['name']}",
                     b["metadata"]["annotations"].get("kmm-dtk.io/kernel", "-"), first_from))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}" for r in rows] if len(rows) > 1 else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make cluster / make demo", description=__doc__)
    parser.add_argument("-f", "--filename", action="append", metavar="FILE",
                        help="sample objects to load (default: examples/design-cluster.yaml)")
    parser.add_argument("--workdir", type=Path, default=REPO / ".cache" / "controlplane")
    parser.add_argument("--kubeconfig", type=Path, default=REPO / ".cache" / "kubeconfig")
    parser.add_argument("--operator", action="store_true", help="also run `kmm-dtk run` against it (make demo)")
    parser.add_argument("--once", action="store_true", help="with --operator: stop once the Builds are shown")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with local_cluster(args.workdir, args.kubeconfig, args.filename or [str(SAMPLE)]):
            operator = _start_operator(args.kubeconfig) if args.operator else None
            shown = False
            print("Press Ctrl-C to stop.", flush=True)
            while not stop.wait(1):  # a timed wait: signals are handled promptly on every platform
                if operator is None:
                    continue
                if operator.poll() is not None:
                    print(f"the operator exited with status {operator.returncode}", file=sys.stderr)
                    return 1
                if not shown:
                    table = _builds_table(args.kubeconfig)
                    if len(table) > 2:  # the sample Module targets two kernels
                        print("\nBuilds created by the operator:\n" + "\n".join(table), flush=True)
                        shown = True
                        if args.once:
                            break
            print("stopping...", flush=True)
            if operator is not None and operator.poll() is None:
                operator.send_signal(signal.SIGTERM)
                operator.wait(30)
    except (DumpError, AssetsError) as err:
        print(f"make cluster: {err}", file=sys.stderr)
        return 2
    return 0


def _start_operator(kubeconfig: Path) -> subprocess.Popen:
    metrics, health = free_port(), free_port()
    print(f"starting the operator: metrics on http://127.0.0.1:{metrics}/metrics, "
          f"health on http://127.0.0.1:{health}/readyz", flush=True)
    # The sample's DTKs and driver images live on registries this machine cannot reach (quay.io, the
    # cluster's internal registry): the demo asks none and builds every kernel.
    return subprocess.Popen([sys.executable, "-m", "kmm_dtk", "run", "--kubeconfig", str(kubeconfig),
                             "--assume-missing", "--metrics-bind-address", f"127.0.0.1:{metrics}",
                             "--health-probe-bind-address", f"127.0.0.1:{health}"], cwd=REPO)


if __name__ == "__main__":
    sys.exit(main())
