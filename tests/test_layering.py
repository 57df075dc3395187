"""The folder listing is the architecture: these tests keep the layers' arrows pointing down.

    schemas/  the contract (names, records)        imports nothing of the project but itself
    streams/  the pure core                         imports schemas/ and itself, no I/O library
    agents/   the worker's edges (Faust, Kafka, HTTP clients)
    editstream/, bench/  the tools                  may import everything below

Imports are read with `ast` from the source files (function-level and TYPE_CHECKING imports
included: an import hidden in a function is still an arrow).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "streams", "agents", "editstream", "bench")
IO_LIBRARIES = {"faust", "mode", "aiokafka", "httpx", "httpx_aiohttp", "aiohttp"}
# what each package may import of the project (besides itself)
ALLOWED = {
    "schemas": set(),
    "streams": {"schemas"},
    "agents": {"schemas", "streams"},
    "editstream": {"schemas", "streams", "agents"},
    "bench": {"schemas", "streams", "agents", "editstream"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(module: str) -> set[str]:
    """Every module `module` imports (project submodules resolved: `from agents import
    metrics` is `agents.metrics`)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
    return found


def project_imports(module: str) -> set[str]:
    """The project modules `module` imports (the nearest known module of each name)."""
    out = set()
    for name in imports_of(module):
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("package", ["streams", "schemas"])
def test_pure_layers_import_no_io_library(package: str) -> None:
    offenders = {m: sorted(top(n) for n in imports_of(m) if top(n) in IO_LIBRARIES)
                 for m in MODULES if top(m) == package}
    assert {m: libs for m, libs in offenders.items() if libs} == {}


def test_the_generator_core_reads_no_files() -> None:
    """streams.generate simulates on texts handed in; the disk is editstream.sessions.generate's."""
    file_io = {"os", "pathlib", "sysconfig", "tempfile", "shutil", "io"}
    offenders = {m: sorted(top(n) for n in imports_of(m) if top(n) in file_io)
                 for m in MODULES if m.startswith("streams.generate")}
    assert {m: libs for m, libs in offenders.items() if libs} == {}
    assert {"os", "sysconfig"} <= {top(n) for n in imports_of("editstream.sessions.generate")}


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down_the_layers(package: str) -> None:
    upward = {m: sorted({top(n) for n in project_imports(m)} - ALLOWED[package] - {package})
              for m in MODULES if top(m) == package}
    assert {m: pkgs for m, pkgs in upward.items() if pkgs} == {}


def test_no_import_cycles() -> None:
    graph = {m: project_imports(m) - {m} for m in MODULES}
    # a package's __init__ importing its own submodules is how a package re-exports
    for m, deps in graph.items():
        if MODULES[m].name == "__init__.py":
            graph[m] = {d for d in deps if not d.startswith(m + ".")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append([*path[path.index(d):], d])
            elif d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == []


def test_the_checks_see_imports() -> None:
    """The walker finds what it is meant to find (a test that cannot fail proves nothing)."""
    assert "faust" in {top(n) for n in imports_of("agents.app")}
    assert "schemas.topics" in project_imports("editstream.topics.kafka_io")
    assert "agents.stage" in project_imports("agents.stages")
