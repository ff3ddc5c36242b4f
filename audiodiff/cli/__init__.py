"""The ``audiodiff`` command line.

Subcommands: ``train`` (LightningCLI), ``export``, ``info``, ``vocode``, ``serve``, ``generate``, ``eval``,
``search-schedule``, ``mel``, ``import-diffwave`` and ``demo``, one module each (``add_parser``
adds its arguments, ``run`` runs it); :mod:`audiodiff.cli.common` holds what they share. Errors are
one line on stderr (``--verbose`` for a traceback); usage errors exit with 2, a run in which some
inputs failed exits with 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from audiodiff.cli import (demo, eval, export, generate, import_diffwave, info, mel, search_schedule, serve,
                           train, vocode)
from audiodiff.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, CommandError

#: The commands in the order ``audiodiff --help`` lists them.
COMMANDS = (train, vocode, serve, generate, eval, search_schedule, mel, info, export, import_diffwave, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audiodiff", description="A DiffWave-style diffusion vocoder.")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks and debug logs")
    common = argparse.ArgumentParser(add_help=False)  # --verbose also after the subcommand
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub, [common])
    return parser


def _one_line_errors() -> tuple[type[BaseException], ...]:
    from audiodiff.io.audio import AudioError
    from audiodiff.io.model_file import ModelFileError
    from audiodiff.io.mel_files import InputError

    return (CommandError, ModelFileError, AudioError, InputError, FileNotFoundError, ValueError)


def _printable_file_names() -> None:
    """Let stdout and stderr print any file name: one that is not UTF-8 (which Python holds as
    lone surrogates) is written with backslash escapes instead of raising UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and getattr(stream, "errors", None) == "strict":
            stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _printable_file_names()
    if argv and argv[0] == "train":
        return train.run(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s: %(message)s")
    handled = _one_line_errors()
    try:
        return args.func(args)
    except handled as error:
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return getattr(error, "code", EXIT_FAILED)
    except KeyboardInterrupt:  # outside a job's own handler (loading, export): nothing half-written
        if args.verbose:
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
