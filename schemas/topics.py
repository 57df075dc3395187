"""Every topic, consumer group and changelog name of the pipeline, in one place.

Names only: no client library is imported here, so the tools, the benchmarks and the worker
all take their names from the contract rather than from the worker's runtime. Topic names are
bare; `Settings.topic(name)` adds the configured prefix.
"""

from __future__ import annotations

from typing import Protocol

# The pipeline's topics, in the order records flow through them.
TOPICS = (
    "edit-events", "edit-events-dlq", "settled-examples", "student-samples", "scored-examples",
    "repair", "model-retry", "training-records", "rejected-examples", "pipeline-dlq",
    "eval-results", "scorecard",
)

# The stages after settle that the stage runner (agents/stages.py) reads, in its own group
# (`stages_group`), `model-retry` among them.
STAGE_SOURCES = ("settled-examples", "student-samples", "scored-examples", "repair",
                 "model-retry")


class HasAppId(Protocol):
    """Anything naming the application (`streams.settings.Settings`)."""

    @property
    def app_id(self) -> str: ...


def app_group(settings: HasAppId) -> str:
    """The Faust app's consumer group. It reads no topic any more; its committed offsets
    (`model-retry` and the stage topics, from versions that ran those stages as Faust agents)
    are where the stage runner starts a partition it has never committed."""
    return settings.app_id


def settle_group(settings: HasAppId) -> str:
    """The settle runner's consumer group (Faust's own group has its own protocol)."""
    return f"{settings.app_id}-settle"


def stages_group(settings: HasAppId) -> str:
    """The stage runner's consumer group (`STAGE_SOURCES`, `model-retry` included)."""
    return f"{settings.app_id}-stages"


def eval_group(settings: HasAppId) -> str:
    """The eval stage's consumer group (agents/evaluate.py): it reads `settled-examples` on
    its own, so a slow candidate never holds back the training stages, and a replay can run
    it alone."""
    return f"{settings.app_id}-eval"


def settle_changelog(settings: HasAppId) -> str:
    """The compacted topic holding the settle machines' state (the Faust table's old name)."""
    return f"{settings.app_id}-settle-state-changelog"
