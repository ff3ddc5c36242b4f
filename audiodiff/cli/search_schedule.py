"""``audiodiff search-schedule``: search an N-step noise schedule on held-out audio and store it in a
copy of the model (or the model itself).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audiodiff.cli.common import (EXIT_OK, EXIT_USAGE, CommandError, _add_engine_args, _load_model, _precision,
                                  _resolve_device, _set_up_engine, _shown)


def add_parser(subparsers, parents: list) -> None:
    p = subparsers.add_parser(
        "search-schedule", parents=parents,
        help="search an N-step noise schedule on held-out audio and store it in the model",
        description="Search N noise levels that minimise a validation metric (log-mel L1 or MR-STFT) of "
                    "vocoding short crops of held-out clips with fixed seeds: start from the best of the "
                    "log-SNR, Karras and evenly spaced levels (and the fast levels, at their length), then a greedy coordinate search over a "
                    "log-SNR grid. Writes a copy of the model with the schedule stored under --name "
                    "(then: audiodiff vocode --schedule NAME). Costs about (4 + 2 * grid * rounds) * steps "
                    "network calls, each over the batch of all clips.")
    p.add_argument("model", help="a vocoder (.safetensors, or a .ckpt checkpoint)")
    p.add_argument("--data", required=True, help="held-out audio folder (not the training data)")
    p.add_argument("--steps", type=int, required=True, help="number of noise levels (network calls per sample)")
    p.add_argument("--name", help="name to store the schedule under (default searched-N)")
    p.add_argument("--out", "-o", help="model file to write (default <model>-searched.safetensors next to MODEL; "
                                       "pass MODEL itself to update it in place, atomically)")
    p.add_argument("--sampler", default="ancestral", choices=["ancestral", "ddim", "dpmpp-2m"],
                   help="solver the levels are searched for (default ancestral, the fast sampler's; ddim and "
                        "dpmpp-2m draw no fresh noise per step)")
    p.add_argument("--metric", default="mel", choices=["mel", "mrstft"],
                   help="minimised metric: log-mel L1 in the model's mel preset (default) or MR-STFT")
    p.add_argument("--clips", type=int, default=4, help="held-out files used, in name order (default 4)")
    p.add_argument("--seconds", type=float, default=2.0, help="centre crop of each file, in seconds (default 2)")
    p.add_argument("--grid", type=int, default=16, help="candidate levels, uniform in log-SNR (default 16)")
    p.add_argument("--rounds", type=int, default=2, help="passes over all levels (default 2; 0: starts only)")
    p.add_argument("--budget", type=int, default=None, help="at most this many candidate schedules scored")
    p.add_argument("--seed", type=int, default=0, help="clip k is vocoded with seed+k (default 0)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    _add_engine_args(p)
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from audiodiff.io.model_file import stored_float_dtype
    from audiodiff.pipeline.config import check_schedule_name
    from audiodiff.jobs.search_schedule import search_schedule

    _check_search_options(args)
    name = args.name or f"searched-{args.steps}"
    try:
        check_schedule_name(name)
    except ValueError as error:
        raise CommandError(f"--name: {error}", EXIT_USAGE) from None
    device = _resolve_device(args.device)
    model = _load_model(args.model, device)
    if not model.network.conditional:
        raise CommandError(f"{args.model}: only a vocoder (mel-conditioned model) can search a schedule", EXIT_USAGE)
    _set_up_engine(model, args)
    out = Path(args.out) if args.out else Path(args.model).with_name(f"{Path(args.model).stem}-searched.safetensors")
    clips = _search_clips(args, model)
    result = search_schedule(model, clips, args.steps, sampler=args.sampler, metric=args.metric, seed=args.seed,
                             grid=args.grid, rounds=args.rounds, budget=args.budget, progress=not args.quiet,
                             precision=_precision(args.precision, device))
    data_name = Path(args.data).resolve().name
    stored = dataclasses.replace(result.schedule, data=data_name or None)
    replaced = name in model.config.schedules
    target = model.with_schedule(name, stored).save(out, dtype=stored_float_dtype(args.model))
    print(f"\n{len(clips)} clip(s) of {data_name}, up to {args.seconds:g} s each, seed {args.seed}: "
          f"{len(result.history)} schedules scored, {result.network_calls} network calls, {result.seconds:.1f} s")
    print(result.table(name))
    print(f"{name} levels: {', '.join(f'{s:.5g}' for s in stored.sigmas)}")
    print(f"wrote {_shown(target)} ({'replaced' if replaced else 'added'} schedule {name}; "
          f"use: audiodiff vocode ... --model {_shown(target)} --schedule {name})")
    return EXIT_OK


def _check_search_options(args: argparse.Namespace) -> None:
    """One-line usage errors for out-of-range numbers."""
    checks = [(args.steps >= 1, f"--steps must be at least 1, got {args.steps}"),
              (args.clips >= 1, f"--clips must be at least 1, got {args.clips}"),
              (args.seconds > 0, f"--seconds must be positive, got {args.seconds:g}"),
              (args.rounds >= 0, f"--rounds must not be negative, got {args.rounds}"),
              (args.grid >= 2, f"--grid must be at least 2, got {args.grid}"),
              (args.budget is None or args.budget >= 0, f"--budget must not be negative, got {args.budget}")]
    for ok, message in checks:
        if not ok:
            raise CommandError(message, EXIT_USAGE)


def _search_clips(args: argparse.Namespace, model) -> list:
    """The held-out crops of ``--data``; a missing folder or one without usable audio is one line."""
    from audiodiff.jobs.search_schedule import read_clips

    try:
        clips = read_clips(args.data, model, count=args.clips, seconds=args.seconds,
                           on_skip=lambda line: print(f"skipped: {line}", file=sys.stderr))
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(f"--data {error}", EXIT_USAGE) from None
    if not clips:
        raise CommandError(f"--data {args.data}: no usable audio file (all were unreadable or too short)", EXIT_USAGE)
    return clips
