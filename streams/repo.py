"""Repository identity: one key per repository, however its URL was written.

Editors report `repo_url` as their git remote says it, so one repository arrives as
`https://github.com/a/b`, `https://github.com/A/b.git`, `git@github.com:a/b.git`,
`ssh://git@github.com/a/b`, `https://www.github.com/a/b/` or `https://user:token@github.com/a/b`.
`repo_key` turns all of them into `github.com/a/b`; that key is the train/eval split unit
and the `repo` of a record's provenance, so a repository never lands in both splits and no
credential written into a URL reaches a record.

Rules: scheme, user, password and port are dropped; the host is lower-cased, without `www.`
and a trailing dot; the path loses query, fragment, repeated and trailing slashes and one
`.git` suffix. The path's case is folded too: GitHub, GitLab, Bitbucket and Gitea treat
owner/name case-insensitively, and folding wrongly only keeps two repositories whose names
differ by case in the same split, which is harmless, while not folding would let one
repository straddle the split. On github.com only `owner/name` is kept (`/tree/main` and such
are web pages of the same repository). A local path or `file://` URL gets an opaque
`local:<hash>` key: consistent for the split, without the user's directory names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from streams.ids import stable_hash

# `[user@]host:path`, git's scp-like syntax; the host has two characters at least so that a
# Windows drive (`C:\src\app`) is not taken for one
_SCP = re.compile(r"^(?:[^@/\s]+@)?(?P<host>[^:/\s\\]{2,}):(?!//)(?P<path>.+)$")
_URL_SCHEMES = ("http", "https", "ssh", "git", "git+ssh", "ssh+git", "git+https", "git+http")
_OWNER_NAME_HOSTS = ("github.com",)


def repo_key(url: str | None) -> str | None:
    """`host/path` identity of a repository URL (see the module docstring); None without one."""
    if not isinstance(url, str) or not url.strip():
        return None
    text = url.strip()
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme.lower() == "file":
            return _local(unquote(parts.path))  # the same key as the bare path
        if parts.scheme.lower() not in _URL_SCHEMES:
            return _local(text)  # anything unknown: treated as opaque
        return _join(parts.hostname or "", parts.path)
    scp = _SCP.match(text)
    if scp and not text.startswith(("/", "~", ".")):
        return _join(scp["host"], scp["path"])
    first = text.split("/", 1)[0]
    if "." in first and "/" in text and not text.startswith("."):  # `github.com/a/b`
        return _join(first.rsplit("@", 1)[-1].split(":", 1)[0], text.split("/", 1)[1])
    return _local(text)


def _join(host: str, path: str) -> str | None:
    host = host.lower().rstrip(".").removeprefix("www.")
    segments = [s for s in unquote(path).lower().split("/") if s]
    if segments:
        segments[-1] = segments[-1].removesuffix(".git")
        segments = [s for s in segments if s]
    if host in _OWNER_NAME_HOSTS:
        segments = segments[:2]
    if not host or not segments:
        return None  # a host alone is not a repository
    return "/".join([host, *segments])


def _local(text: str) -> str:
    return "local:" + stable_hash("repo", text)


def split_unit(example: Mapping[str, Any]) -> str:
    """What must not straddle train and eval: the repository, else the session."""
    return repo_key(example.get("repo_url")) or f"session:{example['session_id']}"


def record_unit(record: dict[str, Any]) -> str:
    """`split_unit` of a training record, from its provenance (`repo`, or the older
    `repo_url` of records written before `repo` existed)."""
    prov = record.get("provenance") or {}
    key = prov.get("repo") or repo_key(prov.get("repo_url"))
    return str(key) if key else f"session:{prov.get('session_id', record.get('request_id'))}"
