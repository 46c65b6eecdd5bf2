"""``kmm-dtk run`` at start: wait for the API server, saying so, for a bounded time.

Without this an unreachable server means a minute of silence (the informers' and discovery's own
retries) and then a message full of transport internals. Here the server is asked for ``/version``
until it answers anything at all (an HTTP error is an answer: the server is up, and whatever is wrong
is reported by the calls that follow), with a progress line every few seconds, and a one-line
:class:`ApiServerUnreachable` once the deadline has passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kmm_dtk.cmd.messages import clean_message
from kmm_dtk.kube.client import ApiError, KubeClient

__all__ = ["ApiServerUnreachable", "clean_message", "transport_reason", "wait_for_api_server"]
_REASONS = (  # substrings of transport errors (lower case) -> what to print
    ("connection refused", "connection refused"),
    ("name or service not known", "cannot resolve the host name"),
    ("nodename nor servname", "cannot resolve the host name"),
    ("temporary failure in name resolution", "cannot resolve the host name"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network is unreachable"),
    ("timed out", "timed out"),
    ("connection reset", "connection reset"),
)


class ApiServerUnreachable(Exception):
    """The API server gave no answer before the deadline; ``str()`` is the one line to print."""


def transport_reason(message: str) -> str:
    """The short reason of a transport error (``connection refused``), else its cleaned message."""
    lowered = message.lower()
    for needle, reason in _REASONS:
        if needle in lowered:
            return reason
    return clean_message(message)


def wait_for_api_server(client: KubeClient, *, timeout: float, report: Callable[[str], None],
                        progress_every: float = 5.0, clock: Callable[[], float] = time.monotonic,
                        sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once the server answers; ``report`` gets a progress line on the first failure and then
    every ``progress_every`` seconds; after ``timeout`` seconds raise ApiServerUnreachable."""
    host = client.host
    deadline = clock() + timeout
    next_report = clock()
    delay = 0.5
    while True:
        remaining = deadline - clock()
        try:
            client.request("GET", "/version", timeout=(max(0.1, min(5.0, remaining)), max(0.1, min(10.0, remaining))))
            return
        except ApiError as err:
            if err.status:
                return  # an HTTP answer: the server is there
            reason = transport_reason(err.message or str(err))
        now = clock()
        if now >= deadline:
            raise ApiServerUnreachable(f"the API server at {host} did not answer within {timeout:g} s: {reason}")
        if now >= next_report:
            report(f"waiting for the API server at {host}: {reason} (retrying for {deadline - now:.0f} s more)")
            next_report = now + progress_every
        sleep(min(delay, max(0.0, deadline - now)))
        delay = min(delay * 2, 2.0)
