"""Who may read /metrics, asked of the API server: a bearer token is authenticated with a TokenReview,
and the user it names is authorized with a SubjectAccessReview for the request's non-resource URL
and verb, as controller-runtime's ``filters.WithAuthenticationAndAuthorization`` does.

Answers are cached for ``ttl`` seconds by the token's SHA-256 (never the token itself), path and
verb, in a bounded LRU: Prometheus scraping every 30 s costs at most the two POSTs of one decision.
Failures to reach the API are never cached. The client must be one no write fence stands in front
of: both reviews are POSTs, and every replica, leader or not, serves its metrics.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kmm_dtk.kube.client import ApiError, KubeClient, Resource

log = logging.getLogger(__name__)

TOKEN_REVIEWS = Resource("authentication.k8s.io", "v1", "tokenreviews", namespaced=False, kind="TokenReview")
SUBJECT_ACCESS_REVIEWS = Resource("authorization.k8s.io", "v1", "subjectaccessreviews", namespaced=False,
                                  kind="SubjectAccessReview")

DEFAULT_TTL = 10.0
DEFAULT_MAX_ENTRIES = 1024


@dataclass(frozen=True)
class Decision:
    """An HTTP status (200 allowed, 401 not authenticated, 403 not authorized, 500 the API failed) and why."""

    status: int
    message: str
    user: str = ""

    @property
    def allowed(self) -> bool:
        return self.status == 200


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header (the scheme is case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


class DelegatedAuth:
    """Authenticates and authorizes requests for non-resource URLs through the API server."""

    def __init__(self, client: KubeClient, *, ttl: float = DEFAULT_TTL, max_entries: int = DEFAULT_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str, str], tuple[float, Decision]] = OrderedDict()
        self.reviews = 0  # TokenReviews and SubjectAccessReviews sent, for tests and logs

    def check(self, authorization: str | None, path: str, method: str) -> Decision:
        """The decision for a request with this Authorization header, URL path and HTTP method."""
        token = bearer_token(authorization)
        if token is None:
            return Decision(401, "Unauthorized")
        key = (hashlib.sha256(token.encode()).hexdigest(), path, method.lower())
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                self._cache.move_to_end(key)
                return cached[1]
        decision, definite = self._decide(token, path, method.lower())
        if definite:
            with self._lock:
                self._cache[key] = (now + self.ttl, decision)
                self._cache.move_to_end(key)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        return decision

    def _decide(self, token: str, path: str, verb: str) -> tuple[Decision, bool]:
        """(decision, whether it may be cached)."""
        try:
            review = self._post(TOKEN_REVIEWS, {"spec": {"token": token}})
        except ApiError as err:
            log.warning("metrics authentication failed: TokenReview not answered", extra={"error": str(err)})
            return Decision(401, "Authentication failed"), False
        status = _object(review.get("status"))
        if not status.get("authenticated"):
            return Decision(401, "Unauthorized"), True
        user = _object(status.get("user"))
        name = str(user.get("username") or "")
        spec: dict[str, Any] = {
            "user": name,
            "groups": _strings(user.get("groups")),
            "nonResourceAttributes": {"path": path, "verb": verb},
        }
        if user.get("uid"):
            spec["uid"] = str(user["uid"])
        extra = user.get("extra")
        if isinstance(extra, Mapping):
            spec["extra"] = {str(k): _strings(v) for k, v in extra.items()}
        try:
            access = self._post(SUBJECT_ACCESS_REVIEWS, {"spec": spec})
        except ApiError as err:
            log.warning("metrics authorization failed: SubjectAccessReview not answered",
                        extra={"user": name, "error": str(err)})
            return Decision(500, f"Authorization for user {name} failed", name), False
        verdict = _object(access.get("status"))
        if verdict.get("allowed") and not verdict.get("denied"):
            return Decision(200, "OK", name), True
        log.info("metrics scrape denied", extra={"user": name, "path": path, "verb": verb,
                                                 "reason": verdict.get("reason") or ""})
        return Decision(403, f"Authorization denied for user {name}", name), True

    def _post(self, resource: Resource, body: Mapping[str, Any]) -> Mapping[str, Any]:
        self.reviews += 1
        sent = {"apiVersion": resource.api_version, "kind": resource.kind, **body}
        answer: Any = self._client.create(resource, sent)
        if not isinstance(answer, Mapping):
            raise ApiError(0, "Malformed", f"{resource.kind}: the answer is not an object")
        return answer
