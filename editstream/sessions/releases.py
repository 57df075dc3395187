"""Real code history of several repositories: a git repository per PyPI package, one commit per
release, built from the package's successive source distributions.

Why: the export's eval split is repository-disjoint (`streams.repo.split_unit`), so a corpus
from ONE repository has no eval split at all, and the only repository with full history on a
machine without GitHub is our own. PyPI is reachable, and every sdist is a real state of a real
project: the diff between two consecutive releases is real developer change, only coarser than
commits (a release gathers many commits; the generator still types at most a few hunks of a
few files per session, see `streams.generate.history`).

The edge of ``editstream generate --from-pypi NAME... / --release-corpus``: the package's
versions and sdists come from PyPI's JSON simple index (PEP 691, with upload times, PEP 700),
each sdist is checked against its sha256 and unpacked into a fresh tree, and the tree is
committed with the release's upload time as author and committer date and the message
``release V``. The repository is cached under ``~/.cache/editstream/release-history/<name>``
(``EDITSTREAM_CACHE``/release-history when set) with its manifest; a second run with the same
`K` reuses it without touching the network. A release whose sdist cannot be downloaded or
unpacked is skipped and counted by reason; the repository is built from the others.

What is left out of each tree: packaging metadata that is generated, not written
(``PKG-INFO``, ``*.egg-info/``, ``setup.cfg``'s ``[egg_info]`` stamps are kept, they are text
people edit). What is left out of the sessions (`release_commits`): files whose change between
two releases is only a version string (``__version__ = "1.2.3"``), which would otherwise be in
every release, and files outside `DEFAULT_PATHS` (Python sources).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
from packaging.utils import InvalidSdistFilename, canonicalize_name, parse_sdist_filename
from packaging.version import InvalidVersion, Version

from editstream.sessions.gitsource import GitError, check_repo, read_commits
from streams.generate.history import Commit, is_version_bump

# Well-known pure-Python packages with many small releases and a moderate size, each checked
# to download here (certifi is left out: data only; six and toml: one file, few changes).
DEFAULT_PACKAGES = (
    "attrs", "click", "idna", "packaging", "itsdangerous", "markupsafe", "python-dateutil",
    "h11", "sniffio", "wcwidth", "more-itertools", "tomli", "pluggy", "iniconfig",
    "jinja2", "urllib3",
)
DEFAULT_RELEASES = 12  # the last K releases of each package: K - 1 diffs of real change
DEFAULT_PATHS = ("*.py", "*.pyi")  # the sessions type Python sources; docs, configs stay out
INDEX_URL = "https://pypi.org/simple"
MANIFEST = "editstream-releases.json"  # in the repository's .git: what it was built from
_SDIST_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".zip")
# generated packaging metadata, not written by anyone
_METADATA = re.compile(r"(^|/)(PKG-INFO|[^/]+\.egg-info(/.*)?|\.git(/.*)?)$")
_MAX_SDIST_BYTES = 30_000_000


class ReleaseError(ValueError):
    """A package whose release history cannot be built (the CLI prints it, exit 2)."""


@dataclass(frozen=True)
class Release:
    """One release's sdist as the index lists it."""

    version: str
    filename: str
    url: str
    sha256: str
    uploaded: str  # ISO 8601, the index's upload time: the commit's date


@dataclass
class ReleaseRepo:
    """A package's release-history repository and how it was built."""

    name: str
    path: Path
    versions: list[str]
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> releases left out
    cached: bool = False  # reused from the cache: nothing downloaded


# ------------------------------------------------------------------------------ pure parts


def plan_releases(index: dict[str, Any], k: int) -> list[Release]:
    """The last `k` final releases (no pre-, dev- or yanked releases) that have an sdist,
    oldest first, from a PEP 691 JSON project page. One sdist per version (.tar.gz first)."""
    if k < 2:
        raise ValueError(f"a release history needs two releases at least, got K={k}")
    best: dict[Version, Release] = {}
    for f in index.get("files", ()):
        name = str(f.get("filename", ""))
        if not name.endswith(_SDIST_SUFFIXES) or f.get("yanked"):
            continue
        try:
            _, version = parse_sdist_filename(name)
        except (InvalidSdistFilename, InvalidVersion):
            continue
        if version.is_prerelease or version.is_devrelease:
            continue
        sha = (f.get("hashes") or {}).get("sha256", "")
        rel = Release(str(version), name, str(f.get("url", "")), sha,
                      str(f.get("upload-time") or ""))
        old = best.get(version)
        if old is None or (rel.filename.endswith(".tar.gz")
                           and not old.filename.endswith(".tar.gz")):
            best[version] = rel
    return [best[v] for v in sorted(best)[-k:]]


def tree_member(name: str) -> str | None:
    """An archive member's path in the repository (its top directory `pkg-1.0/` cut off),
    or None when it is left out: generated metadata, absolute or escaping paths."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if len(parts) < 2 or parts[0] in ("/", "..") or ".." in parts:
        return None
    rel = "/".join(parts[1:])
    if _METADATA.search(rel):
        return None
    return rel


def commit_date(uploaded: str) -> str:
    """The index's upload time as a git date (`@<unix seconds> +0000`); a fixed epoch when
    the index gave none, so a rebuild is deterministic either way."""
    try:
        ts = datetime.fromisoformat(uploaded.replace("Z", "+00:00")).timestamp()
    except ValueError:
        ts = 0
    return f"@{int(ts)} +0000"


def repo_url_of(name: str) -> str:
    """The URL the traces name the package's history by: its PyPI project page, so each
    package is its own split unit (`streams.repo.repo_key`: `pypi.org/project/<name>`)."""
    return f"https://pypi.org/project/{canonicalize_name(name)}/"


def drop_version_bumps(commits: Iterable[Commit]) -> tuple[list[Commit], Counter[str]]:
    """The commits without the file changes that only move a version string; counted."""
    out: list[Commit] = []
    dropped: Counter[str] = Counter()
    for c in commits:
        keep = tuple(ch for ch in c.changes if not is_version_bump(ch.before, ch.after))
        dropped["version_bump_only"] += len(c.changes) - len(keep)
        out.append(Commit(c.sha, c.parent, c.repo_url, keep, c.touched))
    return out, dropped


# ------------------------------------------------------------------------------ the edge


def cache_root() -> Path:
    base = os.environ.get("EDITSTREAM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "editstream")
    return Path(base) / "release-history"


def fetch_index(name: str, client: httpx.Client, index_url: str = INDEX_URL) -> dict[str, Any]:
    """The package's PEP 691 JSON page (the API pip itself reads)."""
    url = f"{index_url.rstrip('/')}/{canonicalize_name(name)}/"
    try:
        resp = client.get(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    except httpx.HTTPError as exc:
        raise ReleaseError(f"{name}: cannot reach the package index {url}: {exc}") from exc
    if resp.status_code == 404:
        raise ReleaseError(f"{name}: no such package on {index_url}")
    if resp.status_code != 200:
        raise ReleaseError(f"{name}: the package index answered {resp.status_code} for {url}")
    data: dict[str, Any] = resp.json()
    return data


def _download(rel: Release, client: httpx.Client, store: Path) -> bytes:
    """The sdist's bytes, from the sdist store when already there; sha256 checked."""
    path = store / rel.filename
    if path.is_file():
        blob = path.read_bytes()
        if not rel.sha256 or hashlib.sha256(blob).hexdigest() == rel.sha256:
            return blob
    resp = client.get(rel.url)
    resp.raise_for_status()
    blob = resp.content
    if len(blob) > _MAX_SDIST_BYTES:
        raise ValueError(f"{rel.filename} is {len(blob)} bytes")
    if rel.sha256 and hashlib.sha256(blob).hexdigest() != rel.sha256:
        raise ValueError(f"{rel.filename}: sha256 mismatch")
    store.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(blob)
    os.replace(tmp, path)
    return blob


def _members(filename: str, blob: bytes) -> list[tuple[str, bytes]]:
    """(path in the tree, bytes) of the sdist's regular files, sorted; links left out."""
    out: list[tuple[str, bytes]] = []
    if filename.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            for info in zf.infolist():
                rel = tree_member(info.filename)
                if rel is not None and not info.is_dir():
                    out.append((rel, zf.read(info)))
    else:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tf:
            for m in tf.getmembers():
                rel = tree_member(m.name)
                if rel is None or not m.isfile():
                    continue
                fh = tf.extractfile(m)
                if fh is not None:
                    out.append((rel, fh.read()))
    if not out:
        raise ValueError(f"{filename}: no file in the archive")
    return sorted(dict(out).items())


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, **(env or {})}
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          env=full_env, check=False)
    if done.returncode != 0:
        raise ReleaseError(f"git {args[0]} failed in {repo}: {done.stderr.strip()}")
    return done.stdout


def _commit_tree(repo: Path, files: Sequence[tuple[str, bytes]], rel: Release) -> None:
    """Replace the work tree with `files` and commit it as release `rel`."""
    for child in repo.iterdir():
        if child.name == ".git":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    for name, data in files:
        dest = repo / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    _git(repo, "add", "-A", "-f", ".")
    date = commit_date(rel.uploaded)
    who = {"GIT_AUTHOR_NAME": "PyPI release", "GIT_AUTHOR_EMAIL": "release@pypi.invalid",
           "GIT_COMMITTER_NAME": "PyPI release", "GIT_COMMITTER_EMAIL": "release@pypi.invalid",
           "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    _git(repo, "-c", "commit.gpgsign=false", "commit", "-q", "--allow-empty",
         "-m", f"release {rel.version}", env=who)


def _read_manifest(repo: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((repo / ".git" / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data


def build_release_repo(name: str, k: int = DEFAULT_RELEASES, *, root: Path | None = None,
                       client: httpx.Client | None = None, index_url: str = INDEX_URL,
                       refresh: bool = False) -> ReleaseRepo:
    """The package's release-history repository, built from its last `k` sdists or reused
    from the cache (same package and `k`, unless `refresh`). Raises ReleaseError when fewer
    than two releases could be used."""
    canon = canonicalize_name(name)
    root = root or cache_root()
    repo = root / canon
    manifest = _read_manifest(repo)
    if manifest and manifest.get("k") == k and not refresh:
        return ReleaseRepo(canon, repo, list(manifest["versions"]),
                           Counter(manifest.get("skipped", {})), cached=True)
    own = client is None
    http = client or httpx.Client(timeout=60.0, follow_redirects=True)
    try:
        plan = plan_releases(fetch_index(canon, http, index_url), k)
        if len(plan) < 2:
            raise ReleaseError(f"{canon}: fewer than two final releases with an sdist on "
                               f"{index_url}")
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=root, prefix=f".{canon}."))
        try:
            _git(work, "init", "-q", "-b", "main")
            _git(work, "config", "remote.origin.url", repo_url_of(canon))
            used: list[str] = []
            skipped: Counter[str] = Counter()
            for rel in plan:
                try:
                    blob = _download(rel, http, root / ".sdists")
                except (httpx.HTTPError, OSError, ValueError):
                    skipped["download_failed"] += 1
                    continue
                try:
                    files = _members(rel.filename, blob)
                except (tarfile.TarError, zipfile.BadZipFile, OSError, ValueError,
                        EOFError):
                    skipped["unpack_failed"] += 1
                    continue
                _commit_tree(work, files, rel)
                used.append(rel.version)
            if len(used) < 2:
                why = ", ".join(f"{r}={n}" for r, n in sorted(skipped.items())) or "none"
                raise ReleaseError(f"{canon}: only {len(used)} of {len(plan)} releases could "
                                   f"be used (skipped: {why})")
            (work / ".git" / MANIFEST).write_text(json.dumps(
                {"name": canon, "k": k, "versions": used, "skipped": dict(skipped),
                 "index": index_url, "built": int(time.time())}, indent=1) + "\n")
            if repo.exists():
                shutil.rmtree(repo)
            os.replace(work, repo)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    finally:
        if own:
            http.close()
    return ReleaseRepo(canon, repo, used, skipped)


def build_release_repos(names: Sequence[str], k: int = DEFAULT_RELEASES, *,
                        root: Path | None = None, index_url: str = INDEX_URL,
                        log: Callable[[str], None] | None = None) -> list[ReleaseRepo]:
    """`build_release_repo` for each package, in the order given, one HTTP client shared."""
    out: list[ReleaseRepo] = []
    with httpx.Client(timeout=60.0, follow_redirects=True) as client:
        for name in names:
            rr = build_release_repo(name, k, root=root, client=client, index_url=index_url)
            if log is not None:
                why = ", ".join(f"{r}={n}" for r, n in sorted(rr.skipped.items()))
                log(f"{rr.name}: {len(rr.versions)} releases {rr.versions[0]}..."
                    f"{rr.versions[-1]} ({'cached' if rr.cached else 'built'})"
                    + (f"; skipped {why}" if why else ""))
            out.append(rr)
    return out


def is_release_repo(path: str | Path) -> bool:
    """Whether `path` is a repository `build_release_repo` made (its manifest is there)."""
    try:
        top = check_repo(path)
    except GitError:
        return False
    return (top / ".git" / MANIFEST).is_file()


def release_commits(path: str | Path, revs: str | None = None, paths: Sequence[str] = ()
                    ) -> tuple[list[Commit], Counter[str]]:
    """`read_commits` of a release-history repository, version-only changes dropped."""
    commits, skipped = read_commits(path, revs, paths or DEFAULT_PATHS)
    kept, dropped = drop_version_bumps(commits)
    return kept, skipped + dropped
