"""`make cluster` and the existing-cluster mode, each run the way a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from kubernetes import client

from tests.support.cluster import REPO, api_client_from
from tests.support.controlplane import wait_for

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "zombie" not in status.read().lower()
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            found += [int(c) for c in children.read().split()]
    return found


def test_make_cluster_serves_the_samples_and_stops_on_ctrl_c(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.localcluster", "--workdir", str(tmp_path / "cp"),
         "--kubeconfig", str(kubeconfig)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        assert lines and lines[-1].startswith("Press Ctrl-C"), "".join(lines)
        assert "created Module simple-kmod/simple-kmod\n" in lines
        children = _children(proc.pid)
        assert len(children) == 2  # etcd and kube-apiserver

        api = api_client_from(kubeconfig)
        nodes = {n.metadata.name: n.status.node_info.kernel_version for n in client.CoreV1Api(api).list_node().items}
        assert nodes["worker-2"] == "4.18.0-372.16.1.el8_6.x86_64"
        stream = client.CustomObjectsApi(api).get_namespaced_custom_object(
            "image.openshift.io", "v1", "openshift", "imagestreams", "driver-toolkit")
        assert {t["tag"] for t in stream["status"]["tags"]} >= {"410.84.202207140725-0", "411.86.202207260413-0"}
        api.close()

        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        wait_for(lambda: not any(_alive(pid) for pid in children), 15, "etcd and kube-apiserver to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_suite_runs_against_an_existing_cluster(cluster, tmp_path):
    """KMM_DTK_TEST_KUBECONFIG: here the 'existing' cluster is this session's own control plane."""
    env = dict(os.environ, KMM_DTK_TEST_KUBECONFIG=str(cluster.kubeconfig))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header",
         "tests/kube/test_controlplane.py::test_module_nodes_and_imagestream_round_trip",
         "tests/kube/test_controlplane.py::test_apiserver_restart_keeps_etcd_data"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout, result.stdout


def _demo(tmp_path, *extra: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.localcluster", "--operator", "--once", *extra,
         "--workdir", str(tmp_path / "cp"), "--kubeconfig", str(tmp_path / "kubeconfig")],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _section(stdout: str, title: str) -> list[str]:
    return stdout.split(title, 1)[1].strip("\n").split("\n\n", 1)[0].splitlines()


@pytest.mark.registry
def test_make_demo_runs_the_operator_on_a_disconnected_cluster(tmp_path):
    """The README's first command, minus the waiting for Ctrl-C: the first kernel's image is already
    in the mirror, the second is built on its DTK through the mirror, and an upgrade starting gets
    its kernel built before any node runs it."""
    stdout = _demo(tmp_path)
    kernels = {line.split()[0]: line for line in _section(stdout, "per kernel (status.kernels):\n")[1:]}
    assert kernels["4.18.0-305.49.1.el8_4.x86_64"].split()[1] == "Exists"
    assert "exists through mirror" in kernels["4.18.0-305.49.1.el8_4.x86_64"]
    builds = _section(stdout, "Builds created by the operator:\n")
    assert [line.split()[1] for line in builds[1:]] == ["4.18.0-372.16.1.el8_6.x86_64"]
    assert builds[1].split()[2].startswith("registry.ci.openshift.org/ocp/4.11-2022-07-27-013908@sha256:")
    ahead = _section(stdout, "made before any node runs it:\n")
    assert ahead[1].split()[1] == "4.18.0-372.69.1.el8_6.x86_64"
    assert ahead[1].split()[2].startswith("quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:")


def test_make_demo_offline_builds_every_kernel_on_the_design_digests(tmp_path):
    table = _section(_demo(tmp_path, "--offline"), "Builds created by the operator:\n")
    assert table[0].startswith("BUILD")
    assert {line.split()[1]: line.split()[2].split("@")[1] for line in table[1:3]} == {
        "4.18.0-305.49.1.el8_4.x86_64": "sha256:84edddb4322cfe50d8545c41014a8f5595a4260a20d9a269e144909c5949582b",
        "4.18.0-372.16.1.el8_6.x86_64": "sha256:484c9fe9900020e9b8f5601cbe86d054fe47a6f16e8d9dc6ecbfd58bffd1ad4b",
    }
