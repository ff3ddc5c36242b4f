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
    from tqdm import tqdm

    from audiodiff.io.audio import save_audio
    from audiodiff.jobs.vocode import batches, drop_name_collisions, load_inputs, vocode_batch

    chunk_seconds = _chunk_seconds(args.chunk_seconds)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _resolve_device(args.device)
    model = _load_model(args.model, device)
    precision = _precision(args.precision, device)
    _set_up_engine(model, args)
    if not model.network.conditional:
        raise CommandError(f"{args.model}: a model without mel conditioning cannot vocode; use 'audiodiff generate'", EXIT_USAGE)
    n_steps = _choose_sampler(args, model)
    failures: list[str] = []

    def report(error: Exception) -> None:
        failures.append(str(error))
        _report_input_error(Path(error.path), error)

    items = drop_name_collisions(load_inputs(args.inputs, model, report), report)
    out_dir = Path(args.out)
    bytes_per_frame = model.conditioning_bytes_per_frame(precision)
    max_frames = max(1, int(args.max_batch_gb * 2**30 / bytes_per_frame))
    total = len(items)
    bar = tqdm(total=total * n_steps, unit="step", desc="vocoding", disable=args.quiet or not items)
    written = 0
    try:
        for group in batches(items, args.batch_size, max_frames):
            waves = vocode_batch(model, group, sampler=args.sampler, steps=args.steps, seed=args.seed,
                                 chunk_seconds=chunk_seconds, precision=precision,
                                 callback=lambda i, n, g=len(group): bar.update(g))
            for (_, item), wave in zip(group, waves):
                target = out_dir / f"{item.name}.wav"
                save_audio(target, wave, model.sample_rate)
                written += 1
                if not args.quiet:
                    tqdm.write(f"wrote {_shown(target)} ({wave.shape[-1] / model.sample_rate:.2f} s)")
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted: {written} file(s) finished in {out_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    bar.close()
    if failures:
        print(f"{len(failures)} input(s) failed, {written} written to {out_dir}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _chunk_seconds(value: float | None) -> float | str | None:
    """``--chunk-seconds`` as :meth:`AudioDiffusion.vocode` takes it: ``None`` -> "auto", 0 -> never."""
    if value is None:
        return "auto"
    if value < 0:
        raise CommandError(f"--chunk-seconds must be positive (or 0 to never chunk), got {value:g}", EXIT_USAGE)
    return value or None
