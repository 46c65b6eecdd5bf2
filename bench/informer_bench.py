"""Informer benchmark: syncing 5,000 realistic Nodes from a real kube-apiserver.

Each variant runs in a fresh subprocess (so RSS is its own), twice: once timed, once under
tracemalloc for the bytes each cached Node keeps. The baseline is the ``kubernetes`` client's
typed models (``list_node`` then a typed watch), holding the same Nodes.

    python -m bench.informer_bench [--nodes 5000] [--runs 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

VARIANTS = {
    "projection": "Informer + NodeDecoder (msgspec projection, interned labels)",
    "json-trimmed": "Informer + JsonDecoder (all fields, trimmed, frozen)",
    "typed": "kubernetes typed models: list_node + typed watch (baseline)",
}


def _rss_kib() -> tuple[int, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _sync(variant: str, kubeconfig: str, selector: str):
    """Returns (seconds, holder) where holder keeps the cached Nodes alive."""
    from kubernetes import client, watch

    from kmm_dtk.kube.client import KubeClient, Resource, load_api_client
    from kmm_dtk.kube.decode import JsonDecoder, NodeDecoder
    from kmm_dtk.kube.informer import Informer

    api = load_api_client(kubeconfig)
    nodes = Resource("", "v1", "nodes", namespaced=False, kind="Node")
    started = time.perf_counter()
    if variant == "typed":
        core = client.CoreV1Api(api)
        listing = core.list_node(label_selector=selector, _request_timeout=(5, 300))
        held = {n.metadata.name: n for n in listing.items}
        elapsed = time.perf_counter() - started  # synced: the informer's clock stops at the same point
        # Then the typed watch from the list's resourceVersion, as an informer would keep open.
        stream = watch.Watch().stream(core.list_node, label_selector=selector,
                                      resource_version=listing.metadata.resource_version,
                                      timeout_seconds=1, _request_timeout=(5, 10))
        for _ in stream:
            pass
        return elapsed, held
    decoder = NodeDecoder() if variant == "projection" else JsonDecoder("Node")
    informer = Informer(KubeClient(api), nodes, decoder=decoder, label_selector=selector)
    informer.start()
    if not informer.wait_for_sync(600):
        raise RuntimeError("informer did not sync")
    elapsed = time.perf_counter() - started
    informer.stop()
    return elapsed, informer.store


def run_variant(variant: str, kubeconfig: str, selector: str, measure_memory: bool) -> dict:
    # Import cost is not part of the measurement.
    __import__("kmm_dtk.kube.informer")
    __import__("kubernetes.client")
    gc.collect()
    if measure_memory:
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
    seconds, held = _sync(variant, kubeconfig, selector)
    gc.collect()
    result = {"variant": variant, "seconds": seconds, "objects": len(held)}
    if measure_memory:
        after = tracemalloc.take_snapshot()
        retained = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        result["bytes_per_object"] = retained / max(1, len(held))
        tracemalloc.stop()
    rss, hwm = _rss_kib()
    result.update(rss_mib=rss / 1024, peak_rss_mib=hwm / 1024)
    return result


def _create_nodes(kubeconfig: str, count: int) -> float:
    from bench.nodes import RHCOS_PAIRS, node
    from kmm_dtk.kube.client import KubeClient, Resource, load_api_client

    kube = KubeClient(load_api_client(kubeconfig, pool_size=32), timeout=(5, 60))
    nodes = Resource("", "v1", "nodes", namespaced=False, kind="Node")

    def create(i: int) -> None:
        body = node(i, *RHCOS_PAIRS[i % len(RHCOS_PAIRS)])
        status = body.pop("status")
        created = kube.create(nodes, body)
        created["status"] = status
        kube.replace(nodes, created, subresource="status")

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(count)))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per variant (median reported)")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.variant:  # a child process
        print(json.dumps(run_variant(args.variant, args.kubeconfig, "bench=true", args.memory)))
        return 0

    from tests.support.binaries import build
    from tests.support.controlplane import ControlPlane

    with tempfile.TemporaryDirectory() as workdir, ControlPlane(Path(workdir), build()) as plane:
        kubeconfig = str(plane.kubeconfig)
        print(f"creating {args.nodes} Nodes (~19 KB of JSON each) ...", file=sys.stderr, flush=True)
        created_in = _create_nodes(kubeconfig, args.nodes)
        print(f"created in {created_in:.0f} s", file=sys.stderr, flush=True)
        results = {}
        for variant in VARIANTS:
            timed = [_child(variant, kubeconfig, memory=False) for _ in range(args.runs)]
            memory = _child(variant, kubeconfig, memory=True)
            results[variant] = {
                "seconds": statistics.median(r["seconds"] for r in timed),
                "seconds_all": [round(r["seconds"], 2) for r in timed],
                "objects": timed[0]["objects"],
                "bytes_per_object": memory["bytes_per_object"],
                "rss_mib": statistics.median(r["rss_mib"] for r in timed),
                "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in timed),
            }
            print(f"  {variant}: {results[variant]}", file=sys.stderr, flush=True)
    _print_table(results, args.nodes)
    return 0


def _child(variant: str, kubeconfig: str, memory: bool) -> dict:
    cmd = [sys.executable, "-m", "bench.informer_bench", "--variant", variant, "--kubeconfig", kubeconfig]
    out = subprocess.run(cmd + (["--memory"] if memory else []), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _print_table(results: dict, count: int) -> None:
    base = results["typed"]
    print(f"\nInformer sync of {count} Nodes from a real kube-apiserver (median of timed runs; "
          "bytes per Node by tracemalloc in a separate run)\n")
    header = (f"{'variant':<14} {'sync s':>8} {'runs':>20} {'vs typed':>9} {'bytes/Node':>11} {'RSS MiB':>8} "
              f"{'peak MiB':>9}")
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        speedup = base["seconds"] / r["seconds"]
        print(f"{name:<14} {r['seconds']:>8.2f} {str(r['seconds_all']):>20} {speedup:>8.1f}x "
              f"{r['bytes_per_object']:>11,.0f} {r['rss_mib']:>8.0f} {r['peak_rss_mib']:>9.0f}")
    print()
    for name, text in VARIANTS.items():
        print(f"  {name}: {text}")
    print("\nTargets: projection <= 1,536 bytes per Node and >= 5x faster sync than typed.")


if __name__ == "__main__":
    sys.exit(main())
