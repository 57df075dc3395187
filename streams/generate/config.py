"""What the generator simulates: the wire constants, the session mix and `GenerateConfig`."""

from __future__ import annotations

from dataclasses import dataclass

WIRE_VERSION = 1
QUIESCENCE_MS = 10_000  # server settles a region after this much quiet since its last edit
TTL_MS = 300_000  # ... or this long after the prediction, whatever happens
# A self-settling client uses shorter timers than the server, so its `settled` usually wins.
CLIENT_QUIET_MS = (2_000, 6_000)
CLIENT_TTL_MS = 240_000
MAX_REGION_BYTES = 4096  # editable regions stay under 4 KiB
OUTCOMES = ("accepted", "rejected", "discarded", "ignored")
EVENT_TYPES = ("prediction", "edit", "settled", "outcome")
# Globs the server uses to drop events on sensitive paths (mirrored here to pick test paths).
DISABLED_GLOBS = ("**/.env*", "**/*.pem", "**/*.key", "**/id_rsa*", "**/*secret*")
SECRET_PATHS = ("config/.env.local", "certs/server.pem", "config/client_secret.json")
# Mostly the current student; an older client still on the previous model now and then.
MODEL_VERSIONS = ("student-0.3", "student-0.3", "student-0.3", "student-0.2")
PKG_NAMES = ("acme", "orbit", "quill", "ledger", "harbor", "sprout", "tandem", "vertex")

# Lines the typist writes in some sessions so that byte offsets and char offsets differ
# (2-, 3- and 4-byte UTF-8 sequences; every emoji here is a single code point).
NON_ASCII_LINES = (
    "# TODO: gérer le cas où la clé est absente",
    "# 日本語のコメント: キャッシュを更新する",
    'label = "Größe: 日本語 ✨"',
    "# ship it 🚀 (déjà testé)",
    'greeting = "héllo, wörld 👋"',
    "# naïve café fix — voilà",
)


# Outcome plans for a prediction, with weights. "none" = no outcome event at all (the region
# settles by quiescence); "context_lost" = a big paste reaching outside the excerpt follows;
# "ttl" (chosen separately) = the user keeps touching the region for more than TTL_MS.
_PLAN_WEIGHTS = {
    "accepted": 34,
    "rejected": 18,
    "ignored": 16,
    "discarded": 14,
    "none": 10,
    "context_lost": 6,
}


@dataclass(frozen=True)
class GenerateConfig:
    """What to generate. The same config always yields the same events (on one stdlib)."""

    seed: int = 7
    sessions: int = 20
    predictions_per_session: int = 6
    source_dir: str | None = None  # default: the stdlib dir
    start_ms: int = 1_764_000_000_000  # fixed epoch start so output is reproducible
    repos: int = 8  # distinct fake repo urls, so train/eval splits by repo have something to split
    # Where sessions come from. Default: real commits (`streams.generate.history`) of
    # `git` (None: this repository's pinned history, see editstream.sessions.gitsource), `revs` and
    # `paths` (globs) selecting them. `splice` (or a `source_dir`): the old stdlib mode that
    # types lines spliced in from other files -- for load tests only, it teaches nothing.
    git: str | None = None
    # Several repositories at once (`--from-git` repeated, `--from-pypi`): their commits make
    # one corpus, each session from one repository, named by its own `repo_url` (the
    # train/eval split unit); `git`, when set too, comes first.
    gits: tuple[str, ...] = ()
    revs: str | None = None
    paths: tuple[str, ...] = ()
    splice: bool = False

