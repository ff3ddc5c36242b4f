"""``audiodiff train``: train a model with LightningCLI (its own arguments: ``audiodiff train --help``).

``main`` hands ``train`` its raw arguments before argparse sees them, so this parser entry only
lists the command in ``audiodiff --help``.
"""

from __future__ import annotations

from typing import Sequence

from audiodiff.cli.common import EXIT_OK


def add_parser(subparsers, parents: list) -> None:
    subparsers.add_parser("train", help="train a model (LightningCLI; see 'audiodiff train --help')", add_help=False)


def run(argv: Sequence[str]) -> int:
    """Run LightningCLI on ``argv`` (the arguments after ``train``)."""
    from audiodiff.training.run import run_training

    run_training(list(argv))
    return EXIT_OK
