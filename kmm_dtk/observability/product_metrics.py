"""What kmm-dtk has achieved, as Prometheus series computed at scrape time from a snapshot of the
informers' caches (the operator builds the snapshot; nothing here knows the objects' schema).

Reading the caches when scraped keeps the reconcilers free of metric bookkeeping and the numbers
exactly what the caches hold. The product series come from the replica that leads, whose kernel
map is fed and whose caches the reconcilers act on; a standby exports only ``kmm_dtk_leader 0``, so
``sum()`` over replicas never counts an object twice.

Build durations are a histogram: each completed Build is observed once, by uid, when a scrape
first finds it in the cache; the uids remembered are only those still in the cache.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

# Builds compile a kernel module: tens of seconds to an hour.
BUILD_BUCKETS: tuple[float, ...] = (30, 60, 120, 180, 300, 450, 600, 900, 1200, 1800, 2700, 3600, 7200)

LEADER = "kmm_dtk_leader"
CONDITIONS = "kmm_dtk_module_conditions"
KERNEL_RECORDS = "kmm_dtk_kernel_records"
KERNELS_RUNNING = "kmm_dtk_kernels_running"
KERNEL_WITHOUT_DTK = "kmm_dtk_kernel_without_dtk_tag"
REGISTRY_WAITING = "kmm_dtk_registry_checks_waiting"
BUILD_DURATION = "kmm_dtk_build_duration_seconds"
NAMES = (LEADER, CONDITIONS, KERNEL_RECORDS, KERNELS_RUNNING, KERNEL_WITHOUT_DTK, REGISTRY_WAITING, BUILD_DURATION)

_HELP = {
    LEADER: "1 if this replica leads (or runs without leader election), else 0",
    CONDITIONS: "Modules and ModuleBuilds by kind and by the type and status of their kmm-dtk conditions",
    KERNEL_RECORDS: "Per-kernel records in the status of Modules and ModuleBuilds, by kind and phase",
    KERNELS_RUNNING: "Kernels running on the cluster's nodes",
    KERNEL_WITHOUT_DTK: "1 for each kernel running on nodes whose RHCOS has no tag in the DTK ImageStream",
    REGISTRY_WAITING: "Per-kernel records waiting for a registry to answer (phase Waiting)",
    BUILD_DURATION: "Completed kmm-dtk Builds: completionTimestamp - startTimestamp, by the Build's final phase",
}


@dataclass(frozen=True)
class FinishedBuild:
    uid: str
    phase: str  # Complete, Failed, Error, Cancelled
    seconds: float


@dataclass(frozen=True)
class ProductSnapshot:
    """Plain numbers read from the caches at one moment."""

    conditions: Mapping[tuple[str, str, str], int] = field(default_factory=dict)  # (kind, type, status) -> n
    records: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (kind, phase) -> n
    kernels_running: int = 0
    kernels_without_dtk: Sequence[tuple[str, str]] = ()  # (kernel, rhcos)
    registry_waiting: int = 0
    finished_builds: Sequence[FinishedBuild] = ()


class _Histogram:
    """Bucket counts per label value, fed once per uid."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(sorted(buckets))
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._counts: dict[str, list[int]] = {}  # phase -> cumulative-to-be counts per bucket (+Inf last)
        self._sums: dict[str, float] = {}

    def seen(self, uid: str) -> bool:
        with self._lock:
            return uid in self._seen

    def feed(self, builds: Sequence[FinishedBuild]) -> None:
        with self._lock:
            present = set()
            for build in builds:
                present.add(build.uid)
                if build.uid in self._seen:
                    continue
                self._seen.add(build.uid)
                counts = self._counts.setdefault(build.phase, [0] * (len(self.buckets) + 1))
                index = next((i for i, bound in enumerate(self.buckets) if build.seconds <= bound), len(self.buckets))
                counts[index] += 1
                self._sums[build.phase] = self._sums.get(build.phase, 0.0) + build.seconds
            self._seen &= present  # a deleted Build never comes back under its uid

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(BUILD_DURATION, _HELP[BUILD_DURATION], labels=["phase"])
        with self._lock:
            for phase in sorted(self._counts):
                running, cumulative = 0, []
                for bound, count in zip([*map(_bound, self.buckets), "+Inf"], self._counts[phase], strict=True):
                    running += count
                    cumulative.append((bound, float(running)))
                family.add_metric([phase], cumulative, self._sums[phase])
        return family


def _bound(value: float) -> str:
    return str(float(value))


class ProductCollector:
    """A prometheus_client collector: ``leading()`` says whether this replica leads, ``snapshot()``
    reads the caches (None until they have synced)."""

    def __init__(self, leading: Callable[[], bool], snapshot: Callable[[], ProductSnapshot | None],
                 buckets: Sequence[float] = BUILD_BUCKETS) -> None:
        self._leading = leading
        self._snapshot = snapshot
        self._durations = _Histogram(buckets)

    def observed(self, uid: str) -> bool:
        """Whether the Build ``uid`` is counted already (the snapshot need not read its times)."""
        return self._durations.seen(uid)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected only when scraped, never at registration

    def collect(self) -> Iterator[Metric]:
        leading = self._leading()
        leader = GaugeMetricFamily(LEADER, _HELP[LEADER])
        leader.add_metric([], 1.0 if leading else 0.0)
        yield leader
        snapshot = self._snapshot() if leading else None
        if snapshot is None:
            return
        conditions = GaugeMetricFamily(CONDITIONS, _HELP[CONDITIONS], labels=["kind", "type", "status"])
        for (kind, kind_type, status), count in sorted(snapshot.conditions.items()):
            conditions.add_metric([kind, kind_type, status], count)
        records = GaugeMetricFamily(KERNEL_RECORDS, _HELP[KERNEL_RECORDS], labels=["kind", "phase"])
        for (kind, phase), count in sorted(snapshot.records.items()):
            records.add_metric([kind, phase], count)
        missing = GaugeMetricFamily(KERNEL_WITHOUT_DTK, _HELP[KERNEL_WITHOUT_DTK], labels=["kernel", "rhcos"])
        for kernel, rhcos in sorted(snapshot.kernels_without_dtk):
            missing.add_metric([kernel, rhcos], 1.0)
        yield conditions
        yield records
        yield GaugeMetricFamily(KERNELS_RUNNING, _HELP[KERNELS_RUNNING], value=snapshot.kernels_running)
        yield missing
        yield GaugeMetricFamily(REGISTRY_WAITING, _HELP[REGISTRY_WAITING], value=snapshot.registry_waiting)
        self._durations.feed(snapshot.finished_builds)
        yield self._durations.family()
