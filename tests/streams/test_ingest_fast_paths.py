"""The ingest verdict's shortcuts change nothing (the e-mail pre-check, the secret
pre-filter's rarer pieces, the jsonschema-rs schema path): each is compared with the plain
code it stands in for, on generated traces, the privacy corpus (secrets, opt-outs, disabled
paths) and text built to hit the edge cases. A faster verdict must be the same verdict."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import schemas
from editstream.sessions.generate import GenerateConfig, generate_events
from streams import ingest, pii, secrets
from streams.ingest import judge_event
from streams.settings import Settings
from tests.integration.privacy_corpus import privacy_corpus
from tests.streams.test_secrets import FAKES, NEAR_MISSES

# the pre-filter on the rules' own literals, as before its rarer pieces
REFERENCE_PREFILTER = secrets._any_literal([lit for r in secrets.RULES for lit in r.literals])


def reference_find_secret(text: str) -> str | None:
    if REFERENCE_PREFILTER.search(text) is None:
        return None
    for rule in secrets.RULES:
        if not any(lit in text for lit in rule.literals):
            continue
        for m in rule.pattern.finditer(text):
            token = m.group(m.lastindex or 0)
            if rule.check is None or rule.check(token):
                return rule.name
    return None


def reference_mask_text(text: str) -> str:
    """`mask_text` without the `@` pre-check: `_EMAIL` runs on any text holding an `@`."""
    if "@" in text:
        text = pii._EMAIL.sub(pii._email, text)
    if "Users" in text or "/home/" in text:
        text = pii._HOME.sub(pii._home, text)
    return text


def reference_validate(event: Any) -> Any:
    """`validate_edit_event` without the jsonschema-rs fast path: the compiled validators."""
    return schemas.compiled_edit_event_validator()(event)


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


# addresses, decorators, scoped packages, `@` at either end, non-ASCII word characters
TRICKY = ["a@b.co", "@a.co", "a@", "@", "x @y.io", "x@ y.io", "_@_.io", "é@ü.de", "a@_b.io",
          "%@1.io", "-@x-.io", "a@b@c.de", "@property\n@x.setter", "git@github.com:o/r",
          "name@2x.png", '"@types/node"', "+@a.bc", "a.@b.cd", "漢@字.中国", "ab@c.d"]


def corpus() -> list[dict[str, Any]]:
    events = generate_events(GenerateConfig(seed=3, sessions=30))
    everything, _, _ = privacy_corpus(sessions=10)
    # the same events with tricky text spliced into their content fields
    spliced = []
    for ev, tricky in zip(events[:400], itertools.cycle(TRICKY), strict=False):
        ev = orjson.loads(orjson.dumps(ev))
        for field in ("text", "excerpt", "settled_region"):
            if isinstance(ev.get(field), str):
                ev[field] = f"{ev[field][:5]}{tricky} {ev[field][5:]}"
        spliced.append(ev)
    # and broken: one field of each set to a value of the wrong type or out of bounds
    broken = []
    fields = itertools.cycle(["v", "session_id", "ts_ms", "path", "start", "end", "text",
                              "request_id", "cursor", "editable_range", "history", "outcome",
                              "was_shown", "settled_region", "repo_url", "can_collect_data"])
    values = itertools.cycle([None, "", 1.5, -1, True, "x" * 300, [0], 2**32, 3.0])
    for ev in events[:600]:
        broken.append({**ev, next(fields): next(values)})
    return events + everything + spliced + broken


@given(st.text(alphabet=st.sampled_from("ab1_.%+-@ é漢/\\\nUsers:home"), max_size=40))
def test_mask_text_equals_the_reference(text: str) -> None:
    assert pii.mask_text(text) == reference_mask_text(text)


def test_mask_text_equals_the_reference_on_the_corpora() -> None:
    texts = {s for ev in corpus() for s in strings(ev)} | set(TRICKY)
    changed = 0
    for text in texts:
        assert pii.mask_text(text) == reference_mask_text(text), text
        changed += reference_mask_text(text) != text
    assert changed > 20  # the corpora do hold personal data to mask


LITERAL_BITS = sorted({lit for r in secrets.RULES for lit in r.literals}
                      | set(secrets._PREFILTER_PIECES.values()))


@given(st.lists(st.one_of(st.sampled_from(LITERAL_BITS),
                          st.text(alphabet="aAkK-_.yJ0x/\\n\"", max_size=8),
                          st.sampled_from([t for ts in FAKES.values() for t in ts])),
                max_size=6))
def test_find_secret_equals_the_reference(parts: list[str]) -> None:
    text = "".join(parts)
    assert secrets.find_secret(text) == reference_find_secret(text)


def test_find_secret_equals_the_reference_on_the_corpora() -> None:
    texts = [orjson.dumps(ev).decode() for ev in corpus()] + list(NEAR_MISSES)
    found = 0
    for text in texts:
        assert secrets.find_secret(text) == reference_find_secret(text)
        found += reference_find_secret(text) is not None
    assert found > 100


@pytest.mark.parametrize("policy", ["mask", "discard"])
def test_judge_event_verdicts_are_the_references(policy: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(pii_policy=policy)
    events = corpus()
    fast = [judge_event(orjson.loads(orjson.dumps(ev)), settings) for ev in events]
    monkeypatch.setattr(pii, "mask_text", reference_mask_text)
    monkeypatch.setattr(ingest, "find_secret", reference_find_secret)
    monkeypatch.setattr(ingest, "validate_edit_event", reference_validate)
    slow = [judge_event(orjson.loads(orjson.dumps(ev)), settings) for ev in events]
    assert fast == slow
    statuses = {(v.status, v.reason) for v in fast}
    assert {("accepted", None), ("discarded", "secret_detected"),
            ("discarded", "no_consent"), ("rejected", "schema")} <= statuses
