"""``audiodiff vocode``: mel files (or audio files, resynthesised) -> wavs, in memory-bounded batches."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audiodiff.cli.common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CommandError, _add_engine_args,
                                  _add_sampling_args, _choose_sampler, _load_model, _precision,
                                  _report_input_error, _resolve_device, _set_up_engine, _shown)


def add_parser(subparsers, parents: list) -> None:
    p = subparsers.add_parser("vocode", parents=parents, help="mel files (.npy/.npz/.pt) or audio files -> wavs")
    p.add_argument("inputs", nargs="+", help="mel files, or audio files to resynthesise")
    p.add_argument("--model", "-m", default="speech-22k",
                   help="a .safetensors model, a .ckpt checkpoint, or a shipped model's name "
                        "(default: speech-22k, the shipped 22.05 kHz speech vocoder, hifigan mels)")
    p.add_argument("--out", "-o", default="vocoded", help="output folder (default: vocoded/)")
    p.add_argument("--batch-size", type=int, default=8, help="inputs vocoded together (default 8)")
    p.add_argument("--max-batch-gb", type=float, default=2.0,
                   help="memory for a batch's mel conditioning (the cached per-block projections, or the "
                        "upsampled mel with --engine fused); longer inputs go alone (default 2)")
    p.add_argument("--chunk-seconds", type=float, default=None,
                   help="synthesise longer inputs in overlapping chunks of this length: the same audio in "
                        "bounded memory (default: 2 on a CPU, 30 on a GPU; 0: never chunk)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--quiet", "-q", action="store_true")
    _add_sampling_args(p)
    _add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from audiodiff.jobs.vocode import VocodeInterrupted, vocode_files

    chunk_seconds = _chunk_seconds(args.chunk_seconds)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _resolve_device(args.device)
    model = _load_model(args.model, device)
    precision = _precision(args.precision, device)
    _set_up_engine(model, args)
    if not model.network.conditional:
        raise CommandError(f"{args.model}: a model without mel conditioning cannot vocode; use 'audiodiff generate'", EXIT_USAGE)
    _choose_sampler(args, model)
    out_dir = Path(args.out)
    try:
        summary = vocode_files(model, args.inputs, out_dir, sampler=args.sampler, steps=args.steps, seed=args.seed,
                               batch_size=args.batch_size, max_batch_gb=args.max_batch_gb,
                               chunk_seconds=chunk_seconds, precision=precision, progress=not args.quiet,
                               on_error=lambda error: _report_input_error(Path(error.path), error),
                               on_written=None if args.quiet else _report_written)
    except VocodeInterrupted as interrupt:
        print(f"interrupted: {len(interrupt.summary.written)} file(s) finished in {out_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if summary.failed:
        print(f"{len(summary.failed)} input(s) failed, {len(summary.written)} written to {out_dir}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _report_written(path: Path, seconds: float) -> None:
    """One ``wrote <path> (<seconds> s)`` line on stdout, above the progress bar."""
    from tqdm import tqdm

    tqdm.write(f"wrote {_shown(path)} ({seconds:.2f} s)")


def _chunk_seconds(value: float | None) -> float | str | None:
    """``--chunk-seconds`` as :meth:`AudioDiffusion.vocode` takes it: ``None`` -> "auto", 0 -> never."""
    if value is None:
        return "auto"
    if value < 0:
        raise CommandError(f"--chunk-seconds must be positive (or 0 to never chunk), got {value:g}", EXIT_USAGE)
    return value or None
