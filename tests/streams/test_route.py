"""Every reject / repair / emit decision (streams/route.py)."""

from __future__ import annotations

from typing import Any

from streams.route import (
    next_step,
    rejection_after,
    route_scored,
    settle_rejection,
    to_distill,
)
from streams.settings import Settings

S = Settings()


def test_settle_reasons_in_the_setting_leave_at_settle() -> None:
    assert settle_rejection({"settle_reason": "ttl"}, S) == "settle_ttl"
    assert settle_rejection({"settle_reason": "context_lost"}, S) == "settle_context_lost"
    assert settle_rejection({"settle_reason": "quiescence"}, S) is None
    assert settle_rejection({"settle_reason": "client"}, S) is None
    assert settle_rejection({"settle_reason": "ttl"}, Settings(reject_settle_reasons=())) is None


def scored(band: str, noop: bool = False, **kw: Any) -> dict[str, Any]:
    ex = {"request_id": "r-1", "base_region": "a", "settled_region": "a" if noop else "b"}
    return {"example": ex, "band": band, "unparsable_samples": False, **kw}


def test_only_ideal_examples_and_kept_noops_go_on_to_distill() -> None:
    assert route_scored(scored("ideal"), S) is None
    assert route_scored(scored("trivial"), S) == "band_trivial"
    assert route_scored(scored("noise"), S) == "band_noise"
    assert route_scored(scored("ideal", unparsable_samples=True), S) == "unparsable_samples"
    # a no-op is decided before the band: kept (all) or sampled out (none)
    assert route_scored(scored("trivial", noop=True), Settings(noop_keep_fraction=1.0)) == "noop"
    assert route_scored(scored("ideal", noop=True), Settings(noop_keep_fraction=0.0)) == (
        "noop_sampled_out")
    assert to_distill(None) and to_distill("noop")
    assert not any(to_distill(r) for r in ("band_trivial", "noop_sampled_out",
                                           "unparsable_samples"))


def test_a_teacher_answer_is_emitted_repaired_or_rejected() -> None:
    s = Settings(repair_attempts=2)
    assert next_step(0, {"ok": True}, s) == "emit"
    assert next_step(0, {"ok": False}, s) == "repair"
    assert next_step(1, {"ok": False}, s) == "repair"
    assert next_step(2, {"ok": False}, s) == "reject"
    assert rejection_after(0) == "judged_bad" and rejection_after(2) == "repair_exhausted"
