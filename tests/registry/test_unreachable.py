"""Registries set aside after they stopped answering (pure: an injected clock)."""

from kmm_dtk.registry.check import UnreachableRegistries
from tests.support.clock import FakeClock


def test_a_registry_that_did_not_answer_is_skipped_for_the_hold():
    clock = FakeClock(0.0)
    held = UnreachableRegistries(90, clock)
    assert held.reason("mirror:5000") is None
    held.mark("mirror:5000", "timed out")
    clock.now = 89
    assert held.reason("mirror:5000") == "timed out"
    assert held.reason("other:5000") is None


def test_after_the_hold_one_caller_asks_and_the_others_keep_the_last_answer():
    clock = FakeClock(0.0)
    held = UnreachableRegistries(90, clock)
    held.mark("mirror:5000", "timed out")
    clock.now = 91
    assert held.reason("mirror:5000") is None  # this caller asks again
    assert held.reason("mirror:5000") == "timed out"  # the others do not, meanwhile
    held.answered("mirror:5000")
    assert held.reason("mirror:5000") is None


def test_a_caller_that_never_reports_back_does_not_hold_the_registry_forever():
    clock = FakeClock(0.0)
    held = UnreachableRegistries(90, clock)
    held.mark("mirror:5000", "timed out")
    clock.now = 91
    assert held.reason("mirror:5000") is None
    clock.now = 200
    assert held.reason("mirror:5000") is None  # the probe is stale: another caller may ask


def test_still_dead_after_asking_again_is_held_again():
    clock = FakeClock(0.0)
    held = UnreachableRegistries(90, clock)
    held.mark("mirror:5000", "timed out")
    clock.now = 91
    assert held.reason("mirror:5000") is None
    held.mark("mirror:5000", "refused")
    clock.now = 180
    assert held.reason("mirror:5000") == "refused"


def test_no_hold_means_always_ask():
    held = UnreachableRegistries(0, FakeClock(0.0))
    held.mark("mirror:5000", "timed out")
    assert held.reason("mirror:5000") is None
