"""The decision ladder: how registry answers turn a plan into what is done (pure: a stub answers)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kmm_dtk.core.decision import with_registry_answers
from kmm_dtk.core.plan import Action, PlanEntry, Reason
from kmm_dtk.core.verdicts import DtkCheck, DtkState, ImageCheck, ImageState


@dataclass
class Answers:
    image: ImageCheck
    dtk: DtkCheck = DtkCheck(DtkState.MATCHES, "ok")

    def check(self, entry):
        return self.image

    def check_dtk(self, entry):
        return self.dtk


def build_entry(**kw) -> PlanEntry:
    return PlanEntry("ns/m", "5.14.0-1.el9.x86_64", Action.BUILD, Reason.BUILD_NEEDED, "build it",
                     image="reg.example.com/ns/m:5.14.0-1.el9.x86_64", hash="a" * 20, dtk_image="reg/dtk@sha256:1",
                     **kw)


@pytest.mark.parametrize("image, dtk, action, reason", [
    (ImageCheck(ImageState.CURRENT, "exists and is up to date"), DtkState.MATCHES, Action.SKIP, Reason.IMAGE_EXISTS),
    (ImageCheck(ImageState.FOREIGN, "built elsewhere"), DtkState.MISMATCH, Action.SKIP, Reason.IMAGE_EXISTS),
    (ImageCheck(ImageState.MISSING, "not found"), DtkState.MATCHES, Action.BUILD, Reason.BUILD_NEEDED),
    (ImageCheck(ImageState.OUTDATED, "other inputs"), DtkState.MATCHES, Action.BUILD, Reason.IMAGE_OUTDATED),
    (ImageCheck(ImageState.UNKNOWN, "401"), DtkState.MATCHES, Action.WAIT, Reason.REGISTRY_UNAVAILABLE),
    (ImageCheck(ImageState.MISSING, "not found"), DtkState.MISMATCH, Action.ERROR, Reason.DTK_KERNEL_MISMATCH),
    (ImageCheck(ImageState.OUTDATED, "other inputs"), DtkState.UNKNOWN, Action.WAIT, Reason.REGISTRY_UNAVAILABLE),
    (ImageCheck(ImageState.MISSING, "not found"), DtkState.UNVERIFIED, Action.BUILD, Reason.BUILD_NEEDED),
], ids=["current", "foreign-dtk-not-asked", "missing", "outdated", "unknown", "dtk-mismatch", "dtk-unknown",
        "dtk-unverified"])
def test_registry_answers(image, dtk, action, reason):
    [entry] = with_registry_answers([build_entry()], Answers(image, DtkCheck(dtk, f"dtk {dtk.value}")))
    assert (entry.action, entry.reason_code) == (action, reason)
    if reason is not Reason.BUILD_NEEDED:
        assert entry.reason in (image.message, f"dtk {dtk.value}")
    assert entry.hash == "a" * 20  # the rest of the entry is kept


def test_entries_that_are_not_builds_are_not_asked():
    skip = PlanEntry("ns/m", "k", Action.SKIP, Reason.NO_KERNEL_MAPPING, "no mapping")

    class Refuses:
        def check(self, entry):
            raise AssertionError("asked")

        check_dtk = check

    assert with_registry_answers([skip], Refuses()) == [skip]
