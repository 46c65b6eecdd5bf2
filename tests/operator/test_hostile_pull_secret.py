"""A pull Secret whose ``.dockerconfigjson`` is hostile (nesting the API server accepts but the
operator's bounded reader refuses) never stops a reconcile: the registry is asked without it, and the
Module that relies on it says so in its Degraded condition and in one Warning Event naming the
Secret, the field and the problem. Runs on the real control plane; no registry is needed (the image's
registry is a closed loopback port, so every check ends without an answer)."""

from __future__ import annotations

import base64
import json

import pytest
from kubernetes import client

from kmm_dtk.operator.options import RegistryOptions
from tests.operator.conftest import module_body
from tests.support.controlplane import free_port, wait_for

pytestmark = pytest.mark.integration


def hostile_secret(namespace: str, name: str) -> dict:
    """Valid JSON (so the API server stores it as a dockerconfigjson Secret), nested 100 levels deep."""
    doc = '{"auths": {"quay.io": {"auth": "dTpw", "x": ' + "[" * 100 + "]" * 100 + "}}}"
    json.loads(doc)
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": name, "namespace": namespace},
            "data": {".dockerconfigjson": base64.b64encode(doc.encode()).decode()}}


def test_a_hostile_pull_secret_is_reported_on_the_module_once(scenario, run_operator):
    ns = scenario.namespace
    client.CoreV1Api(scenario.api).create_namespaced_secret(ns, hostile_secret(ns, "push"))
    closed = f"127.0.0.1:{free_port()}"
    body = module_body(ns, kernelMappings=[{
        "regexp": r"^.+\.el8_\d+\.x86_64$",
        "containerImage": f"{closed}/{ns}/simple-kmod:${{KERNEL_FULL_VERSION}}",
        "build": {"dockerfileConfigMap": {"name": "dockerfile"}},
    }])
    assert body["spec"]["imageRepoSecret"] == {"name": "push"}
    running = run_operator(registry=RegistryOptions(global_pull_secret=(ns, "absent"), retry_after=0.5,
                                                    attempts=1, timeout=2.0))
    scenario.create_module(body)

    wait_for(lambda: scenario.condition("Degraded").get("reason") == "UnusablePullSecret", 30,
             "Degraded: UnusablePullSecret")
    degraded = scenario.condition("Degraded")
    assert degraded["status"] == "True"
    for fragment in (f"Secret {ns}/push", ".dockerconfigjson", "nesting deeper than 32 levels",
                     "registries asked without it"):
        assert fragment in degraded["message"], (fragment, degraded["message"])
    assert "dTpw" not in json.dumps(scenario.module())  # the Secret's content is never repeated
    records = scenario.kernel_status()
    assert set(records) == set(scenario.nodes.values())
    assert all(r["phase"] == "Waiting" for r in records.values())  # asked anonymously, no answer: no Build
    assert scenario.builds() == []

    wait_for(lambda: scenario.events("UnusablePullSecret"), 20, "an UnusablePullSecret Event")
    (event,) = scenario.events("UnusablePullSecret")
    assert event.type == "Warning" and event.involved_object.name == "simple-kmod"
    assert f"Secret {ns}/push: .dockerconfigjson: nesting deeper than 32 levels" in event.message

    # The Module is requeued (Secrets are not watched) and reconciled again: the Event is not repeated.
    seen = running.reconciles()
    wait_for(lambda: running.reconciles() >= seen + 3, 30, "three more module reconciles")
    assert len(scenario.events("UnusablePullSecret")) == 1
    assert running.thread.is_alive()
