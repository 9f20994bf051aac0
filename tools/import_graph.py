"""Print the import graph of the `adagrad` package and check that it runs one way.

    python tools/import_graph.py [SRC_DIR]      # default: src/ beside this folder

Reads every module under ``SRC_DIR/adagrad`` with `ast` (nothing is imported or run) and
collects each import of an ``adagrad`` module, at module level or inside a function (a lazy
import is still an arrow), with ``TYPE_CHECKING`` imports marked ``(typing)``. It prints

- the rooms (the top-level modules and subpackages) with the rooms each imports, and
- every circle between modules (a strongly connected set of two or more, over the imports
  that run: a ``TYPE_CHECKING`` import closes no circle) and every arrow that points up the
  layers below (typing imports included),

and exits 1 if there is a circle or an upward arrow, else 0. The layers, from the bottom
(DESIGN: reference, kernels → optim → nn → distributed / linear / textfiles /
experiments → fit_cli → cli)::

    0  members, reference, kernels
    1  optim
    2  nn
    3  distributed, linear, textfiles, experiments
    4  fit_cli
    5  cli

A room may import its own layer's rooms (no circle) and any room below. The package root
``adagrad/__init__.py`` re-exports the optimizers lazily; an import of a name from it counts
as an arrow to ``optim``.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

LAYERS = {
    "members": 0, "reference": 0, "kernels": 0,
    "optim": 1,
    "nn": 2,
    "distributed": 3, "linear": 3, "textfiles": 3, "experiments": 3,
    "fit_cli": 4,
    "cli": 5, "__main__": 5,
}


def _modules(src: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package under ``src``."""
    found = {}
    for path in sorted((src / "adagrad").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool):
    """Yield (imported dotted name, names taken from it, typing only) for each import."""
    typing_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for inner in node.body:
                for sub in ast.walk(inner):
                    if hasattr(sub, "lineno"):
                        typing_lines.add(sub.lineno)
    for node in ast.walk(tree):
        typing = getattr(node, "lineno", -1) in typing_lines
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], typing
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield name, [alias.name for alias in node.names], typing


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def build(src: Path) -> dict[tuple[str, str], bool]:
    """Module-level arrows ``(importer, imported) -> typing only``."""
    modules = _modules(src)
    arrows: dict[tuple[str, str], bool] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for name, taken, typing in _imports(tree, module, path.name == "__init__.py"):
            if name != "adagrad" and not name.startswith("adagrad."):
                continue
            targets = []
            for item in taken:
                if f"{name}.{item}" in modules:
                    targets.append(f"{name}.{item}")
                elif name == "adagrad" and item != "__version__":
                    targets.append("adagrad.optim")  # the root's lazy re-exports
                else:
                    targets.append(name)
            if not taken:
                targets.append(name)
            for target in targets:
                if target != module and target in modules:
                    arrows[(module, target)] = arrows.get((module, target), True) and typing
    return arrows


def circles(arrows) -> list[list[str]]:
    """The strongly connected sets of two or more modules (Tarjan), sorted."""
    graph = defaultdict(list)
    for (a, b), typing in arrows.items():
        if not typing:  # an import for typing only runs under a type checker, not at import
            graph[a].append(b)
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10000)
    for node in list(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def upward(arrows) -> list[tuple[str, str, bool]]:
    """Arrows from a room to a room on a higher layer."""
    up = []
    for (a, b), typing in sorted(arrows.items()):
        ra, rb = _room(a), _room(b)
        if ra in LAYERS and rb in LAYERS and LAYERS[rb] > LAYERS[ra]:
            up.append((a, b, typing))
    return up


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "src"
    arrows = build(src)
    rooms = defaultdict(set)
    for a, b in arrows:
        if _room(a) != _room(b):
            rooms[_room(a)].add(_room(b))
    print("rooms (layer: room -> rooms it imports):")
    for room in sorted({_room(m) for m in _modules(src)}, key=lambda r: (LAYERS.get(r, -1), r)):
        layer = LAYERS.get(room, "-")
        print(f"  {layer}: {room} -> {', '.join(sorted(rooms[room])) or '(nothing)'}")
    found = circles(arrows)
    print(f"circles: {len(found)}")
    for group in found:
        print("  " + " <-> ".join(m.removeprefix("adagrad.") for m in group))
    up = upward(arrows)
    print(f"upward arrows: {len(up)}")
    for a, b, typing in up:
        note = " (typing)" if typing else ""
        print(f"  {a.removeprefix('adagrad.')} -> {b.removeprefix('adagrad.')}{note}")
    return 1 if found or up else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
