"""Operator benchmark on a real kube-apiserver: 5,000 Nodes on 20 kernel/RHCOS pairs, 200 Modules.

Measures, with the operator running as its own process (``kmm-dtk run``):
  1. cold start: from process start to every Build created (200 Modules x 20 kernels);
  2. steady state: API requests by verb over ``--steady-seconds`` (target: no LIST, no writes);
  3. upgrade wave: every Node moves to a new kernel/RHCOS; latency from a kernel's first Node
     update to each of its Builds (seen on a watch), p50/p99, and duplicate Builds;
  4. the operator's RSS (process_resident_memory_bytes) at the end.

    python -m bench.operator_bench [--nodes 5000] [--modules 200] [--pairs 20] [--steady-seconds 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.nodes import node
from kmm_dtk.kube.client import KubeClient, Resource, load_api_client
from kmm_dtk.operator.resources import BUILDS, CONFIGMAPS, IMAGESTREAMS, MODULES, NODES

NAMESPACES = [f"drivers-{i}" for i in range(10)]
DOCKERFILE = "ARG DTK_AUTO\nFROM ${DTK_AUTO} AS builder\nARG KERNEL_VERSION\nRUN make KVER=${KERNEL_VERSION}\n"


def pairs(count: int, wave: int) -> list[tuple[str, str, str]]:
    """(kernel, osImage, rhcos): distinct el9_6 kernels on distinct RHCOS builds."""
    out = []
    for j in range(count):
        rhcos = f"9.6.2025{(wave * 3 + 1):02d}{(j % 28) + 1:02d}-{j}"
        kernel = f"5.14.0-{570 + j}.{wave * 10 + 1}.1.el9_6.x86_64"
        out.append((kernel, f"Red Hat Enterprise Linux CoreOS {rhcos} (Plow)", rhcos))
    return out


def _metrics(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name, _, labels = name_labels.partition("{")
        parsed = tuple(sorted(tuple(kv.split("=", 1)) for kv in labels.rstrip("}").split(",") if "=" in kv))
        samples[(name, tuple((k, v.strip('"')) for k, v in parsed))] = float(value)
    return samples


def _requests_by_verb(samples) -> Counter:
    counts: Counter = Counter()
    for (name, labels), value in samples.items():
        if name == "kmm_dtk_api_requests_total":
            counts[dict(labels)["verb"]] += value
    return counts


def _created_builds(samples) -> float:
    return sum(v for (name, labels), v in samples.items() if name == "kmm_dtk_api_requests_total"
               and dict(labels).get("verb") == "CREATE" and dict(labels).get("resource") == "builds"
               and dict(labels).get("code") in ("201", "409"))


def setup(kube: KubeClient, args) -> None:
    first, second = pairs(args.pairs, 0), pairs(args.pairs, 1)
    tags = [{"name": r, "from": {"kind": "DockerImage", "name": f"quay.io/ocp/dtk@sha256:{i:064x}"}}
            for i, (_, _, r) in enumerate(first + second)]
    kube.create(Resource("", "v1", "namespaces", namespaced=False), {"metadata": {"name": "openshift"}})
    kube.create(IMAGESTREAMS, {"apiVersion": "image.openshift.io/v1", "kind": "ImageStream",
                               "metadata": {"name": "driver-toolkit", "namespace": "openshift"},
                               "spec": {"tags": tags}}, "openshift")

    def create_node(i: int) -> None:
        kernel, os_image, rhcos = first[i % len(first)]
        body = node(i, kernel, os_image, rhcos)
        status = body.pop("status")
        created = kube.create(NODES, body)
        created["status"] = status
        kube.replace(NODES, created, subresource="status")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create_node, range(args.nodes)))
    for ns in NAMESPACES:
        kube.create(Resource("", "v1", "namespaces", namespaced=False), {"metadata": {"name": ns}})
        kube.create(CONFIGMAPS, {"metadata": {"name": "dockerfile"}, "data": {"dockerfile": DOCKERFILE}}, ns)
    for m in range(args.modules):
        ns = NAMESPACES[m % len(NAMESPACES)]
        kube.create(MODULES, {
            "apiVersion": "kmm.sigs.x-k8s.io/v1beta1", "kind": "Module",
            "metadata": {"name": f"kmod-{m}", "namespace": ns},
            "spec": {"selector": {"node-role.kubernetes.io/worker": ""}, "moduleLoader": {"container": {
                "modprobe": {"moduleName": f"kmod_{m}"},
                "kernelMappings": [{"regexp": r"^.+\.el9_6\.x86_64$",
                                    "containerImage": f"registry.example.com/{ns}/kmod-{m}:${{KERNEL_FULL_VERSION}}",
                                    "build": {"dockerfileConfigMap": {"name": "dockerfile"}}}]}}},
        }, ns)


class Watch:
    """Records when each key is first seen on a watch (as the operator sees the same events)."""

    def __init__(self, kube: KubeClient, resource: Resource, key) -> None:
        self.kube = kube
        self.key = key
        self.seen: dict = {}
        self.lock = threading.Lock()
        rv = kube.list(resource, limit=1)["metadata"]["resourceVersion"]
        self.stream = kube.watch(resource.path(), {"resourceVersion": rv, "timeoutSeconds": 3600}, timeout=(5, 3600))
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for line in self.stream.lines():
                now = time.monotonic()
                key = self.key(json.loads(line))
                if key is not None:
                    with self.lock:
                        self.seen.setdefault(key, now)
        except Exception:  # noqa: BLE001 - the watch ends with the control plane
            return

    def count(self) -> int:
        with self.lock:
            return len(self.seen)


def build_key(event: dict):
    if event["type"] != "ADDED":
        return None
    meta = event["object"]["metadata"]
    return (f"{meta['namespace']}/{meta['ownerReferences'][0]['name']}", meta["annotations"]["kmm-dtk.io/kernel"])


def node_kernel_key(event: dict):
    """The first Node event carrying each kernel: when the cluster first runs it."""
    return event["object"].get("status", {}).get("nodeInfo", {}).get("kernelVersion") if event["type"] == "MODIFIED" \
        else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--modules", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--steady-seconds", type=float, default=300)
    parser.add_argument("--operator-log", default="/tmp/kmm-dtk-bench-operator.log")
    args = parser.parse_args()
    expected = args.modules * args.pairs

    from tests.support.binaries import build
    from tests.support.controlplane import ControlPlane, free_port

    with tempfile.TemporaryDirectory() as workdir, ControlPlane(Path(workdir), build()) as plane:
        from tests.support.cluster import api_client_from, install_crds

        install_crds(api_client_from(plane.kubeconfig))
        kube = KubeClient(load_api_client(str(plane.kubeconfig), pool_size=32), timeout=(5, 60))
        print(f"setting up {args.nodes} Nodes, {args.modules} Modules ...", file=sys.stderr, flush=True)
        setup_started = time.monotonic()
        setup(kube, args)
        print(f"set up in {time.monotonic() - setup_started:.0f} s", file=sys.stderr, flush=True)
        watch = Watch(kube, BUILDS, build_key)
        metrics_port, health_port = free_port(), free_port()
        started = time.monotonic()
        operator = subprocess.Popen(
            [sys.executable, "-m", "kmm_dtk", "run", "--kubeconfig", str(plane.kubeconfig), "--workers",
             str(args.workers), "--metrics-bind-address", f"127.0.0.1:{metrics_port}",
             "--health-probe-bind-address", f"127.0.0.1:{health_port}", "--log-level", "warning",
             # the API side is measured here; bench.registry_bench measures the registry side
             "--assume-missing"],
            stderr=open(args.operator_log, "w"))
        try:
            results = run_phases(args, kube, watch, operator, metrics_port, started, expected)
        finally:
            operator.terminate()
            try:
                operator.wait(60)  # it drains its queues first
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()
    print_table(results, args)
    return 0


def _wait(predicate, timeout: float, what: str, poll: float = 0.05, progress=None):
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + 10
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if progress and time.monotonic() >= next_report:
            print(f"  {what}: {progress()}", file=sys.stderr, flush=True)
            next_report += 10
        time.sleep(poll)  # polling a benchmark's own progress, not synchronising a test
    raise TimeoutError(what)


def run_phases(args, kube: KubeClient, watch: Watch, operator, port: int, started: float, expected: int) -> dict:
    results: dict = {}
    peak_rss = 0.0

    def scrape():
        nonlocal peak_rss
        try:
            samples = _metrics(port)
        except OSError:
            return None
        peak_rss = max(peak_rss, samples.get(("process_resident_memory_bytes", ()), 0.0))
        return samples

    _wait(lambda: watch.count() >= expected, 900, "cold start builds", progress=lambda: f"{watch.count()}/{expected}")
    results["cold_start_s"] = time.monotonic() - started
    samples = _wait(scrape, 30, "metrics")
    results["cold_requests"] = dict(_requests_by_verb(samples))
    # Let the status writes and Events that follow the Builds settle before measuring quiet.
    previous = None
    while True:
        time.sleep(2)
        current = _requests_by_verb(scrape() or {})
        if current == previous:
            break
        previous = current
    before = _requests_by_verb(scrape())
    time.sleep(args.steady_seconds)
    after = _requests_by_verb(scrape())
    results["steady"] = {verb: after[verb] - before.get(verb, 0) for verb in after if after[verb] - before.get(verb, 0)}

    # Upgrade wave: every node to the next kernel/RHCOS.
    second = pairs(args.pairs, 1)
    first_patch: dict[str, float] = {}
    lock = threading.Lock()

    def upgrade(i: int) -> None:
        kernel, os_image, rhcos = second[i % len(second)]
        name = f"worker-{i:05d}.bench.example.com"
        with lock:
            first_patch.setdefault(kernel, time.monotonic())
        kube.patch(NODES, name, {"status": {"nodeInfo": {"kernelVersion": kernel, "osImage": os_image}}},
                   subresource="status")

    node_watch = Watch(kube, NODES, node_kernel_key)
    wave_started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(upgrade, range(args.nodes)))
    results["wave_patch_s"] = time.monotonic() - wave_started
    _wait(lambda: watch.count() >= 2 * expected, 900, "wave builds",
          progress=lambda: f"{watch.count() - expected}/{expected}")
    results["wave_total_s"] = time.monotonic() - wave_started
    new_kernels = {k for k, _, _ in second}
    # From the first Node event carrying the kernel (what the operator reacts to) to each Build's event.
    latencies = sorted(t - node_watch.seen[kernel] for (module, kernel), t in watch.seen.items()
                       if kernel in new_kernels)
    results["patch_to_event_ms"] = 1000 * statistics.median(node_watch.seen[k] - first_patch[k] for k in new_kernels)
    results["latency_ms"] = {"p50": 1000 * statistics.median(latencies),
                             "p99": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
                             "max": 1000 * latencies[-1], "n": len(latencies)}
    per_pair: Counter = Counter()
    token = ""
    while True:
        page = kube.list(BUILDS, limit=1000, **({"continue": token} if token else {}))
        for b in page["items"]:
            per_pair[(b["metadata"]["namespace"], b["metadata"]["ownerReferences"][0]["name"],
                      b["metadata"]["annotations"]["kmm-dtk.io/kernel"])] += 1
        token = page["metadata"].get("continue", "")
        if not token:
            break
    results["builds"] = sum(per_pair.values())
    results["duplicates"] = sum(n - 1 for n in per_pair.values() if n > 1)
    final = scrape() or {}
    results["rss_mib"] = final.get(("process_resident_memory_bytes", ()), 0) / 2**20
    results["peak_rss_mib"] = peak_rss / 2**20
    def mean(metric: str, label: str, value: str) -> float:
        total = final.get((f"{metric}_sum", ((label, value),)), 0.0)
        count = final.get((f"{metric}_count", ((label, value),)), 0.0)
        return 1000 * total / count if count else 0.0

    results["reconcile_ms"] = {c: mean("controller_runtime_reconcile_time_seconds", "controller", c)
                               for c in ("node", "module")}
    results["queue_wait_ms"] = {q: mean("workqueue_queue_duration_seconds", "name", q) for q in ("nodes", "modules")}
    results["api_ms"] = {v: mean("kmm_dtk_api_request_duration_seconds", "verb", v) for v in ("CREATE", "PATCH")}
    results["conflicts"] = sum(v for (name, labels), v in final.items() if name == "kmm_dtk_api_requests_total"
                               and dict(labels).get("code") == "409")
    return results


def print_table(r: dict, args) -> None:
    print(f"\nOperator on a real kube-apiserver: {args.nodes} Nodes on {args.pairs} kernel/RHCOS pairs, "
          f"{args.modules} Modules ({args.modules * args.pairs} Builds per wave), {args.workers} workers\n")
    rows = [
        ("cold start: process start -> all Builds created", f"{r['cold_start_s']:.1f} s", "<= 10 s"),
        ("upgrade wave: node event -> Build, p50", f"{r['latency_ms']['p50']:.0f} ms", ""),
        ("upgrade wave: node event -> Build, p99", f"{r['latency_ms']['p99']:.0f} ms", "<= 100 ms"),
        ("upgrade wave: node event -> Build, max", f"{r['latency_ms']['max']:.0f} ms", ""),
        ("upgrade wave: time to patch all Nodes (the load)", f"{r['wave_patch_s']:.1f} s", ""),
        ("upgrade wave: Node PATCH sent -> its event seen, p50", f"{r['patch_to_event_ms']:.0f} ms", ""),
        ("upgrade wave: first patch -> last Build", f"{r['wave_total_s']:.1f} s", ""),
        ("duplicate Builds (same Module and kernel)", f"{r['duplicates']}", "0"),
        ("Builds in the cluster after the wave", f"{r['builds']}", ""),
        (f"steady state, {args.steady_seconds:.0f} s: requests by verb", json.dumps(r["steady"]) or "{}",
         "no LIST, no writes"),
        ("cold start: requests by verb", json.dumps({k: int(v) for k, v in r["cold_requests"].items()}), ""),
        ("409 Conflict/AlreadyExists answers", f"{int(r['conflicts'])}", ""),
        ("mean reconcile time node / module",
         f"{r['reconcile_ms']['node']:.1f} / {r['reconcile_ms']['module']:.1f} ms", ""),
        ("mean queue wait nodes / modules",
         f"{r['queue_wait_ms']['nodes']:.1f} / {r['queue_wait_ms']['modules']:.1f} ms", ""),
        ("mean API latency CREATE / PATCH", f"{r['api_ms']['CREATE']:.1f} / {r['api_ms']['PATCH']:.1f} ms", ""),
        ("operator RSS at the end / peak seen", f"{r['rss_mib']:.0f} / {r['peak_rss_mib']:.0f} MiB", "<= 150 MB"),
    ]
    width = max(len(row[0]) for row in rows)
    vwidth = max(len(row[1]) for row in rows)
    print(f"{'measure':<{width}}  {'value':<{vwidth}}  target")
    print("-" * (width + vwidth + 20))
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<{vwidth}}  {target}")


if __name__ == "__main__":
    sys.exit(main())
