"""Read a local git repository's history for the history generator (`streams.generate.history`).

The edge of ``editstream generate --from-git``: the git command line (no network: only
``rev-list``/``log``/``cat-file`` on a repository on disk) turns a revision range into
`Commit`s of texts; the pure core turns them into sessions. Merge commits are skipped
(``--no-merges``), and so is every file change `skip_reason` refuses (binary blobs are those
holding a NUL byte or not UTF-8).

The bundled sample and the benches' default corpus come from `DEFAULT_RANGE` of this
repository's own history, which every clone carries: `default_commits()`.
"""

from __future__ import annotations

import functools
import re
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from streams.generate.history import Commit, FileChange, skip_reason

# The bundled corpus: this repository's history from its first commit to the last commit
# of 2026-11-30 on main (pinned, so the sample's bytes never change as history grows).
DEFAULT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RANGE = "0d31a048eb5304cccb8d6fb04a3d7b7047d378b7"
DEFAULT_PATHS = ("*.py", "*.pyx", "*.md", "*.yml", "*.yaml", "*.toml", "Makefile", "*.xml")
# No public URL: the repository names itself (RFC 6761 reserves .invalid; nothing resolves).
DEFAULT_REPO_URL = "https://editstream.invalid/editstream.git"


class GitError(ValueError):
    """A repository or range the generator cannot use (the CLI prints it, exit 2)."""


def _git(repo: Path, *args: str, data: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], input=data,
                              capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise GitError("git is not installed (needed by generate --from-git)") from exc
    if done.returncode != 0:
        msg = done.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"git {args[0]} failed in {repo}: {msg[-1] if msg else done.returncode}")
    return done.stdout


def check_repo(path: str | Path) -> Path:
    """The repository's top directory; a clear error when `path` is not a git repository."""
    repo = Path(path).expanduser().resolve()
    if not repo.is_dir():
        raise GitError(f"{path}: no such directory")
    try:
        top = _git(repo, "rev-parse", "--show-toplevel").decode().strip()
    except GitError as exc:
        if "dubious ownership" in str(exc):  # owned by another user: git's safe.directory
            raise GitError(f"{path}: {exc} (see git config --global --add "
                           f"safe.directory)") from exc
        raise GitError(f"{path} is not a git repository (git init, or clone one)") from exc
    return Path(top)


def repo_url(repo: Path) -> str:
    """The origin remote's URL without any user or password in it, else a file:// URL."""
    try:
        url = _git(repo, "config", "--get", "remote.origin.url").decode().strip()
    except GitError:
        url = ""
    if not url:
        return repo.as_uri()
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:  # never carry credentials into the traces
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
        url = urlunsplit(parts)
    return url


_RAW = re.compile(r"^:(\d+) (\d+) ([0-9a-f]+) ([0-9a-f]+) ([A-Z])\d*$")


def read_commits(path: str | Path, revs: str | None = None, paths: Sequence[str] = (),
                 url: str | None = None) -> tuple[list[Commit], Counter[str]]:
    """The non-merge commits of `revs` (default: HEAD's history), oldest first, each with
    its usable file changes; and what was skipped, by reason."""
    repo = check_repo(path)
    url = url or repo_url(repo)
    rev_args = [revs] if revs else ["HEAD"]
    try:
        _git(repo, "rev-parse", "--verify", "--quiet", "HEAD")
    except GitError as exc:
        raise GitError(f"{path}: the repository has no commit yet") from exc
    log = _git(repo, "log", "--no-merges", "--reverse", "--topo-order", "--no-renames",
               "--raw", "--no-abbrev", "--format=@%H %P", *rev_args, "--").decode()
    skipped: Counter[str] = Counter()
    entries: list[tuple[str, str, list[tuple[str, str, str]]]] = []
    for line in log.splitlines():
        if line.startswith("@"):
            sha, *parents = line[1:].split()
            entries.append((sha, parents[0] if parents else "", []))
        elif line.startswith(":") and entries:
            meta, _, name = line.partition("\t")
            m = _RAW.match(meta)
            if m is None:
                continue
            old_mode, new_mode, a, b, _status = m.groups()
            if "160000" in (old_mode, new_mode) or "120000" in (old_mode, new_mode):
                skipped["submodule_or_symlink"] += 1
                continue
            entries[-1][2].append((name, a, b))
    blobs = _read_blobs(repo, {x for _, _, ch in entries for _, a, b in ch for x in (a, b)})
    commits: list[Commit] = []
    for sha, parent, changes in entries:
        if not parent:
            skipped["root_commit"] += 1  # no parent tree to start from
            continue
        usable = []
        touched = tuple(sorted(name for name, _, _ in changes))
        for name, a, b in sorted(changes):
            before = "" if set(a) == {"0"} else blobs.get(a)
            after = "" if set(b) == {"0"} else blobs.get(b)
            reason = skip_reason(name, before, after, paths)
            if reason is not None:
                skipped[reason] += 1
                continue
            assert before is not None and after is not None
            usable.append(FileChange(name, before, after))
        commits.append(Commit(sha, parent, url, tuple(usable), touched))
    return commits, skipped


def _read_blobs(repo: Path, ids: set[str]) -> dict[str, str | None]:
    """Blob id -> UTF-8 text (None: binary or not UTF-8), through one `git cat-file --batch`."""
    wanted = sorted(i for i in ids if set(i) != {"0"})
    if not wanted:
        return {}
    out = _git(repo, "cat-file", "--batch", data="".join(f"{i}\n" for i in wanted).encode())
    texts: dict[str, str | None] = {}
    pos = 0
    for _ in wanted:
        nl = out.index(b"\n", pos)
        head = out[pos:nl].split()
        pos = nl + 1
        if len(head) < 3:  # "<id> missing"
            continue
        size = int(head[2])
        raw = out[pos : pos + size]
        pos += size + 1
        try:
            texts[head[0].decode()] = None if b"\0" in raw else raw.decode("utf-8")
        except UnicodeDecodeError:
            texts[head[0].decode()] = None
    return texts


@functools.lru_cache(maxsize=2)
def default_commits() -> tuple[Commit, ...]:
    """The bundled corpus: `DEFAULT_RANGE` of this repository, `DEFAULT_PATHS` only."""
    try:
        commits, _ = read_commits(DEFAULT_ROOT, DEFAULT_RANGE, DEFAULT_PATHS, DEFAULT_REPO_URL)
    except GitError as exc:
        raise GitError(
            f"the default corpus is this repository's own history ({DEFAULT_RANGE[:12]}), "
            f"which {DEFAULT_ROOT} does not have ({exc}); use a git clone, or "
            f"--from-git PATH, or --source-dir DIR (stdlib splicing, load tests only)"
        ) from exc
    return tuple(commits)
