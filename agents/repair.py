"""Repair agent: a teacher answer judged bad is retried with the judgement as feedback."""

from __future__ import annotations

from typing import Any, cast

import faust

from agents.distill import teach
from agents.runtime import Runtime
from agents.stage import register_stage
from schemas.records import RepairRequest


def register(app: faust.App, rt: Runtime) -> None:
    async def handle(request: dict[str, Any]) -> None:
        await teach(rt, cast(RepairRequest, request), int(request["attempt"]))

    register_stage(app, rt, source="repair", name="repair", handle=handle,
                   concurrency=rt.settings.distill_concurrency)
