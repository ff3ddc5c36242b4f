"""``audiodiff demo``: the README's main job.

By default it vocodes the held-out speech that ships with the package (:mod:`audiodiff.examples`)
with the shipped ``speech-22k`` vocoder -- once from the audio's mel, and once from a mel file in a
TTS's ``(frames, n_mels)`` layout, through the same reader as ``audiodiff vocode`` -- and inverts
the same mels with Griffin-Lim, the floor a vocoder must beat. Per clip it prints both against the
original (PESQ, V/UV F1, log-mel L1, MR-STFT) and whether the vocoder beats the floor, and writes
the wavs of both and an input / vocoded / Griffin-Lim mel comparison. ``--train-minutes M`` instead trains the
``tiny-cpu`` recipe on one clip for ``M`` minutes and vocodes that clip with it (the pipeline from
data to model on a CPU).
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # audiodiff/jobs/demo.py -> the repository
DEFAULT_CLIP = REPO_ROOT / "tests" / "data" / "speech-cs-22k.ogg"
TINY_CONFIG = REPO_ROOT / "configs" / "tiny-cpu.yaml"


def _max_time(minutes: float) -> str:
    seconds = max(1, int(round(minutes * 60)))
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train_tiny(clip: Path, out_dir: Path, minutes: float, seed: int):
    """Fit ``tiny-cpu`` on ``clip`` for ``minutes``; returns the trained (EMA) :class:`AudioDiffusion`."""
    from audiodiff.training.run import run_training

    if not TINY_CONFIG.is_file():
        raise FileNotFoundError(f"{TINY_CONFIG}: the demo runs from a source checkout (configs/ not found)")
    filelist = out_dir / "demo-filelist.txt"
    filelist.parent.mkdir(parents=True, exist_ok=True)
    filelist.write_text(f"{clip.resolve()}\n", encoding="utf-8")
    cli = run_training([
        "--config", str(TINY_CONFIG),
        "--seed_everything", str(seed),
        "--data.filelist", str(filelist),
        "--data.val_files", "1",
        "--trainer.max_steps", "-1",
        "--trainer.max_time", _max_time(minutes),
        "--trainer.enable_progress_bar", "true",
        "--trainer.logger.init_args.save_dir", str(out_dir / "runs"),
    ])
    model = cli.model.model.with_training_step(cli.trainer.global_step)
    return model.eval()


def run_shipped_demo(out_dir: Path, model_name: str | None = None, inputs: list[Path] | None = None,
                     seconds: float | None = None, seed: int = 0) -> dict[str, list[Path]]:
    """Vocode ``inputs`` (default: the shipped examples) with ``model_name`` (default: the shipped
    vocoder) and invert the same mels with Griffin-Lim, the no-vocoder floor; prints per clip a small
    table of both against the original (PESQ when the ``pesq`` package is installed, V/UV F1, log-mel
    L1, MR-STFT) with a row saying where the vocoder beats the floor, a summary over the clips, and
    the paths written. ``seconds`` keeps only each clip's first seconds. Returns the paths by kind."""
    import numpy as np
    import torch

    from audiodiff.examples import example_files
    from audiodiff.pipeline.loading import load_model
    from audiodiff.io.mel_files import read_mel_file

    model = load_model(model_name).fold_denoiser()  # the CLI's engine on a CPU
    inputs = list(inputs) if inputs else example_files()
    name = model_name or "speech-22k"
    print(f"demo: {model_name or 'the shipped speech-22k'} vocoder ({model.config.training_step} training steps), "
          f"fast 6-step sampler, folded engine, {len(inputs)} held-out clip(s), each next to Griffin-Lim "
          f"({GRIFFIN_LIM_ITERS} iterations) on the same mel")
    metrics = _demo_metrics()
    written: dict[str, list[Path]] = {"wav": [], "png": [], "mel": [], "floor": []}
    wins: list[dict[str, bool | None]] = []
    for index, clip in enumerate(inputs):
        audio, mel = _clip_and_mel(model, clip, seconds)
        vocoded = model.vocode(mel, seed=seed)[0]
        floor = _griffin_lim(model, mel, seed)
        wins.append(_print_scores(clip, model, name, audio, vocoded, floor, metrics))
        written["wav"].append(_save_audio(out_dir / f"{clip.stem}-vocoded.wav", model, vocoded))
        written["floor"].append(_save_audio(out_dir / f"{clip.stem}-griffin-lim.wav", model, floor))
        written["png"].append(_save_comparison(out_dir / f"{clip.stem}-comparison.png", model, clip, mel, vocoded,
                                               floor))
        if index == 0:  # a TTS writes (frames, n_mels): save one that way and vocode it from the file
            mel_path = out_dir / f"{clip.stem}-mel-frames-by-bins.npy"
            np.save(mel_path, mel[0].T.numpy().astype(np.float32))
            from_file = model.vocode(read_mel_file(mel_path, model.config.denoiser.n_mels), seed=seed)[0]
            same = "the same audio as" if torch.equal(from_file, vocoded) else "DIFFERENT audio from"
            print(f"demo: {mel_path.name}: the mel in a TTS's (frames, {mel.shape[1]}) layout, read back and "
                  f"vocoded: {same} the clip's mel")
            written["mel"].append(mel_path)
            written["wav"].append(_save_audio(out_dir / f"{mel_path.stem}-vocoded.wav", model, from_file))
    print(_summary(wins, metrics))
    for kind in ("wav", "floor", "png", "mel"):
        for path in written[kind]:
            print(f"wrote {path}")
    return written


#: Griffin-Lim iterations of the demo's floor (as ``audiodiff eval``).
GRIFFIN_LIM_ITERS = 64
#: The demo's scores: (metric key, column header, higher is better).
DEMO_METRICS = (("pesq_wb", "PESQ", True), ("vuv_f1", "V/UV F1", True), ("mel_l1", "log-mel L1", False),
                ("mrstft", "MR-STFT", False))
PESQ_HINT = ("demo: PESQ needs the optional 'pesq' package (pip install 'audiodiff[eval]', or pip install pesq; "
             "it compiles a small C extension); the other scores follow without it")


def _demo_metrics() -> tuple[tuple[str, str, bool], ...]:
    """:data:`DEMO_METRICS`, without PESQ (and one line saying how to get it) when ``pesq`` is missing."""
    import importlib.util

    if importlib.util.find_spec("pesq") is not None:
        return DEMO_METRICS
    print(PESQ_HINT)
    return DEMO_METRICS[1:]


def _griffin_lim(model, mel, seed: int):
    """Griffin-Lim's audio ``(T,)`` from ``mel`` ``(1, n_mels, frames)``: the floor a vocoder must beat."""
    from audiodiff.eval import griffin_lim

    return griffin_lim(mel[0], model.config.mel, GRIFFIN_LIM_ITERS, seed=seed)


def _print_scores(clip: Path, model, name: str, audio, vocoded, floor, metrics) -> dict[str, bool | None]:
    """Print the vocoder's and Griffin-Lim's scores against ``audio`` (T,) as a small table; returns,
    per metric, whether the vocoder beats the floor (``None`` where a score is missing)."""
    from audiodiff.eval import METRIC_GROUPS, score_pair

    groups = sorted({group for group, keys in METRIC_GROUPS.items() for key, _, _ in metrics if key in keys})
    reference = as_saved(audio, model.sample_rate)
    scores = [score_pair(reference, as_saved(out, model.sample_rate), model.sample_rate,
                         mel_preset=model.config.mel.preset, metrics=groups).values() for out in (vocoded, floor)]
    label = max(len(f"{name} (fast 6 steps)"), len("beats the floor"))
    rows = [[f"{name} (fast 6 steps)"], [f"Griffin-Lim ({GRIFFIN_LIM_ITERS} it.)"], ["beats the floor"]]
    wins: dict[str, bool | None] = {}
    for key, header, higher in metrics:
        ours, theirs = scores[0].get(key), scores[1].get(key)
        wins[key] = None if ours is None or theirs is None else (ours > theirs if higher else ours < theirs)
        rows[0].append("-" if ours is None else f"{ours:.3f}")
        rows[1].append("-" if theirs is None else f"{theirs:.3f}")
        rows[2].append("-" if wins[key] is None else "yes" if wins[key] else "no")
    widths = [max(len(header), 5) for _, header, _ in metrics]
    higher = ", ".join(header for _, header, up in metrics if up)
    lower = ", ".join(header for _, header, up in metrics if not up)
    print(f"demo: {clip.name}: {audio.shape[-1] / model.sample_rate:.2f} s, scored against the original "
          f"({higher}: higher is better; {lower}: lower is better)")
    print("  " + " " * label + "".join(f"  {header:>{w}}" for (_, header, _), w in zip(metrics, widths)))
    for row in rows:
        print(f"  {row[0]:<{label}}" + "".join(f"  {cell:>{w}}" for cell, w in zip(row[1:], widths)))
    return wins


def as_saved(audio, sample_rate: int):
    """``audio`` (T,) as a 16-bit wav holds it (float64 numpy): the demo scores what it writes, and what
    ``audiodiff eval`` scores (its reference, model and Griffin-Lim folders are 16-bit wavs). Unquantised,
    Griffin-Lim's near-silent stretches inflate the log-magnitude distances (MR-STFT) far above eval's."""
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, audio.detach().cpu().numpy() if hasattr(audio, "detach") else audio, sample_rate,
             subtype="PCM_16", format="WAV")
    buffer.seek(0)
    return sf.read(buffer, dtype="float64")[0]


def _summary(wins: list[dict[str, bool | None]], metrics) -> str:
    """One line: on how many clips the vocoder beats Griffin-Lim, per metric."""
    parts = []
    for key, header, _ in metrics:
        known = [w[key] for w in wins if w.get(key) is not None]
        parts.append(f"{header} {sum(known)}/{len(known)}")
    beaten = all(w.get(key) for w in wins for key, _, _ in metrics if w.get(key) is not None)
    verdict = ("it beats the floor on every score" if beaten else
               "where it does not, Griffin-Lim (no neural network) is the better choice for now; see the model card")
    return f"demo: clips on which the vocoder beats Griffin-Lim: {', '.join(parts)}; {verdict}"


def _clip_and_mel(model, clip: Path, seconds: float | None):
    """``(audio (T,), mel (1, n_mels, T // hop))`` of ``clip`` at the model's rate, cut to whole hops."""
    from audiodiff.io.audio import load_audio

    audio, _ = load_audio(clip, model.sample_rate, duration_seconds=seconds)
    audio = audio[: audio.shape[-1] // model.hop_length * model.hop_length]
    return audio, model.mel(audio)


def _save_audio(path: Path, model, audio) -> Path:
    from audiodiff.io.audio import save_audio

    return save_audio(path, audio, model.sample_rate)


def _save_comparison(path: Path, model, clip: Path, mel, vocoded, floor) -> Path:
    """The mels of the input, the vocoded audio and Griffin-Lim's, one panel each."""
    from audiodiff.io.figures import save_mel_comparison

    return save_mel_comparison(path, [mel[0].numpy(), model.mel(vocoded)[0].numpy(), model.mel(floor)[0].numpy()],
                               [f"input: {clip.name} (held out)",
                                f"vocoded: speech vocoder, {model.config.training_step} training steps, fast 6 steps",
                                f"Griffin-Lim ({GRIFFIN_LIM_ITERS} iterations) on the same mel: the floor"],
                               model.sample_rate, model.hop_length)


def run_demo(audio_path: str | None, out_dir: Path, minutes: float = 2.0, seed: int = 0) -> dict[str, Path]:
    """The training demo: train ``tiny-cpu`` on one clip, export, vocode and plot; prints and
    returns the paths written."""
    from audiodiff.io.audio import load_audio, save_audio
    from audiodiff.io.figures import save_mel_comparison
    from audiodiff.dsp.spectral import mel_l1_distance, multi_resolution_stft_distance
    from audiodiff.pipeline.loading import load_model

    clip = Path(audio_path) if audio_path else DEFAULT_CLIP
    if not clip.is_file():
        raise FileNotFoundError(f"{clip}: speech clip not found (pass --audio PATH)")
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"demo: training the tiny-cpu recipe on {clip.name} for {minutes:g} min on the CPU")
    trained = train_tiny(clip, out_dir, minutes, seed)
    model_path = trained.save(out_dir / "demo-vocoder.safetensors")
    model = load_model(model_path)

    audio, _ = load_audio(clip, model.sample_rate)
    frames = audio.shape[-1] // model.hop_length
    audio = audio[: frames * model.hop_length]
    mel = model.mel(audio)
    print(f"demo: vocoding {frames} frames with the fast 6-step sampler")
    vocoded = model.vocode(mel, sampler="fast", seed=seed)[0]
    wav_path = save_audio(out_dir / "demo-vocoded.wav", vocoded, model.sample_rate)
    vocoded_mel = model.mel(vocoded)
    png_path = save_mel_comparison(
        out_dir / "demo-mel-comparison.png",
        [mel[0].numpy(), vocoded_mel[0].numpy()],
        [f"input: {clip.name}", f"vocoded by tiny model after {model.config.training_step} steps"],
        model.sample_rate, model.hop_length,
    )
    mel_l1 = float(mel_l1_distance(vocoded_mel, mel)[0])
    mrstft = float(multi_resolution_stft_distance(vocoded.unsqueeze(0), audio.unsqueeze(0))[0])
    print(f"demo: {model.config.training_step} training steps; log-mel L1 {mel_l1:.3f}, MR-STFT {mrstft:.3f}")
    print(f"wrote {wav_path}")
    print(f"wrote {png_path}")
    print(f"wrote {model_path}")
    return {"wav": wav_path, "png": png_path, "model": model_path}
