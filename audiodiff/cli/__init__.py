"""The ``audiodiff`` command line.

Subcommands: ``train`` (LightningCLI), ``export``, ``info``, ``vocode``, ``generate``, ``eval``,
``search-schedule``, ``mel``, ``import-diffwave`` and ``demo``. Errors are one line on stderr
(``--verbose`` for a traceback); usage errors exit with 2, a run in which some inputs failed exits
with 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C

log = logging.getLogger("audiodiff")


class CommandError(Exception):
    """An error that ends a command with one line (and exit code ``code``)."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda was asked for, but no CUDA device is available", EXIT_USAGE)
    return name


def _load_model(path: str, device: str = "cpu"):
    from audiodiff.pipeline.loading import load_any

    return load_any(path, device, engine="eager")  # --engine is applied by _set_up_engine


def _choose_sampler(args: argparse.Namespace, model) -> int:
    """Set ``args.sampler`` to what the command samples with -- ``--schedule NAME`` (a schedule stored
    in the model), else ``--sampler`` (default ``fast``) -- and return its number of steps.

    A bad name or step count is a one-line usage error; an unknown schedule lists the stored ones.
    """
    if args.schedule is not None:
        if args.sampler is not None:
            raise CommandError("give --sampler or --schedule, not both (a stored schedule names its own sampler)",
                               EXIT_USAGE)
        if args.schedule not in model.config.schedules:
            stored = ", ".join(model.config.schedules)
            hint = (f"it stores: {stored}" if stored
                    else "it stores none (add one with 'audiodiff search-schedule')")
            raise CommandError(f"{args.model}: no schedule named {args.schedule!r}; {hint}", EXIT_USAGE)
    args.sampler = args.schedule or args.sampler or "fast"
    try:
        return len(model.sigmas(args.sampler, args.steps)) - 1
    except ValueError as error:
        raise CommandError(f"{args.model}: {error}", EXIT_USAGE) from None


# ------------------------------------------------------------------ vocode
def cmd_vocode(args: argparse.Namespace) -> int:
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


# ---------------------------------------------------------------- generate
MIN_SECONDS = 0.05


def cmd_generate(args: argparse.Namespace) -> int:
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


# -------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from audiodiff.eval.evaluate import check_judges

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
    from audiodiff.eval.evaluate import evaluate_pairs, pair_files

    pairing = pair_files(ref_dir, gen_dir)
    result = evaluate_pairs(pairing, sample_rate, mel_preset=mel_preset, judges=args.judges or (),
                            metrics=args.metrics, align=args.align, progress=not args.quiet,
                            on_error=lambda line: print(f"error: {line}", file=sys.stderr))
    print(f"\n{title} ({len(pairing.pairs)} pairs, {sample_rate} Hz, mel L1 in the {mel_preset} preset)")
    print(result.table())
    return result


def _eval_folders(args: argparse.Namespace) -> int:
    from audiodiff.io.audio import audio_info
    from audiodiff.eval.evaluate import write_json
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

    from audiodiff.eval.evaluate import resynthesise_folder, write_json

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
    from audiodiff.eval.evaluate import METRICS

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


# --------------------------------------------------------------------- mel
def cmd_mel(args: argparse.Namespace) -> int:
    from audiodiff.io.audio import AudioError
    from audiodiff.mel import MelSpectrogram, mel_preset

    overrides = {k: v for k, v in {
        "sample_rate": args.sample_rate, "n_fft": args.n_fft, "hop_length": args.hop_length,
        "win_length": args.win_length, "n_mels": args.n_mels, "f_min": args.f_min, "f_max": args.f_max,
    }.items() if v is not None}
    try:
        config = mel_preset(args.preset, **overrides)
    except ValueError as error:
        raise CommandError(str(error), EXIT_USAGE) from None
    if args.output and len(args.inputs) > 1:
        raise CommandError("-o/--output takes one input; use --out DIR for several", EXIT_USAGE)
    frontend = MelSpectrogram(config)
    failures = 0
    for raw in args.inputs:
        path = Path(raw)
        target = Path(args.output) if args.output else Path(args.out) / f"{path.stem}.npy"
        try:
            mel = _mel_of_file(path, frontend)
        except (AudioError, ValueError) as error:
            _report_input_error(path, error)
            failures += 1
            continue
        _save_npy_atomic(target, mel)
        if not args.quiet:
            print(f"wrote {_shown(target)} {mel.shape} ({config.preset} preset)")
    if failures:
        print(f"{failures} input(s) failed, {len(args.inputs) - failures} written", file=sys.stderr)
    return EXIT_FAILED if failures else EXIT_OK


def _mel_of_file(path: Path, frontend):
    """The mel ``(n_mels, frames)`` float32 numpy array of the audio file ``path``.

    The audio is read at the front end's rate (a conversion is mentioned in one log line);
    an :class:`~audiodiff.io.audio.AudioError` for a bad or too short file.
    """
    import numpy as np

    from audiodiff.io.audio import AudioError, load_audio

    config = frontend.config
    audio, _ = load_audio(path, config.sample_rate, on_conversion=lambda note: log.info("%s: %s", _shown(path), note))
    if audio.shape[-1] < config.n_fft:
        raise AudioError(path, f"too short ({audio.shape[-1]} samples at {config.sample_rate} Hz) for one "
                               f"{config.n_fft}-sample STFT window")
    return frontend(audio)[0].numpy().astype(np.float32)


def _report_input_error(path: Path, error: Exception) -> None:
    """Print one ``error: <path>: <reason>`` line (the traceback too, as a debug log, with --verbose)."""
    from audiodiff.io.audio import AudioError, one_line
    from audiodiff.io.mel_files import InputError

    line = str(error) if isinstance(error, (AudioError, InputError)) else f"{_shown(path)}: {one_line(error)}"
    print(f"error: {line}", file=sys.stderr)
    log.debug("traceback of the error above", exc_info=error)


def _shown(path) -> str:
    """``path`` as messages show it (see :func:`audiodiff.io.audio.display_path`)."""
    from audiodiff.io.audio import display_path

    return display_path(path)


def _save_npy_atomic(path: Path, array) -> None:
    import numpy as np

    from audiodiff.io.files import write_atomically

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array)

    write_atomically(path, write)


# ----------------------------------------------------------- model files
def cmd_info(args: argparse.Namespace) -> int:
    from audiodiff.network.diffwave import count_parameters

    model = _load_model(args.model)
    config = model.config.to_dict()
    if args.json:
        print(json.dumps(config, indent=2))
        return EXIT_OK
    names = model.config.class_names
    if model.network.conditional:
        kind = "vocoder"
    else:
        kind = f"class-conditional ({len(names)} classes)" if names else "unconditional"
    mel = model.config.mel
    print(f"{args.model}: {kind}, {count_parameters(model.network) / 1e6:.2f} M parameters, "
          f"{model.sample_rate} Hz, trained {model.config.training_step} steps, "
          f"receptive field {model.config.denoiser.receptive_field / model.sample_rate:.2f} s")
    if names:
        print(f"classes: {', '.join(names)}")
    if mel is not None:
        print(f"mel: preset {mel.preset}, {mel.n_mels} bins, hop {mel.hop_length}, n_fft {mel.n_fft}, "
              f"{mel.f_min:g}-{mel.nyquist_f_max:g} Hz")
    for name, stored in model.config.schedules.items():
        print(f"schedule {name}: {_describe_schedule(stored)} (use --schedule {name})")
    print(json.dumps(config, indent=2))
    return EXIT_OK


def _describe_schedule(stored) -> str:
    """``ddim, 4 steps, log-mel L1 0.4210 on held_out`` for a stored :class:`SamplingSchedule`."""
    from audiodiff.jobs.search_schedule import SEARCH_METRICS

    text = f"{stored.sampler}, {stored.steps} steps"
    if stored.score is not None:
        text += f", {SEARCH_METRICS.get(stored.metric, stored.metric or 'score')} {stored.score:.4f}"
    return text + (f" on {stored.data}" if stored.data else "")


# --------------------------------------------------------- search-schedule
def cmd_search_schedule(args: argparse.Namespace) -> int:
    import dataclasses

    from audiodiff.pipeline.config import check_schedule_name
    from audiodiff.io.model_file import stored_float_dtype
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


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from audiodiff.pipeline.loading import load_checkpoint

    model = load_checkpoint(args.checkpoint)
    target = model.save(args.output, dtype=torch.float16 if args.half else None)
    print(f"wrote {target} (EMA weights{', float16' if args.half else ''}, step {model.config.training_step}, "
          f"{target.stat().st_size / 1e6:.1f} MB)")
    return EXIT_OK


def cmd_import_diffwave(args: argparse.Namespace) -> int:
    from audiodiff.pipeline.reference import import_diffwave

    model = import_diffwave(args.checkpoint)
    target = model.save(args.output)
    print(f"wrote {target} (reference DiffWave weights, 'diffwave' mel preset)")
    return EXIT_OK


# -------------------------------------------------------------- train/demo
def cmd_train(argv: Sequence[str]) -> int:
    from audiodiff.training.run import run_training

    run_training(list(argv))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from audiodiff.jobs.demo import run_demo, run_shipped_demo

    if args.train_minutes is not None:
        if args.train_minutes <= 0:
            raise CommandError(f"--train-minutes must be positive, got {args.train_minutes:g}", EXIT_USAGE)
        run_demo(audio_path=args.audio, out_dir=Path(args.out), minutes=args.train_minutes, seed=args.seed)
        return EXIT_OK
    inputs = [Path(args.audio)] if args.audio else None
    run_shipped_demo(Path(args.out), model_name=args.model, inputs=inputs, seconds=args.seconds, seed=args.seed)
    return EXIT_OK


# ------------------------------------------------------------------ parser
def _add_sampling_args(parser: argparse.ArgumentParser) -> None:
    samplers = ["fast", "ddpm", "ddim", "ddim-karras", "ddim-log-snr", "dpmpp-2m", "dpmpp-2m-karras",
                "dpmpp-2m-log-snr"]  # audiodiff.pipeline.audio_diffusion.SAMPLERS, spelled out so --help needs no torch
    parser.add_argument("--sampler", default=None, choices=samplers,
                        help="fast: the model's 6-step schedule (default); ddpm: ancestral over training steps; "
                             "ddim, dpmpp-2m: deterministic DDIM / DPM-Solver++(2M) over evenly spaced training "
                             "steps, or with -karras / -log-snr over Karras / log-SNR-uniform noise levels")
    parser.add_argument("--schedule", default=None, metavar="NAME",
                        help="a noise schedule stored in the model file (e.g. searched-4 from "
                             "'audiodiff search-schedule'; 'audiodiff info' lists them): its sampler and levels, "
                             "instead of --sampler")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps for ddpm (default: all training steps) and for ddim/dpmpp-2m (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="item k uses seed+k (default 0)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def _add_engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="the network's arithmetic: auto = bf16 on a GPU (faster, audibly the same; see "
                             "benchmarks/RESULTS.md), fp32 on a CPU; the sampler itself is always fp32")
    parser.add_argument("--engine", default="auto", choices=["auto", *ENGINES],
                        help="how the network runs: auto = folded on a CPU, eager elsewhere; folded = time-major "
                             "matrix products with folded weights (the fastest on a CPU, the same audio); compile = "
                             "torch.compile (tens of seconds per new input length, for many equal-length batches); "
                             "fused = one Triton kernel per residual block (CUDA only, the fastest there); see "
                             "benchmarks/RESULTS.md")


#: ``--engine`` choices besides ``auto``, and what each does to a model.
ENGINES = {
    "eager": lambda model: model,
    "folded": lambda model: model.fold_denoiser(),
    "compile": lambda model: model.compile_denoiser(),
    "fused": lambda model: model.fuse_denoiser(),
}


def _engine(name: str, device: str) -> str:
    """``--engine`` for ``device``: ``auto`` is ``folded`` on a CPU and ``eager`` elsewhere."""
    if name != "auto":
        return name
    return "folded" if device == "cpu" else "eager"


def _set_up_engine(model, args: argparse.Namespace) -> None:
    """Apply ``--engine`` to ``model``; an engine the device cannot run (``fused`` on a CPU) is a usage error."""
    engine = _engine(args.engine, model.device.type)
    try:
        ENGINES[engine](model)
    except RuntimeError as error:
        raise CommandError(f"--engine {engine}: {error}", EXIT_USAGE) from None


def _precision(name: str, device: str) -> str:
    """``--precision`` for ``device``: ``auto`` is bf16 on CUDA and fp32 elsewhere."""
    if name != "auto":
        return name
    return "bf16" if device.startswith("cuda") else "fp32"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audiodiff", description="A DiffWave-style diffusion vocoder.")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks and debug logs")
    common = argparse.ArgumentParser(add_help=False)  # --verbose also after the subcommand
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    sub.add_parser("train", help="train a model (LightningCLI; see 'audiodiff train --help')", add_help=False)

    p = add("vocode", help="mel files (.npy/.npz/.pt) or audio files -> wavs")
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
    p.set_defaults(func=cmd_vocode)

    p = add("generate", help="generate sounds with an unconditional or class-conditional model")
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
    p.set_defaults(func=cmd_generate)

    p = add("eval", help="objective quality metrics: two folders of audio, or a vocoder on held-out audio",
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
    p.add_argument("--engine", default="auto", choices=["auto", *ENGINES],
                   help="how the network runs for --model (as in 'audiodiff vocode'): auto = folded on a CPU, "
                        "eager elsewhere; the network runs in fp32")
    p.set_defaults(func=cmd_eval)

    p = add("search-schedule", help="search an N-step noise schedule on held-out audio and store it in the model",
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
    p.set_defaults(func=cmd_search_schedule)

    p = add("mel", help="audio files -> mel spectrograms (n_mels, frames) float32 .npy")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--preset", default="hifigan", help="mel convention: hifigan or diffwave")
    p.add_argument("-o", "--output", help="output .npy (one input)")
    p.add_argument("--out", default=".", help="output folder for several inputs (default: .)")
    for name, kind in [("sample-rate", int), ("n-fft", int), ("hop-length", int), ("win-length", int),
                       ("n-mels", int), ("f-min", float), ("f-max", float)]:
        p.add_argument(f"--{name}", type=kind, default=None, help=f"override the preset's {name.replace('-', '_')}")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_mel)

    p = add("info", help="print a model file's configuration")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print only the config as JSON")
    p.set_defaults(func=cmd_info)

    p = add("export", help="training checkpoint (.ckpt) -> .safetensors model (EMA weights)")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--half", action="store_true",
                   help="store the weights as float16 (half the size; loading converts them back to float32)")
    p.set_defaults(func=cmd_export)

    p = add("import-diffwave", help="reference DiffWave checkpoint -> .safetensors model")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=cmd_import_diffwave)

    p = add("demo", help="vocode the shipped held-out speech with the shipped vocoder (or: train a tiny one)",
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
    p.set_defaults(func=cmd_demo)
    return parser


def _one_line_errors() -> tuple[type[BaseException], ...]:
    from audiodiff.io.audio import AudioError
    from audiodiff.io.model_file import ModelFileError
    from audiodiff.io.mel_files import InputError

    return (CommandError, ModelFileError, AudioError, InputError, FileNotFoundError, ValueError)


def _printable_file_names() -> None:
    """Let stdout and stderr print any file name: one that is not UTF-8 (which Python holds as
    lone surrogates) is written with backslash escapes instead of raising UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and getattr(stream, "errors", None) == "strict":
            stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _printable_file_names()
    if argv and argv[0] == "train":
        return cmd_train(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s: %(message)s")
    handled = _one_line_errors()
    try:
        return args.func(args)
    except handled as error:
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return getattr(error, "code", EXIT_FAILED)
    except KeyboardInterrupt:  # outside a job's own handler (loading, export): nothing half-written
        if args.verbose:
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
