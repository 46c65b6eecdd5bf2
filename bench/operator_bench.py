"""Operator benchmark on a real kube-apiserver: 5,000 Nodes on 20 kernel/RHCOS pairs, 200 Modules.

A real cluster's object population is created first (namespaces with their CA ConfigMaps, trusted-CA
bundles, other ConfigMaps, Builds of other applications), then the API server's ceiling is measured
on the same control plane: the Builds the cold start will create, with the bodies the operator sends
(its own ``plan_module`` and ``build_object``), created at the operator's write concurrency. With the
operator running as its own process (``kmm-dtk run``) it measures, each time figure beside its
ceiling:
  1. cold start: from process start to every Build created (Modules x kernels);
  2. steady state: API requests by verb over ``--steady-seconds`` (target: no LIST, no writes);
  3. single Nodes joining an idle cluster, each on a kernel no other Node runs: from the Node's
     event to the last of its Builds, per trial;
  4. ``--waves`` upgrade waves in a row, every Node moving to the next kernel/RHCOS set; the bench
     completes the Builds (as the build controller would) so that garbage collection removes those
     of kernels gone between waves; latency from a kernel's first Node event to each Build, the
     drain (last Node event -> last Build), RSS and the Builds kept after each wave;
  5. operator CPU per 1,000 Builds created, mean reconcile and queue times.

The last line of the output is one JSON object with the figures (``bench.scale`` reads it).

    python -m bench.operator_bench [--nodes 5000] [--modules 200] [--pairs 20] [--steady-seconds 300]
        [--waves 2] [--trials 50] [--write-concurrency 16] [--population-scale 1] [--no-population]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.nodes import node
from kmm_dtk.core.plan import Action, plan_module, snapshot_from_objects
from kmm_dtk.kube.client import ApiError, KubeClient, Resource, load_api_client
from kmm_dtk.operator.builds import KERNEL_ANNOTATION, MODULE_ANNOTATION, build_object
from kmm_dtk.operator.resources import BUILDS, CONFIGMAPS, IMAGESTREAMS, MANAGED_BY, MANAGED_BY_LABEL, MODULES, NODES

NAMESPACES_RESOURCE = Resource("", "v1", "namespaces", namespaced=False)
NAMESPACES = [f"drivers-{i}" for i in range(10)]
DOCKERFILE = "ARG DTK_AUTO\nFROM ${DTK_AUTO} AS builder\nARG KERNEL_VERSION\nRUN make KVER=${KERNEL_VERSION}\n"
TRIAL_WAVE = 99  # the pair set of the single-node trials' kernels: no wave reaches it
SCRATCH = "bench-ceiling"  # where the ceiling's Builds are created, before the operator starts
TRIAL_INDEX = 90000  # trial Nodes are worker-9xxxx: no name of the bench's Nodes


def pairs(count: int, wave: int) -> list[tuple[str, str, str]]:
    """(kernel, osImage, rhcos) of pair set ``wave`` (0: the cold start, 1..N: upgrade waves):
    distinct el9_6 kernels on distinct RHCOS builds, none shared between two sets."""
    assert 0 <= wave < 100
    out = []
    for j in range(count):
        rhcos = f"9.6.2025{wave:02d}{(j % 28) + 1:02d}-{j}"
        kernel = f"5.14.0-{570 + j}.{wave * 10 + 1}.1.el9_6.x86_64"
        out.append((kernel, f"Red Hat Enterprise Linux CoreOS {rhcos} (Plow)", rhcos))
    return out


# -- metrics ------------------------------------------------------------------------------------


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _metrics(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name, _, labels = name_labels.partition("{")
        parsed = sorted(tuple(kv.split("=", 1)) for kv in labels.rstrip("}").split(",") if "=" in kv)
        samples[(name, tuple((k, v.strip('"')) for k, v in parsed))] = float(value)
    return samples


def _requests_by_verb(samples: Samples) -> dict[str, float]:
    counts: dict[str, float] = {}
    for (name, labels), value in samples.items():
        if name == "kmm_dtk_api_requests_total":
            verb = dict(labels)["verb"]
            counts[verb] = counts.get(verb, 0.0) + value
    return counts


def _sum_where(samples: Samples, metric: str, **labels: str) -> tuple[float, bool]:
    """The sum of ``metric`` over the series carrying ``labels`` (other labels free), and whether any did."""
    total, found = 0.0, False
    for (name, series), value in samples.items():
        if name == metric and labels.items() <= dict(series).items():
            total, found = total + value, True
    return total, found


def mean_ms(samples: Samples, metric: str, *label_sets: dict[str, str]) -> float:
    """Mean of a histogram in ms over the first of ``label_sets`` present: metric labels change
    between versions (e.g. workqueue ``name`` from ``nodes`` to controller-runtime's ``node``)."""
    for labels in label_sets:
        count, found = _sum_where(samples, f"{metric}_count", **labels)
        if found:
            total, _ = _sum_where(samples, f"{metric}_sum", **labels)
            return 1000 * total / count if count else 0.0
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, from /proc (the same figure as process_cpu_seconds_total)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024
    return 0.0


# -- cluster objects ----------------------------------------------------------------------------


def module_body(m: int) -> dict[str, Any]:
    ns = NAMESPACES[m % len(NAMESPACES)]
    return {
        "apiVersion": "kmm.sigs.x-k8s.io/v1beta1", "kind": "Module",
        "metadata": {"name": f"kmod-{m}", "namespace": ns},
        "spec": {"selector": {"node-role.kubernetes.io/worker": ""}, "moduleLoader": {"container": {
            "modprobe": {"moduleName": f"kmod_{m}"},
            "kernelMappings": [{"regexp": r"^.+\.el9_6\.x86_64$",
                                "containerImage": f"registry.example.com/{ns}/kmod-{m}:${{KERNEL_FULL_VERSION}}",
                                "build": {"dockerfileConfigMap": {"name": "dockerfile"}}}]}}},
    }


def dockerfile_configmap(ns: str) -> dict[str, Any]:
    return {"metadata": {"name": "dockerfile", "namespace": ns}, "data": {"dockerfile": DOCKERFILE}}


def imagestream(args: argparse.Namespace) -> dict[str, Any]:
    """The DTK ImageStream: a tag for the RHCOS of every wave's pairs and of every trial's."""
    rhcos = [r for w in range(args.waves + 1) for _, _, r in pairs(args.pairs, w)]
    rhcos += [r for _, _, r in pairs(args.trials, TRIAL_WAVE)]
    tags = [{"name": r, "from": {"kind": "DockerImage", "name": f"quay.io/ocp/dtk@sha256:{i:064x}"}}
            for i, r in enumerate(rhcos)]
    return {"apiVersion": "image.openshift.io/v1", "kind": "ImageStream",
            "metadata": {"name": "driver-toolkit", "namespace": "openshift"}, "spec": {"tags": tags}}


def create_node(kube: KubeClient, index: int, pair: tuple[str, str, str], with_status: bool = False) -> None:
    """Registers a Node. ``with_status``: in one create, as a kubelet registering does (one event
    carrying the kernel); otherwise created then given its status, as the bench's fleet was."""
    kernel, os_image, rhcos = pair
    body = node(index, kernel, os_image, rhcos)
    if with_status:
        kube.create(NODES, body)
        return
    status = body.pop("status")
    created = kube.create(NODES, body)
    created["status"] = status
    kube.replace(NODES, created, subresource="status")


def setup(kube: KubeClient, args: argparse.Namespace) -> None:
    first = pairs(args.pairs, 0)
    kube.create(NAMESPACES_RESOURCE, {"metadata": {"name": "openshift"}})
    kube.create(IMAGESTREAMS, imagestream(args), "openshift")
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: create_node(kube, i, first[i % len(first)]), range(args.nodes)))
    for ns in NAMESPACES:
        kube.create(NAMESPACES_RESOURCE, {"metadata": {"name": ns}})
        kube.create(CONFIGMAPS, dockerfile_configmap(ns), ns)
    for m in range(args.modules):
        body = module_body(m)
        kube.create(MODULES, body, body["metadata"]["namespace"])


def _pem(rng: random.Random, der_bytes: int) -> str:
    """A certificate-shaped PEM block (base64 of random bytes, 64 columns)."""
    text = base64.b64encode(rng.randbytes(der_bytes)).decode()
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def foreign_build(i: int, ns: str) -> dict[str, Any]:
    """A Build of another application (~2 KB): Docker strategy, git source, an ImageStreamTag output,
    the labels and annotations a BuildConfig gives its Builds; no kmm-dtk label."""
    app = f"app-{i % 7}"
    number = i // 7 + 1
    commit = f"{random.Random(i).getrandbits(160):040x}"
    return {
        "apiVersion": "build.openshift.io/v1", "kind": "Build",
        "metadata": {
            "name": f"{app}-{number}", "namespace": ns,
            "labels": {"app": app, "app.kubernetes.io/component": app, "app.kubernetes.io/instance": app,
                       "buildconfig": app, "openshift.io/build-config.name": app,
                       "openshift.io/build.start-policy": "Serial"},
            "annotations": {"openshift.io/build-config.name": app, "openshift.io/build.number": str(number),
                            "openshift.io/build.pod-name": f"{app}-{number}-build",
                            "openshift.io/generated-by": "OpenShiftNewApp"},
            "ownerReferences": [{"apiVersion": "build.openshift.io/v1", "kind": "BuildConfig", "name": app,
                                 "uid": f"0000{i:08x}-0000-4000-8000-{i:012x}", "controller": True}],
        },
        "spec": {
            "serviceAccount": "builder",
            "source": {"type": "Git", "git": {"uri": f"https://git.example.com/{ns}/{app}.git", "ref": "main"},
                       "contextDir": "/", "secrets": [{"secret": {"name": "ca-bundle"}, "destinationDir": "certs"}]},
            "revision": {"type": "Git", "git": {
                "commit": commit, "author": {"name": "Dev Eloper", "email": "dev@example.com"},
                "committer": {"name": "Dev Eloper", "email": "dev@example.com"},
                "message": f"Bump dependencies and fix the health check of {app} (#{number})"}},
            "strategy": {"type": "Docker", "dockerStrategy": {
                "from": {"kind": "ImageStreamTag", "namespace": "openshift", "name": "ubi9:latest"},
                "dockerfilePath": "Containerfile", "pullSecret": {"name": "builder-dockercfg-x7k2p"},
                "env": [{"name": "GOFLAGS", "value": "-mod=vendor"}, {"name": "HTTP_PROXY", "value": ""},
                        {"name": "BUILD_LOGLEVEL", "value": "2"}],
                "buildArgs": [{"name": "VERSION", "value": f"1.{number}.0"}]}},
            "output": {"to": {"kind": "ImageStreamTag", "name": f"{app}:latest"},
                       "pushSecret": {"name": "builder-dockercfg-x7k2p"}},
            "resources": {"limits": {"cpu": "2", "memory": "4Gi"}, "requests": {"cpu": "500m", "memory": "1Gi"}},
            "postCommit": {"script": "make test-unit"},
            "triggeredBy": [{"message": "Image change", "imageChangeBuild": {
                "imageID": "image-registry.openshift-image-registry.svc:5000/openshift/ubi9@sha256:"
                           f"{commit}{commit[:24]}",
                "fromRef": {"kind": "ImageStreamTag", "namespace": "openshift", "name": "ubi9:latest"}}}],
        },
    }


def populate(kube: KubeClient, args: argparse.Namespace) -> dict[str, Any]:
    """A real cluster's objects the operator's informers also see: namespaces with their CA
    ConfigMaps, trusted-CA bundles (~200 KB), other ConfigMaps, Builds of other applications."""
    if not args.population:
        return {"namespaces": 0, "configmaps": 0, "ca_bundles": 0, "foreign_builds": 0}
    scale = args.population_scale
    n_ns, n_bundles = max(1, round(300 * scale)), max(1, round(100 * scale))
    n_small, n_builds = max(1, round(3000 * scale)), max(1, round(20000 * scale))
    rng = random.Random(7)
    root_ca = _pem(rng, 1080)
    service_ca = _pem(rng, 900)
    bundle = "".join(_pem(rng, 1100) for _ in range(135))
    namespaces = [f"app-ns-{i:03d}" for i in range(n_ns)]

    def make_namespace(ns: str) -> None:
        kube.create(NAMESPACES_RESOURCE, {"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}})
        kube.create(CONFIGMAPS, {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": root_ca}}, ns)
        kube.create(CONFIGMAPS, {"metadata": {"name": "openshift-service-ca.crt", "annotations": {
            "service.beta.openshift.io/inject-cabundle": "true"}}, "data": {"service-ca.crt": service_ca}}, ns)

    def make_bundle(i: int) -> None:
        kube.create(CONFIGMAPS, {"metadata": {"name": f"trusted-ca-{i}", "labels": {
            "config.openshift.io/inject-trusted-cabundle": "true"}}, "data": {"ca-bundle.crt": bundle}},
            namespaces[i % n_ns])

    def make_small(i: int) -> None:
        data = {"LOG_LEVEL": "info", "FEATURE_FLAGS": f"a,b,c{i % 5}", "config.yaml":
                f"server:\n  port: {8000 + i % 100}\n  workers: 4\ndatabase:\n  host: db-{i % 11}.svc\n"}
        kube.create(CONFIGMAPS, {"metadata": {"name": f"app-config-{i}", "labels": {"app": f"app-{i % 7}"}},
                                 "data": data}, namespaces[i % n_ns])

    def make_build(i: int) -> None:
        ns = namespaces[i % n_ns]
        kube.create(BUILDS, foreign_build(i // n_ns, ns), ns)

    started = time.monotonic()
    with ThreadPoolExecutor(args.population_threads) as pool:
        list(pool.map(make_namespace, namespaces))
        list(pool.map(make_bundle, range(n_bundles)))
        list(pool.map(make_small, range(n_small)))
        list(pool.map(make_build, range(n_builds)))
    stored = kube.list(BUILDS, namespaces[0], limit=1)["items"][0]
    return {"namespaces": n_ns, "configmaps": 2 * n_ns + n_bundles + n_small, "ca_bundles": n_bundles,
            "ca_bundle_bytes": len(bundle), "foreign_builds": n_builds, "foreign_build_bytes": len(json.dumps(stored)),
            "foreign_build_body_bytes": len(json.dumps(foreign_build(0, namespaces[0]))),
            "seconds": time.monotonic() - started}


# -- the ceiling --------------------------------------------------------------------------------


def planned_builds(kube: KubeClient, args: argparse.Namespace, kernel_pairs: list[tuple[str, str, str]]) -> list[dict]:
    """The Builds the operator would create for ``kernel_pairs``, made by its own ``plan_module`` and
    ``build_object`` from the Modules as stored (their uid owns the Builds) and the bench's
    ConfigMaps and ImageStream, one Node per kernel standing for those that run it."""
    nodes = [node(TRIAL_INDEX + j, kernel, os_image, rhcos) for j, (kernel, os_image, rhcos) in enumerate(kernel_pairs)]
    snapshot, _ = snapshot_from_objects(nodes, imagestream(args), [dockerfile_configmap(ns) for ns in NAMESPACES],
                                        ("openshift", "driver-toolkit"))
    bodies = []
    for m in range(args.modules):
        ns = NAMESPACES[m % len(NAMESPACES)]
        module = kube.get(MODULES, f"kmod-{m}", ns)
        for entry in plan_module(module, snapshot):
            if entry.action is Action.BUILD:
                bodies.append(build_object(entry, module))
    return bodies


def create_all(kube: KubeClient, bodies: list[dict], namespace: str, concurrency: int) -> float:
    """Seconds to create ``bodies`` in ``namespace`` with ``concurrency`` writes in flight."""
    def create(body: dict) -> None:
        body = {**body, "metadata": {**body["metadata"], "namespace": namespace}}
        kube.create(BUILDS, body, namespace)

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(create, bodies))
    return time.monotonic() - started


def remove_namespace(kube: KubeClient, namespace: str, timeout: float = 300) -> None:
    """Delete a namespace and wait for it to be gone. No namespace controller runs beside this API
    server, so the bench does its part: empties the namespace, then clears its finalizer."""
    kube.request("DELETE", BUILDS.path(namespace))  # deletecollection
    kube.delete(NAMESPACES_RESOURCE, namespace)
    body = kube.get(NAMESPACES_RESOURCE, namespace)
    body["spec"]["finalizers"] = []
    kube.request("PUT", f"/api/v1/namespaces/{namespace}/finalize", body=body)

    def gone() -> bool:
        try:
            kube.get(NAMESPACES_RESOURCE, namespace)
        except ApiError as err:
            return err.status == 404
        return False

    _wait(gone, timeout, f"namespace {namespace} gone", poll=0.2)


def measure_ceiling(kube: KubeClient, args: argparse.Namespace) -> dict[str, Any]:
    """Creates, before the operator starts, the cold start's Builds and (several times) a single
    trial's, at the operator's write concurrency, in a scratch namespace then removed."""
    cold = planned_builds(kube, args, pairs(args.pairs, 0))
    reps = max(1, min(5, args.trials))
    trial_pairs = pairs(max(reps, args.trials), TRIAL_WAVE)[:reps]
    trial_bodies = planned_builds(kube, args, trial_pairs)
    kube.create(NAMESPACES_RESOURCE, {"metadata": {"name": SCRATCH}})
    trial_times = []
    for kernel, _, _ in trial_pairs:
        one = [b for b in trial_bodies if b["metadata"]["annotations"][KERNEL_ANNOTATION] == kernel]
        trial_times.append(create_all(kube, one, SCRATCH, args.write_concurrency))
    cold_s = create_all(kube, cold, SCRATCH, args.write_concurrency)
    started = time.monotonic()
    remove_namespace(kube, SCRATCH)
    return {"ceiling_s": cold_s, "ceiling_builds": len(cold), "trial_ceiling_ms": 1000 * statistics.median(trial_times),
            "trial_ceiling_builds": len(trial_bodies) // reps, "trial_ceiling_reps": reps,
            "bytes_per_build": len(json.dumps(cold[0])) if cold else 0,
            "scratch_removal_s": time.monotonic() - started}


# -- watches ------------------------------------------------------------------------------------


class Watch:
    """One watch from now on; subclasses record what they need from each event (as the operator
    sees the same events)."""

    def __init__(self, kube: KubeClient, resource: Resource) -> None:
        self.lock = threading.Lock()
        rv = kube.list(resource, limit=1)["metadata"]["resourceVersion"]
        self.stream = kube.watch(resource.path(), {"resourceVersion": rv, "timeoutSeconds": 7200},
                                 timeout=(5, 7200))
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for line in self.stream.lines():
                now = time.monotonic()
                event = json.loads(line)
                with self.lock:
                    self.record(event, now)
        except Exception:  # noqa: BLE001 - the watch ends with the control plane
            return

    def record(self, event: dict, now: float) -> None:
        raise NotImplementedError


class BuildWatch(Watch):
    """kmm-dtk's Builds: when each (Module, kernel) was first created, its name, and the Builds live."""

    def __init__(self, kube: KubeClient) -> None:
        self.seen: dict[tuple[str, str], float] = {}
        self.names: dict[tuple[str, str], tuple[str, str]] = {}
        self.live: set[tuple[str, str]] = set()
        super().__init__(kube, BUILDS)

    def record(self, event: dict, now: float) -> None:
        meta = event["object"].get("metadata", {})
        if (meta.get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
            return
        ident = (meta["namespace"], meta["name"])
        if event["type"] == "DELETED":
            self.live.discard(ident)
        elif event["type"] == "ADDED":
            self.live.add(ident)
            annotations = meta.get("annotations") or {}
            key = (f"{meta['namespace']}/{annotations.get(MODULE_ANNOTATION)}", annotations.get(KERNEL_ANNOTATION, ""))
            self.seen.setdefault(key, now)
            self.names.setdefault(key, ident)

    def count(self, kernels: set[str] | None = None) -> int:
        with self.lock:
            return len(self.seen) if kernels is None else sum(1 for _, k in self.seen if k in kernels)

    def times(self, kernels: set[str]) -> dict[tuple[str, str], float]:
        with self.lock:
            return {key: t for key, t in self.seen.items() if key[1] in kernels}

    def refs(self, kernels: set[str]) -> list[tuple[str, str]]:
        with self.lock:
            return [ident for key, ident in self.names.items() if key[1] in kernels]

    def live_count(self) -> int:
        with self.lock:
            return len(self.live)


class NodeWatch(Watch):
    """First and last event (added or modified) carrying each kernel: when the cluster first runs it,
    and when the last Node of a wave moved to it."""

    def __init__(self, kube: KubeClient) -> None:
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        super().__init__(kube, NODES)

    def record(self, event: dict, now: float) -> None:
        if event["type"] not in ("ADDED", "MODIFIED"):
            return
        kernel = event["object"].get("status", {}).get("nodeInfo", {}).get("kernelVersion")
        if kernel:
            self.first.setdefault(kernel, now)
            self.last[kernel] = now

    def seen(self, kernel: str) -> float | None:
        with self.lock:
            return self.first.get(kernel)


def complete_builds(kube: KubeClient, refs: Iterable[tuple[str, str]], concurrency: int) -> None:
    """What the build controller would do once the image is pushed: phase Complete, with the times
    garbage collection orders Builds by. No build controller runs beside this API server."""
    def complete(ref: tuple[str, str]) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            kube.patch(BUILDS, ref[1], {"status": {"phase": "Complete", "startTimestamp": now,
                                                   "completionTimestamp": now}}, ref[0], subresource="status")
        except ApiError as err:
            if err.status != 404:
                raise

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(complete, refs))


# -- the run ------------------------------------------------------------------------------------


def operator_flags(args: argparse.Namespace) -> tuple[list[str], dict[str, bool]]:
    """Flags that not every version of ``kmm-dtk run`` has are passed only where its --help lists them."""
    help_text = subprocess.run([sys.executable, "-m", "kmm_dtk", "run", "--help"], capture_output=True,
                               text=True, timeout=60).stdout
    flags: list[str] = []
    present = {"max_concurrent_writes": "--max-concurrent-writes" in help_text,
               "metrics_secure": "--metrics-secure" in help_text}
    if present["max_concurrent_writes"]:
        flags += ["--max-concurrent-writes", str(args.write_concurrency)]
    # Plain HTTP for the scrapes: a --metrics-secure switch is off unless given; a valued or negatable one is
    # turned off explicitly.
    if "--no-metrics-secure" in help_text:
        flags += ["--no-metrics-secure"]
    elif any(f"--metrics-secure {v}" in help_text for v in ("METRICS_SECURE", "{true,false}", "BOOL")):
        flags += ["--metrics-secure=false"]
    return flags, present


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--modules", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=16, help="the operator's --workers (default: %(default)s)")
    parser.add_argument("--steady-seconds", type=float, default=300)
    parser.add_argument("--waves", type=int, default=2, help="upgrade waves in a row (default: 2)")
    parser.add_argument("--trials", type=int, default=50, help="single Nodes joining the idle cluster")
    parser.add_argument("--write-concurrency", type=int, default=16,
                        help="writes in flight: the ceiling's, and the operator's --max-concurrent-writes")
    parser.add_argument("--build-gc-grace-period", type=float, default=20.0,
                        help="seconds, passed to the operator so that Builds of kernels gone go between waves")
    parser.add_argument("--population", action=argparse.BooleanOptionalAction, default=True,
                        help="create a real cluster's other objects first (default: on)")
    parser.add_argument("--population-scale", type=float, default=1.0,
                        help="multiplies the population's counts (300 namespaces, 3,700 ConfigMaps, 20,000 Builds)")
    parser.add_argument("--population-threads", type=int, default=24)
    parser.add_argument("--operator-log", default="/tmp/kmm-dtk-bench-operator.log")
    args = parser.parse_args()
    if not 1 <= args.waves <= TRIAL_WAVE - 1:
        parser.error(f"--waves must be between 1 and {TRIAL_WAVE - 1}")
    expected = args.modules * args.pairs

    from tests.support.binaries import build
    from tests.support.controlplane import ControlPlane, free_port

    with tempfile.TemporaryDirectory() as workdir, ControlPlane(Path(workdir), build()) as plane:
        from tests.support.cluster import api_client_from, install_crds

        install_crds(api_client_from(plane.kubeconfig))
        pool_size = max(32, args.write_concurrency + 8, args.population_threads + 8)
        kube = KubeClient(load_api_client(str(plane.kubeconfig), pool_size=pool_size), timeout=(5, 120))
        node_bytes = len(json.dumps(node(0, *pairs(1, 0)[0])))
        print(f"setting up {args.nodes} Nodes of {node_bytes} bytes, {args.modules} Modules ...", file=sys.stderr,
              flush=True)
        setup_started = time.monotonic()
        setup(kube, args)
        print(f"set up in {time.monotonic() - setup_started:.0f} s; population ...", file=sys.stderr, flush=True)
        population = populate(kube, args)
        print(f"population: {json.dumps(population)}", file=sys.stderr, flush=True)
        ceiling = measure_ceiling(kube, args)
        print(f"ceiling: {json.dumps(ceiling)}", file=sys.stderr, flush=True)
        flags, present = operator_flags(args)
        watch = BuildWatch(kube)
        node_watch = NodeWatch(kube)
        metrics_port, health_port = free_port(), free_port()
        started = time.monotonic()
        operator = subprocess.Popen(
            [sys.executable, "-m", "kmm_dtk", "run", "--kubeconfig", str(plane.kubeconfig), "--workers",
             str(args.workers), "--metrics-bind-address", f"127.0.0.1:{metrics_port}",
             "--health-probe-bind-address", f"127.0.0.1:{health_port}", "--log-level", "warning",
             "--build-gc-grace-period", f"{args.build_gc_grace_period:g}",
             # the API side is measured here; bench.registry_bench measures the registry side
             "--assume-missing", *flags],
            stderr=open(args.operator_log, "w"))
        _watched.append(operator)
        try:
            results = run_phases(args, kube, watch, node_watch, operator, metrics_port, started, expected)
        finally:
            operator.terminate()
            try:
                operator.wait(60)  # it drains its queues first
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()
    results.update(population=population, ceiling=ceiling, flags=present, node_bytes=node_bytes)
    print_table(results, args)
    print(json.dumps(summary(results, args)))
    return 0


_watched: list[subprocess.Popen] = []  # the operator: a wait ends at once if it exited


def _wait(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.05,
          progress: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + 10
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for proc in _watched:
            if proc.poll() is not None:
                raise RuntimeError(f"waiting for {what}: the operator exited with status {proc.returncode}")
        if progress and time.monotonic() >= next_report:
            print(f"  {what}: {progress()}", file=sys.stderr, flush=True)
            next_report += 10
        time.sleep(poll)  # polling a benchmark's own progress, not synchronising a test
    raise TimeoutError(what)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))] if ordered else 0.0


def run_phases(args: argparse.Namespace, kube: KubeClient, watch: BuildWatch, node_watch: NodeWatch,
               operator: subprocess.Popen, port: int, started: float, expected: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    peak_rss = 0.0

    def scrape() -> Samples | None:
        nonlocal peak_rss
        try:
            samples = _metrics(port)
        except OSError:
            return None
        peak_rss = max(peak_rss, samples.get(("process_resident_memory_bytes", ()), 0.0))
        return samples

    def rss() -> float:
        samples = scrape() or {}
        return samples.get(("process_resident_memory_bytes", ()), 0.0) or rss_bytes(operator.pid)

    def settle(window: float) -> None:
        """Until the operator's API requests stop changing for ``window`` seconds."""
        previous = None
        while True:
            time.sleep(window)
            current = _requests_by_verb(scrape() or {})
            if current == previous:
                return
            previous = current

    cold_kernels = {k for k, _, _ in pairs(args.pairs, 0)}
    _wait(lambda: watch.count() >= expected, 900, "cold start builds", progress=lambda: f"{watch.count()}/{expected}")
    results["cold_start_s"] = time.monotonic() - started
    # Where the cold start goes: before the first Build (process start, LISTs, priming) and the writes.
    cold_times = watch.times(cold_kernels).values()
    results["cold_first_build_s"] = min(cold_times) - started
    results["cold_writes_s"] = max(cold_times) - min(cold_times)
    results["cold_cpu_s"] = cpu_seconds(operator.pid)
    samples = _wait(scrape, 30, "metrics")
    results["cold_requests"] = dict(_requests_by_verb(samples))
    results["rss_cold_mib"] = rss() / 2**20
    # The cluster builds them; then the status writes and Events that follow settle before measuring quiet.
    complete_builds(kube, watch.refs(cold_kernels), args.write_concurrency)
    settle(2.0)
    before = _requests_by_verb(scrape() or {})
    time.sleep(args.steady_seconds)
    after = _requests_by_verb(scrape() or {})
    results["steady"] = {verb: after[verb] - before.get(verb, 0) for verb in after if after[verb] - before.get(verb, 0)}

    results["trials"] = run_trials(args, kube, watch, node_watch, settle)
    print(f"trials: p50 {results['trials']['p50_ms']:.0f} ms, p99 {results['trials']['p99_ms']:.0f} ms",
          file=sys.stderr, flush=True)

    waves = []
    for w in range(1, args.waves + 1):
        waves.append(run_wave(args, kube, watch, node_watch, operator, w, expected, rss))
        print(f"wave {w}: {json.dumps({k: v for k, v in waves[-1].items() if k != 'latencies'})}",
              file=sys.stderr, flush=True)
    results["waves"] = waves
    per_pair: Counter = Counter()
    token = ""
    while True:
        page = kube.list(BUILDS, limit=1000, labelSelector=f"{MANAGED_BY_LABEL}={MANAGED_BY}",
                         **({"continue": token} if token else {}))
        for b in page["items"]:
            annotations = b["metadata"]["annotations"]
            per_pair[(b["metadata"]["namespace"], annotations[MODULE_ANNOTATION], annotations[KERNEL_ANNOTATION])] += 1
        token = page["metadata"].get("continue", "")
        if not token:
            break
    results["builds"] = sum(per_pair.values())
    results["duplicates"] = sum(n - 1 for n in per_pair.values() if n > 1)
    final = scrape() or {}
    results["rss_mib"] = rss() / 2**20
    results["peak_rss_mib"] = peak_rss / 2**20
    results["builds_created"] = _sum_where(final, "kmm_dtk_api_requests_total", verb="CREATE", resource="builds",
                                           code="201")[0]
    results["reconcile_ms"] = {c: mean_ms(final, "controller_runtime_reconcile_time_seconds", {"controller": c})
                               for c in ("node", "module")}
    results["queue_wait_ms"] = {c: mean_ms(final, "workqueue_queue_duration_seconds", {"name": c}, {"name": f"{c}s"})
                                for c in ("node", "module")}
    results["api_ms"] = {v: mean_ms(final, "kmm_dtk_api_request_duration_seconds", {"verb": v})
                         for v in ("CREATE", "PATCH")}
    results["conflicts"] = _sum_where(final, "kmm_dtk_api_requests_total", code="409")[0]
    wave_cpu = sum(w["cpu_s"] for w in waves)
    builds_measured = expected * (1 + len(waves))
    results["cpu_s_per_1000_builds"] = (results["cold_cpu_s"] + wave_cpu) / (builds_measured / 1000)
    results["cpu_total_s"] = cpu_seconds(operator.pid)
    return results


def run_trials(args: argparse.Namespace, kube: KubeClient, watch: BuildWatch, node_watch: NodeWatch,
               settle: Callable[[float], None]) -> dict[str, Any]:
    """Single Nodes joining the idle cluster, one at a time, each on a kernel no other Node runs:
    from its Node event to each of its Builds (one per Module: every Module selects workers)."""
    trial_pairs = pairs(args.trials, TRIAL_WAVE)
    last_ms: list[float] = []
    per_build_ms: list[float] = []

    def trial(t: int, pair: tuple[str, str, str]) -> list[float]:
        mine = {pair[0]}
        create_node(kube, TRIAL_INDEX + t, pair, with_status=True)
        _wait(lambda: watch.count(mine) >= args.modules, 120, f"trial {t} builds",
              progress=lambda: f"{watch.count(mine)}/{args.modules}")
        joined = _wait(lambda: node_watch.seen(pair[0]), 10, f"trial {t} node event")
        times = [v - joined for v in watch.times(mine).values()]
        kube.delete(NODES, f"worker-{TRIAL_INDEX + t:05d}.bench.example.com")
        return times

    for t, pair in enumerate(trial_pairs):
        times = trial(t, pair)
        last_ms.append(1000 * max(times))
        per_build_ms += [1000 * v for v in times]
        settle(1.0)
    # The build controller would finish them; garbage collection then removes them (their kernel is gone).
    complete_builds(kube, watch.refs({k for k, _, _ in trial_pairs}), args.write_concurrency)
    settle(2.0)
    return {"n": len(last_ms), "last_ms": last_ms, "p50_ms": statistics.median(last_ms) if last_ms else 0.0,
            "p99_ms": _p(last_ms, 0.99), "max_ms": max(last_ms, default=0.0),
            "build_p99_ms": _p(per_build_ms, 0.99)}


def run_wave(args: argparse.Namespace, kube: KubeClient, watch: BuildWatch, node_watch: NodeWatch,
             operator: subprocess.Popen, wave: int, expected: int, rss: Callable[[], float]) -> dict[str, Any]:
    """Every Node to pair set ``wave``; then the Builds complete and garbage collection removes
    those of the previous set (out of use) before the next wave."""
    new = pairs(args.pairs, wave)
    kernels = {k for k, _, _ in new}
    first_patch: dict[str, float] = {}
    lock = threading.Lock()

    def upgrade(i: int) -> None:
        kernel, os_image, _ = new[i % len(new)]
        with lock:
            first_patch.setdefault(kernel, time.monotonic())
        kube.patch(NODES, f"worker-{i:05d}.bench.example.com",
                   {"status": {"nodeInfo": {"kernelVersion": kernel, "osImage": os_image}}}, subresource="status")

    cpu_before = cpu_seconds(operator.pid)
    wave_started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(upgrade, range(args.nodes)))
    out: dict[str, Any] = {"wave": wave, "patch_s": time.monotonic() - wave_started}
    _wait(lambda: watch.count(kernels) >= expected, 900, f"wave {wave} builds",
          progress=lambda: f"{watch.count(kernels)}/{expected}")
    out["total_s"] = time.monotonic() - wave_started
    out["cpu_s"] = cpu_seconds(operator.pid) - cpu_before
    out["rss_mib"] = rss() / 2**20
    out["owned_builds"] = watch.live_count()
    seen = watch.times(kernels)
    with node_watch.lock:
        first_event = {k: node_watch.first[k] for k in kernels}
        last_node_event = max(node_watch.last[k] for k in kernels)
    latencies = [t - first_event[kernel] for (_, kernel), t in seen.items()]
    out["drain_s"] = max(seen.values()) - last_node_event
    out["patch_to_event_ms"] = 1000 * statistics.median(first_event[k] - first_patch[k] for k in kernels)
    out["p50_ms"], out["p99_ms"] = 1000 * statistics.median(latencies), 1000 * _p(latencies, 0.99)
    out["max_ms"] = 1000 * max(latencies)
    complete_builds(kube, watch.refs(kernels), args.write_concurrency)
    gc_started = time.monotonic()
    try:
        _wait(lambda: watch.live_count() <= expected, args.build_gc_grace_period + 300,
              f"wave {wave} garbage collection", poll=0.2,
              progress=lambda: f"{watch.live_count()} Builds, {expected} in use")
    except TimeoutError:
        print(f"  wave {wave}: garbage collection not done, {watch.live_count()} Builds", file=sys.stderr, flush=True)
    out["gc_wait_s"] = time.monotonic() - gc_started
    out["owned_builds_after_gc"] = watch.live_count()
    return out


def _ratio(value: float, ceiling: float) -> str:
    return f"{value / ceiling:.2f}x" if ceiling > 0 else "-"


def summary(r: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The figures as one JSON object (the output's last line)."""
    waves, trials, ceiling = r["waves"], r["trials"], r["ceiling"]
    drains = [w["drain_s"] for w in waves]
    per_ceiling = 1 / ceiling["ceiling_s"] if ceiling["ceiling_s"] else 0.0
    totals = [w["total_s"] for w in waves]
    return {
        "nodes": args.nodes, "modules": args.modules, "pairs": args.pairs, "waves": len(waves),
        "trials": trials["n"], "write_concurrency": args.write_concurrency,
        "max_concurrent_writes_passed": r["flags"]["max_concurrent_writes"],
        "ceiling_s": round(ceiling["ceiling_s"], 3), "cold_start_s": round(r["cold_start_s"], 3),
        "ratio_cold_start": round(r["cold_start_s"] / ceiling["ceiling_s"], 3) if ceiling["ceiling_s"] else None,
        "cold_first_build_s": round(r["cold_first_build_s"], 3), "cold_writes_s": round(r["cold_writes_s"], 3),
        "wave_total_s": round(statistics.median(totals), 3), "wave_total_s_by_wave": [round(t, 3) for t in totals],
        "ratio_wave_total": round(statistics.median(totals) * per_ceiling, 3),
        "wave_drain_s": round(statistics.median(drains), 3), "wave_drain_s_by_wave": [round(d, 3) for d in drains],
        "wave_p99_ms": round(statistics.median(w["p99_ms"] for w in waves), 1),
        "single_node_ceiling_ms": round(ceiling["trial_ceiling_ms"], 1),
        "single_node_p50_ms": round(trials["p50_ms"], 1), "single_node_p99_ms": round(trials["p99_ms"], 1),
        "single_node_build_p99_ms": round(trials["build_p99_ms"], 1),
        "ratio_single_node_p99": round(trials["p99_ms"] / ceiling["trial_ceiling_ms"], 3)
        if ceiling["trial_ceiling_ms"] else None,
        "node_reconcile_ms": round(r["reconcile_ms"]["node"], 3),
        "module_reconcile_ms": round(r["reconcile_ms"]["module"], 1),
        "rss_mib": round(r["rss_mib"], 1), "peak_rss_mib": round(r["peak_rss_mib"], 1),
        "rss_after_wave_1_mib": round(waves[0]["rss_mib"], 1), "rss_after_wave_n_mib": round(waves[-1]["rss_mib"], 1),
        "rss_wave_ratio": round(waves[-1]["rss_mib"] / waves[0]["rss_mib"], 3) if waves[0]["rss_mib"] else None,
        "owned_builds_by_wave": [w["owned_builds"] for w in waves],
        "owned_builds_after_gc_by_wave": [w["owned_builds_after_gc"] for w in waves],
        "configmaps": r["population"]["configmaps"], "foreign_builds": r["population"]["foreign_builds"],
        "namespaces": r["population"]["namespaces"], "node_bytes": r["node_bytes"],
        "cpu_s_per_1000_builds": round(r["cpu_s_per_1000_builds"], 3), "cpu_total_s": round(r["cpu_total_s"], 1),
        "builds_created": int(r["builds_created"]), "duplicates": r["duplicates"],
        "steady": r["steady"],
    }


def print_table(r: dict[str, Any], args: argparse.Namespace) -> None:
    c, t, waves, pop = r["ceiling"], r["trials"], r["waves"], r["population"]
    ceiling_s, trial_ms = c["ceiling_s"], c["trial_ceiling_ms"]
    writes = ("passed as --max-concurrent-writes" if r["flags"]["max_concurrent_writes"]
              else "operator has no --max-concurrent-writes: its own default")
    print(f"\nOperator on a real kube-apiserver: {args.nodes} Nodes ({r['node_bytes']} bytes each) on {args.pairs} "
          f"kernel/RHCOS pairs, {args.modules} Modules ({args.modules * args.pairs} Builds per wave), "
          f"{args.workers} workers, {args.write_concurrency} writes in flight "
          f"({writes})")
    print(f"Population: {pop['namespaces']} namespaces, {pop['configmaps']} ConfigMaps "
          f"({pop['ca_bundles']} trusted-CA bundles of {pop.get('ca_bundle_bytes', 0) // 1024} KiB), "
          f"{pop['foreign_builds']} Builds of other applications ({pop.get('foreign_build_body_bytes', 0)} bytes sent, "
          f"{pop.get('foreign_build_bytes', 0)} stored with managedFields)")
    print(f"Ceiling: {c['ceiling_builds']} Builds ({c['bytes_per_build']} bytes each, the operator's own bodies) "
          f"created in {ceiling_s:.1f} s; a single trial's {c['trial_ceiling_builds']} Builds in "
          f"{trial_ms:.0f} ms (median of {c['trial_ceiling_reps']})\n")
    rows = [
        ("cold start: process start -> all Builds created",
         f"{r['cold_start_s']:.1f} s | ceiling {ceiling_s:.1f} s | {_ratio(r['cold_start_s'], ceiling_s)}",
         "<= 1.2x"),
        ("cold start: process start -> first Build (start, LISTs, priming)", f"{r['cold_first_build_s']:.1f} s", ""),
        ("cold start: first -> last Build (the writes)",
         f"{r['cold_writes_s']:.1f} s | ceiling {ceiling_s:.1f} s | {_ratio(r['cold_writes_s'], ceiling_s)}", ""),
        (f"single Node joining ({t['n']} trials): event -> last Build, p50",
         f"{t['p50_ms']:.0f} ms | ceiling {trial_ms:.0f} ms | {_ratio(t['p50_ms'], trial_ms)}", ""),
        ("single Node joining: event -> last Build, p99",
         f"{t['p99_ms']:.0f} ms | ceiling {trial_ms:.0f} ms | {_ratio(t['p99_ms'], trial_ms)}", "<= 100 ms"),
        ("single Node joining: event -> each Build, p99", f"{t['build_p99_ms']:.0f} ms", ""),
    ]
    for w in waves:
        n = w["wave"]
        rows += [
            (f"wave {n}: first patch -> last Build",
             f"{w['total_s']:.1f} s | ceiling {ceiling_s:.1f} s | {_ratio(w['total_s'], ceiling_s)}", ""),
            (f"wave {n}: last Node event -> last Build (drain)",
             f"{w['drain_s']:.1f} s", "<= 2 s"),
            (f"wave {n}: node event -> Build, p50 / p99 / max",
             f"{w['p50_ms']:.0f} / {w['p99_ms']:.0f} / {w['max_ms']:.0f} ms", ""),
            (f"wave {n}: patch all Nodes (the load) / PATCH -> event p50",
             f"{w['patch_s']:.1f} s / {w['patch_to_event_ms']:.0f} ms", ""),
            (f"wave {n}: RSS / operator CPU", f"{w['rss_mib']:.0f} MiB / {w['cpu_s']:.1f} s", ""),
            (f"wave {n}: kmm-dtk Builds when all seen / after GC",
             f"{w['owned_builds']} / {w['owned_builds_after_gc']} ({w['gc_wait_s']:.0f} s)", ""),
        ]
    first, last = waves[0]["rss_mib"], waves[-1]["rss_mib"]
    cpu_builds = args.modules * args.pairs * (1 + len(waves))
    rows += [
        (f"RSS after wave 1 / after wave {len(waves)}",
         f"{first:.0f} / {last:.0f} MiB | {_ratio(last, first)}", "<= 1.10x"),
        ("duplicate Builds (same Module and kernel)", f"{r['duplicates']}", "0"),
        ("kmm-dtk Builds in the cluster at the end", f"{r['builds']}", ""),
        (f"steady state, {args.steady_seconds:.0f} s: requests by verb", json.dumps(r["steady"]) or "{}",
         "no LIST, no writes"),
        ("cold start: requests by verb", json.dumps({k: int(v) for k, v in r["cold_requests"].items()}), ""),
        ("409 Conflict/AlreadyExists answers", f"{int(r['conflicts'])}", ""),
        (f"operator CPU per 1,000 Builds (cold start + waves, {cpu_builds} Builds)",
         f"{r['cpu_s_per_1000_builds']:.2f} s (whole run {r['cpu_total_s']:.0f} s)", ""),
        ("mean reconcile time node / module",
         f"{r['reconcile_ms']['node']:.2f} / {r['reconcile_ms']['module']:.1f} ms", "node <= 1 ms"),
        ("mean queue wait node / module",
         f"{r['queue_wait_ms']['node']:.1f} / {r['queue_wait_ms']['module']:.1f} ms", ""),
        ("mean API latency CREATE / PATCH", f"{r['api_ms']['CREATE']:.1f} / {r['api_ms']['PATCH']:.1f} ms", ""),
        ("operator RSS at cold start / end / peak seen",
         f"{r['rss_cold_mib']:.0f} / {r['rss_mib']:.0f} / {r['peak_rss_mib']:.0f} MiB", "<= 120 MiB"),
    ]
    width = max(len(row[0]) for row in rows)
    vwidth = max(len(row[1]) for row in rows)
    print(f"{'measure':<{width}}  {'value':<{vwidth}}  target")
    print("-" * (width + vwidth + 20))
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<{vwidth}}  {target}")


if __name__ == "__main__":
    sys.exit(main())
