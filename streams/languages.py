"""The programming language of a path, for per-language figures and a dataset column.

By file name or extension only (the export must not guess from content it may not keep);
what is not listed is `other`. Names are lower case, as Hugging Face and GitHub Linguist
spell them in their lower-cased forms.
"""

from __future__ import annotations

from pathlib import PurePosixPath

_BY_EXTENSION = {
    "py": "python", "pyi": "python", "rs": "rust", "go": "go", "js": "javascript",
    "mjs": "javascript", "cjs": "javascript", "jsx": "javascript", "ts": "typescript",
    "tsx": "typescript", "java": "java", "kt": "kotlin", "kts": "kotlin", "scala": "scala",
    "c": "c", "h": "c", "cc": "c++", "cpp": "c++", "cxx": "c++", "hpp": "c++", "hh": "c++",
    "cs": "c#", "fs": "f#", "swift": "swift", "m": "objective-c", "mm": "objective-c",
    "rb": "ruby", "php": "php", "pl": "perl", "lua": "lua", "r": "r", "jl": "julia",
    "ex": "elixir", "exs": "elixir", "erl": "erlang", "hs": "haskell", "ml": "ocaml",
    "clj": "clojure", "dart": "dart", "zig": "zig", "nim": "nim", "sh": "shell",
    "bash": "shell", "zsh": "shell", "fish": "shell", "ps1": "powershell", "sql": "sql",
    "html": "html", "htm": "html", "css": "css", "scss": "scss", "vue": "vue",
    "svelte": "svelte", "md": "markdown", "rst": "restructuredtext", "json": "json",
    "yaml": "yaml", "yml": "yaml", "toml": "toml", "xml": "xml", "proto": "protobuf",
    "tf": "hcl", "nix": "nix", "gleam": "gleam",
}
_BY_NAME = {"makefile": "makefile", "dockerfile": "dockerfile", "cmakelists.txt": "cmake",
            "justfile": "just", "gemfile": "ruby", "rakefile": "ruby"}


def language_of(path: str | None) -> str:
    """`python` for `src/app.py`, `makefile` for `Makefile`, `other` when unknown."""
    if not path:
        return "other"
    name = PurePosixPath(path.replace("\\", "/")).name.lower()
    if name in _BY_NAME:
        return _BY_NAME[name]
    stem, dot, ext = name.rpartition(".")
    return _BY_EXTENSION.get(ext, "other") if dot and stem else "other"
