"""The answers of the registry checks, as plain values: the decision that follows them
(:mod:`kmm_dtk.core.decision`) is pure and shared by the operator and ``plan --check-registry``,
and ``--assume-missing`` answers without any registry code."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ImageState(str, Enum):
    MISSING = "Missing"  # every place a node would look answered "not there": build it
    CURRENT = "Current"  # there, and its hash label is the plan's hash
    OUTDATED = "Outdated"  # there, but built from other inputs: rebuild
    FOREIGN = "Foreign"  # there without our hash label: built elsewhere, kept
    UNKNOWN = "Unknown"  # no definite answer: neither build nor trust it; ask again later


@dataclass(frozen=True)
class ImageCheck:
    state: ImageState
    message: str
    via: str | None = None  # "mirror.local/ocp (ImageTagMirrorSet/mirrors)" when a mirror answered

    @property
    def exists(self) -> bool:
        return self.state in (ImageState.CURRENT, ImageState.FOREIGN)

    @property
    def build(self) -> bool:
        return self.state in (ImageState.MISSING, ImageState.OUTDATED)


class DtkState(str, Enum):
    MATCHES = "Matches"
    MISMATCH = "Mismatch"  # the DTK carries another kernel: refuse to build on it
    UNVERIFIED = "Unverified"  # the DTK names no kernel (older DTKs): it cannot say no, so build
    UNKNOWN = "Unknown"  # the registry gave no answer: ask again later


@dataclass(frozen=True)
class DtkCheck:
    state: DtkState
    message: str
