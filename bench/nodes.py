"""Realistic OpenShift worker Nodes for benchmarks: ~19 KB of JSON each, shaped like a real
worker (16 labels, 7 annotations, 5 managedFields entries, 50 images, 4 conditions)."""

from __future__ import annotations

import hashlib
from typing import Any

RHCOS_PAIRS = [  # (kernel, osImage) pairs seen across OpenShift 4.14 .. 4.20 and RHEL 10
    ("5.14.0-284.45.1.el9_2.x86_64", "Red Hat Enterprise Linux CoreOS 414.92.202312132152-0 (Plow)"),
    ("5.14.0-427.28.1.el9_4.x86_64", "Red Hat Enterprise Linux CoreOS 416.94.202407251849-0"),
    ("5.14.0-427.68.1.el9_4.x86_64", "Red Hat Enterprise Linux CoreOS 418.94.202410260038-0"),
    ("5.14.0-570.27.1.el9_6.x86_64", "Red Hat Enterprise Linux CoreOS 9.6.20250715-0 (Plow)"),
    ("5.14.0-570.49.1.el9_6.x86_64", "Red Hat Enterprise Linux CoreOS 9.6.20260303-1 (Plow)"),
]


def _digest(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def node(index: int, kernel: str, os_image: str, rhcos: str | None = None) -> dict[str, Any]:
    name = f"worker-{index:05d}.bench.example.com"
    zone = f"us-east-1{'abc'[index % 3]}"
    labels = {
        "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/instance-type": "m6i.2xlarge",
        "beta.kubernetes.io/os": "linux", "failure-domain.beta.kubernetes.io/region": "us-east-1",
        "failure-domain.beta.kubernetes.io/zone": zone, "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
        "node-role.kubernetes.io/worker": "", "node.kubernetes.io/instance-type": "m6i.2xlarge",
        "node.openshift.io/os_id": "rhcos", "topology.ebs.csi.aws.com/zone": zone,
        "topology.kubernetes.io/region": "us-east-1", "topology.kubernetes.io/zone": zone,
        "feature.node.kubernetes.io/cpu-cpuid.AVX512F": "true", "bench": "true",
    }
    if rhcos:
        labels["feature.node.kubernetes.io/system-os_release.OSTREE_VERSION"] = rhcos
        labels.pop("feature.node.kubernetes.io/cpu-cpuid.AVX512F")
    annotations = {
        "cloud.network.openshift.io/egress-ipconfig": (
            '[{"interface":"eni-0a1b2c3d","ifaddr":{"ipv4":"10.0.0.0/19"},"capacity":{"ipv4":14,"ipv6":15}}]'),
        "csi.volume.kubernetes.io/nodeid": f'{{"ebs.csi.aws.com":"i-0{index:015x}"}}',
        "k8s.ovn.org/host-cidrs": f'["10.0.{index // 250}.{index % 250}/19"]',
        "machine.openshift.io/machine": f"openshift-machine-api/bench-worker-{index}",
        "machineconfiguration.openshift.io/currentConfig": "rendered-worker-" + _digest("cfg")[:32],
        "machineconfiguration.openshift.io/desiredConfig": "rendered-worker-" + _digest("cfg")[:32],
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
    }
    managers = [("kube-controller-manager", "Update", None), ("kubelet", "Update", None),
                ("kubelet", "Update", "status"), ("machine-config-daemon", "Update", None),
                ("ovnkube", "Update", "status")]
    managed = []
    for manager, operation, sub in managers:
        entry = {"manager": manager, "operation": operation, "apiVersion": "v1", "time": "2026-11-20T10:00:00Z",
                 "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{k}": {} for k in list(annotations)[:4]},
                                             "f:labels": {f"f:{k}": {} for k in list(labels)[:10]}},
                              "f:status": {"f:conditions": {f'k:{{"type":"{t}"}}': {"f:lastHeartbeatTime": {},
                                                                                  "f:status": {}}
                                                            for t in ("Ready", "MemoryPressure")}}}}
        if sub:
            entry["subresource"] = sub
        managed.append(entry)
    images = [{"names": [f"quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:{_digest(f'img{i}')}",
                         f"quay.io/openshift-release-dev/ocp-v4.0-art-dev:component-{i}"],
               "sizeBytes": 400_000_000 + i * 1_000_003} for i in range(50)]
    conditions = [{"type": t, "status": s, "reason": r, "message": m,
                   "lastHeartbeatTime": "2026-11-25T10:00:00Z", "lastTransitionTime": "2026-11-20T10:00:00Z"}
                  for t, s, r, m in (
                      ("MemoryPressure", "False", "KubeletHasSufficientMemory",
                       "kubelet has sufficient memory available"),
                      ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                      ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                      ("Ready", "True", "KubeletReady", "kubelet is posting ready status"))]
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": annotations, "managedFields": managed},
        "spec": {"providerID": f"aws:///{zone}/i-0{index:015x}"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": f"10.0.{index // 250}.{index % 250}"},
                          {"type": "Hostname", "address": name}, {"type": "InternalDNS", "address": name}],
            "allocatable": {"cpu": "7500m", "ephemeral-storage": "115470533646", "memory": "31068396Ki", "pods": "250"},
            "capacity": {"cpu": "8", "ephemeral-storage": "125293548Ki", "memory": "32219372Ki", "pods": "250"},
            "conditions": conditions,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "images": images,
            "nodeInfo": {"architecture": "amd64", "bootID": _digest(f"boot{index}")[:36],
                         "containerRuntimeVersion": "cri-o://1.31.6-3.rhaos4.18.git", "kernelVersion": kernel,
                         "kubeProxyVersion": "", "kubeletVersion": "v1.34.4", "machineID": _digest(f"m{index}")[:32],
                         "operatingSystem": "linux", "osImage": os_image, "systemUUID": _digest(f"u{index}")[:36]},
        },
    }
