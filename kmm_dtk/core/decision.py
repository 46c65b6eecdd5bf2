"""What happens to a planned build once the registry has answered (pure).

The planner says a kernel needs an image; the registry then says whether that image already
exists (and from which inputs) and whether the DTK really carries the kernel. This ladder turns
those answers into the plan entry that is carried out. The operator's module reconciler and
``kmm-dtk plan --check-registry`` both call :func:`decide`, so they cannot drift apart:

1. the image exists and is current, or was built elsewhere (no hash label): skip, keep it;
2. the registry gave no definite answer about the image: wait, ask again later;
3. the DTK carries another kernel: error, never build on it;
4. the registry gave no answer about the DTK: wait;
5. otherwise build: a missing image, or an outdated one (rebuilt), on a DTK that matches or
   names no kernel at all (older DTKs cannot say no).

The DTK is asked only when the image would be built: an existing image needs no DTK.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from kmm_dtk.core.plan import Action, PlanEntry, Reason
from kmm_dtk.core.verdicts import DtkCheck, DtkState, ImageCheck, ImageState


class RegistryAnswers(Protocol):
    """Whoever answers the two questions: the registry checker, or ``--assume-missing``."""

    def check(self, entry: PlanEntry) -> ImageCheck: ...

    def check_dtk(self, entry: PlanEntry) -> DtkCheck: ...


@dataclass(frozen=True)
class Decision:
    """The entry as the answers leave it, and the answers themselves (for messages and logs)."""

    entry: PlanEntry
    image: ImageCheck | None = None
    dtk: DtkCheck | None = None

    @property
    def unverified_dtk(self) -> bool:
        return self.dtk is not None and self.dtk.state is DtkState.UNVERIFIED


def decide(entry: PlanEntry, answers: RegistryAnswers) -> Decision:
    """The ladder of the module docstring; entries other than builds pass through unasked."""
    if entry.action is not Action.BUILD:
        return Decision(entry)
    image = answers.check(entry)
    if image.exists:
        return Decision(replace(entry, action=Action.SKIP, reason_code=Reason.IMAGE_EXISTS, reason=image.message),
                        image)
    if image.state is ImageState.UNKNOWN:
        return Decision(replace(entry, action=Action.WAIT, reason_code=Reason.REGISTRY_UNAVAILABLE,
                                reason=image.message), image)
    dtk = answers.check_dtk(entry)
    if dtk.state is DtkState.MISMATCH:
        return Decision(replace(entry, action=Action.ERROR, reason_code=Reason.DTK_KERNEL_MISMATCH,
                                reason=dtk.message), image, dtk)
    if dtk.state is DtkState.UNKNOWN:
        return Decision(replace(entry, action=Action.WAIT, reason_code=Reason.REGISTRY_UNAVAILABLE,
                                reason=dtk.message), image, dtk)
    if image.state is ImageState.OUTDATED:
        return Decision(replace(entry, reason_code=Reason.IMAGE_OUTDATED, reason=image.message), image, dtk)
    return Decision(entry, image, dtk)


def with_registry_answers(entries: list[PlanEntry], answers: RegistryAnswers) -> list[PlanEntry]:
    """The plan as the operator would carry it out (``kmm-dtk plan --check-registry``)."""
    return [decide(entry, answers).entry for entry in entries]
