"""``audiodiff generate``: sounds from an unconditional or class-conditional model, optionally a contact sheet."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audiodiff.cli.common import (EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CommandError, _add_engine_args,
                                  _add_sampling_args, _choose_sampler, _load_model, _precision, _resolve_device,
                                  _set_up_engine)

MIN_SECONDS = 0.05


def add_parser(subparsers, parents: list) -> None:
    p = subparsers.add_parser(
        "generate", parents=parents,
        help="generate sounds with an unconditional or class-conditional model")
    p.add_argument("--model", "-m", default="sfx-22k",
                   help="a .safetensors model, a .ckpt checkpoint, or a shipped model's name "
                        "(default: sfx-22k, the shipped sound-effects generator)")
    p.add_argument("--class", dest="classes", action="append", metavar="NAME",
                   help="class to generate (repeatable); default: the null class (unconditional)")
    p.add_argument("--all-classes", action="store_true", help="generate --n clips of every class")
    p.add_argument("--n", type=int, default=4, help="clips per class (default 4)")
    p.add_argument("--seconds", type=float, default=1.0, help="length of each clip (default 1)")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance weight w: 1 = plain class sampling (default), "
                        "0 = the null class, >1 = more typical of the class (2-4 is common)")
    p.add_argument("--out", "-o", default="generated", help="output folder (default: generated/)")
    p.add_argument("--sheet", action="store_true", help="also write a PNG contact sheet of the spectrograms")
    p.add_argument("--batch-size", type=int, default=16, help="clips sampled together (default 16)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--quiet", "-q", action="store_true")
    _add_sampling_args(p)
    _add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from audiodiff.io.audio import save_audio
    from audiodiff.jobs.generate import generate_clips, plan_clips, resolve_labels, save_contact_sheet

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.seconds < MIN_SECONDS:
        raise CommandError(f"--seconds must be at least {MIN_SECONDS}, got {args.seconds:g}", EXIT_USAGE)
    device = _resolve_device(args.device)
    model = _load_model(args.model, device)
    _set_up_engine(model, args)
    if model.network.conditional:
        raise CommandError(f"{args.model}: a vocoder (mel-conditioned) cannot generate; use 'audiodiff vocode'",
                           EXIT_USAGE)
    if not model.network.class_conditional and args.guidance != 1.0:
        raise CommandError(f"{args.model}: an unconditional model takes no --guidance", EXIT_USAGE)
    try:
        labels = resolve_labels(model, args.classes or [], args.all_classes)
    except ValueError as error:
        raise CommandError(f"{args.model}: {error}", EXIT_USAGE) from None
    n_steps = _choose_sampler(args, model)
    clips = plan_clips(labels, args.n, args.seed)
    num_samples = round(args.seconds * model.sample_rate)
    out_dir = Path(args.out)
    bar = tqdm(total=len(clips) * n_steps, unit="step", desc="generating", disable=args.quiet)
    done: list = []
    try:
        for clip, audio in generate_clips(model, clips, num_samples, guidance=args.guidance, sampler=args.sampler,
                                          steps=args.steps, batch_size=args.batch_size,
                                          precision=_precision(args.precision, device),
                                          callback=_batch_progress(bar, clips, args.batch_size)):
            target = save_audio(out_dir / clip.file_name, audio, model.sample_rate)
            done.append((clip, audio))
            if not args.quiet:
                tqdm.write(f"wrote {target}")
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted: {len(done)} file(s) finished in {out_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    bar.close()
    if args.sheet:
        tag = labels[0] if len(labels) == 1 and labels[0] else ("all" if labels[0] else "sample")
        sheet = save_contact_sheet(out_dir / f"sheet-{tag}-seed{args.seed}.png", done, model.sample_rate)
        print(f"wrote {sheet}")
    return EXIT_OK


def _batch_progress(bar, clips, batch_size: int):
    """A sampler callback that advances ``bar`` by the size of the batch being sampled."""
    from audiodiff.jobs.generate import batch_clips

    sizes = iter([len(b) for b in batch_clips(clips, max(1, batch_size))])
    state = {"size": 0}

    def step(i: int, n: int) -> None:
        if i == 1:
            state["size"] = next(sizes, 0)
        bar.update(state["size"])

    return step
