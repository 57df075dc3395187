"""Tokenizer of the metrics: code tokens, comparison units, UTF-8 lengths."""

from __future__ import annotations

import re

# Unicode White_Space minus the two newline characters (which form their own class).
# Spelled out because str.isspace() / re's \s also accept U+001C..U+001F, which are not
# White_Space.
_WS_CLASS = "[\t\x0b\x0c \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"

# Multi-character operators, in the spec's order: regex alternation tries them left to right,
# which is exactly "the first entry of the list that matches".
_OPERATORS = (
    ">>>=", "<<=", ">>=", "...", "..=", "??=", "**=", ">>>", "::", "->", "=>", "==", "!=",
    "<=", ">=", "&&", "||", "<<", ">>", "..", "+=", "-=", "*=", "/=", "%=", "&=", "|=",
    "^=", "++", "--", "**", "??", "?.", ":=", "<-", "//", "/*", "*/",
)  # fmt: skip
_PUNCT = "|".join(re.escape(op) for op in _OPERATORS)

# One match = one comparison unit: a newline run, a whitespace run, a whole identifier run
# (group 1) or one punctuation token. Python's \w is exactly str.isalnum() or "_", i.e.
# "Unicode alphanumeric or underscore".
_UNIT_RE = re.compile(rf"[\r\n]+|{_WS_CLASS}+|(\w+)|{_PUNCT}|.", re.DOTALL)
# The same without the group, so findall returns whole matches (the kept-rate hot path).
_UNIT_FLAT_RE = re.compile(rf"[\r\n]+|{_WS_CLASS}+|\w+|{_PUNCT}|.", re.DOTALL)

# ASCII identifier split points: underscore runs (captured, so they are kept as tokens),
# lower/digit→Upper, and Upper→Upper-followed-by-lower (XMLHttp → XML|Http).
_ASCII_ID_SPLIT = re.compile(r"(_+)|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _split_identifier(word: str) -> list[str]:
    """Split one identifier run into its sub-words (camelCase, ACRONYMWord, ``_`` runs).

    Interpretation: "digit" means ``str.isdigit()`` and case tests use ``str.isupper()`` /
    ``str.islower()``; a case boundary is only considered inside an underscore-free segment.
    """
    if word.isascii():
        if "_" not in word and (len(word) < 2 or word[1:].islower() or word.isdigit()):
            return [word]  # fast path: nothing to split
        return [part for part in _ASCII_ID_SPLIT.split(word) if part]
    tokens: list[str] = []
    start = 0
    i = 0
    n = len(word)
    while i < n:
        c = word[i]
        if c == "_":
            if i > start:
                tokens.append(word[start:i])
            j = i
            while j < n and word[j] == "_":
                j += 1
            tokens.append(word[i:j])
            start = i = j
            continue
        if i > start and c.isupper():
            prev = word[i - 1]
            if (
                prev.islower()
                or prev.isdigit()
                or (prev.isupper() and i + 1 < n and word[i + 1].islower())
            ):
                tokens.append(word[start:i])
                start = i
        i += 1
    if start < n:
        tokens.append(word[start:])
    return tokens


def tokenize(text: str) -> list[str]:
    """Split code into tokens whose concatenation is exactly ``text``.

    Newline runs and whitespace runs are single tokens, identifiers are split into words
    (``getHTTPResponse2Code`` → ``get``, ``HTTP``, ``Response2``, ``Code``; underscore runs
    are their own tokens), punctuation takes the longest listed operator, else one character.
    Note: combining marks are not alphanumeric, so a decomposed ``e`` + U+0301 gives two tokens.
    """
    tokens: list[str] = []
    for m in _UNIT_RE.finditer(text):
        word = m.group(1)
        if word is None:
            tokens.append(m.group())
        else:
            tokens.extend(_split_identifier(word))
    return tokens


def _units(text: str) -> list[str]:
    """Tokens with each run of identifier tokens merged back into one comparison unit.

    Consecutive identifier tokens always come from one identifier run, so the units are just
    the tokenizer's matches before identifiers are split (``new_name`` is one unit).
    """
    return _UNIT_FLAT_RE.findall(text)


def _utf8_len(text: str) -> int:
    """Length of ``text`` in UTF-8 bytes (cheap for the common ASCII case)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))
