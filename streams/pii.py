"""Personal data in editor content: e-mail addresses and user names in home-directory paths.

Why mask rather than rewrite: every offset in the contract is a UTF-8 byte offset into the
excerpt or the file, and later `edit` events address the file as the user's buffer has it. A
placeholder of another length would shift every offset after it. So a match is masked in
place: each letter, digit or non-ASCII character becomes `x` repeated to the character's byte
length, punctuation (`@`, `.`, `/`, `\\`) stays. The text keeps its byte length, the settle
stage's arithmetic stays exact, and a reader still sees that an address or a home path was
there (`xxxxx@xxxxxxx.xxx`, `/home/xxxxx/`).

Deliberately not personal data: `git@host:org/repo` (an SSH remote, whose user is always
`git`), `name@2x.png`-style asset names, and `@decorator` / `@scope/package` (no local part).

Pure: no I/O. `mask_text` is idempotent (a masked address masks to itself).
"""

from __future__ import annotations

import re
from typing import Any

PII_POLICIES = ("mask", "discard", "keep")

# Fields that hold identifiers or enumerations rather than user content; never masked.
# `repo_url` is the repository's identity (split key, provenance): credentials in it are the
# secret scanner's business, and its `git@` form is not an address.
_NOT_CONTENT = frozenset({"type", "v", "session_id", "request_id", "outcome", "model_version",
                          "revision", "op", "repo_url"})

_EMAIL = re.compile(
    r"(?<![\w.%+-])([\w.%+-]{1,64})@((?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+([^\W\d_]{2,24}))"
    r"(?![\w-])"
)
# Every match of `_EMAIL` holds a local-part character right before its `@` and a letter or
# digit right after it. Code is full of `@` without them (`@property`, `"@types/node"`,
# `@ 0x10`): checking that at each `@` is much cheaper than `_EMAIL`'s scan of the whole text,
# which tries a 64-character local part at every position.
_EMAIL_HINT = re.compile(r"[\w.%+-]@[^\W_]")
_ASSET_SUFFIXES = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "avif"})
# The user-name component after a home-directory prefix (POSIX, macOS, Windows either slash).
_HOME = re.compile(r"(?:(?<![\w.])/home/|(?<![\w.])/Users/|\b[A-Za-z]:[\\/]Users[\\/])"
                   r"([^/\\\s\"'`<>:;|*?]{1,64})")
_NOT_USERS = frozenset({"shared", "public", "default", "all users", "default user", "guest"})


def _mask(s: str) -> str:
    return "".join(c if (c.isascii() and not c.isalnum()) else "x" * len(c.encode("utf-8"))
                   for c in s)


def _email(m: re.Match[str]) -> str:
    local, tld = m.group(1), m.group(3)
    if local.lower() == "git" or tld.lower() in _ASSET_SUFFIXES:
        return m.group(0)
    return _mask(m.group(0))


def _home(m: re.Match[str]) -> str:
    name = m.group(1)
    if name.lower() in _NOT_USERS:
        return m.group(0)
    return m.group(0)[: m.start(1) - m.start(0)] + _mask(name)


def _may_hold_email(text: str) -> bool:
    """False only when `_EMAIL` cannot match `text` (see `_EMAIL_HINT`)."""
    at = text.find("@", 1)
    while at != -1:
        if _EMAIL_HINT.match(text, at - 1):
            return True
        at = text.find("@", at + 1)
    return False


def mask_text(text: str) -> str:
    """`text` with e-mail addresses and home-path user names masked, same UTF-8 length."""
    if _may_hold_email(text):
        text = _EMAIL.sub(_email, text)
    if "Users" in text or "/home/" in text:
        text = _HOME.sub(_home, text)
    return text


def may_hold_pii(raw: bytes) -> bool:
    """False when the event serialised as `raw` (its JSON) has nothing `mask_text` would
    touch: JSON writes `@`, `Users` and `/home/` as they are, so a string holding one of them
    holds it in `raw` too. Lets ingest skip walking the ~90 % of events without any."""
    return b"@" in raw or b"Users" in raw or b"/home/" in raw


def mask_event(event: Any) -> Any:
    """A copy of `event` with every content string masked (identifier fields left alone);
    the same object when nothing needed masking, so callers can tell by identity."""
    if isinstance(event, dict):
        out: dict[str, Any] = {}
        changed = False
        for key, value in event.items():
            new = value if key in _NOT_CONTENT else mask_event(value)
            changed |= new is not value
            out[key] = new
        return out if changed else event
    if isinstance(event, list):
        items = [mask_event(v) for v in event]
        return items if any(a is not b for a, b in zip(items, event, strict=True)) else event
    if isinstance(event, str):
        masked = mask_text(event)
        return event if masked == event else masked
    return event
