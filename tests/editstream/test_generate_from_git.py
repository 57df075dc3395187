"""`editstream generate --from-git`: sessions made of a real repository's commits.

Why: a settled region is only worth training on when it is what a developer really wrote
there. The repository here is built in the test (`git init`, a handful of commits: an
addition, a deletion, a rename across a file, a multi-file change), so every line a settled
region may hold is known: it is a line of the parent's or of the commit's version of the
file. The answer key is settled by the pipeline's own rules (`streams.settle`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from editstream.cli import main
from editstream.sessions.generate import GenerateConfig, generate_events
from editstream.sessions.gitsource import read_commits
from streams.generate import apply_edit
from streams.settle import settle_events

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

APP_V1 = '''"""A tiny inventory."""

from dataclasses import dataclass


@dataclass
class Item:
    name: str
    count: int


def total(items: list[Item]) -> int:
    result = 0
    for item in items:
        result += item.count
    return result


def names(items: list[Item]) -> list[str]:
    return [item.name for item in items]
'''

UTIL_V1 = '''def clamp(value: int, low: int, high: int) -> int:
    if value < low:
        return low
    if value > high:
        return high
    return value


def debug_dump(obj: object) -> None:
    print("DEBUG", obj)
    print("DEBUG done")
'''


def _git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE":
           "2026-01-01T00:00:00Z", "PATH": "/usr/bin:/bin", "HOME": str(repo)}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env).stdout


def _commit(repo: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("history")
    _git(root, "init", "-q", "-b", "main")
    _commit(root, {"app.py": APP_V1, "util.py": UTIL_V1}, "first")
    # an addition: a new function and a docstring line
    app2 = APP_V1.replace("def names(", '''def restock(items: list[Item], amount: int) -> None:
    for item in items:
        item.count += amount


def names(''').replace("    result = 0\n", "    # sum of the counts\n    result = 0\n")
    _commit(root, {"app.py": app2}, "add restock")
    # a deletion: the debug helper goes
    util2 = UTIL_V1[: UTIL_V1.index("\n\ndef debug_dump")] + "\n"
    _commit(root, {"util.py": util2}, "drop debug_dump")
    # a rename across a file: count -> quantity everywhere in app.py
    _commit(root, {"app.py": app2.replace("count", "quantity")}, "rename count")
    # a multi-file change: clamp gets a default, the app uses it
    app4 = app2.replace("count", "quantity").replace(
        "from dataclasses import dataclass\n",
        "from dataclasses import dataclass\n\nfrom util import clamp\n").replace(
        "        item.quantity += amount\n",
        "        item.quantity = clamp(item.quantity + amount, 0, 999)\n")
    util3 = util2.replace("low: int, high: int", "low: int = 0, high: int = 100")
    _commit(root, {"app.py": app4, "util.py": util3}, "clamp restock")
    # files the generator must skip: binary, minified
    (root / "logo.bin").write_bytes(b"\x89PNG\x00\x01\x02")
    _commit(root, {"bundle.min.js": "var a=1;\n", "data.js": "x=[" + "1," * 300 + "]\n",
                   "vendor/lib.py": "x = 1\n"}, "assets")
    return root


def _made(repo: Path, rev: str, path: str) -> tuple[str, str]:
    """The file at `rev` (the session's parent) and as the next commit changing it made it
    (a session may make a run of consecutive commits on other files)."""
    later = _git(repo, "log", "--reverse", "--format=%H", f"{rev}..HEAD", "--", path).split()
    before = subprocess.run(["git", "-C", str(repo), "show", f"{rev}:{path}"],
                            capture_output=True, text=True).stdout
    return before, _git(repo, "show", f"{later[0]}:{path}") if later else before


def _versions(repo: Path) -> dict[tuple[str, str], set[str]]:
    """(parent sha, path) -> the lines of the file in the parent and in the commit."""
    commits, _ = read_commits(repo)
    out: dict[tuple[str, str], set[str]] = {}
    for c in commits:
        for path in ("app.py", "util.py"):
            before, after = _made(repo, c.parent, path)
            out[(c.parent, path)] = set(before.split("\n")) | set(after.split("\n"))
    return out


def _settled(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_session: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_session.setdefault(e["session_id"], []).append(e)
    return [r for evs in by_session.values() for r in settle_events(evs)]


def test_settled_regions_are_lines_of_the_parent_or_the_commit(repo: Path) -> None:
    cfg = GenerateConfig(seed=3, sessions=24, git=str(repo))
    events = generate_events(cfg)
    versions = _versions(repo)
    commits, skipped = read_commits(repo)
    assert skipped["binary"] == 1 and skipped["minified"] == 1
    assert skipped["generated_or_vendored"] == 2
    assert [len(c.changes) for c in commits] == [1, 1, 1, 2, 0]
    records = _settled(events)
    checked = 0
    kinds: Counter[str] = Counter()
    for r in records:
        if r["path"] not in {"app.py", "util.py"}:
            continue  # the synthetic credentials file of a privacy session
        if r["settle_reason"] in ("ttl", "context_lost"):
            continue  # rejected by the pipeline before sampling (ttl: mid-tinkering)
        allowed = versions[(r["revision"], r["path"])] if "revision" in r else set().union(
            *(v for (_, p), v in versions.items() if p == r["path"]))
        assert set(r["settled_region"].split("\n")) <= allowed, r["request_id"]
        checked += 1
        base, settled = r["base_region"], r["settled_region"]
        kinds["insert" if len(settled) > len(base) else "delete" if len(settled) < len(base)
              else "same-length"] += 1
    assert checked >= 10
    assert kinds["insert"] and kinds["delete"], kinds
    # the events name the real repository and the parent commit
    preds = [e for e in events if e["type"] == "prediction" and e["in_open_source_repo"]]
    parents = {c.parent for c in commits}
    assert preds and all(e["revision"] in parents for e in preds)
    assert {e["repo_url"] for e in preds} == {repo.as_uri()}
    # replaying every session's edits over the parents' files gives the commits' files
    files: dict[tuple[str, str], str] = {}
    first_rev: dict[str, str] = {}
    for e in events:
        if e["type"] == "prediction" and "revision" in e:
            first_rev.setdefault(e["session_id"], e["revision"])
    for e in events:
        if e["type"] == "edit" and e["path"] in {"app.py", "util.py"} and (
                e["session_id"] in first_rev):
            key = (e["session_id"], e["path"])
            if key not in files:
                files[key] = _made(repo, first_rev[e["session_id"]], e["path"])[0]
            files[key] = apply_edit(files[key], e["start"], e["end"], e["text"])
    assert files
    for (sid, path), text in files.items():
        assert text == _made(repo, first_rev[sid], path)[1], (sid, path)


def test_same_seed_same_bytes(repo: Path, tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.jsonl"
        assert main(["generate", "--from-git", str(repo), "--sessions", "6", "--seed", "9",
                     "--out", str(out)]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[0]
    other = tmp_path / "c.jsonl"
    main(["generate", "--from-git", str(repo), "--sessions", "6", "--seed", "10",
          "--out", str(other)])
    assert other.read_bytes() != outs[0]
    truth = [json.loads(x) for x in (tmp_path / "a.jsonl.truth.jsonl").read_text().splitlines()]
    assert truth and {"request_id", "settled_region", "base_region"} <= set(truth[0])


def test_revs_and_paths_select_commits(repo: Path) -> None:
    commits, skipped = read_commits(repo, "HEAD~3..HEAD", ["util.py"])
    # rename count (app.py only), clamp restock (app.py + util.py), assets
    assert [[ch.path for ch in c.changes] for c in commits] == [[], ["util.py"], []]
    assert skipped["path_not_selected"] == 6
    events = generate_events(GenerateConfig(seed=1, sessions=3, git=str(repo),
                                            revs="HEAD~3..HEAD", paths=("util.py",)))
    assert {e["path"] for e in events if "path" in e} - {
        "config/.env.local", "certs/server.pem", "config/client_secret.json"} == {"util.py"}


def test_no_usable_commit_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    repo = tmp_path / "assets"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _commit(repo, {"a.min.js": "x=1\n"}, "first")
    _commit(repo, {"a.min.js": "x=2\n"}, "second")
    out = tmp_path / "out.jsonl"
    assert main(["generate", "--from-git", str(repo), "--out", str(out)]) == 2
    assert "no usable commit" in capsys.readouterr().err
    assert not out.exists()


def test_not_a_git_repository_is_a_clear_error(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.jsonl"
    assert main(["generate", "--from-git", str(tmp_path), "--out", str(out)]) == 2
    assert "is not a git repository" in capsys.readouterr().err
    assert main(["generate", "--from-git", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert not out.exists()


def test_an_empty_repository_is_a_clear_error(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _git(tmp_path, "init", "-q", "-b", "main")
    assert main(["generate", "--from-git", str(tmp_path), "--out",
                 str(tmp_path / "o.jsonl")]) == 2
    assert "no commit" in capsys.readouterr().err


def test_the_origin_url_names_the_repository_without_credentials(repo: Path,
                                                                 tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    _git(clone, "remote", "set-url", "origin", "https://alice:s3cr3t-token@example.com/a/b.git")
    events = generate_events(GenerateConfig(seed=2, sessions=4, git=str(clone)))
    urls = {e["repo_url"] for e in events if "repo_url" in e}
    assert urls == {"https://example.com/a/b.git"}
    assert not any("s3cr3t" in json.dumps(e) for e in events)


def test_merge_commits_are_skipped(tmp_path: Path) -> None:
    repo = tmp_path / "merges"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _commit(repo, {"a.py": "x = 1\n", "b.py": "y = 1\n"}, "first")
    _git(repo, "checkout", "-q", "-b", "side")
    _commit(repo, {"a.py": "x = 2\n"}, "side change")
    _git(repo, "checkout", "-q", "main")
    _commit(repo, {"b.py": "y = 2\n"}, "main change")
    _git(repo, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    merge = _git(repo, "rev-parse", "HEAD").strip()
    commits, _ = read_commits(repo)
    assert len(commits) == 2 and merge not in {c.sha for c in commits}
    assert {ch.path for c in commits for ch in c.changes} == {"a.py", "b.py"}
