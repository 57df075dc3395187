"""The simulator's settings: `SimulatorConfig` (latency, faults, the nested answer model's
`AnswerConfig`), what it counts (`SimulatorStats`), and its command-line flags."""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from editstream.simulator.answers import AnswerConfig

DESCRIPTION = (
    "Run a local model SIMULATOR (not a model): an HTTP server speaking the OpenAI "
    "completions/chat and Anthropic Messages APIs, answering with deterministic, "
    "hash-derived predictions and injecting faults, so the pipeline runs offline."
)
DEFAULT_PORT = 8400


@dataclass(frozen=True)
class SimulatorConfig:
    """Knobs of the simulator: latency, faults (per request), and the prediction error model."""

    seed: int = 0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    accept_n: bool = True  # False: 400 naming param "n" for n > 1
    n_cap: int = 0  # > 0: answer at most this many choices whatever n asks (llama.cpp: 1)
    slots: int = 0  # > 0: requests worked on at once; the rest wait in the server (llama.cpp)
    timings: bool = False  # report llama-server's `timings` (time worked, not queued)
    error_rate: float = 0.0  # HTTP 500
    rate_limit_rate: float = 0.0  # HTTP 429 with Retry-After
    retry_after_s: float = 1.0
    timeout_rate: float = 0.0  # hang timeout_s before answering
    timeout_s: float = 60.0
    malformed_rate: float = 0.0  # 200 with a truncated JSON body
    drop_rate: float = 0.0  # close the connection without a response
    # The answer model (editstream/simulator/answers.py): the side file, student skill, error rates.
    ground_truth: str = ""  # JSONL written by `editstream generate`; empty: none known
    # its seed is ignored: `seed` seeds the answers too (AnswerConfig is frozen: one default)
    answers: AnswerConfig = AnswerConfig()  # noqa: RUF009
    model: str = "editstream-simulator"  # listed by GET /v1/models; requests may name any
    admin: bool = False  # serve POST /admin/chaos: outage and slow windows at run time

    def __post_init__(self) -> None:
        rates = ("error_rate", "rate_limit_rate", "timeout_rate", "malformed_rate", "drop_rate")
        for name in rates:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        for name in ("latency_ms", "jitter_ms", "retry_after_s", "timeout_s", "n_cap", "slots"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if sum(getattr(self, name) for name in rates) > 1.0 + 1e-9:
            raise ValueError("fault rates must sum to at most 1")

    def answer_model(self) -> AnswerConfig:
        """The answer model's config, seeded by the simulator's seed (one seed for both)."""
        return dataclasses.replace(self.answers, seed=self.seed)


@dataclass
class SimulatorStats:
    """What the simulator saw: requests by endpoint, faults injected, statuses, concurrency."""

    requests: Counter[str] = field(default_factory=Counter)  # by path
    faults: Counter[str] = field(default_factory=Counter)  # drop/timeout/rate_limit/... /none
    statuses: Counter[int] = field(default_factory=Counter)  # answered statuses
    in_flight: int = 0
    max_in_flight: int = 0
    # with slots: requests waiting for one (in the server's queue), and the longest wait
    queued: int = 0
    max_queued: int = 0
    max_queue_wait_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "faults": dict(self.faults),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "max_in_flight": self.max_in_flight,
            "max_queued": self.max_queued,
            "max_queue_wait_s": round(self.max_queue_wait_s, 3),
        }


# --------------------------------------------------------------------------------------------
# CLI arguments

_HELP = {
    "seed": "seed of the fault sequence and of all hash-derived answers",
    "latency_ms": "added latency per model request (ms)",
    "jitter_ms": "uniform jitter around --latency-ms (ms)",
    "accept_n": "accept n > 1 in /v1/completions (--no-accept-n answers 400 naming 'n')",
    "n_cap": "answer at most this many choices whatever n asks, silently (0: honour n; "
             "llama.cpp's server behaves like 1)",
    "slots": "slots worked on at once (a request of n choices takes n, as llama-server's "
             "do); more wait in the server's queue, their latency growing (0: unlimited)",
    "timings": "report llama-server's `timings` in completions (the time a request was "
               "worked on in its slots, not the time it queued for them)",
    "error_rate": "fraction of requests answered with HTTP 500",
    "rate_limit_rate": "fraction of requests answered with HTTP 429 and Retry-After",
    "retry_after_s": "Retry-After seconds sent with 429s",
    "timeout_rate": "fraction of requests that hang --timeout-s before answering",
    "timeout_s": "how long a hanging request hangs (s)",
    "malformed_rate": "fraction of requests answered 200 with a truncated JSON body",
    "drop_rate": "fraction of requests whose connection is closed without an answer",
    "ground_truth": "JSONL side file of `editstream generate` (request id -> settled region) "
                    "the teacher answers from; empty: none",
    "student_skill": "added to every example's student skill (logit; + is a better student)",
    "student_noise": "spread of the per-example noise on the student's skill",
    "student_preamble_rate": "fraction of student answers with prose and a fence around them",
    "student_garbage_rate": "fraction of student answers that are prose without a region",
    "student_runaway_rate": "fraction of student answers that never stop (max_tokens cuts them)",
    "student_inline_rate": "fraction of zeta1 answers without a newline after the marker",
    "teacher_stale_rate": "fraction of teacher answers that are the request-time region",
    "teacher_junk_rate": "fraction of teacher answers with junk the user never typed",
    "teacher_revert_rate": "fraction of teacher answers that revert the user's last edit",
    "teacher_truncation_rate": "fraction of teacher answers cut by max_tokens",
    "teacher_preamble_rate": "fraction of teacher answers with chatty prose and no fence",
    "repair_success_rate": "fraction of repair attempts (prompts with feedback) answered well",
    "student_mode": "sample: the student model; oracle: answer what the user wrote (needs "
                    "--ground-truth); revert: undo the user's last edit (a planted bad "
                    "checkpoint)",
    "model": "model id listed by GET /v1/models",
    "admin": "serve POST /admin/chaos to open outage (503) and slow-latency windows at run "
             "time (chaos runs: bench/chaos.py)",
}


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags for every SimulatorConfig and AnswerConfig field, plus --host and --port."""
    if parser.description is None:
        parser.description = DESCRIPTION
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free)")
    parser.add_argument("--reuse-port", action="store_true",
                        help="let several simulator processes serve one port (SO_REUSEPORT), "
                             "for load that needs more than one core of answers")
    for f, default in _flag_fields():
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{_HELP[f.name]} (default: %(default)s)"
        if isinstance(default, bool):
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                help=help_text,
            )  # fmt: skip
        elif isinstance(default, int):
            parser.add_argument(flag, dest=f.name, type=int, default=default, help=help_text)
        elif isinstance(default, str):
            parser.add_argument(flag, dest=f.name, default=default, help=help_text)
        else:
            kind = _fraction if f.name.endswith("_rate") else (
                float if f.name == "student_skill" else None)
            parser.add_argument(
                flag, dest=f.name, type=kind or _non_negative, default=default, help=help_text
            )


def config_from_args(ns: argparse.Namespace) -> SimulatorConfig:
    """The config the flags describe (ValueError if they are inconsistent, e.g. rates > 1)."""
    own = {f.name: getattr(ns, f.name) for f in _fields(SimulatorConfig, "answers")}
    answers = {f.name: getattr(ns, f.name) for f in _fields(AnswerConfig, "seed")}
    return SimulatorConfig(**own, answers=AnswerConfig(**answers))


def _fields(cls: Any, nested: str) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.name != nested]


def _flag_fields() -> list[tuple[dataclasses.Field[Any], Any]]:
    """(field, default) of every flag: the simulator's fields, then the answer model's."""
    sim, answers = SimulatorConfig(), AnswerConfig()
    return [*((f, getattr(sim, f.name)) for f in _fields(SimulatorConfig, "answers")),
            *((f, getattr(answers, f.name)) for f in _fields(AnswerConfig, "seed"))]

