"""All configuration, in one typed, frozen object.

Every field can be set by an environment variable `EDITSTREAM_<FIELD>` (upper case) or by the
CLI flag `--<field-with-dashes>`; flags win over the environment, which wins over defaults.
The object is passed explicitly to whatever needs it: nothing reads the environment elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

ENV_PREFIX = "EDITSTREAM_"
FILE_SUFFIX = "_FILE"  # `EDITSTREAM_<SECRET>_FILE`: the file holding a secret setting
KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
DEFAULT_DISABLED_GLOBS = ("**/.env*", "**/*.pem", "**/*.key", "**/id_rsa*", "**/*secret*")


@dataclass(frozen=True)
class Settings:
    # --- Kafka -------------------------------------------------------------------------
    broker: str = field(default="", metadata={"help": "bootstrap servers, e.g. 127.0.0.1:9092; "
                                              "empty: start the embedded broker (demo only)"})
    app_id: str = field(default="editstream", metadata={"help": "consumer group / faust app id"})
    topic_prefix: str = field(default="", metadata={"help": "prefix for every topic name "
                                                    "(separate runs on one broker)"})
    partitions: int = field(default=4, metadata={"help": "partitions of the pipeline topics"})
    replication_factor: int = field(default=1, metadata={
        "help": "replicas of the pipeline topics the worker creates (3 on a 3-broker cluster)"})
    pipeline_version: str = field(default="v1", metadata={"help": "stamped on every record"})
    processing_guarantee: str = field(default="at_least_once", metadata={
        "help": "at_least_once | exactly_once (Kafka transactions; not on the embedded broker)"})
    # --- Kafka connection security (agents/kafka_security.py builds every client's) --------
    # Named after the Kafka clients' own properties (`security.protocol`, `ssl.ca.location`,
    # `sasl.mechanism`, ...). Secrets (`secret` in metadata) have no flag and no repr: they
    # come from `EDITSTREAM_<NAME>` or the file named by `EDITSTREAM_<NAME>_FILE` /
    # `--<name>-file`, never from a command line, which every user of the machine can read.
    kafka_security_protocol: str = field(default="PLAINTEXT", metadata={
        "help": "PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL (Kafka's security.protocol)"})
    kafka_ssl_ca_location: str = field(default="", metadata={
        "help": "PEM file of the CA(s) that signed the brokers' certificates; empty: the "
                "system's trust store (ssl.ca.location)"})
    kafka_ssl_certificate_location: str = field(default="", metadata={
        "help": "PEM client certificate for mTLS (ssl.certificate.location)"})
    kafka_ssl_key_location: str = field(default="", metadata={
        "help": "PEM private key of the client certificate (ssl.key.location)"})
    kafka_ssl_key_password: str = field(default="", repr=False, metadata={
        "secret": True, "help": "password of an encrypted ssl key (ssl.key.password)"})
    kafka_ssl_endpoint_identification_algorithm: str = field(default="https", metadata={
        "help": "https: check that the broker's certificate names the host dialled; none: "
                "do not (ssl.endpoint.identification.algorithm)"})
    kafka_sasl_mechanism: str = field(default="", metadata={
        "help": "PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 with a SASL_* protocol "
                "(sasl.mechanism)"})
    kafka_sasl_username: str = field(default="", metadata={
        "help": "SASL user name (sasl.username)"})
    kafka_sasl_password: str = field(default="", repr=False, metadata={
        "secret": True, "help": "SASL password (sasl.password)"})
    # --- settle ------------------------------------------------------------------------
    quiescence_ms: int = 10_000
    ttl_ms: int = 300_000
    idle_tick_ms: int = field(default=1_000, metadata={
        "help": "wall-clock idleness after which a live partition's event time is advanced"})
    reject_settle_reasons: tuple[str, ...] = ("ttl", "context_lost")
    # --- privacy -----------------------------------------------------------------------
    disabled_globs: tuple[str, ...] = DEFAULT_DISABLED_GLOBS
    require_open_source: bool = field(default=True, metadata={
        "help": "discard events from repositories not marked open source"})
    max_event_bytes: int = 1_048_576
    max_region_bytes: int = field(default=4096, metadata={
        "help": "bytes of a prediction's editable region"})
    pii_policy: str = field(default="mask", metadata={
        "help": "mask | discard | keep: e-mail addresses and home-directory user names in "
                "content are masked in place (same byte length), or the event is discarded"})
    privacy_memory: int = field(default=100_000, metadata={
        "help": "request ids per partition the settle stage remembers as discarded for "
                "privacy (their later events are discarded too), kept ttl_ms of event time"})
    # --- student -----------------------------------------------------------------------
    student_url: str = field(default="", metadata={"help": "OpenAI-compatible base URL; empty: "
                                                   "the local simulator (demo only)"})
    student_model: str = "student"
    student_api_key: str = ""
    samples: int = field(default=50, metadata={"help": "student samples per example (N)"})
    sample_temperature: float = 0.8
    sample_max_tokens: int = field(default=4096, metadata={
        "help": "cap on max_tokens per sample; below it max_tokens follows the region's "
                "size (twice its estimated tokens plus 64)"})
    prompt_format: str = field(default="zeta1", metadata={
        "help": "student prompt format: zeta1 | zeta2 | fim (streams/formats.py)"})
    prompt_max_tokens: int = field(default=4096, metadata={
        "help": "prompt token budget (bytes/3 estimate); the oldest history goes first, "
                "never the excerpt"})
    seed: int = 0
    student_seed: bool = field(default=True, metadata={
        "help": "send a seed to the student (only for servers that honour it; without one "
                "samples are not reproducible)"})
    min_valid_samples: int = field(default=5, metadata={
        "help": "fewer parsing, untruncated samples than this: rejected as "
                "unparsable_samples"})
    student_max_in_flight: int = field(default=64, metadata={
        "help": "most student requests in flight per worker (the adaptive limit's ceiling)"})
    student_timeout_s: float = 30.0
    model_max_retries: int = 4
    http_transport: str = field(default="aiohttp", metadata={
        "help": "aiohttp | httpx: the model clients' connection pool; httpx's costs ~30 ms "
                "of CPU per request at 64 connections (BENCHMARKS.md, sampling), aiohttp's "
                "does not; httpx honours HTTP(S)_PROXY"})
    adaptive_concurrency: bool = field(default=True, metadata={
        "help": "find each model endpoint's concurrency between 1 and *_max_in_flight from "
                "its latency, timeouts and 429/503 (streams/limiter.py); false: always "
                "*_max_in_flight"})
    sample_concurrency: int = field(default=8, metadata={
        "help": "examples sampled at once per worker"})
    # --- score -------------------------------------------------------------------------
    band_low: float = 0.05
    band_high: float = 0.6
    score_metrics_samples: int = field(default=2, metadata={
        "help": "valid samples per example that get kept rate, reversal ratio and delta chrF "
                "(the first ones; ~0.5 ms each, BENCHMARKS.md); every sample gets distance"})
    adaptive_sampling: bool = field(default=True, metadata={
        "help": "stop sampling an example once its decision is settled (streams/adaptive.py)"})
    adaptive_min_samples: int = field(default=8, metadata={
        "help": "samples in the first adaptive batch"})
    adaptive_batch: int = field(default=8, metadata={
        "help": "samples per later adaptive batch"})
    adaptive_rule: str = field(default="predictive", metadata={
        "help": "predictive: stop when the remaining samples are unlikely to change the "
                "decision; interval: stop when the student's median is in a band with "
                "confidence (streams/adaptive.py)"})
    adaptive_confidence: float = field(default=0.99, metadata={
        "help": "confidence that an early decision is right (predictive: that it is the "
                "decision over all samples; interval: over all looks)"})
    # --- distill / judge / repair ------------------------------------------------------
    teacher_url: str = field(default="", metadata={"help": "empty: the local simulator"})
    teacher_api: str = field(default="openai", metadata={"help": "openai | anthropic"})
    teacher_model: str = "teacher"
    teacher_api_key: str = ""
    teacher_max_in_flight: int = 16
    teacher_max_tokens: int = field(default=8192, metadata={
        "help": "cap on the teacher's max_tokens (below it: twice the region's estimated "
                "tokens plus 512 for its explanation)"})
    teacher_seed: bool = field(default=True, metadata={
        "help": "send a seed to an OpenAI-compatible teacher/judge that honours it"})
    teacher_hindsight: bool = field(default=False, metadata={
        "help": "show the teacher what the user wrote later (README: the trade-off)"})
    teacher_timeout_s: float = 120.0
    distill_concurrency: int = 4
    judge_url: str = field(default="", metadata={"help": "LLM judge base URL (OpenAI chat); "
                                                 "empty: deterministic checks only"})
    judge_model: str = "judge"
    judge_api_key: str = ""
    judge_min_confidence: int = 3
    judge_max_reversal: float = 0.2
    gate_min_kept_rate: float = field(default=1.0, metadata={
        "help": "minimum kept rate of the target's edit against the user's settled edit; "
                "1.0: everything the target adds is something the user kept (a partial edit "
                "passes, junk does not)"})
    repair_attempts: int = 2
    noop_keep_fraction: float = field(default=0.1, metadata={
        "help": "fraction of no-op examples (the user left the region as it was) kept, "
                "with the format's no-edit answer as target"})
    pair_min_distance: float = field(default=0.02, metadata={
        "help": "preference pairs whose sides are closer (normalized distance) are dropped"})
    # --- model outages -----------------------------------------------------------------
    retry_attempts: int = field(default=2, metadata={
        "help": "times an example whose model calls exhausted their retries is re-queued "
                "on the retry topic before it is rejected"})
    retry_delay_ms: int = field(default=5_000, metadata={
        "help": "delay before the first re-queued attempt (doubles each time)"})
    # --- emit --------------------------------------------------------------------------
    record_format: str = field(default="zeta1", metadata={
        "help": "prompt format of records: zeta1 | zeta2 | fim"})
    eval_fraction: float = field(default=0.15, metadata={
        "help": "share of repositories (split units: a repository, or the session of an "
                "example without one) whose examples go to eval"})
    # --- eval: shadow evaluation of candidates and the live scorecard (issue 24) ------------
    candidates: tuple[str, ...] = field(default=(), metadata={
        "flag": "--candidate", "append": True,
        "help": "a candidate model to evaluate, NAME=URL of an OpenAI-compatible server "
                "(repeatable; env: comma-separated); model, format, limits: --candidate-model "
                "& co or EDITSTREAM_CANDIDATES_JSON"})
    candidate_models: tuple[str, ...] = field(default=(), metadata={
        "flag": "--candidate-model", "append": True,
        "help": "NAME=MODEL: the model name sent to candidate NAME (default: NAME)"})
    candidate_formats: tuple[str, ...] = field(default=(), metadata={
        "flag": "--candidate-format", "append": True,
        "help": "NAME=FORMAT: candidate NAME's prompt format (default: prompt_format)"})
    candidates_json: str = field(default="", metadata={
        "help": "candidates as a JSON list of objects {name, url, model?, prompt_format?, "
                "max_tokens?, prompt_max_tokens?, timeout_s?, max_in_flight?}; added to "
                "--candidate ones"})
    candidate_max_tokens: int = field(default=4096, metadata={
        "help": "cap on a candidate's max_tokens (below it: follows the region's size, as "
                "for the student)"})
    candidate_timeout_s: float = 30.0
    candidate_max_in_flight: int = field(default=8, metadata={
        "help": "most requests in flight per candidate endpoint (the adaptive limit's ceiling)"})
    eval_stage: bool = field(default=True, metadata={
        "help": "run the eval stage (group <app_id>-eval): noop, served and every candidate "
                "on the eval split of settled-examples, to eval-results"})
    eval_only: bool = field(default=False, metadata={
        "cli": False,  # no --eval-only on every command: `replay --eval-only` sets it
        "help": "the worker runs the eval stage only (no settle, no training stages): "
                "`editstream replay --eval-only` scores a checkpoint on past traffic"})
    eval_all: bool = field(default=False, metadata={
        "help": "evaluate every settled example, not only the eval split (the demo)"})
    eval_train_fraction: float = field(default=0.0, metadata={
        "help": "share of the train split's examples also evaluated (a stable hash of the "
                "request id picks them)"})
    eval_concurrency: int = field(default=4, metadata={
        "help": "examples the eval stage works on at once per worker"})
    eval_latency: bool = field(default=True, metadata={
        "help": "put each candidate's measured latency on its eval record; false: null, so "
                "that a replay is byte-identical to the previous one"})
    scorecard_versions: int = field(default=8, metadata={
        "help": "served model versions with their own Prometheus series (the first ones "
                "seen by traffic); the rest count as `other`"})
    # --- export: the dataset (streams/dataset.py) --------------------------------------
    eval_min_repos: int = field(default=2, metadata={
        "help": "the export tops eval up to at least this many repositories (taking them "
                "in split-hash order; train always keeps one)"})
    eval_unfiltered: bool = field(default=False, metadata={
        "help": "the export also reads scored-examples and writes sft/eval_unfiltered: every "
                "eval example of any band, the settled region as the reference"})
    export_kto: bool = field(default=False, metadata={
        "help": "the export also reads settled-examples and writes the kto config: the "
                "output the editor showed, labelled by the user's verdict (streams/kto.py)"})
    dedup_threshold: float = field(default=0.85, metadata={
        "help": "estimated Jaccard similarity (MinHash) of base + settled region at which two "
                "examples are near-duplicates"})
    dedup_max_per_group: int = field(default=2, metadata={
        "help": "examples kept per near-duplicate group (the earliest settled); 0: keep all"})
    dedup_num_perm: int = field(default=128, metadata={"help": "MinHash permutations"})
    dataset_license: str = field(default="unknown", metadata={
        "help": "license id written into the dataset card (Hugging Face ids: apache-2.0, "
                "cc-by-4.0, other, ...)"})
    # --- scorecard: the shipping rule of `editstream scorecard` (streams/scorecard.py) ----
    scorecard_min_pairs: int = field(default=30, metadata={
        "help": "fewer examples scored for both the candidate and the baseline than this: "
                "\"too little data\" (exit 2)"})
    scorecard_max_distance_ci_high: float = field(default=0.0, metadata={
        "help": "ship only if the upper end of the interval of the distance difference "
                "(candidate minus baseline) is below this (0: closer to what users wrote)"})
    scorecard_max_reversal_increase: float = field(default=0.02, metadata={
        "help": "do not ship if the candidate's mean reversal ratio exceeds the baseline's "
                "by more than this (on the paired examples)"})
    scorecard_max_parse_rate_drop: float = field(default=0.01, metadata={
        "help": "do not ship if the candidate's parse rate is lower than the baseline's by "
                "more than this (0.01: one point)"})
    scorecard_confidence: float = field(default=0.95, metadata={
        "help": "confidence level of the bootstrap intervals"})
    scorecard_bootstrap_resamples: int = field(default=9999, metadata={
        "help": "bootstrap resamples of the paired examples (seeded by `seed`)"})
    scorecard_ci_method: str = field(default="BCa", metadata={
        "help": "BCa | percentile | basic: scipy.stats.bootstrap's interval method"})
    # --- operations --------------------------------------------------------------------
    metrics_port: int = field(default=0, metadata={"help": "Prometheus /metrics port; 0: off"})
    session_timeout_s: float = field(default=30.0, metadata={
        "help": "consumer group session timeout: how long a crashed worker holds its "
                "partitions before the group moves them (broker minimum 6 s)"})
    loop_lag_interval_s: float = field(default=0.05, metadata={
        "help": "how often the event-loop lag probe wakes (agents/looplag.py); 0: off"})
    max_examples_in_flight: int = field(default=32, metadata={
        "help": "most records the stages (sample, score, distill, repair, retry) work "
                "on at once per worker, whatever their concurrencies add up to: a slow model "
                "holds at most this many examples in memory (waits in model-retry not "
                "counted)"})
    stage_commit_interval_ms: int = field(default=100, metadata={
        "help": "the stage runner writes a partition's finished records (their outputs and "
                "offsets: one transaction under exactly_once) at most this often: fewer, "
                "larger transactions for at most this much more latency per hop (Kafka "
                "Streams commits every 100 ms under exactly-once too); 0: as soon as one is "
                "done"})
    cpu_processes: int = field(default=1, metadata={
        "help": "processes that run the score stage's CPU work off the event loop "
                "(agents/cpu.py); 0: on the loop (a ~3 ms call per example at the default "
                "score_metrics_samples, more for large regions)"})
    log_level: str = "warn"
    state_dir: str = field(default="", metadata={
        "help": "faust's scratch directory (tables live in memory and changelogs); "
                "empty: a per-app directory under the system temp dir, not the cwd"})

    def __post_init__(self) -> None:
        if self.max_examples_in_flight < 1 or self.replication_factor < 1:
            raise ValueError("max_examples_in_flight and replication_factor must be >= 1")
        if self.stage_commit_interval_ms < 0:
            raise ValueError("stage_commit_interval_ms must be >= 0")
        if not 0.0 <= self.eval_train_fraction <= 1.0:
            raise ValueError("eval_train_fraction must be in [0, 1]")
        if self.eval_concurrency < 1 or self.scorecard_versions < 0:
            raise ValueError("eval_concurrency must be >= 1 and scorecard_versions >= 0")
        candidate_list(self)  # a malformed candidate fails here, at start, with its reason
        if self.pii_policy not in ("mask", "discard", "keep"):
            raise ValueError(f"pii_policy must be mask, discard or keep, not {self.pii_policy!r}")
        self._check_scorecard()
        self._check_kafka_security()

    def _check_scorecard(self) -> None:
        if self.scorecard_ci_method not in ("BCa", "percentile", "basic"):
            raise ValueError(f"scorecard_ci_method must be BCa, percentile or basic, not "
                             f"{self.scorecard_ci_method!r}")
        if not 0 < self.scorecard_confidence < 1:
            raise ValueError("scorecard_confidence must be between 0 and 1")
        if self.scorecard_bootstrap_resamples < 1 or self.scorecard_min_pairs < 0:
            raise ValueError("scorecard_bootstrap_resamples must be >= 1 and "
                             "scorecard_min_pairs >= 0")

    def _check_kafka_security(self) -> None:
        """Contradictions a client would only report at connect time, or not at all (a
        username with PLAINTEXT would silently send nothing)."""
        protocol, mechanism = self.kafka_security_protocol, self.kafka_sasl_mechanism
        if protocol not in KAFKA_PROTOCOLS:
            raise ValueError(f"kafka_security_protocol must be one of "
                             f"{', '.join(KAFKA_PROTOCOLS)}, not {protocol!r}")
        sasl, tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
        if sasl:
            if mechanism not in KAFKA_SASL_MECHANISMS:
                raise ValueError(f"kafka_sasl_mechanism must be one of "
                                 f"{', '.join(KAFKA_SASL_MECHANISMS)} with {protocol}, "
                                 f"not {mechanism!r}")
            if not self.kafka_sasl_username or not self.kafka_sasl_password:
                raise ValueError(f"{protocol} needs kafka_sasl_username and "
                                 f"kafka_sasl_password (EDITSTREAM_KAFKA_SASL_PASSWORD or "
                                 f"EDITSTREAM_KAFKA_SASL_PASSWORD_FILE)")
        elif mechanism or self.kafka_sasl_username or self.kafka_sasl_password:
            raise ValueError(f"SASL settings given but kafka_security_protocol is {protocol} "
                             f"(SASL_SSL or SASL_PLAINTEXT would use them)")
        ssl_files = (self.kafka_ssl_ca_location, self.kafka_ssl_certificate_location,
                     self.kafka_ssl_key_location)
        if not tls and any(ssl_files):
            raise ValueError(f"TLS files given but kafka_security_protocol is {protocol} "
                             f"(SSL or SASL_SSL would use them)")
        if bool(self.kafka_ssl_certificate_location) != bool(self.kafka_ssl_key_location):
            raise ValueError("mTLS needs both kafka_ssl_certificate_location and "
                             "kafka_ssl_key_location")
        if self.kafka_ssl_endpoint_identification_algorithm not in ("https", "none", ""):
            raise ValueError("kafka_ssl_endpoint_identification_algorithm must be https or "
                             "none")

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _convert(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {raw!r}")
    if isinstance(default, tuple):
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    return type(default)(raw)


def from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from `EDITSTREAM_*` variables, then explicit overrides (e.g. CLI flags)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        key = ENV_PREFIX + f.name.upper()
        if is_secret(f.name) and key not in env and key + FILE_SUFFIX in env:
            values[f.name] = read_secret_file(env[key + FILE_SUFFIX], key + FILE_SUFFIX)
        elif key in env:
            try:
                values[f.name] = _convert(env[key], f.default)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)


def add_arguments(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """One `--flag` per settings field (all optional: unset flags fall back to the env)."""
    group = parser.add_argument_group("settings (also EDITSTREAM_<NAME> env vars)")
    for f in fields(Settings):
        if (only is not None and f.name not in only) or f.metadata.get("cli") is False:
            continue
        flag = "--" + f.name.replace("_", "-")
        if is_secret(f.name):  # never the secret itself on a command line: its file
            group.add_argument(flag + "-file", dest=f"setting_{f.name}", default=None,
                               metavar="PATH", type=_secret_reader(flag + "-file"),
                               help=f.metadata.get("help", "") + ": the file holding it "
                               f"(or env {ENV_PREFIX}{f.name.upper()}[{FILE_SUFFIX}])")
            # the bare flag is refused, not taken for an abbreviation of `-file` (argparse
            # would read the secret as a path and name it in its error)
            group.add_argument(flag, action=_RefuseSecret, help=argparse.SUPPRESS,
                               metavar="V", dest=f"refused_{f.name}")
            continue
        help_ = f.metadata.get("help", "") + f" (default: {f.default!r})"
        if f.metadata.get("append"):  # a repeatable flag, one item each (`--candidate`)
            group.add_argument(f.metadata.get("flag", flag), dest=f"setting_{f.name}",
                               default=None, metavar="V", action="append", help=help_)
            continue
        group.add_argument(flag, dest=f"setting_{f.name}", default=None, metavar="V",
                           type=_converter(f.default), help=help_)


class _RefuseSecret(argparse.Action):
    """A secret given as a flag: an error that does not repeat it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        env = ENV_PREFIX + self.dest.removeprefix("refused_").upper()
        parser.error(f"{option_string} is not accepted: a command line is visible to every "
                     f"user of the machine; set {env}, {env}{FILE_SUFFIX} or use "
                     f"{option_string}-file")


KAFKA_FIELDS = tuple(f.name for f in fields(Settings) if f.name.startswith("kafka_"))


def is_secret(name: str) -> bool:
    """A field that must never be shown: no flag, no repr, no `--help` default."""
    return bool(Settings.__dataclass_fields__[name].metadata.get("secret"))


def read_secret_file(path: str, what: str) -> str:
    """The secret in `path` (one trailing newline dropped, as `echo` writes it). Errors name
    the setting and the path, never the content."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().removesuffix("\n")
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {path}: {exc.strerror}") from None


def _secret_reader(flag: str) -> Callable[[str], str]:
    """argparse's `type` for a secret's `--...-file` flag."""
    return lambda path: read_secret_file(path, flag)


def _converter(default: Any) -> Callable[[str], Any]:
    """argparse's `type` for a field with this default (a lambda: argparse names it in errors)."""
    return lambda raw: _convert(raw, default)


def from_args(ns: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    overrides = {k.removeprefix("setting_"): tuple(v) if isinstance(v, list) else v
                 for k, v in vars(ns).items() if k.startswith("setting_")}
    return from_env(environ, **overrides)


def explicit(ns: argparse.Namespace, environ: Mapping[str, str] | None = None) -> set[str]:
    """Fields set by a flag in `ns` or by an `EDITSTREAM_*` variable (not left at default)."""
    env = os.environ if environ is None else environ
    return {f.name for f in fields(Settings)
            if getattr(ns, f"setting_{f.name}", None) is not None
            or ENV_PREFIX + f.name.upper() in env}


def to_env(settings: Settings) -> dict[str, str]:
    """The `EDITSTREAM_*` variables that reproduce `settings` in a child process."""
    out = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if isinstance(value, tuple):
            text = ",".join(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        out[ENV_PREFIX + f.name.upper()] = text
    return out


# --- candidates of the eval stage -------------------------------------------------------------

BASELINES = ("noop", "served")  # built-in candidates of the eval stage: no server needed


@dataclass(frozen=True)
class Candidate:
    """A model the eval stage asks for one greedy prediction per example: an OpenAI-compatible
    completions endpoint, called through the student's client (agents/models)."""

    name: str
    url: str
    model: str
    prompt_format: str
    max_tokens: int  # cap; below it max_tokens follows the region's size
    prompt_max_tokens: int
    timeout_s: float
    max_in_flight: int


def _pairs(items: tuple[str, ...], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip() or not value.strip():
            raise ValueError(f"{what}: expected NAME=VALUE, got {item!r}")
        out[name.strip()] = value.strip()
    return out


def candidate_list(settings: Settings) -> list[Candidate]:
    """The configured candidates, in the order given (`--candidate` ones first, then
    `candidates_json`'s); ValueError naming what is wrong (an unknown format, a name used
    twice or taken by a baseline, a model or format for a name that is no candidate)."""
    import json

    from streams.formats import prompt_format

    urls = _pairs(settings.candidates, "candidate")
    models = _pairs(settings.candidate_models, "candidate_models")
    formats = _pairs(settings.candidate_formats, "candidate_formats")
    rows: list[dict[str, Any]] = [{"name": n, "url": u} for n, u in urls.items()]
    if len(urls) != len(settings.candidates):
        raise ValueError("candidate: a name is given twice")
    if settings.candidates_json.strip():
        try:
            extra = json.loads(settings.candidates_json)
        except json.JSONDecodeError as exc:
            raise ValueError(f"candidates_json: not JSON ({exc.msg})") from None
        if not isinstance(extra, list) or not all(isinstance(r, dict) for r in extra):
            raise ValueError("candidates_json: expected a list of objects")
        rows += extra
    out: list[Candidate] = []
    for row in rows:
        name, url = row.get("name"), row.get("url")
        if not isinstance(name, str) or not name or not isinstance(url, str) or not url:
            raise ValueError(f"candidate {row!r}: name and url are required")
        if name in BASELINES or any(c.name == name for c in out):
            raise ValueError(f"candidate {name!r}: the name is taken (baselines: "
                             f"{', '.join(BASELINES)})")
        fmt = str(row.get("prompt_format") or formats.get(name) or settings.prompt_format)
        prompt_format(fmt)  # KeyError/ValueError for an unknown one
        out.append(Candidate(
            name=name, url=url, model=str(row.get("model") or models.get(name) or name),
            prompt_format=fmt,
            max_tokens=int(row.get("max_tokens") or settings.candidate_max_tokens),
            prompt_max_tokens=int(row.get("prompt_max_tokens") or settings.prompt_max_tokens),
            timeout_s=float(row.get("timeout_s") or settings.candidate_timeout_s),
            max_in_flight=int(row.get("max_in_flight") or settings.candidate_max_in_flight)))
    names = {c.name for c in out}
    for what, given in (("candidate_models", models), ("candidate_formats", formats)):
        if unknown := sorted(set(given) - names):
            raise ValueError(f"{what}: no candidate named {', '.join(unknown)}")
    return out
