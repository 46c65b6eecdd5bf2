"""Re-check timing on a fake clock: slots spread over the period, the per-registry token bucket, and
the memory that says when each record is due (kmm_dtk.operator.recheck)."""

from __future__ import annotations

import statistics

import pytest

from kmm_dtk.core.plan import PlanEntry
from kmm_dtk.core.verdicts import DtkCheck, DtkState, ImageCheck, ImageState
from kmm_dtk.operator.module_reconciler import AssumeMissing, default_rechecks
from kmm_dtk.operator.recheck import Rechecks, RegistryLimiter, next_slot, slot_offset
from tests.support.clock import FakeClock

PERIOD = 300.0
REGISTRY = "registry.example.com"


def rechecks(clock: FakeClock, rate: float = 10.0, period: float = PERIOD) -> Rechecks:
    return Rechecks(period, RegistryLimiter(rate, clock), clock=clock, wall=lambda: f"t={clock.now:g}")


# -- slots ------------------------------------------------------------------------------------------

def test_a_slot_is_stable_and_within_the_period() -> None:
    offset = slot_offset("ns/simple-kmod", "5.14.0-1.el9.x86_64", PERIOD)
    assert 0 <= offset < PERIOD
    assert slot_offset("ns/simple-kmod", "5.14.0-1.el9.x86_64", PERIOD) == offset  # a restart keeps it
    assert slot_offset("ns/simple-kmod", "5.14.0-2.el9.x86_64", PERIOD) != offset
    assert slot_offset("ns/other", "5.14.0-1.el9.x86_64", PERIOD) != offset


def test_next_slot_is_strictly_after_and_one_period_apart() -> None:
    assert next_slot(1000.0, 30.0, PERIOD) == 1230.0  # 30 + 4 * 300
    assert next_slot(1230.0, 30.0, PERIOD) == 1530.0  # on the slot itself: the next one
    assert next_slot(1229.999, 30.0, PERIOD) == 1230.0
    assert next_slot(-5.0, 30.0, PERIOD) == 30.0


def test_4000_records_come_due_spread_over_the_period() -> None:
    """200 Modules x 20 kernels: no second of the period holds more than a handful of first re-checks."""
    now = 1000.0
    dues = [next_slot(now, slot_offset(f"ns/module-{m}", f"4.18.0-{k}.el8.x86_64", PERIOD), PERIOD)
            for m in range(200) for k in range(20)]
    assert all(now < due <= now + PERIOD for due in dues)
    per_second = [0] * int(PERIOD)
    for due in dues:
        per_second[min(int(due - now), int(PERIOD) - 1)] += 1
    assert max(per_second) <= 40  # 13.3 a second on average
    assert statistics.pstdev(per_second) < 8
    assert sum(1 for n in per_second if n == 0) < 5


# -- the per-registry token bucket --------------------------------------------------------------------

def test_the_limiter_spaces_one_registry_and_not_another() -> None:
    clock = FakeClock()
    limiter = RegistryLimiter(4.0, clock)
    assert limiter.reserve(REGISTRY) == 0.0
    assert [limiter.reserve(REGISTRY) for _ in range(3)] == pytest.approx([0.25, 0.5, 0.75])  # booked, in turn
    assert limiter.reserve("quay.io") == 0.0  # its own bucket
    clock.now += 1.0  # the three booked tokens are spent by now
    assert limiter.reserve(REGISTRY) == pytest.approx(0.0)
    clock.now += 10.0
    assert limiter.reserve(REGISTRY) == 0.0
    assert limiter.reserve(REGISTRY) == pytest.approx(0.25)  # a burst of one: idle time does not pile up


def test_the_limiter_never_grants_more_than_the_rate_in_any_second() -> None:
    clock = FakeClock()
    limiter = RegistryLimiter(10.0, clock)
    granted = []
    for step in range(1000):  # callers every 10 ms; a granted turn is the time its token exists
        clock.now = 1000.0 + step * 0.01
        granted.append(clock.now + limiter.reserve(REGISTRY))
    granted.sort()
    assert all(b - a >= 0.1 - 1e-9 for a, b in zip(granted, granted[1:], strict=False))


def test_the_limiter_keeps_a_bounded_number_of_hosts() -> None:
    limiter = RegistryLimiter(1.0, FakeClock(), max_hosts=3)
    for host in ("a", "b", "c", "d"):
        limiter.reserve(host)
    assert len(limiter._buckets) == 3


# -- the memory ---------------------------------------------------------------------------------------

MODULE, KERNEL, HASH = "Module/ns/simple-kmod", "4.18.0-372.el8_6.x86_64", "hash-1"


def test_a_record_not_known_waits_for_its_slot_then_is_due_once_per_period() -> None:
    clock = FakeClock()
    memory = rechecks(clock)
    slot = next_slot(clock.now, slot_offset(MODULE, KERNEL, PERIOD), PERIOD)
    assert memory.due(MODULE, KERNEL, HASH, REGISTRY) is False  # after a restart: not at once
    assert memory.next_in(MODULE, {KERNEL: HASH}, {KERNEL}) == pytest.approx(slot - clock.now)
    clock.now = slot - 0.001
    assert memory.due(MODULE, KERNEL, HASH, REGISTRY) is False
    clock.now = slot
    assert memory.due(MODULE, KERNEL, HASH, REGISTRY) is True
    memory.checked(MODULE, KERNEL, HASH, found=True)
    assert memory.seen(MODULE, KERNEL, HASH) == f"t={slot:g}"
    assert memory.due(MODULE, KERNEL, HASH, REGISTRY) is False
    assert memory.next_in(MODULE, {KERNEL: HASH}, {KERNEL}) == pytest.approx(PERIOD)


def test_no_answer_keeps_the_last_time_seen_and_waits_a_period() -> None:
    clock = FakeClock()
    memory = rechecks(clock)
    memory.checked(MODULE, KERNEL, HASH, found=True)
    seen = memory.seen(MODULE, KERNEL, HASH)
    clock.now += PERIOD
    assert memory.due(MODULE, KERNEL, HASH, REGISTRY) is True
    memory.checked(MODULE, KERNEL, HASH, found=False)
    assert memory.seen(MODULE, KERNEL, HASH) == seen
    assert 0 < memory.next_in(MODULE, {KERNEL: HASH}, {KERNEL}) <= PERIOD


def test_records_due_together_on_one_registry_take_turns() -> None:
    """Five kernels due at once, 2 re-checks a second: one now, the others booked 0.5 s apart, each
    coming due at its turn without taking another token."""
    clock = FakeClock()
    memory = rechecks(clock, rate=2.0)
    kernels = [f"4.18.0-{i}.el8.x86_64" for i in range(5)]
    for kernel in kernels:
        memory.checked(MODULE, kernel, HASH, found=True)
    clock.now += PERIOD + 1  # every one of them is due
    assert [memory.due(MODULE, k, HASH, REGISTRY) for k in kernels] == [True, False, False, False, False]
    memory.checked(MODULE, kernels[0], HASH, found=True)
    done = set(kernels)
    assert memory.next_in(MODULE, dict.fromkeys(kernels, HASH), done) == pytest.approx(0.5)
    asked = [kernels[0]]
    for _ in range(4):
        clock.now += memory.next_in(MODULE, dict.fromkeys(kernels, HASH), done)
        turn = [k for k in kernels if k not in asked and memory.due(MODULE, k, HASH, REGISTRY)]
        assert len(turn) == 1
        memory.checked(MODULE, turn[0], HASH, found=True)
        asked.append(turn[0])
    assert sorted(asked) == sorted(kernels)


def test_a_new_hash_starts_over_and_other_kernels_are_forgotten() -> None:
    clock = FakeClock()
    memory = rechecks(clock)
    memory.checked(MODULE, KERNEL, HASH, found=True)
    memory.checked(MODULE, "gone-kernel", HASH, found=True)
    assert memory.seen(MODULE, KERNEL, "hash-2") is None
    assert memory.due(MODULE, KERNEL, "hash-2", REGISTRY) is False  # its first turn at its slot
    assert memory.next_in(MODULE, {KERNEL: "hash-2"}, set()) is None  # nothing in Exists/Succeeded
    assert memory.seen(MODULE, "gone-kernel", HASH) is None  # forgotten: the Module no longer records it


def test_a_rebuild_is_remembered_until_a_build_for_it_shows_up() -> None:
    clock = FakeClock()
    memory = rechecks(clock)
    memory.checked(MODULE, KERNEL, HASH, found=True)
    memory.vanished(MODULE, KERNEL, HASH, replacing="uid-old")
    assert memory.rebuilding(MODULE, KERNEL, HASH) == "uid-old"
    assert memory.rebuilding(MODULE, KERNEL, "hash-2") is None
    memory.building(MODULE, KERNEL, HASH, "uid-new")
    assert memory.rebuilding(MODULE, KERNEL, HASH) is None
    memory.vanished(MODULE, KERNEL, HASH)
    assert memory.rebuilding(MODULE, KERNEL, HASH) == ""  # no Build to replace: an image that existed
    memory.checked(MODULE, KERNEL, HASH, found=True)  # it came back
    assert memory.rebuilding(MODULE, KERNEL, HASH) is None


def test_modules_remembered_are_bounded() -> None:
    clock = FakeClock()
    memory = Rechecks(PERIOD, RegistryLimiter(1.0, clock), clock=clock, max_modules=2)
    for module in ("a", "b", "c"):
        memory.checked(module, KERNEL, HASH, found=True)
    assert memory.seen("a", KERNEL, HASH) is None
    assert memory.seen("c", KERNEL, HASH) is not None


def test_a_period_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Rechecks(0, RegistryLimiter(1.0))
    with pytest.raises(ValueError):
        RegistryLimiter(0)


class TtlChecker:
    """A registry checker that keeps its answers ``ttl`` seconds."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl

    def check(self, entry: PlanEntry) -> ImageCheck:
        return ImageCheck(ImageState.CURRENT, "there")

    def check_dtk(self, entry: PlanEntry) -> DtkCheck:
        return DtkCheck(DtkState.MATCHES, "right kernel")

    def invalidate(self, image: str) -> None:
        pass

    def auth_problems(self, entry: PlanEntry) -> tuple[str, ...]:
        return ()


def test_rechecks_follow_the_cache_ttl_and_never_happen_with_assume_missing() -> None:
    """--assume-missing cannot see the registry: an image recorded as there is kept, as before."""
    assert default_rechecks(AssumeMissing()) is None
    memory = default_rechecks(TtlChecker(7))
    assert memory is not None and memory.period == 7
    assert memory.limiter.rate == 10.0
    fallback = default_rechecks(TtlChecker(0), rate=2.5)
    assert fallback is not None and fallback.period == 300.0 and fallback.limiter.rate == 2.5
