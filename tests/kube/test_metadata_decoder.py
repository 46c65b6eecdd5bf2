"""MetadataDecoder: only an object's identity is kept, whatever the server sent."""

from __future__ import annotations

import json

import msgspec
import pytest

from kmm_dtk.kube.decode import METADATA_ONLY, MetadataDecoder, decode_event

PARTIAL = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
           "metadata": {"name": "dockerfile", "namespace": "drivers", "uid": "u-1", "resourceVersion": "12",
                        "labels": {"a": "b"}, "annotations": {"c": "d"}, "managedFields": [{"manager": "x"}]}}


def test_a_list_page_keeps_identity_only_even_of_whole_objects():
    whole = {"kind": "ConfigMap", "metadata": {"name": "big", "namespace": "drivers", "uid": "u-2",
                                               "resourceVersion": "13"}, "data": {"ca.crt": "x" * 10_000}}
    raw = json.dumps({"kind": "PartialObjectMetadataList", "metadata": {"resourceVersion": "40", "continue": "tok"},
                      "items": [PARTIAL, whole]}).encode()
    page = MetadataDecoder().decode_list(raw)
    assert (page.resource_version, page.continue_token) == ("40", "tok")
    assert [dict(item) for item in page.items] == [
        {"metadata": {"name": "dockerfile", "namespace": "drivers", "uid": "u-1", "resourceVersion": "12"}},
        {"metadata": {"name": "big", "namespace": "drivers", "uid": "u-2", "resourceVersion": "13"}},
    ]
    assert page.items[0]["metadata"]["namespace"] is page.items[1]["metadata"]["namespace"]  # interned
    with pytest.raises(TypeError):
        page.items[0]["metadata"]["name"] = "other"


def test_an_empty_list_says_items_null():
    page = MetadataDecoder().decode_list(b'{"kind":"PartialObjectMetadataList","metadata":{"resourceVersion":"5"},'
                                         b'"items":null}')
    assert (page.resource_version, page.items) == ("5", [])


def test_watch_events_decode_to_identity_and_key():
    decoder = MetadataDecoder()
    event = decode_event(json.dumps({"type": "MODIFIED", "object": PARTIAL}).encode(), decoder)
    assert event.type == "MODIFIED" and event.resource_version == "12"
    assert event.obj is not None and "data" not in event.obj
    assert (decoder.key(event.obj), decoder.uid(event.obj), decoder.resource_version(event.obj)) == \
        ("drivers/dockerfile", "u-1", "12")
    cluster_scoped = decoder.decode_object(b'{"metadata":{"name":"n1","uid":"u","resourceVersion":"3"}}')
    assert decoder.key(cluster_scoped) == "n1" and "namespace" not in cluster_scoped["metadata"]
    bookmark = decode_event(b'{"type":"BOOKMARK","object":{"kind":"PartialObjectMetadata",'
                            b'"metadata":{"resourceVersion":"99"}}}', decoder)
    assert (bookmark.type, bookmark.resource_version, bookmark.obj) == ("BOOKMARK", "99", None)


def test_malformed_input_raises_a_decode_error_for_the_informer_to_relist():
    decoder = MetadataDecoder()
    with pytest.raises(msgspec.ValidationError):
        decoder.decode_object(b'{"metadata":{"name":7}}')
    with pytest.raises(msgspec.DecodeError):
        decoder.decode_list(b'{"items":[')


def test_the_accept_headers_name_the_metadata_forms():
    assert "as=PartialObjectMetadataList;g=meta.k8s.io;v=v1" in METADATA_ONLY.list
    assert "as=PartialObjectMetadata;g=meta.k8s.io;v=v1" in METADATA_ONLY.watch
    assert METADATA_ONLY.list.startswith("application/json;")
