"""A clock the test moves by hand, for the classes that take one (``clock=``)."""

from __future__ import annotations


class FakeClock:
    """``clock()`` reads it; ``advance(seconds)`` moves it. Nothing else moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
