"""Event names: always a valid DNS subdomain of at most 253 characters, whatever the object's name."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client

from kmm_dtk.kube.client import KubeClient
from kmm_dtk.operator.events import NAME_MAX, EventRecorder, event_name
from kmm_dtk.operator.status import EventSpec
from tests.operator.conftest import module_body
from tests.support.objects import MODULE_GROUP, MODULE_PLURAL, MODULE_VERSION

# Kubernetes' IsDNS1123Subdomain: the whole name at most 253, each dot-separated label alphanumeric
# at both ends.
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LONGEST_MODULE = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 characters


def valid(name: str) -> bool:
    return len(name) <= NAME_MAX and DNS_SUBDOMAIN.fullmatch(name) is not None


def test_a_short_name_is_kept_with_a_random_suffix():
    first, second = event_name("simple-kmod"), event_name("simple-kmod")
    assert re.fullmatch(r"simple-kmod\.[0-9a-f]{16}", first)
    assert first != second


@pytest.mark.parametrize("name, prefix", [
    (LONGEST_MODULE, LONGEST_MODULE[:236]),
    ("a" * 235 + "-b" * 9, "a" * 235),  # the cut falls on a '-': no label may end with one
    ("x" * 235 + ".yz", "x" * 235),  # ... or on a '.'
    ("Upper.Case_Name", "upper.case-name"),
    ("...", "kmm-dtk"),
])
def test_long_or_odd_names_are_cut_to_a_valid_prefix(name, prefix):
    made = event_name(name)
    assert valid(made), made
    assert made.rpartition(".")[0] == prefix


@given(st.text(alphabet="abcXYZ019.-_ ", min_size=1, max_size=400))
def test_every_name_gives_a_valid_event_name(name):
    assert valid(event_name(name))


@pytest.mark.integration
def test_an_event_on_a_module_with_a_253_character_name_is_recorded(api, namespace):
    assert len(LONGEST_MODULE) == NAME_MAX
    module = client.CustomObjectsApi(api).create_namespaced_custom_object(
        MODULE_GROUP, MODULE_VERSION, namespace, MODULE_PLURAL, module_body(namespace, name=LONGEST_MODULE))
    EventRecorder(KubeClient(api), "test").emit(module, EventSpec("Normal", "BuildimageCreated", "built"))
    # emit() is synchronous and only logs a refused Event: the Event is there now, or it was lost.
    [event] = [e for e in client.CoreV1Api(api).list_namespaced_event(namespace).items
               if e.involved_object.name == LONGEST_MODULE]
    assert valid(event.metadata.name) and event.metadata.name.startswith(LONGEST_MODULE[:236] + ".")
    assert event.reason == "BuildimageCreated" and event.involved_object.uid == module["metadata"]["uid"]


@pytest.mark.integration
def test_events_sent_in_the_background_all_arrive_and_emit_does_not_wait(api, namespace):
    module = client.CustomObjectsApi(api).create_namespaced_custom_object(
        MODULE_GROUP, MODULE_VERSION, namespace, MODULE_PLURAL, module_body(namespace, name="background"))
    recorder = EventRecorder(KubeClient(api), "test", senders=2)
    for i in range(20):
        recorder.emit(module, EventSpec("Normal", "BuildimageCreated", f"built {i}"))
    assert recorder.flush(timeout=30), "the backlog was not sent"
    messages = sorted(e.message for e in client.CoreV1Api(api).list_namespaced_event(namespace).items
                      if e.involved_object.name == "background")
    assert messages == sorted(f"built {i}" for i in range(20))


@pytest.mark.integration
def test_a_full_backlog_drops_events_with_a_log_line_instead_of_blocking(api, namespace, caplog):
    module = client.CustomObjectsApi(api).create_namespaced_custom_object(
        MODULE_GROUP, MODULE_VERSION, namespace, MODULE_PLURAL, module_body(namespace, name="flooded"))
    recorder = EventRecorder(KubeClient(api), "test", senders=1, backlog=1)
    for i in range(50):  # one sender cannot post 50 Events while they are emitted: most are dropped
        recorder.emit(module, EventSpec("Normal", "BuildimageCreated", f"built {i}"))
    assert recorder.flush(timeout=30)
    dropped = [r for r in caplog.records if r.getMessage().startswith("event dropped")]
    sent = [e for e in client.CoreV1Api(api).list_namespaced_event(namespace).items
            if e.involved_object.name == "flooded"]
    assert dropped and len(sent) + len(dropped) == 50
