"""Which optional APIs the API server serves (the OpenShift-only kinds are absent elsewhere)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from kmm_dtk.kube.client import ApiError, KubeClient, Resource

log = logging.getLogger(__name__)


class Discovery:
    """Which optional APIs the API server serves to us (OpenShift-only kinds are absent elsewhere),
    with one discovery request per group/version. Not served, or forbidden by RBAC, means no informer
    (one that never syncs would keep the operator from starting). An API server that does not answer
    is asked again for ``patience`` seconds, as the informers would; then the ApiError is raised."""

    def __init__(self, client: KubeClient, patience: float = 60.0) -> None:
        self.client = client
        self.patience = patience
        self._resources: dict[str, frozenset[str] | None] = {}  # group/version -> plurals; None: forbidden

    def served(self, resource: Resource) -> bool:
        path = f"/apis/{resource.group}/{resource.version}"
        if path not in self._resources:
            self._resources[path] = self._fetch(path)
        plurals = self._resources[path]
        if plurals is None:
            log.warning("API discovery forbidden; not watched", extra={"resource": str(resource)})
            return False
        if resource.plural not in plurals:
            log.info("API not served; not watched", extra={"resource": str(resource)})
            return False
        return True

    def _fetch(self, path: str) -> frozenset[str] | None:
        retrying = Retrying(stop=stop_after_delay(self.patience), wait=wait_exponential(multiplier=0.5, max=10),
                            retry=retry_if_exception(lambda e: isinstance(e, ApiError)
                                                     and e.status not in (401, 403, 404)),
                            reraise=True)
        try:
            found = retrying(self.client.request, "GET", path)
        except ApiError as err:
            if err.status == 404:
                return frozenset()
            if err.status == 403:
                return None
            raise
        return frozenset(r["name"] for r in found.get("resources") or ()
                         if isinstance(r, Mapping) and isinstance(r.get("name"), str))


def served(client: KubeClient, resource: Resource, patience: float = 60.0) -> bool:
    """One-off ``Discovery(client, patience).served(resource)``."""
    return Discovery(client, patience).served(resource)
