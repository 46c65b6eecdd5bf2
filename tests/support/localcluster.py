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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kmm_dtk.dump import DumpError, load_files  # the same reader as `kmm-dtk plan`
from tests.support import demo_registry
from tests.support.binaries import AssetsError, build
from tests.support.cluster import REPO, api_client_from, install_crds
from tests.support.controlplane import ControlPlane, free_port
from tests.support.demo_registry import DemoRegistry
from tests.support.objects import load_objects

SAMPLE = REPO / "examples" / "design-cluster.yaml"


@contextmanager
def local_cluster(workdir: Path, kubeconfig: Path, files: list[str],
                  mirror: bool = False) -> Iterator[tuple[ControlPlane, DemoRegistry | None]]:
    """The control plane with the sample objects; with ``mirror``, also a local mirror registry
    holding the sample's DTKs and driver images, and the mirror sets and pull secrets for it."""
    objects = load_files(files)
    assets = build()
    shutil.rmtree(workdir, ignore_errors=True)
    with ControlPlane(workdir, assets) as plane:
        demo = demo_registry.prepare(workdir / "registry", objects) if mirror else None
        try:
            kubeconfig.parent.mkdir(parents=True, exist_ok=True)
            plane.admin_kubeconfig(kubeconfig)
            api = api_client_from(kubeconfig)
            install_crds(api)
            streams = [demo.stream] if demo else objects.imagestreams
            samples = objects.nodes + streams + objects.configmaps + objects.modules + (demo.extra if demo else [])
            for line in load_objects(api, samples):
                print(f"created {line}")
            api.close()
            print(f"\nkube-apiserver {plane.host} is ready (logs in {workdir}).")
            if demo:
                print(f"mirror registry https://{demo.server.host} (CA {demo.ca_file}) holds the DTKs and "
                      "driver images")
            print(f"  export KUBECONFIG={kubeconfig}", flush=True)
            yield plane, demo
        finally:
            if demo:
                demo.server.stop()


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
    parser.add_argument("--offline", action="store_true",
                        help="with --operator: no mirror registry; the operator runs with --assume-missing")
    parser.add_argument("--once", action="store_true", help="with --operator: stop once everything is shown")
    args = parser.parse_args(argv)
    mirror = args.operator and not args.offline and args.filename is None

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with local_cluster(args.workdir, args.kubeconfig, args.filename or [str(SAMPLE)], mirror) as (_, demo):
            operator = _start_operator(args.kubeconfig, demo) if args.operator else None
            steps = _demo_steps(args.kubeconfig, demo)
            print("Press Ctrl-C to stop.", flush=True)
            done = False
            while not stop.wait(1):  # a timed wait: signals are handled promptly on every platform
                if operator is None:
                    continue
                if operator.poll() is not None:
                    print(f"the operator exited with status {operator.returncode}", file=sys.stderr)
                    return 1
                if not done and next(steps, "done") == "done":
                    done = True
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


def _demo_steps(kubeconfig: Path, demo: DemoRegistry | None) -> Iterator[str]:
    """What ``make demo`` shows, one poll at a time: the Builds for the running kernels (with the
    mirror, also what the registry already held), then an upgrade starting and the Build made ahead."""
    wanted = 2 if demo else 3  # the header and a Build per kernel whose image is missing
    while len(_builds_table(kubeconfig)) < wanted:
        yield "waiting"
    api = api_client_from(kubeconfig)
    try:
        if demo is not None:
            module = load_files([str(SAMPLE)]).modules[0]
            while not _kernels_settled(demo_registry.kernel_table(api, module)):
                yield "waiting"
            print("\nModule simple-kmod/simple-kmod, per kernel (status.kernels):\n"
                  + "\n".join(demo_registry.kernel_table(api, module)), flush=True)
        print("\nBuilds created by the operator:\n" + "\n".join(_builds_table(kubeconfig)), flush=True)
        if demo is None:
            return
        release, kernel = demo_registry.start_upgrade(api, demo)
        print(f"\nThe cluster starts upgrading: ClusterVersion status.desired.image = {release}", flush=True)
        while not any(line.split()[1] == kernel for line in _builds_table(kubeconfig)[1:]):
            yield "waiting"
        table = _builds_table(kubeconfig)
        print(f"\nBuild for kernel {kernel}, made before any node runs it:\n"
              + "\n".join(line for i, line in enumerate(table) if i == 0 or kernel in line), flush=True)
    finally:
        api.close()


def _kernels_settled(table: list[str]) -> bool:
    rows = [line.split() for line in table[1:]]
    return len(rows) >= 2 and all(r[1] in ("Exists", "Pending", "Building", "Succeeded") for r in rows)


def _start_operator(kubeconfig: Path, demo: DemoRegistry | None) -> subprocess.Popen:
    metrics, health = free_port(), free_port()
    print(f"starting the operator: metrics on http://127.0.0.1:{metrics}/metrics, "
          f"health on http://127.0.0.1:{health}/readyz", flush=True)
    # Without the mirror, the sample's DTKs and driver images live on registries this machine cannot
    # reach (quay.io, the cluster's internal registry): the operator asks none and builds every kernel.
    registry = ["--ca-file", str(demo.ca_file), "--prebuild-upgrades"] if demo else ["--assume-missing"]
    return subprocess.Popen([sys.executable, "-m", "kmm_dtk", "run", "--kubeconfig", str(kubeconfig), *registry,
                             "--metrics-bind-address", f"127.0.0.1:{metrics}",
                             "--health-probe-bind-address", f"127.0.0.1:{health}"], cwd=REPO)


if __name__ == "__main__":
    sys.exit(main())
