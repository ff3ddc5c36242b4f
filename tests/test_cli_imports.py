"""``audiodiff --help`` and ``audiodiff COMMAND --help`` build the whole parser, so the command-line
modules import nothing heavy when they load: torch, numpy and the rest of the package are imported
inside the functions that run a command.

The top-level package imports its public names on first use, so importing :mod:`audiodiff.cli`
loads no torch either (checked end to end in a fresh interpreter below).
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


def test_help_loads_neither_torch_nor_the_rest_of_the_package():
    """``audiodiff --help`` and each command's ``--help`` answer without importing torch: the
    package's public names are imported on first use, and the commands import inside ``run``."""
    import subprocess
    import sys

    probe = ("import sys, contextlib, io\n"
             "from audiodiff.cli import build_parser\n"
             "parser = build_parser()\n"
             "for argv in (['--help'], ['vocode', '--help'], ['eval', '--help'], ['generate', '--help']):\n"
             "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
             "        parser.parse_args(argv)\n"
             "print(sorted(m for m in ('torch', 'numpy', 'audiodiff.pipeline') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_public_names_resolve_lazily_and_unknown_ones_fail():
    import audiodiff

    assert audiodiff.load_model.__module__ == "audiodiff.pipeline.loading"
    assert set(audiodiff.__all__) <= set(dir(audiodiff))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        audiodiff.nope
