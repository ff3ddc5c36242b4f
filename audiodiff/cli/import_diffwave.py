"""``audiodiff import-diffwave``: a reference DiffWave checkpoint -> a ``.safetensors`` model."""

from __future__ import annotations

import argparse

from audiodiff.cli.common import EXIT_OK


def add_parser(subparsers, parents: list) -> None:
    p = subparsers.add_parser(
        "import-diffwave", parents=parents,
        help="reference DiffWave checkpoint -> .safetensors model")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from audiodiff.pipeline.reference import import_diffwave

    model = import_diffwave(args.checkpoint)
    target = model.save(args.output)
    print(f"wrote {target} (reference DiffWave weights, 'diffwave' mel preset)")
    return EXIT_OK
