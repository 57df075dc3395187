"""The privacy corpus: real generated traces plus private variants of each, with canaries.

Used through the gateway (`test_gateway.py`) and straight into `edit-events` through the whole
pipeline (`test_privacy_pipeline.py`): the same events must get the same verdicts either way,
and no canary may appear in any topic, log or export.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import orjson

from editstream.sessions.generate import GenerateConfig, generate_events
from tests.streams.test_secrets import FAKES


def privacy_corpus(seed: int = 17, sessions: int = 50
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[str]]:
    """(all events, the private variants, canaries): two private variants of every real event
    (over 10,000 events with the default size)."""
    real = generate_events(GenerateConfig(seed=23, sessions=sessions, predictions_per_session=6))
    poison, canaries = _poison(real + real, random.Random(seed))
    return real + poison, poison, canaries


def _poison(events: list[dict[str, Any]], rng: random.Random
            ) -> tuple[list[dict[str, Any]], set[str]]:
    """Opted-out, disabled-path, closed-source and secret-bearing variants of real events,
    each with a unique canary string that must never appear in any topic."""
    tokens = [t for ts in FAKES.values() for t in ts]
    out: list[dict[str, Any]] = []
    canaries: set[str] = set()
    kinds = itertools.cycle(["optout", "optout_missing", "secret", "path", "closed", "secret"])
    for n, base in enumerate(events):
        kind = next(kinds)
        ev = orjson.loads(orjson.dumps(base))
        ev["session_id"] = f"bad-{kind}-{n}"
        canary = f"CANARY-{kind}-{n}-{rng.getrandbits(32):08x}"
        ev["x_note"] = canary
        if kind == "optout":
            ev["can_collect_data"] = False
        elif kind == "optout_missing":
            del ev["can_collect_data"]
        elif kind == "path":
            ev["path"] = rng.choice(["app/.env.production", "certs/api.key", "home/id_rsa.pub",
                                     "config/client_secret.json", "tls/Server.PEM"])
        elif kind == "closed":
            if ev["type"] != "prediction":
                ev["can_collect_data"] = False  # only predictions carry the repo flag
            ev["in_open_source_repo"] = False
        else:
            token = tokens[n % len(tokens)]
            canaries.add(token)
            field = {"prediction": "excerpt", "edit": "text", "settled": "settled_region",
                     "outcome": "x_note"}[ev["type"]]
            if ev["type"] == "prediction" and ev["history"] and n % 2:
                ev["history"][-1]["diff"] += f"+KEY = '{token}'\n"
            elif ev["type"] == "prediction" and n % 3 == 0:
                ev["output"] = (ev.get("output") or "") + token
            else:
                ev[field] = f"{ev.get(field, '')}\n{token}\n"
        canaries.add(canary)
        out.append(ev)
    return out, canaries
