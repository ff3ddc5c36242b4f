"""The package's layers: each subpackage imports only from its own layer or the ones below, and no
two modules import each other (directly or around a circle), counting imports inside functions.

The layers, lowest first, are :data:`LAYERS`; the README's "Layout" section shows the same tree.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "audiodiff"

#: Rank of each top-level part of the package: a module may import parts of its own rank or lower.
LAYERS: dict[str, int] = {
    "io": 0, "dsp": 0, "mel": 0,
    "diffusion": 1, "network": 1,
    "engines": 2,
    "pipeline": 3,
    "data": 4, "eval": 4,
    "training": 5,
    "jobs": 6, "serve": 6, "examples": 0,
    "cli": 7,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every ``audiodiff.*`` module ``path`` imports, at any depth of its code."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
    return {name for name in found if name == "audiodiff" or name.startswith("audiodiff.")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            # "from audiodiff.x import y" names module x (or x.y when y is a module)
            while imported not in modules and "." in imported:
                imported = imported.rpartition(".")[0]
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(m) for m in _graph()} - {None}
    assert parts <= set(LAYERS), f"add {sorted(parts - set(LAYERS))} to LAYERS (and to the README's Layout)"


def test_no_module_imports_a_higher_layer():
    wrong = []
    for module, targets in _graph().items():
        if module == "audiodiff":  # the public API re-exports from every layer
            continue
        for target in targets:
            if target != "audiodiff" and LAYERS[_part(target)] > LAYERS[_part(module)]:
                wrong.append(f"{module} imports {target}")
            if target == "audiodiff":
                wrong.append(f"{module} imports the top-level package (import the module itself)")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_circles():
    graph = {m: t - {"audiodiff"} for m, t in _graph().items() if m != "audiodiff"}
    circles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_readable_in_size(path):
    """No module over about 500 lines (the restructuring's rule): a bigger one holds several concepts."""
    assert len(path.read_text().splitlines()) <= 520, f"{path.name}: split it by concept"


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """The checker itself: an import inside a function (how optional dependencies are imported) is an edge."""
    source = tmp_path / "x.py"
    source.write_text("import os\n\ndef f():\n    from audiodiff.cli import main\n    import audiodiff.mel\n")
    assert _imports(source) == {"audiodiff.cli", "audiodiff.mel"}
