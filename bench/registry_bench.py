"""Registry benchmark: what asking a registry costs the operator, against a real docker-registry
with token auth (the bearer flow of quay.io and registry.redhat.io) over TLS on loopback.

Image checks: ``RegistryChecker.check`` for driver images, half present with the plan's hash label,
half missing, as a cold start asks them (one client: pooled connections, cached tokens), then again
within the TTL (answers cached), against the baseline of a fresh client per check (a new TLS
connection and a new token each time). DTK checks: reading the kernel from a DTK whose lower layer
stands in for the kernel-devel RPMs, against the baseline of downloading every layer, as pulling
the image would.

    python -m bench.registry_bench [--images 200] [--devel-mib 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from kmm_dtk.core.plan import IMAGE_HASH_LABEL, Action, PlanEntry, Reason
from kmm_dtk.core.verdicts import ImageState
from kmm_dtk.registry.auth import AuthConfig
from kmm_dtk.registry.check import RegistryChecker
from kmm_dtk.registry.client import RegistryClient
from kmm_dtk.registry.image import image_config
from kmm_dtk.registry.reference import ImageRef
from kmm_dtk.registry.release import DtkInspector
from kmm_dtk.registry.tls import TrustStore
from tests.support.registry import RegistryServer, push_image

KERNEL = "5.14.0-570.27.1.el9_6.x86_64"


def _entry(server: RegistryServer, i: int, digest_hash: str) -> PlanEntry:
    return PlanEntry(f"bench/m{i}", KERNEL, Action.BUILD, Reason.BUILD_NEEDED, "build",
                     image=f"{server.host}/bench/driver-{i}:{KERNEL}", hash=digest_hash)


def _requests(server: RegistryServer) -> int:
    return sum(1 for line in server.log_text().splitlines() if '"GET /v2/' in line or '"HEAD /v2/' in line)


def _timed(calls) -> tuple[float, list[float]]:
    each = []
    started = time.perf_counter()
    for call in calls:
        t = time.perf_counter()
        call()
        each.append(time.perf_counter() - t)
    return time.perf_counter() - started, each


def _row(name: str, total: float, each: list[float], requests: int, base: float | None, note: str = "") -> str:
    ms = sorted(x * 1000 for x in each)
    p50, p99 = statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    ratio = f"{base / total:>7.1f}x" if base else f"{'-':>8}"
    return (f"{name:<38} {len(each):>6} {total:>8.2f} {p50:>8.2f} {p99:>8.2f} {requests / len(each):>9.1f} "
            f"{ratio} {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="driver images checked (half exist)")
    parser.add_argument("--devel-mib", type=int, default=64, help="size of the DTK's kernel-devel stand-in layer")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="kmm-dtk-registry-bench-") as tmp, \
            RegistryServer(Path(tmp), "token") as server:
        auth = AuthConfig.from_json(server.auth_json(), "bench")
        trust = TrustStore(ca_paths=(str(server.ca_file),))
        entries = []
        for i in range(args.images):
            entries.append(_entry(server, i, f"{i:020d}"))
            if i % 2 == 0:
                push_image(server, f"bench/driver-{i}", KERNEL, labels={IMAGE_HASH_LABEL: f"{i:020d}"})
        devel = {"usr/src/kernels/devel.bin": os.urandom(args.devel_mib << 20)}
        release = {"etc/driver-toolkit-release.json": json.dumps({"KERNEL_VERSION": KERNEL}).encode()}
        dtk = push_image(server, "bench/dtk", "9.6", files=[devel, release], compress=False)
        dtk_ref = ImageRef.parse(dtk.pull_spec)

        rows = []
        # -- image checks ---------------------------------------------------------------------------
        before = _requests(server)
        naive_total, naive_each = _timed(
            (lambda e=e: _fresh_check(trust, auth, e)) for e in entries)
        naive_requests = _requests(server) - before

        with RegistryClient(trust, auth) as client:
            checker = RegistryChecker(client, ttl=300)
            before = _requests(server)
            cold_total, cold_each = _timed((lambda e=e: checker.check(e)) for e in entries)
            cold_requests = _requests(server) - before
            states = {checker.check(e).state for e in entries}
            assert states == {ImageState.CURRENT, ImageState.MISSING}, states
            before = _requests(server)
            warm_total, warm_each = _timed((lambda e=e: checker.check(e)) for e in entries)
            warm_requests = _requests(server) - before

        rows.append(_row("fresh client per check (baseline)", naive_total, naive_each, naive_requests, None))
        rows.append(_row("RegistryChecker, cold", cold_total, cold_each, cold_requests, naive_total))
        rows.append(_row("RegistryChecker, within the TTL", warm_total, warm_each, warm_requests, naive_total))

        # -- DTK kernel ------------------------------------------------------------------------------
        with RegistryClient(trust, auth) as client:
            config = image_config(client, dtk_ref)
            assert config is not None
            before = _requests(server)
            pull_total, pull_each = _timed((lambda d=d: client.get_blob(dtk_ref, d, max_bytes=1 << 34))
                                           for d in config.layers)
            pull_each = [pull_total]
            pull_requests = _requests(server) - before
        with RegistryClient(trust, auth) as client:
            inspector = DtkInspector(client)
            before = _requests(server)
            cold_dtk_total, cold_dtk_each = _timed([lambda: inspector.kernels(dtk_ref)])
            cold_dtk_requests = _requests(server) - before
            assert inspector.kernels(dtk_ref).kernel == KERNEL
            before = _requests(server)
            warm_dtk_total, warm_dtk_each = _timed([lambda: inspector.kernels(dtk_ref)] * 100)
            warm_dtk_requests = _requests(server) - before
        rows.append(_row("DTK: download every layer (baseline)", pull_total, pull_each, pull_requests, None,
                         f"{args.devel_mib} MiB"))
        rows.append(_row("DTK: DtkInspector, cold", cold_dtk_total, cold_dtk_each, cold_dtk_requests, pull_total,
                         "top layer only"))
        rows.append(_row("DTK: DtkInspector, cached by digest", warm_dtk_total, warm_dtk_each, warm_dtk_requests,
                         pull_total * 100, "per 100 asks"))

    print(f"\nRegistry checks against docker-registry (TLS, token auth) on loopback: {args.images} driver images, "
          f"half present\n")
    header = f"{'variant':<38} {'asks':>6} {'total s':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/ask':>9} {'speedup':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(row)
    print("\nreq/ask counts registry GET/HEAD requests (token requests go to the token server, not counted).")
    return 0


def _fresh_check(trust: TrustStore, auth: AuthConfig, entry: PlanEntry) -> None:
    with RegistryClient(trust, auth) as client:
        RegistryChecker(client, ttl=0).check(entry)


if __name__ == "__main__":
    raise SystemExit(main())
