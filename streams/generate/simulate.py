"""Many sessions, interleaved: the seeded mix of session traits and the merged event stream."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from streams.generate.config import SECRET_PATHS, GenerateConfig
from streams.generate.emitter import _Traits
from streams.generate.session import _Session
from streams.generate.sources import SourceFiles


def _pick_sessions(rng: random.Random, n: int, frac: float) -> set[int]:
    """round(n * frac) sessions (at least one once n >= 4), so every case is present."""
    k = round(n * frac)
    if k == 0 and n >= 4:
        k = 1
    return set(rng.sample(range(n), min(k, n)))


@dataclass(frozen=True)
class SessionMix:
    """Which sessions get which trait, drawn once per corpus at fixed rates (so every case
    is present, not hoped for); shared by the splicer and the history generator."""

    no_collect: set[int]
    closed_source: set[int]
    client_settles: set[int]
    secret: set[int]
    non_ascii: set[int]
    ttl: set[int]
    leaky: set[int]

    def traits(self, master: random.Random, i: int, repo: int, start_ms: int) -> _Traits:
        return _Traits(
            collect=i not in self.no_collect,
            open_source=i not in self.closed_source,
            client_settles=i in self.client_settles,
            secret_path=master.choice(SECRET_PATHS) if i in self.secret else None,
            leaky_history=i in self.leaky,
            non_ascii=i in self.non_ascii,
            ttl=i in self.ttl,
            repo=repo,
            start_ms=start_ms + master.randint(0, 15 * 60_000),
        )


def session_mix(master: random.Random, n: int) -> SessionMix:
    """The trait mix of `n` sessions: no consent 5 %, closed source 10 %, a self-settling
    client 10 %, a credential typed in a disabled path 15 % (one of them a leaky client),
    non-ASCII 40 %, TTL tinkering 5 %."""
    no_collect = _pick_sessions(master, n, 0.05)
    closed_source = _pick_sessions(master, n, 0.10)
    client_settles = _pick_sessions(master, n, 0.10)
    secret = _pick_sessions(master, n, 0.15)
    non_ascii = _pick_sessions(master, n, 0.40)
    ttl = _pick_sessions(master, n, 0.05)
    leaky = {master.choice(sorted(secret))} if secret else set()
    return SessionMix(no_collect, closed_source, client_settles, secret, non_ascii, ttl, leaky)


def simulate(
    config: GenerateConfig, sources: SourceFiles
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], str]]:
    """(events, initial files): the events in the order an editor would send them, and the
    text of every file before its session's first edit, keyed by (session_id, path).

    Deterministic for a given config and sources. Each session is chronological; sessions
    are interleaved by `ts_ms` (ties broken by session, then by the order the session emitted
    them).
    """
    if config.sessions < 0 or config.predictions_per_session < 0 or config.repos < 1:
        raise ValueError(f"invalid config: {config}")
    if config.sessions and not sources.paths:
        raise ValueError(f"no usable .py files under {config.source_dir or 'the stdlib'}")
    master = random.Random(f"editstream-generate:{config.seed}")
    n = config.sessions
    mix = session_mix(master, n)
    repos = list(range(config.repos))
    master.shuffle(repos)  # every repo gets used once there are enough sessions
    merged: list[tuple[int, int, int, dict[str, Any]]] = []
    initial: dict[tuple[str, str], str] = {}
    for i in range(n):
        traits = mix.traits(master, i, repos[i % len(repos)], config.start_ms)
        session = _Session(config, i, traits, sources)
        session.run()
        merged.extend((ts, i, seq, ev) for ts, seq, ev in session.events)
        initial.update({(session.sid, p): t for p, t in session.initial.items()})
    merged.sort(key=lambda x: x[:3])
    return [ev for *_, ev in merged], initial
