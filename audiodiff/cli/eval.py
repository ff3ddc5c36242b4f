"""``audiodiff eval``: score two folders of audio, or resynthesise held-out audio with a vocoder and score
it next to the Griffin-Lim floor.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audiodiff.cli.common import (ENGINE_NAMES, EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandError, _add_sampling_args,
                                  _choose_sampler, _load_model, _resolve_device, _set_up_engine)


def add_parser(subparsers, parents: list) -> None:
    p = subparsers.add_parser(
        "eval", parents=parents,
        help="objective quality metrics: two folders of audio, or a vocoder on held-out audio",
        description="Score generated audio against references (PESQ, STOI/ESTOI, MR-STFT, log-mel L1, "
                    "MCD, F0 RMSE, V/UV F1), pairing files by name; or resynthesise a held-out folder "
                    "with a vocoder and score it next to the Griffin-Lim floor.")
    p.add_argument("--ref", help="folder of reference audio")
    p.add_argument("--gen", help="folder of generated audio (paired with --ref by file name, any suffix)")
    p.add_argument("--model", "-m", help="a vocoder: resynthesise --data and score it")
    p.add_argument("--data", help="held-out audio folder for --model")
    p.add_argument("--out", help="where --model writes reference/, model/, griffin-lim/ "
                                 "(default eval-out/<model>-<sampler>-<N>steps-seed<S>; existing files are reused)")
    p.add_argument("--no-griffin-lim", action="store_true", help="skip the Griffin-Lim floor")
    p.add_argument("--json", help="also write all results as JSON")
    p.add_argument("--sample-rate", type=int, help="evaluation rate for --ref/--gen (default: the first reference's)")
    p.add_argument("--mel-preset", help="preset of the log-mel L1 (default: the model's, or hifigan)")
    p.add_argument("--metrics", nargs="+", choices=["pesq", "stoi", "mrstft", "mel", "mcd", "f0", "delay"],
                   help="metric groups to compute (default: all)")
    p.add_argument("--judges", nargs="+", choices=["distillmos", "dnsmos", "visqol"],
                   help="optional learned judges, when their packages are installed")
    p.add_argument("--align", action="store_true", help="compensate a measured delay before scoring")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--quiet", "-q", action="store_true")
    _add_sampling_args(p)
    p.add_argument("--engine", default="auto", choices=["auto", *ENGINE_NAMES],
                   help="how the network runs for --model (as in 'audiodiff vocode'): auto = folded on a CPU, "
                        "eager elsewhere; the network runs in fp32")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from audiodiff.eval import check_judges

    try:
        check_judges(args.judges or [])
    except ValueError as error:
        raise CommandError(str(error), EXIT_USAGE) from None
    if args.model is not None:
        if args.ref or args.gen:
            raise CommandError("give either --ref/--gen (score two folders) or --model/--data, not both", EXIT_USAGE)
        if args.data is None:
            raise CommandError("--model needs --data DIR (the held-out audio to resynthesise)", EXIT_USAGE)
        return _eval_model(args)
    if not (args.ref and args.gen):
        raise CommandError("give --ref REF_DIR --gen GEN_DIR, or --model M --data DIR", EXIT_USAGE)
    return _eval_folders(args)


def _score_folders(args: argparse.Namespace, ref_dir, gen_dir, sample_rate: int, mel_preset: str, title: str):
    """Pair, score and print one evaluation; returns the :class:`EvalResult`."""
    from audiodiff.eval import evaluate_pairs, pair_files

    pairing = pair_files(ref_dir, gen_dir)
    result = evaluate_pairs(pairing, sample_rate, mel_preset=mel_preset, judges=args.judges or (),
                            metrics=args.metrics, align=args.align, progress=not args.quiet,
                            on_error=lambda line: print(f"error: {line}", file=sys.stderr))
    print(f"\n{title} ({len(pairing.pairs)} pairs, {sample_rate} Hz, mel L1 in the {mel_preset} preset)")
    print(result.table())
    return result


def _eval_folders(args: argparse.Namespace) -> int:
    from audiodiff.io.audio import audio_info
    from audiodiff.eval import write_json
    from audiodiff.io.audio_files import audio_files_by_name

    refs = audio_files_by_name(args.ref)
    if not refs:
        raise CommandError(f"{args.ref}: no audio files", EXIT_USAGE)
    sample_rate = args.sample_rate or audio_info(next(iter(refs.values()))).sample_rate
    result = _score_folders(args, args.ref, args.gen, sample_rate, args.mel_preset or "hifigan",
                            f"{args.gen} against {args.ref}")
    if args.json:
        print(f"wrote {write_json(args.json, result.to_json())}")
    return EXIT_FAILED if result.errors else EXIT_OK


def _eval_model(args: argparse.Namespace) -> int:
    import torch

    from audiodiff.eval import resynthesise_folder, write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    model = _load_model(args.model, _resolve_device(args.device))
    _set_up_engine(model, args)
    if not model.network.conditional:
        raise CommandError(f"{args.model}: only a vocoder (mel-conditioned model) can resynthesise --data", EXIT_USAGE)
    n_steps = _choose_sampler(args, model)
    out = Path(args.out or f"eval-out/{Path(args.model).stem}-{args.sampler}-{n_steps}steps-seed{args.seed}")
    report = resynthesise_folder(model, args.data, out, sampler=args.sampler, steps=args.steps, seed=args.seed,
                                 include_griffin_lim=not args.no_griffin_lim, progress=not args.quiet,
                                 on_error=lambda line: print(f"error: {line}", file=sys.stderr))
    for note in report.notes:
        print(f"note: {note}")
    print(f"resynthesised {len(report.written)} file(s) into {out} ({len(report.skipped)} already there, "
          f"{len(report.errors)} failed)")
    if not report.written and not report.skipped:
        raise CommandError(f"{args.data}: no file could be resynthesised")
    preset = args.mel_preset or model.config.mel.preset
    results = {"model": _score_folders(args, report.reference_dir, report.model_dir, model.sample_rate, preset,
                                       f"{Path(args.model).name}, {args.sampler} {n_steps} steps")}
    if not args.no_griffin_lim:
        results["griffin-lim"] = _score_folders(args, report.reference_dir, report.griffin_lim_dir,
                                                model.sample_rate, preset, "Griffin-Lim (64 iterations), the floor")
        print("\n" + _floor_comparison(results["model"], results["griffin-lim"]))
    if args.json:
        data = {"model": args.model, "data": args.data, "sampler": args.sampler, "steps": n_steps, "seed": args.seed,
                "resynthesis_errors": report.errors, **{k: r.to_json() for k, r in results.items()}}
        print(f"wrote {write_json(args.json, data)}")
    failed = report.errors or any(r.errors for r in results.values())
    return EXIT_FAILED if failed else EXIT_OK


def _floor_comparison(model_result, floor_result) -> str:
    """Mean of each metric for the model and the Griffin-Lim floor, and which is better."""
    from audiodiff.eval import METRICS

    info = {m.key: m for m in METRICS}
    model_means, floor_means = model_result.means(), floor_result.means()
    lines = [f"{'metric':<16}{'model':>10}{'Griffin-Lim':>13}  better"]
    for key in model_result.keys:
        a, b = model_means[key].mean, floor_means.get(key)
        b = b.mean if b is not None else None
        if a is None or b is None or key not in info or info[key].higher_is_better is None:
            continue
        better = "model" if (a > b) == info[key].higher_is_better else "Griffin-Lim"
        lines.append(f"{info[key].header:<16}{a:>10.3f}{b:>13.3f}  {better if a != b else '-'}")
    return "\n".join(lines)
