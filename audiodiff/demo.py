"""``audiodiff demo``: train the ``tiny-cpu`` recipe on one speech clip for a few minutes, then vocode it.

This is the README's first command until the package ships a trained model. It runs the same
code paths as a real user: LightningCLI training from ``configs/tiny-cpu.yaml``, export to
``.safetensors``, loading, vocoding, and a mel comparison figure.
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


def run_demo(audio_path: str | None, out_dir: Path, minutes: float = 2.0, seed: int = 0) -> dict[str, Path]:
    """Train, export, vocode and plot; prints and returns the paths written."""
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
