"""``audiodiff demo``: the README's main job.

By default it vocodes the held-out speech that ships with the package (:mod:`audiodiff.examples`)
with the shipped ``speech-22k`` vocoder -- once from the audio's mel, and once from a mel file in a
TTS's ``(frames, n_mels)`` layout, through the same reader as ``audiodiff vocode`` -- and writes
the wavs and an input-vs-vocoded mel comparison per clip. ``--train-minutes M`` instead trains the
``tiny-cpu`` recipe on one clip for ``M`` minutes and vocodes that clip with it (the pipeline from
data to model on a CPU).
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO_ROOT / "tests" / "data" / "speech-cs-22k.ogg"
TINY_CONFIG = REPO_ROOT / "configs" / "tiny-cpu.yaml"


def _max_time(minutes: float) -> str:
    seconds = max(1, int(round(minutes * 60)))
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train_tiny(clip: Path, out_dir: Path, minutes: float, seed: int):
    """Fit ``tiny-cpu`` on ``clip`` for ``minutes``; returns the trained (EMA) :class:`AudioDiffusion`."""
    from audiodiff.train_cli import run_training

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
    vocoder); prints a line per clip with its log-mel L1 and MR-STFT distance to the input, and the
    paths written. ``seconds`` keeps only each clip's first seconds. Returns the paths by kind."""
    import numpy as np

    from audiodiff.examples import example_files
    from audiodiff.pretrained import load_model
    from audiodiff.vocoding import read_mel_file

    model = load_model(model_name).fold_denoiser()  # the CLI's engine on a CPU
    inputs = list(inputs) if inputs else example_files()
    print(f"demo: {model_name or 'the shipped speech-22k'} vocoder ({model.config.training_step} training steps), "
          f"fast 6-step sampler, folded engine, {len(inputs)} held-out clip(s)")
    written: dict[str, list[Path]] = {"wav": [], "png": [], "mel": []}
    for index, clip in enumerate(inputs):
        audio, mel = _clip_and_mel(model, clip, seconds)
        vocoded = model.vocode(mel, seed=seed)[0]
        written["wav"].append(_save_vocoded(out_dir / f"{clip.stem}-vocoded.wav", model, clip, audio, mel, vocoded))
        written["png"].append(_save_comparison(out_dir / f"{clip.stem}-comparison.png", model, clip, mel, vocoded))
        if index == 0:  # a TTS writes (frames, n_mels): save one that way and vocode it from the file
            mel_path = out_dir / f"{clip.stem}-mel-frames-by-bins.npy"
            np.save(mel_path, mel[0].T.numpy().astype(np.float32))
            from_file = model.vocode(read_mel_file(mel_path, model.config.denoiser.n_mels), seed=seed)[0]
            written["mel"].append(mel_path)
            written["wav"].append(_save_vocoded(out_dir / f"{mel_path.stem}-vocoded.wav", model, mel_path, audio,
                                                mel, from_file))
    for kind in ("wav", "png", "mel"):
        for path in written[kind]:
            print(f"wrote {path}")
    return written


def _clip_and_mel(model, clip: Path, seconds: float | None):
    """``(audio (T,), mel (1, n_mels, T // hop))`` of ``clip`` at the model's rate, cut to whole hops."""
    from audiodiff.audio import load_audio

    audio, _ = load_audio(clip, model.sample_rate, duration_seconds=seconds)
    audio = audio[: audio.shape[-1] // model.hop_length * model.hop_length]
    return audio, model.mel(audio)


def _save_vocoded(path: Path, model, source: Path, audio, mel, vocoded) -> Path:
    """Write ``vocoded`` (T,) and print its distances to ``audio`` (T,)."""
    from audiodiff.audio import save_audio
    from audiodiff.metrics import mel_l1_distance, multi_resolution_stft_distance

    mel_l1 = float(mel_l1_distance(model.mel(vocoded), mel)[0])
    mrstft = float(multi_resolution_stft_distance(vocoded.unsqueeze(0), audio.unsqueeze(0))[0])
    print(f"demo: {source.name}: {audio.shape[-1] / model.sample_rate:.2f} s, log-mel L1 {mel_l1:.3f}, "
          f"MR-STFT {mrstft:.3f}")
    return save_audio(path, vocoded, model.sample_rate)


def _save_comparison(path: Path, model, clip: Path, mel, vocoded) -> Path:
    from audiodiff.figures import save_mel_comparison

    return save_mel_comparison(path, [mel[0].numpy(), model.mel(vocoded)[0].numpy()],
                               [f"input: {clip.name} (held out)",
                                f"vocoded: speech vocoder, {model.config.training_step} training steps, fast 6 steps"],
                               model.sample_rate, model.hop_length)


def run_demo(audio_path: str | None, out_dir: Path, minutes: float = 2.0, seed: int = 0) -> dict[str, Path]:
    """The training demo: train ``tiny-cpu`` on one clip, export, vocode and plot; prints and
    returns the paths written."""
    from audiodiff.audio import load_audio, save_audio
    from audiodiff.figures import save_mel_comparison
    from audiodiff.metrics import mel_l1_distance, multi_resolution_stft_distance
    from audiodiff.pretrained import load_model

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
