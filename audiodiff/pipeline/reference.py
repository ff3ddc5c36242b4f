"""Reference DiffWave checkpoints (the ``diffwave`` package's ``{'model': state, 'params': ...}``)
converted into audiodiff models."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from torch import Tensor

from audiodiff.diffusion.schedule import ScheduleConfig
from audiodiff.io.model_file import ModelFileError, first_line
from audiodiff.mel import mel_preset
from audiodiff.network.diffwave import DenoiserConfig
from audiodiff.pipeline.audio_diffusion import AudioDiffusion
from audiodiff.pipeline.config import ModelConfig
from audiodiff.pipeline.loading import load_weights_only


def _reference_key(key: str) -> str:
    """Map a reference ``diffwave`` state-dict key to ours."""
    key = key.removeprefix("module.")
    key = key.replace("spectrogram_upsampler.conv1.", "network.mel_upsampler.stages.0.")
    key = key.replace("spectrogram_upsampler.conv2.", "network.mel_upsampler.stages.1.")
    return key if key.startswith("network.") else f"network.{key}"


def config_from_reference(state: dict[str, Tensor], params: dict[str, Any] | None) -> ModelConfig:
    """Infer our config from a reference state dict and its (optional) ``params`` dict."""
    params = dict(params or {})
    layers = sorted({int(k.split(".")[1]) for k in state if k.startswith("residual_layers.")})
    channels = state["input_projection.weight"].shape[0]
    conditional = any(k.startswith("spectrogram_upsampler.") for k in state)
    n_mels = state["residual_layers.0.conditioner_projection.weight"].shape[1] if conditional else None
    noise_schedule = np.asarray(params.get("noise_schedule", np.linspace(1e-4, 0.05, 50)), dtype=np.float64)
    linear = np.linspace(noise_schedule[0], noise_schedule[-1], len(noise_schedule))
    if not np.allclose(noise_schedule, linear, rtol=1e-6, atol=1e-9):
        raise ValueError("the checkpoint's noise_schedule is not linear; audiodiff schedules are linear")
    dilation_cycle = int(params.get("dilation_cycle_length", 10))
    hop = int(params.get("hop_samples", 256))
    sample_rate = int(params.get("sample_rate", 22050))
    if conditional and hop != 256:
        raise ValueError(f"the reference upsampler is fixed at hop 256, params say {hop}")
    schedule = ScheduleConfig(
        num_steps=len(noise_schedule),
        beta_start=float(noise_schedule[0]),
        beta_end=float(noise_schedule[-1]),
        fast_betas=tuple(params.get("inference_noise_schedule", (1e-4, 1e-3, 1e-2, 5e-2, 2e-1, 5e-1))),
    )
    denoiser = DenoiserConfig(
        residual_channels=channels, residual_layers=len(layers), dilation_cycle=dilation_cycle,
        n_mels=n_mels, hop_length=hop, max_steps=schedule.num_steps,
    )
    mel = mel_preset("diffwave", sample_rate=sample_rate, n_mels=n_mels, hop_length=hop,
                     n_fft=int(params.get("n_fft", 1024)), win_length=4 * hop) if conditional else None
    return ModelConfig(denoiser=denoiser, mel=mel, schedule=schedule, sample_rate=sample_rate)


def import_diffwave(path: str | os.PathLike) -> AudioDiffusion:
    """Convert a reference DiffWave checkpoint (``{'model': state, 'params': ...}`` or a bare state dict).

    The file is read with ``torch.load(weights_only=True)``: a pickle that would run code is refused.
    """
    checkpoint = load_weights_only(path)
    if isinstance(checkpoint, dict) and "model" in checkpoint and isinstance(checkpoint["model"], dict):
        state, params = checkpoint["model"], checkpoint.get("params")
    elif isinstance(checkpoint, dict) and all(isinstance(v, Tensor) for v in checkpoint.values()):
        state, params = checkpoint, None
    else:
        raise ModelFileError(path, "neither {'model': state_dict, 'params': ...} nor a bare state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "input_projection.weight" not in state:
        raise ModelFileError(path, "no DiffWave weights found (missing input_projection.weight)")
    try:
        config = config_from_reference(state, params if isinstance(params, dict) else None)
        model = AudioDiffusion(config)
        converted = {_reference_key(k).removeprefix("network."): v for k, v in state.items()}
        model.network.load_state_dict(converted, strict=True)
    except (KeyError, IndexError, ValueError, RuntimeError) as error:
        raise ModelFileError(path, f"not a usable DiffWave checkpoint: {first_line(error)}") from None
    return model.eval()
