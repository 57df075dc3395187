"""The generator's edge: hand it real commits (or the stdlib's files), write traces as JSON lines.

The simulation itself is the pure `streams.generate`; this module hands it real history
(`editstream.sessions.gitsource`: `--from-git PATH`, by default this repository's pinned range) or,
for load tests only, the standard library's files to splice (`stdlib_sources`), and keeps
the signatures every caller uses (`generate_events(config)`, `initial_files(config)`).
`python -m editstream.sessions.generate` regenerates the committed sample.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import sysconfig
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from editstream.sessions.gitsource import default_commits, read_commits
from editstream.sessions.releases import is_release_repo, release_commits
from streams.generate import GenerateConfig, SourceFiles, ground_truth, simulate
from streams.generate.history import Commit, simulate_history

__all__ = ["SAMPLE_CONFIG", "GenerateConfig", "generate_events", "git_repos", "ground_truth",
           "history_commits", "history_summary", "initial_files", "stdlib_sources",
           "write_jsonl"]

# Source files we draw from: moderate size so excerpts, diffs and the sample stay small.
_MIN_SOURCE_BYTES = 3_000
_MAX_SOURCE_BYTES = 40_000
_SKIP_DIRS = frozenset(
    {
        "site-packages",
        "dist-packages",
        "test",
        "tests",
        "idle_test",
        "__pycache__",
        "idlelib",
        "lib2to3",
        "turtledemo",
        "ensurepip",
        "encodings",  # codec tables: data, not code anyone types
        "lib-dynload",
    }
)


def generate_events(config: GenerateConfig) -> list[dict[str, Any]]:
    """Events in the order an editor would send them; deterministic for a given config.

    Each session is chronological; sessions are interleaved by `ts_ms` (ties broken by
    session, then by the order the session emitted them).
    """
    return _simulate(config)[0]


def initial_files(config: GenerateConfig) -> dict[tuple[str, str], str]:
    """The text of every file before its session's first edit, keyed by (session_id, path).

    Replaying the `edit` events of `generate_events(config)` in order over these texts
    reproduces the file every prediction's excerpt was cut from.
    """
    return _simulate(config)[1]


def _simulate(config: GenerateConfig
              ) -> tuple[list[dict[str, Any]], dict[tuple[str, str], str]]:
    """Real history by default; the stdlib splicer only when asked (load tests)."""
    if config.splice or config.source_dir:
        return simulate(config, stdlib_sources(config.source_dir))
    return simulate_history(config, history_commits(config))


def git_repos(config: GenerateConfig) -> tuple[str, ...]:
    """The repositories a config names (`git` first, then `gits`), each once."""
    out: list[str] = []
    for path in ((config.git,) if config.git else ()) + config.gits:
        if path not in out:
            out.append(path)
    return tuple(out)


def history_commits(config: GenerateConfig) -> Sequence[Commit]:
    """The commits a history config names: those of every `--from-git` PATH, in the order
    given, else the bundled range."""
    repos = git_repos(config)
    if not repos:
        if config.revs or config.paths:
            raise ValueError("--revs and --paths need --from-git PATH")
        return default_commits()
    commits: list[Commit] = []
    for path in repos:
        commits.extend(_read_git(path, config.revs, config.paths)[0])
    return commits


def history_summary(config: GenerateConfig) -> str:
    """One line per repository a `--from-git` config read, for the CLI."""
    if config.splice or config.source_dir:
        return ""
    lines = []
    for path in git_repos(config):
        commits, skipped = _read_git(path, config.revs, config.paths)
        usable = [c for c in commits if c.changes]
        files = sum(len(c.changes) for c in usable)
        why = ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())) or "none"
        lines.append(f"{path}: {len(usable)} of {len(commits)} non-merge commits with usable "
                     f"changes ({files} file changes); skipped: {why}")
    return "\n".join(lines)


@functools.lru_cache(maxsize=32)
def _read_git(path: str, revs: str | None, paths: tuple[str, ...]
              ) -> tuple[tuple[Commit, ...], dict[str, int]]:
    if is_release_repo(path):  # PyPI release history: Python sources, no version bumps
        commits, skipped = release_commits(path, revs, paths)
    else:
        commits, skipped = read_commits(path, revs, paths)
    return tuple(commits), dict(skipped)


def stdlib_sources(source_dir: str | None = None) -> SourceFiles:
    """The candidate .py files under `source_dir` (default: this interpreter's stdlib)."""
    root = str(Path(source_dir or sysconfig.get_paths()["stdlib"]).resolve())
    return SourceFiles(paths=_candidates(root), read=functools.partial(_read, root))


@functools.lru_cache(maxsize=8)
def _candidates(source_dir: str) -> tuple[str, ...]:
    """Relative posix paths of .py files of a usable size, sorted."""
    found: list[str] = []
    for root, dirs, files in os.walk(source_dir):
        dirs[:] = sorted(
            d for d in dirs if d not in _SKIP_DIRS and not d.startswith((".", "config-"))
        )
        for name in files:
            if not name.endswith(".py"):
                continue
            full = os.path.join(root, name)
            try:
                size = os.stat(full).st_size
            except OSError:
                continue
            if _MIN_SOURCE_BYTES <= size <= _MAX_SOURCE_BYTES:
                found.append(Path(full).relative_to(source_dir).as_posix())
    return tuple(sorted(found))


@functools.lru_cache(maxsize=256)
def _read(source_dir: str, rel: str) -> str | None:
    """The file's text, or None when it cannot be read as UTF-8."""
    try:
        return (Path(source_dir) / rel).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def write_jsonl(events: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write one compact UTF-8 JSON object per line; returns the number of events written.

    Written to a temp file and renamed, so a reader never sees a half-written file.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for event in events:
                fh.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
                count += 1
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; this is a shareable data file
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


# The bundled sample (data/sample-traces.jsonl, what `make demo` runs): 50 sessions of this
# repository's pinned history (editstream.sessions.gitsource.DEFAULT_RANGE), 205 predictions.
SAMPLE_CONFIG = GenerateConfig(sessions=50)

if __name__ == "__main__":  # regenerate the committed demo sample
    out = sys.argv[1] if len(sys.argv) > 1 else "data/sample-traces.jsonl"
    print(write_jsonl(generate_events(SAMPLE_CONFIG), out), "events ->", out)
