"""``audiodiff demo``: vocode the shipped held-out speech with the shipped vocoder, or train a tiny vocoder
on one clip for some minutes and vocode that.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from audiodiff.cli.common import EXIT_OK, EXIT_USAGE, CommandError


def add_parser(subparsers, parents: list) -> None:
    p = subparsers.add_parser(
        "demo", parents=parents,
        help="vocode the shipped held-out speech with the shipped vocoder (or: train a tiny one)",
        description="Vocode the held-out speech clips that ship with the package with the shipped speech "
                    "vocoder, from their mels and from a (frames, n_mels) mel file as a TTS writes it; "
                    "writes wavs and input-vs-vocoded mel comparisons. With --train-minutes, train the "
                    "tiny-cpu recipe on one clip for that long and vocode it instead.")
    p.add_argument("--audio", default=None,
                   help="a speech clip to vocode (default: the shipped examples) or, with --train-minutes, to "
                        "train on (default: the clip under tests/data/)")
    p.add_argument("--model", "-m", default=None, help="vocoder to use (default: the shipped speech-22k)")
    p.add_argument("--seconds", type=float, default=None, help="vocode only each clip's first seconds")
    p.add_argument("--out", default="demo-out", help="output folder (default: demo-out/)")
    p.add_argument("--train-minutes", type=float, default=None, metavar="M",
                   help="train the tiny-cpu recipe on a clip for M minutes on the CPU, then vocode it")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from audiodiff.jobs.demo import run_demo, run_shipped_demo

    if args.train_minutes is not None:
        if args.train_minutes <= 0:
            raise CommandError(f"--train-minutes must be positive, got {args.train_minutes:g}", EXIT_USAGE)
        run_demo(audio_path=args.audio, out_dir=Path(args.out), minutes=args.train_minutes, seed=args.seed)
        return EXIT_OK
    inputs = [Path(args.audio)] if args.audio else None
    run_shipped_demo(Path(args.out), model_name=args.model, inputs=inputs, seconds=args.seconds, seed=args.seed)
    return EXIT_OK
