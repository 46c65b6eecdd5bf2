"""The operator's memory on a cluster full of ConfigMaps it does not use.

A real OpenShift cluster holds ~3,700 ConfigMaps (~22 MB): the two CA ConfigMaps of every
namespace, injected trusted-CA bundles of ~200 KB, and thousands of small ones; the operator reads
only the Dockerfile ConfigMaps its Modules name. This populates a real kube-apiserver that way,
runs ``kmm-dtk run`` from each ``--source`` checkout in turn (the same cluster for all, so the
numbers compare), waits until every Module's Builds exist (the Dockerfiles were read), and reports
the operator's RSS (``process_resident_memory_bytes``) then and its peak while syncing.

    python -m bench.configmap_memory [--source DIR ...] [--namespaces 300] [--bundles 100] [--small 3000]

Measured on 2 cores (3,712 ConfigMaps, 22.8 MiB of JSON; 10 Modules): whole ConfigMaps cached,
120 MiB; metadata only with the data read on demand, 92 MiB; with only 10 namespaces and no other
ConfigMaps both are at 89 MiB: the ConfigMaps cost 31 MiB before, 3 MiB after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.nodes import node
from kmm_dtk.kube.client import KubeClient, Resource, load_api_client
from kmm_dtk.operator.resources import BUILDS, CONFIGMAPS, IMAGESTREAMS, MODULES, NODES

NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
KERNEL, OS_IMAGE, RHCOS = "5.14.0-570.27.1.el9_6.x86_64", "Red Hat Enterprise Linux CoreOS 9.6.20250715-0 (Plow)", \
    "9.6.20250715-0"
DOCKERFILE = "ARG DTK_AUTO\nFROM ${DTK_AUTO} AS builder\nARG KERNEL_VERSION\nRUN make KVER=${KERNEL_VERSION}\n"
PEM_LINE = "MIIDXTCCAkWgAwIBAgIJAKJ0Zl3Q0nqOMA0GCSqGSIb3DQEBCwUAMEUxCzAJBgNVBAYTAkFV\n"


def _pem(size: int) -> str:
    """A CA-bundle-shaped string of about ``size`` bytes."""
    block = "-----BEGIN CERTIFICATE-----\n" + PEM_LINE * 20 + "-----END CERTIFICATE-----\n"
    return block * max(1, size // len(block))


def populate(kube: KubeClient, args: argparse.Namespace) -> int:
    """The cluster; returns how many Builds the operator should create."""
    kube.create(NAMESPACES, {"metadata": {"name": "openshift"}})
    kube.create(IMAGESTREAMS, {"apiVersion": "image.openshift.io/v1", "kind": "ImageStream",
                               "metadata": {"name": "driver-toolkit", "namespace": "openshift"},
                               "spec": {"tags": [{"name": RHCOS, "from": {
                                   "kind": "DockerImage", "name": f"quay.io/ocp/dtk@sha256:{'a' * 64}"}}]}},
                "openshift")
    for i in range(3):
        body = node(i, KERNEL, OS_IMAGE, RHCOS)
        status = body.pop("status")
        created = kube.create(NODES, body)
        created["status"] = status
        kube.replace(NODES, created, subresource="status")
    names = [f"project-{i:03d}" for i in range(args.namespaces)]
    root_ca, service_ca = _pem(1_800), _pem(1_300)

    def namespace(ns: str) -> None:
        kube.create(NAMESPACES, {"metadata": {"name": ns}})
        kube.create(CONFIGMAPS, {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": root_ca}}, ns)
        kube.create(CONFIGMAPS, {"metadata": {"name": "openshift-service-ca.crt",
                                              "annotations": {"service.beta.openshift.io/inject-cabundle": "true"}},
                                 "data": {"service-ca.crt": service_ca}}, ns)

    bundle = _pem(200_000)

    def trusted(i: int) -> None:
        kube.create(CONFIGMAPS, {"metadata": {"name": f"trusted-ca-bundle-{i}", "labels": {
            "config.openshift.io/inject-trusted-cabundle": "true"}}, "data": {"ca-bundle.crt": bundle}},
            names[i % len(names)])

    def small(i: int) -> None:
        kube.create(CONFIGMAPS, {"metadata": {"name": f"settings-{i}", "labels": {"app": f"app-{i % 50}"}},
                                 "data": {"config.yaml": f"replicas: {i % 5}\nlogLevel: info\nname: settings-{i}\n"
                                          + "# padding\n" * 20}}, names[i % len(names)])

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(namespace, names))
        list(pool.map(trusted, range(args.bundles)))
        list(pool.map(small, range(args.small)))
    for i in range(args.modules):  # the ConfigMaps the operator does read
        ns = names[i % len(names)]
        kube.create(CONFIGMAPS, {"metadata": {"name": f"dockerfile-{i}"}, "data": {"dockerfile": DOCKERFILE}}, ns)
        kube.create(MODULES, {
            "apiVersion": "kmm.sigs.x-k8s.io/v1beta1", "kind": "Module",
            "metadata": {"name": f"kmod-{i}", "namespace": ns},
            "spec": {"selector": {"node-role.kubernetes.io/worker": ""}, "moduleLoader": {"container": {
                "modprobe": {"moduleName": f"kmod_{i}"},
                "kernelMappings": [{"regexp": r"^.+\.el9_6\.x86_64$",
                                    "containerImage": f"registry.example.com/{ns}/kmod-{i}:${{KERNEL_FULL_VERSION}}",
                                    "build": {"dockerfileConfigMap": {"name": f"dockerfile-{i}"}}}]}}},
        }, ns)
    return args.modules


def _rss(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return float(line.split()[1])
    return None


def _configmaps(kube: KubeClient) -> tuple[int, int]:
    """How many ConfigMaps the cluster holds, and their JSON size."""
    count, size, token = 0, 0, ""
    while True:
        page = kube.list(CONFIGMAPS, limit=500, **({"continue": token} if token else {}))
        count += len(page["items"])
        size += sum(len(json.dumps(item)) for item in page["items"])
        token = page["metadata"].get("continue", "")
        if not token:
            return count, size


def measure(source: Path, kubeconfig: Path, kube: KubeClient, expected: int, settle: float, log: Path) -> dict:
    """One operator run from ``source``: RSS once its Builds exist (after ``settle`` s), and its peak."""
    from tests.support.controlplane import free_port

    for build in kube.list(BUILDS)["items"]:  # each run creates its own
        kube.delete(BUILDS, build["metadata"]["name"], build["metadata"]["namespace"])
    port, health = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(source)}
    started = time.monotonic()
    operator = subprocess.Popen(
        [sys.executable, "-m", "kmm_dtk", "run", "--kubeconfig", str(kubeconfig), "--metrics-bind-address",
         f"127.0.0.1:{port}", "--health-probe-bind-address", f"127.0.0.1:{health}", "--log-level", "warning",
         "--assume-missing"], cwd=source, env=env, stderr=log.open("w"))
    peak = 0.0
    try:
        deadline = time.monotonic() + 300
        while len(kube.list(BUILDS)["items"]) < expected:
            if time.monotonic() > deadline or operator.poll() is not None:
                raise RuntimeError(f"{source}: Builds not created (see {log})")
            peak = max(peak, _rss(port) or 0.0)
            time.sleep(0.2)
        ready = time.monotonic() - started
        until = time.monotonic() + settle
        while time.monotonic() < until:
            peak = max(peak, _rss(port) or 0.0)
            time.sleep(0.2)
        final = _rss(port) or 0.0
    finally:
        operator.terminate()
        try:
            operator.wait(60)
        except subprocess.TimeoutExpired:
            operator.kill()
            operator.wait()
    return {"source": str(source), "rss_mib": final / 2**20, "peak_mib": max(peak, final) / 2**20,
            "builds_s": ready}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", type=Path,
                        help="a checkout to run the operator from (repeatable; default: this one)")
    parser.add_argument("--namespaces", type=int, default=300)
    parser.add_argument("--bundles", type=int, default=100, help="ConfigMaps of ~200 KB")
    parser.add_argument("--small", type=int, default=3000)
    parser.add_argument("--modules", type=int, default=10)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds between the Builds and the reading")
    parser.add_argument("--rounds", type=int, default=1, help="run every source this many times, interleaved")
    args = parser.parse_args()
    sources = args.source or [Path(__file__).resolve().parent.parent]

    from tests.support.binaries import build
    from tests.support.cluster import api_client_from, install_crds
    from tests.support.controlplane import ControlPlane

    results = []
    with tempfile.TemporaryDirectory() as workdir, ControlPlane(Path(workdir), build()) as plane:
        install_crds(api_client_from(plane.kubeconfig))
        kube = KubeClient(load_api_client(str(plane.kubeconfig), pool_size=32), timeout=(5, 120))
        expected = populate(kube, args)
        count, size = _configmaps(kube)
        print(f"{count} ConfigMaps, {size / 2**20:.1f} MiB of JSON", file=sys.stderr, flush=True)
        for _ in range(args.rounds):
            for source in sources:
                results.append(measure(source, plane.kubeconfig, kube, expected, args.settle,
                                       Path(workdir) / "operator.log"))
                print(results[-1], file=sys.stderr, flush=True)
    print(f"\n{'source':<40} {'RSS MiB':>8} {'peak MiB':>9} {'Builds after s':>15}")
    for r in results:
        print(f"{r['source']:<40} {r['rss_mib']:>8.1f} {r['peak_mib']:>9.1f} {r['builds_s']:>15.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
