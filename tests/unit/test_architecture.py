"""The import graph of `platform/rayloom`, read with `ast`: what depends on what must be visible.

Counts module-level and function-level imports of rayloom modules alike (a function-level import
still makes a dependency; it only delays it). Fails on an import cycle, on a library module that
imports the command layer, on a package importing another package's private names, and on a file
over the size limit.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO_ROOT

SOURCE_ROOT = REPO_ROOT / "platform"
PACKAGE_ROOT = SOURCE_ROOT / "rayloom"
COMMAND_LAYER = {"rayloom.cli", "rayloom.entry"}
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE_ROOT.rglob("*.py")}


def _imports(path: Path, name: str, modules: dict[str, Path]) -> list[tuple[str, tuple[str, ...]]]:
    """(imported module, names taken from it) for every rayloom import in the file."""
    is_package = path.name == "__init__.py"
    found: list[tuple[str, tuple[str, ...]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, ()) for a in node.names if a.name.split(".")[0] == "rayloom"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "rayloom":
                continue
            plain = []
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    found.append((sub, ()))
                else:
                    plain.append(alias.name)
            if plain:
                found.append((base, tuple(plain)))
    return found


def _ancestors(module: str) -> list[str]:
    """The packages Python initialises before `module` (`rayloom.a.b` -> `rayloom.a`); the root
    `rayloom` package is left out: it imports nothing of its own."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def _graph() -> dict[str, set[str]]:
    """Module -> the rayloom modules importing it runs. Importing `rayloom.train.ds_config` first
    runs `rayloom/train/__init__.py`, so that is an edge too — except for a module's own packages,
    which are already being initialised when it runs."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        own = set(_ancestors(name)) | ({name} if path.name == "__init__.py" else set())
        targets: set[str] = set()
        for target, _ in _imports(path, name, modules):
            targets.add(target)
            targets.update(p for p in _ancestors(target) if p not in own)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_library_never_imports_the_command_layer():
    offenders = [
        f"{name} -> {target}"
        for name, targets in _graph().items()
        if name not in COMMAND_LAYER
        for target in targets & COMMAND_LAYER
    ]
    assert offenders == []


def test_no_package_imports_another_packages_private_names():
    modules = _modules()
    offenders = []
    for name, path in modules.items():
        for target, names in _imports(path, name, modules):
            if _package(target) == _package(name):
                continue
            private_module = any(part.startswith("_") for part in target.split(".")[1:])
            private_names = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private_module or private_names:
                offenders.append(f"{name} -> {target} {private_names or ''}".strip())
    assert offenders == []


def test_no_source_file_is_over_the_size_limit():
    long_files = {
        str(p.relative_to(REPO_ROOT)): n
        for p in PACKAGE_ROOT.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long_files == {}


def test_importing_a_submodule_runs_its_package_first():
    graph = _graph()
    # the planner imports rayloom.train.ds_config, which initialises rayloom.train first
    assert "rayloom.train" in graph["rayloom.planner.memory"] or "rayloom.train" in graph["rayloom.planner.core"]


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
