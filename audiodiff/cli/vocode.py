"""``audiodiff vocode``: mel files (or audio files, resynthesised) -> wavs, in memory-bounded batches;
with ``--manifest``, a corpus on every device of one or several machines (:mod:`audiodiff.jobs.corpus`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from audiodiff.cli.common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CommandError, _add_engine_args,
                                  _add_sampling_args, _choose_sampler, _load_model, _precision,
                                  _report_input_error, _resolve_device, _set_up_engine, _shown)


def add_parser(subparsers, parents: list) -> None:
    p = subparsers.add_parser("vocode", parents=parents, help="mel files (.npy/.npz/.pt) or audio files -> wavs")
    p.add_argument("inputs", nargs="*", help="mel files, or audio files to resynthesise")
    p.add_argument("--manifest", default=None, metavar="LIST",
                   help="vocode a corpus instead: a text file naming one input per line (relative to its "
                        "folder; # comments), sharded over --devices x --num-nodes processes; inputs whose "
                        "wav exists are skipped, so a rerun resumes; a summary goes to OUT/vocode-summary.json")
    p.add_argument("--devices", type=int, default=1,
                   help="with --manifest: processes (GPUs, or CPU processes) per machine (default 1)")
    p.add_argument("--num-nodes", type=int, default=1,
                   help="with --manifest: machines, each running this command (default 1)")
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
    p.set_defaults(func=run, parser=p)


def run(args: argparse.Namespace) -> int:
    import torch

    from audiodiff.jobs.vocode import VocodeInterrupted, vocode_files

    if bool(args.inputs) == bool(args.manifest):
        args.parser.error("give input files or --manifest LIST (not both)")
    if not args.manifest and (args.devices != 1 or args.num_nodes != 1):
        args.parser.error("--devices and --num-nodes go with --manifest")
    chunk_seconds = _chunk_seconds(args.chunk_seconds)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # per process: Lightning's DDP then keeps it
        torch.set_num_threads(args.threads)
    if args.manifest:
        return _run_corpus(args, chunk_seconds)
    device = _resolve_device(args.device)
    model = _load_model(args.model, device)
    precision = _precision(args.precision, device)
    _set_up_engine(model, args)
    _choose_vocoder_sampler(args, model)
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


def _run_corpus(args: argparse.Namespace, chunk_seconds: float | str | None) -> int:
    """``--manifest``: the corpus job on Lightning's prediction loop; global rank 0 prints the summary."""
    from audiodiff.jobs.corpus import SUMMARY_NAME, CorpusInterrupted, vocode_corpus

    if args.devices < 1 or args.num_nodes < 1:
        raise CommandError("--devices and --num-nodes must be at least 1", EXIT_USAGE)
    device = _resolve_device(args.device)
    model = _load_model(args.model, "cpu")  # Lightning moves it to each rank's device
    _choose_vocoder_sampler(args, model)
    out_dir = Path(args.out)
    try:
        summary = vocode_corpus(model, args.manifest, out_dir, sampler=args.sampler, steps=args.steps, seed=args.seed,
                                batch_size=args.batch_size, max_batch_gb=args.max_batch_gb,
                                chunk_seconds=chunk_seconds, precision=_precision(args.precision, device),
                                accelerator=device, devices=args.devices, num_nodes=args.num_nodes,
                                prepare=lambda loaded: _set_up_engine(loaded, args), progress=not args.quiet,
                                on_error=lambda error: _report_input_error(Path(error.path), error))
    except CorpusInterrupted as interrupt:
        print(f"interrupted: {interrupt.written} file(s) finished in {out_dir} by this process; "
              "run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    if _is_global_rank_zero():
        for failure in summary.failures:  # again, together: the lines above may have scrolled away
            print(f"failed: {failure['error']}", file=sys.stderr)
        for rank in summary.missing_ranks:
            print(f"warning: rank {rank} left no record of its work", file=sys.stderr)
        audio = summary.audio_seconds
        amount = f"{audio / 3600:.2f} h" if audio >= 360 else f"{audio:.1f} s"
        print(f"{summary.written} written, {summary.skipped} skipped (already there), {summary.failed} failed; "
              f"{amount} of audio in {summary.seconds:.0f} s on {summary.world_size} process(es); "
              f"summary in {_shown(out_dir / SUMMARY_NAME)}")
    return EXIT_FAILED if summary.failed or summary.missing_ranks else EXIT_OK


def _choose_vocoder_sampler(args: argparse.Namespace, model) -> None:
    """Refuse a model that cannot vocode (a usage error), then check ``--sampler``/``--steps`` against it."""
    if not model.network.conditional:
        raise CommandError(f"{args.model}: a model without mel conditioning cannot vocode; use 'audiodiff generate'",
                           EXIT_USAGE)
    _choose_sampler(args, model)


def _is_global_rank_zero() -> bool:
    from pytorch_lightning.utilities import rank_zero_only

    return rank_zero_only.rank == 0


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
