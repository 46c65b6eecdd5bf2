"""WWW-Authenticate parsing and the authorisation cache (kmm_dtk.registry.challenge)."""

from __future__ import annotations

import pytest

from kmm_dtk.registry.challenge import AuthorizationCache, Challenge, parse_challenges


@pytest.mark.parametrize("header, expected", [
    ('Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull"',
     [Challenge("bearer", {"realm": "https://auth.example.com/token", "service": "registry.example.com",
                           "scope": "repository:a/b:pull"})]),
    ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
    ('basic realm=unquoted', [Challenge("basic", {"realm": "unquoted"})]),
    ('Bearer realm="https://a/token", scope="repository:x:pull,push", error="insufficient_scope"',
     [Challenge("bearer", {"realm": "https://a/token", "scope": "repository:x:pull,push",
                           "error": "insufficient_scope"})]),
    ('Basic realm="r", Bearer realm="https://t/", service="s"',
     [Challenge("basic", {"realm": "r"}), Challenge("bearer", {"realm": "https://t/", "service": "s"})]),
    ('Bearer realm="with \\"quotes\\""', [Challenge("bearer", {"realm": 'with "quotes"'})]),
    ("Bearer", [Challenge("bearer", {})]),
    ("", []),
    (None, []),
    ('realm="no scheme"', []),
])
def test_parse_challenges(header, expected):
    assert parse_challenges(header) == expected


def test_cache_expires_and_prefers_scoped_entries():
    now = [100.0]
    cache = AuthorizationCache(clock=lambda: now[0])
    cache.put("reg", "repository:a:pull", "id1", "Bearer t1", ttl=30)
    cache.put("reg", None, "id2", "Basic b", ttl=None)
    assert cache.get("reg", "repository:a:pull", "id1") == "Bearer t1"
    assert cache.get("reg", "repository:b:pull", "id1") is None  # another scope
    assert cache.get("reg", "repository:a:pull", "id3") is None  # another credential
    assert cache.get("reg", "repository:zzz:pull", "id2") == "Basic b"  # Basic is per registry
    now[0] += 31
    assert cache.get("reg", "repository:a:pull", "id1") is None
    assert cache.get("reg", "repository:a:pull", "id2") == "Basic b"
    cache.forget("reg", "repository:a:pull", "id2")
    assert cache.get("reg", "repository:a:pull", "id2") is None
    assert "Basic" not in repr(cache)
