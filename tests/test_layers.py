"""The package's layers point one way: cli -> facade -> engine -> stores -> registry -> oci.

Every relative import inside ``bundler`` (sandbox apart) is read from the source, and each
must point at a module of the same layer or a lower one; no import circles anywhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

import bundler

ROOT = Path(bundler.__file__).parent

#: rank of each layer; a module may import only from its own rank or lower ones.
RANKS = {
    "bundler.errors": 0, "bundler.events": 0, "bundler.termsafe": 0,
    "bundler.oci": 1,
    "bundler.registry": 2,
    "bundler.stores": 3,
    "bundler.engine": 4,
    "bundler.serve": 5,
    "bundler.bundle": 6, "bundler": 6, "bundler.__main__": 7,
    "bundler.cli": 7,
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if "sandbox" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _rank(module: str) -> int:
    while module not in RANKS:
        module = module.rsplit(".", 1)[0]
    return RANKS[module]


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{target}.{alias.name}"
                targets.add(full if full in modules else target)
    return {t for t in targets if t in modules and t != module}


def test_every_import_points_to_the_same_layer_or_below() -> None:
    modules = _modules()
    upward = []
    for module, path in sorted(modules.items()):
        if module == "bundler":  # the public API re-exports every layer
            continue
        for target in sorted(_imports(module, path, modules)):
            if _rank(target) > _rank(module):
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_no_import_circles() -> None:
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    # a package's __init__ importing its own submodules is no circle
    for m in graph:
        graph[m] = {t for t in graph[m] if not t.startswith(m + ".")}
    circles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert circles == []


def test_the_layers_are_folders() -> None:
    assert {p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "oci", "registry", "stores", "engine", "serve", "cli", "sandbox"}


def test_the_architecture_page_names_modules_that_exist() -> None:
    import re

    page = (ROOT.parent / "docs" / "architecture.md").read_text()
    files = {p.name for p in ROOT.rglob("*.py")}
    missing = [name for name in re.findall(r"`(\w+\.py)`", page) if name not in files]
    missing += [path for path in re.findall(r"(bundler/[\w/.]*\w)", page)
                if not (ROOT.parent / path).exists()]
    assert missing == []
    for module in ("oci", "registry", "stores", "engine", "serve", "cli"):
        assert f"`{module}/`" in page
