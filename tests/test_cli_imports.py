"""``audiodiff --help`` and ``audiodiff COMMAND --help`` build the whole parser, so the command-line
modules import nothing heavy when they load: torch, numpy and the rest of the package are imported
inside the functions that run a command.

(Importing :mod:`audiodiff.cli` still loads the top-level ``audiodiff`` package, whose public API
imports torch; this test keeps the command modules from adding to that.)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

CLI = Path(__file__).resolve().parents[1] / "audiodiff" / "cli"


def _module_level_imports(path: Path) -> set[str]:
    """Modules ``path`` imports outside functions (the ones loaded when it is imported)."""
    found = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and not child.level:
                found.add(child.module or "")
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


@pytest.mark.parametrize("path", sorted(CLI.glob("*.py")), ids=lambda p: p.name)
def test_a_command_module_imports_only_the_standard_library_and_the_cli_when_it_loads(path):
    heavy = {name for name in _module_level_imports(path)
             if not (name.split(".")[0] in sys.stdlib_module_names or name.startswith("audiodiff.cli")
                     or name == "__future__")}
    assert not heavy, f"{path.name} imports {sorted(heavy)} at module level; import it inside run()"


def test_every_command_module_adds_itself_and_runs():
    from audiodiff.cli import COMMANDS, build_parser

    parser = build_parser()
    for command in COMMANDS:
        assert callable(command.add_parser) and callable(command.run)
    args = parser.parse_args(["info", "x.safetensors"])
    assert args.func.__module__ == "audiodiff.cli.info"
