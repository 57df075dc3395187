"""The syntax gate: a target must not break the code of its region.

Why: real users pause mid-line, so some regions settle half-typed (an unfinished `print(`),
and a teacher can answer with such a region too. A target that puts a syntax error (a
tree-sitter ERROR or MISSING node) inside the editable region of an excerpt that had none
there is rejected as ``breaks_syntax``. The excerpt is a slice of a file, so errors at its
edges are common; only errors overlapping the region count, and a region that was already
broken at request time is not judged (``base_broken``). Languages the bundled grammars do
not know pass unchecked (``unchecked``), and are counted as such.

`check_syntax` returns one of `SYNTAX_RESULTS`. Parsers come from tree-sitter-language-pack
(compiled grammars in the wheel: no download at run time).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from streams.languages import language_of

SYNTAX_RESULTS = ("ok", "breaks_syntax", "base_broken", "unchecked")

# streams.languages' names -> the pack's grammar names (None: no grammar; prose-like formats
# such as markdown parse anything, so checking them would only cost time)
_GRAMMARS = {
    "python": "python", "rust": "rust", "go": "go", "javascript": "javascript",
    "typescript": "typescript", "java": "java", "kotlin": "kotlin", "scala": "scala",
    "c": "c", "c++": "cpp", "c#": "csharp", "swift": "swift", "ruby": "ruby", "php": "php",
    "lua": "lua", "r": "r", "julia": "julia", "elixir": "elixir", "erlang": "erlang",
    "haskell": "haskell", "ocaml": "ocaml", "dart": "dart", "zig": "zig", "shell": "bash",
    "html": "html", "css": "css", "scss": "scss", "json": "json", "yaml": "yaml",
    "toml": "toml", "xml": "xml", "makefile": "make", "dockerfile": "dockerfile",
    "cmake": "cmake", "hcl": "hcl", "nix": "nix", "sql": "sql", "protobuf": "proto",
}


@functools.lru_cache(maxsize=64)
def _parser(grammar: str) -> Any | None:
    try:
        from tree_sitter_language_pack import get_parser
    except ImportError:  # pragma: no cover - a dependency; without it every check passes
        return None
    try:
        return get_parser(grammar)  # type: ignore[arg-type]
    except Exception:  # an unknown or unloadable grammar: unchecked, not a crash
        return None


def grammar_for(path: str | None) -> str | None:
    """The tree-sitter grammar that checks `path`, or None (unchecked)."""
    grammar = _GRAMMARS.get(language_of(path))
    return grammar if grammar is not None and _parser(grammar) is not None else None


def _errors(root: Any) -> Iterator[tuple[int, int]]:
    """Byte spans of the tree's ERROR and MISSING nodes (only subtrees with errors)."""
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_missing or node.type == "ERROR":
            yield node.start_byte, node.end_byte
            if node.type == "ERROR":
                stack.extend(c for c in node.children if c.has_error or c.is_missing)
            continue
        stack.extend(c for c in node.children if c.has_error or c.is_missing)


def _broken(parser: Any, text: bytes, start: int, end: int) -> bool:
    """Whether an error node overlaps [start, end) (a MISSING node: sits inside it)."""
    tree = parser.parse(text)
    if not tree.root_node.has_error:
        return False
    for s, e in _errors(tree.root_node):
        if (s < end and e > start) or (s == e and start <= s <= end):
            return True
    return False


def check_syntax(path: str | None, excerpt: str, editable_range: list[int] | tuple[int, int],
                 target: str) -> str:
    """`ok`, `breaks_syntax`, `base_broken` or `unchecked` for `target` as the new region
    of `excerpt` (editable_range: UTF-8 byte offsets in the excerpt, as on the wire)."""
    grammar = grammar_for(path)
    if grammar is None:
        return "unchecked"
    parser = _parser(grammar)
    raw = excerpt.encode()
    start, end = editable_range
    if _broken(parser, raw, start, end):
        return "base_broken"
    new = target.encode()
    if _broken(parser, raw[:start] + new + raw[end:], start, start + len(new)):
        return "breaks_syntax"
    return "ok"
