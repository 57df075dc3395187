"""Repair stage (run by agents/stages.py): a teacher answer judged bad is retried with the
judgement as feedback."""

from __future__ import annotations

from agents.distill import teach
from agents.runtime import Runtime
from schemas.records import RepairRequest


async def repair_one(rt: Runtime, request: RepairRequest) -> None:
    await teach(rt, request, int(request["attempt"]))
