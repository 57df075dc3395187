"""Every reject / repair / emit decision of the pipeline, each made by the stage that first
has what it needs (the agents only carry the decision out):

* settle (`settle_rejection`): an example settled for a reason in ``reject_settle_reasons``
  (default ``ttl`` and ``context_lost``: the user walked away, or the region's context was
  lost) leaves as ``settle_<reason>``; it is never sampled;
* score (`route_scored`): an example the user left as it was (settled == request-time region)
  is a *no-op*: its target is the format's no-edit answer, no teacher needed, and only
  ``noop_keep_fraction`` of them are kept (a stable hash of the request id decides, so their
  share of a dataset is a setting; the others leave as ``noop_sampled_out``); an example with
  too few valid student samples leaves as ``unparsable_samples``; one outside the ``ideal``
  band leaves as ``band_<band>``; the rest go to the teacher. The score stage writes these
  rejections, and the distill stage, reading the same scored record, takes only the no-ops
  and the teacher's examples (`to_distill`);
* distill and repair (`next_step`): a teacher answer that passes the gates of
  ``streams.judge`` is emitted, a bad one goes to repair while attempts remain, else it is
  rejected (``judged_bad`` on the first attempt, ``repair_exhausted`` after repairs).
"""

from __future__ import annotations

from typing import Literal

from schemas.records import Judgement, ScoredExample, SettledExample
from streams.ids import stable_fraction
from streams.settings import Settings

Step = Literal["emit", "repair", "reject"]


def settle_rejection(example: SettledExample, settings: Settings) -> str | None:
    """The rejection reason of a settled example, or ``None`` when it goes on to sampling."""
    reason = example["settle_reason"]
    return f"settle_{reason}" if reason in settings.reject_settle_reasons else None


def is_noop(example: SettledExample) -> bool:
    """The user left the editable region exactly as it was at request time."""
    return bool(example["settled_region"] == example["base_region"])


def route_scored(scored: ScoredExample, settings: Settings) -> str | None:
    """``None``: to the teacher; ``"noop"``: emit the no-edit answer; else the rejection."""
    example = scored["example"]
    if is_noop(example):
        keep = stable_fraction("noop", example["request_id"]) < settings.noop_keep_fraction
        return "noop" if keep else "noop_sampled_out"
    if scored.get("unparsable_samples"):
        return "unparsable_samples"
    band = scored["band"]
    return None if band == "ideal" else f"band_{band}"


def to_distill(route: str | None) -> bool:
    """Whether a scored example with this route is the distill stage's (the score stage has
    written the rejection of every other)."""
    return route is None or route == "noop"


def next_step(attempt_number: int, judgement: Judgement, settings: Settings) -> Step:
    """`emit` a good answer, `repair` a bad one while attempts remain, else `reject`."""
    if judgement["ok"]:
        return "emit"
    return "repair" if attempt_number < settings.repair_attempts else "reject"


def rejection_after(attempt_number: int) -> str:
    """The reason of a teacher answer rejected at attempt `attempt_number` (0: the first)."""
    return "repair_exhausted" if attempt_number else "judged_bad"
