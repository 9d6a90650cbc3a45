"""The package's import graph has no cycle, and its layers import only downward.

Edges come from every import statement in the source, inside functions too (an
import hidden in a function still ties two modules together), except those under
`if TYPE_CHECKING:`, which never run. Importing `a.b.c` also runs the packages
`a.b` and `a` unless the importer already sits inside them, so those edges count too:
that is how `sparseae.x -> sparseae.model.codes -> sparseae.model -> ... -> sparseae.x`
fails at run time although no module names its own importer.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sparseae

PACKAGE_ROOT = Path(sparseae.__file__).parent


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under `root`."""
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join([package, *parts])] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Import nodes of a module, skipping `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(modules: dict[str, Path], package: str) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        here = name if is_pkg else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = here.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                for a in node.names:  # `from pkg import submodule` imports the submodule
                    sub = f"{mod}.{a.name}"
                    targets.append(sub if sub in modules else mod)
            for t in targets:
                if not (t == package or t.startswith(package + ".")):
                    continue
                inside = set(_ancestors(name)) | ({name} if is_pkg else set())
                for dep in [*_ancestors(t), t]:
                    if dep in modules and dep not in inside and dep != name:
                        graph[name].add(dep)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    colour = dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done
    parent: dict[str, str] = {}

    def visit(start: str) -> list[str] | None:
        stack = [(start, iter(sorted(graph[start])))]
        colour[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
            elif colour[nxt] == 1:
                path = [nxt, node]
                while path[-1] != nxt:
                    path.append(parent[path[-1]])
                return path[::-1]
            elif colour[nxt] == 0:
                parent[nxt] = node
                colour[nxt] = 1
                stack.append((nxt, iter(sorted(graph[nxt]))))
        return None

    for m in sorted(graph):
        if colour[m] == 0:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def test_sparseae_has_no_import_cycle():
    graph = import_graph(module_names(PACKAGE_ROOT, "sparseae"), "sparseae")
    assert len(graph) > 30  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


@pytest.mark.parametrize("files,cyclic", [
    # a -> b -> a through function-level imports
    ({"pkg/__init__.py": "", "pkg/a.py": "def f():\n    from .b import g\n",
      "pkg/b.py": "def g():\n    from . import a\n"}, True),
    # a sibling's import of the subpackage, whose __init__ imports the importer
    ({"pkg/__init__.py": "", "pkg/x.py": "from .sub.leaf import v\n",
      "pkg/sub/__init__.py": "from .mod import w\n", "pkg/sub/leaf.py": "v = 1\n",
      "pkg/sub/mod.py": "from ..x import v\n"}, True),
    # a submodule importing its sibling is no cycle, nor is a TYPE_CHECKING import
    ({"pkg/__init__.py": "from .sub import mod\n", "pkg/sub/__init__.py": "from .mod import w\n",
      "pkg/sub/mod.py": "from .leaf import v\nw = v\n", "pkg/sub/leaf.py": "v = 1\n",
      "pkg/y.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .z import q\n",
      "pkg/z.py": "from .y import TYPE_CHECKING\n"}, False),
])
def test_cycle_check_finds_the_cycles_it_should(tmp_path, files, cyclic):
    root = _write(tmp_path, files) / "pkg"
    cycle = find_cycle(import_graph(module_names(root, "pkg"), "pkg"))
    assert (cycle is not None) == cyclic, cycle


# The layers, lowest first (docs/architecture.md draws the same order): a module may import its own
# layer and the ones before it, never one after. Top-level modules: the schema layer; the old import
# paths kept as one-line re-exports (sparseae.penalties, .rundir, .trainer) and the package root sit
# outside the order.
LAYERS = ["schema", "data", "model", "objective", "run", "training", "analysis", "apps", "cli"]
TOP_LEVEL = {"config": "schema", "schema": "schema", "errors": "schema", "families": "schema", "__main__": "cli"}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) == 1:
        return None
    return TOP_LEVEL.get(parts[1], parts[1] if parts[1] in LAYERS else None)


def upward_imports(graph: dict[str, set[str]], layers: list[str] = LAYERS, layer=layer_of) -> list[str]:
    """Every edge from a module to one in a later (higher) layer."""
    rank = {name: i for i, name in enumerate(layers)}
    found = []
    for module, deps in sorted(graph.items()):
        here = layer(module)
        for dep in sorted(deps):
            there = layer(dep)
            if here in rank and there in rank and rank[there] > rank[here]:
                found.append(f"{module} ({here}) -> {dep} ({there})")
    return found


def test_layers_import_only_downward():
    graph = import_graph(module_names(PACKAGE_ROOT, "sparseae"), "sparseae")
    assert {layer_of(m) for m in graph} >= set(LAYERS)  # every layer has modules
    assert upward_imports(graph) == []


def test_layer_check_finds_a_planted_upward_import(tmp_path):
    files = {"pkg/__init__.py": "", "pkg/model/__init__.py": "", "pkg/training/__init__.py": "",
             "pkg/training/loop.py": "from ..model import net\n", "pkg/model/net.py": "x = 1\n"}
    root = _write(tmp_path, files) / "pkg"
    assert upward_imports(import_graph(module_names(root, "pkg"), "pkg")) == []
    (root / "model" / "net.py").write_text("def f():\n    from ..training import loop\n")  # model -> training
    found = upward_imports(import_graph(module_names(root, "pkg"), "pkg"))
    assert found == ["pkg.model.net (model) -> pkg.training (training)",
                     "pkg.model.net (model) -> pkg.training.loop (training)"]
