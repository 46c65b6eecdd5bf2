"""Rate limiters: exact client-go numbers, computed against a fake clock."""

from __future__ import annotations

import pytest

from kmm_dtk.kube.ratelimit import (
    BucketRateLimiter,
    ItemExponentialRateLimiter,
    MaxOfRateLimiter,
    default_controller_rate_limiter,
)
from tests.support.clock import FakeClock


def test_exponential_doubles_from_5ms_and_caps_at_1000s() -> None:
    limiter = ItemExponentialRateLimiter()
    delays = [limiter.when("ns/a") for _ in range(25)]
    assert delays[:5] == pytest.approx([0.005, 0.010, 0.020, 0.040, 0.080])
    assert delays[17] == pytest.approx(0.005 * 2**17)  # 655.36 s, still below the cap
    assert delays[18:] == [1000.0] * 7
    assert limiter.num_requeues("ns/a") == 25


def test_exponential_never_overflows_after_a_long_outage() -> None:
    limiter = ItemExponentialRateLimiter()
    for _ in range(2000):
        delay = limiter.when("k")
    assert delay == 1000.0


def test_exponential_is_per_key_and_forget_resets() -> None:
    limiter = ItemExponentialRateLimiter()
    limiter.when("a")
    limiter.when("a")
    assert limiter.when(("ns", "b")) == pytest.approx(0.005)  # b is not slowed by a's failures
    assert limiter.num_requeues("a") == 2
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == pytest.approx(0.005)
    assert limiter.num_requeues(("ns", "b")) == 1


def test_exponential_custom_base_and_cap() -> None:
    limiter = ItemExponentialRateLimiter(base_delay=1.0, max_delay=5.0)
    assert [limiter.when("k") for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_bucket_burst_then_spaced_at_qps() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(qps=10, burst=100, clock=clock)
    assert [limiter.when(i) for i in range(100)] == [0.0] * 100
    # Each further reservation waits one more token interval (0.1 s) behind the previous one.
    assert [limiter.when(i) for i in range(3)] == pytest.approx([0.1, 0.2, 0.3])


def test_bucket_refills_with_time_but_not_beyond_burst() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(qps=10, burst=100, clock=clock)
    for i in range(100):
        limiter.when(i)
    clock.advance(0.1)  # exactly one token back
    assert limiter.when("x") == 0.0
    assert limiter.when("y") == pytest.approx(0.1)
    clock.advance(1000.0)  # far more than needed: the bucket holds at most `burst` tokens
    assert [limiter.when(i) for i in range(100)] == [0.0] * 100
    assert limiter.when("z") == pytest.approx(0.1)


def test_bucket_steady_rate_at_qps_needs_no_wait() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(qps=10, burst=1, clock=clock)
    assert limiter.when("a") == 0.0
    assert limiter.when("b") == pytest.approx(0.1)  # reserved: a token 0.1 s from now
    clock.advance(0.2)  # that token and the next have been produced
    assert limiter.when("c") == pytest.approx(0.0)


def test_bucket_tracks_no_keys() -> None:
    limiter = BucketRateLimiter(clock=FakeClock())
    limiter.when("a")
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        BucketRateLimiter(qps=0)
    with pytest.raises(ValueError):
        BucketRateLimiter(burst=0)


def test_max_of_takes_the_longest_and_asks_every_limiter() -> None:
    clock = FakeClock()
    bucket = BucketRateLimiter(qps=1, burst=2, clock=clock)
    expo = ItemExponentialRateLimiter(base_delay=0.5, max_delay=100)
    limiter = MaxOfRateLimiter(expo, bucket)
    assert limiter.when("a") == pytest.approx(0.5)  # expo 0.5 > bucket 0
    assert limiter.when("a") == pytest.approx(1.0)  # expo 1.0 > bucket 0
    assert limiter.when("b") == pytest.approx(1.0)  # expo 0.5 < bucket 1.0 (its burst is spent)
    assert limiter.num_requeues("a") == 2
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert expo.num_requeues("a") == 0
    with pytest.raises(ValueError):
        MaxOfRateLimiter()


def test_default_controller_rate_limiter() -> None:
    clock = FakeClock()
    limiter = default_controller_rate_limiter(clock=clock)
    # Per key: 5 ms doubling while the bucket still has tokens.
    assert [limiter.when("ns/a") for _ in range(4)] == pytest.approx([0.005, 0.01, 0.02, 0.04])
    # Overall: 100 tokens in the burst, 4 spent above; a storm of fresh keys hits the bucket.
    fresh = [limiter.when(f"ns/k{i}") for i in range(97)]
    assert fresh[:96] == pytest.approx([0.005] * 96)
    assert fresh[96] == pytest.approx(0.1)
    assert limiter.num_requeues("ns/a") == 4
    limiter.forget("ns/a")
    assert limiter.num_requeues("ns/a") == 0
