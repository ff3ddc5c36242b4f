"""``audiodiff export``: a training checkpoint (``.ckpt``) -> a ``.safetensors`` model with the EMA weights."""

from __future__ import annotations

import argparse

from audiodiff.cli.common import EXIT_OK


def add_parser(subparsers, parents: list) -> None:
    p = subparsers.add_parser(
        "export", parents=parents,
        help="training checkpoint (.ckpt) -> .safetensors model (EMA weights)")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--half", action="store_true",
                   help="store the weights as float16 (half the size; loading converts them back to float32)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from audiodiff.pipeline.loading import load_checkpoint

    model = load_checkpoint(args.checkpoint)
    target = model.save(args.output, dtype=torch.float16 if args.half else None)
    print(f"wrote {target} (EMA weights{', float16' if args.half else ''}, step {model.config.training_step}, "
          f"{target.stat().st_size / 1e6:.1f} MB)")
    return EXIT_OK
