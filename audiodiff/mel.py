"""Mel spectrograms in named conventions ("presets").

This module is the only mel code in the package: training, validation, inference and the
``audiodiff mel`` command all call :class:`MelSpectrogram`, so they cannot drift apart.

A :class:`MelConfig` is a complete description of one convention. Two presets are built in:

``hifigan``
    HiFi-GAN / BigVGAN (22 kHz, fmax 8 kHz) / SpeechBrain TTS: librosa's Slaney filterbank,
    reflect padding of ``(n_fft - hop) / 2`` on each side, ``center=False``, Hann window,
    magnitude ``sqrt(re^2 + im^2 + 1e-9)``, natural log of ``clamp(x, 1e-5)``.
``diffwave``
    The reference DiffWave preprocessing: the HTK filterbank without norm (as torchaudio's
    ``MelSpectrogram`` builds it; here from :func:`librosa.filters.mel`, the same triangles),
    ``center=True``, window-normalised STFT, power 1, then
    ``(20*log10(clamp(x, 1e-5)) - 20 + 100) / 100`` clamped to [0, 1].

Frames are aligned to the hop: audio of ``T`` samples gives ``T // hop_length`` frames and
frame ``i`` describes samples ``[i*hop, (i+1)*hop)``. (The ``diffwave`` convention's STFT
yields one extra, trailing frame; it is dropped exactly as the reference training code does.)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

LogStyle = Literal["hifigan", "diffwave"]

MEL_FLOOR = 1e-5


@dataclass(frozen=True)
class MelConfig:
    """Every parameter of a mel-spectrogram convention.

    ``f_max=None`` means the Nyquist frequency (``sample_rate / 2``).
    ``style`` selects the STFT padding and the log compression (see the module docstring).
    """

    preset: str
    sample_rate: int
    n_fft: int
    hop_length: int
    win_length: int
    n_mels: int
    f_min: float
    f_max: float | None
    style: LogStyle

    def __post_init__(self) -> None:
        if self.style not in ("hifigan", "diffwave"):
            raise ValueError(f"unknown mel style {self.style!r}; expected 'hifigan' or 'diffwave'")
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must not exceed n_fft ({self.n_fft})")
        if self.hop_length <= 0 or self.n_mels <= 0 or self.sample_rate <= 0:
            raise ValueError("sample_rate, hop_length and n_mels must be positive")
        if self.style == "hifigan" and (self.n_fft - self.hop_length) % 2:
            raise ValueError("the hifigan style needs n_fft - hop_length to be even")
        if not 0 <= self.f_min < self.nyquist_f_max:
            raise ValueError(f"f_min ({self.f_min}) must lie in [0, f_max)")

    @property
    def nyquist_f_max(self) -> float:
        """``f_max`` with ``None`` resolved to the Nyquist frequency."""
        return float(self.sample_rate) / 2 if self.f_max is None else float(self.f_max)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MelConfig":
        return cls(**data)


PRESETS: dict[str, MelConfig] = {
    "hifigan": MelConfig(
        preset="hifigan", sample_rate=22050, n_fft=1024, hop_length=256, win_length=1024,
        n_mels=80, f_min=0.0, f_max=8000.0, style="hifigan",
    ),
    "diffwave": MelConfig(
        preset="diffwave", sample_rate=22050, n_fft=1024, hop_length=256, win_length=1024,
        n_mels=80, f_min=20.0, f_max=None, style="diffwave",
    ),
}

#: The value range each style produces on ordinary audio, used to spot convention mismatches.
TYPICAL_RANGE: dict[str, tuple[float, float]] = {
    "hifigan": (math.log(MEL_FLOOR), 4.0),
    "diffwave": (0.0, 1.0),
}


def mel_preset(name: str, **overrides: Any) -> MelConfig:
    """Return preset ``name``, with any fields replaced by ``overrides``.

    Example: ``mel_preset("hifigan", sample_rate=16000)``.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown mel preset {name!r}; choose one of {sorted(PRESETS)}")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(MelConfig)}
    if unknown:
        raise ValueError(f"unknown mel field(s) {sorted(unknown)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def _filterbank(config: MelConfig) -> Tensor:
    """The mel filterbank as a ``(n_mels, n_fft // 2 + 1)`` float32 tensor."""
    import librosa

    htk = config.style == "diffwave"  # diffwave: HTK mel scale, triangles of peak 1 (no norm)
    basis = librosa.filters.mel(
        sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels, fmin=config.f_min,
        fmax=config.nyquist_f_max, htk=htk, norm=None if htk else "slaney",
    )
    return torch.from_numpy(basis).float()


class MelSpectrogram(nn.Module):
    """Audio ``(B, T)`` or ``(T,)`` -> mel ``(B, n_mels, T // hop_length)`` in one convention.

    The window and filterbank are buffers, so the module moves with ``.to(device)``.
    """

    def __init__(self, config: MelConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("window", torch.hann_window(config.win_length), persistent=False)
        self.register_buffer("mel_basis", _filterbank(config), persistent=False)

    def forward(self, audio: Tensor) -> Tensor:
        if audio.dim() == 1:
            audio = audio.unsqueeze(0)
        if audio.dim() != 2:
            raise ValueError(f"expected audio of shape (B, T) or (T,), got {tuple(audio.shape)}")
        frames = audio.shape[-1] // self.config.hop_length
        if frames == 0:
            raise ValueError(
                f"audio of {audio.shape[-1]} samples is shorter than one hop "
                f"({self.config.hop_length} samples)"
            )
        audio = audio.float()
        if self.config.style == "hifigan":
            mel = self._hifigan(audio)
        else:
            mel = self._diffwave(audio)
        return mel[..., :frames]

    def _stft(self, audio: Tensor, center: bool) -> Tensor:
        """Complex STFT ``(B, n_fft // 2 + 1, frames)``."""
        return torch.stft(
            audio, n_fft=self.config.n_fft, hop_length=self.config.hop_length,
            win_length=self.config.win_length, window=self.window, center=center,
            pad_mode="reflect", normalized=False, onesided=True, return_complex=True,
        )

    def _hifigan(self, audio: Tensor) -> Tensor:
        pad = (self.config.n_fft - self.config.hop_length) // 2
        if audio.shape[-1] <= pad:
            raise ValueError(f"audio of {audio.shape[-1]} samples is too short to reflect-pad by {pad}")
        audio = torch.nn.functional.pad(audio.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = self._stft(audio, center=False)
        magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
        mel = torch.matmul(self.mel_basis, magnitude)
        return torch.log(torch.clamp(mel, min=MEL_FLOOR))

    def _diffwave(self, audio: Tensor) -> Tensor:
        # torchaudio's normalized=True divides by the window's L2 norm (torch.stft's would
        # divide by sqrt(n_fft), 4.3 dB off for a Hann window of 1024).
        spec = self._stft(audio, center=True)
        magnitude = spec.abs() / self.window.pow(2).sum().sqrt()
        mel = torch.matmul(self.mel_basis, magnitude)
        db = 20 * torch.log10(torch.clamp(mel, min=MEL_FLOOR)) - 20
        return torch.clamp((db + 100) / 100, 0.0, 1.0)


def describe_range_mismatch(mel: Tensor, config: MelConfig) -> str | None:
    """Say which convention ``mel`` more likely follows, if its values do not fit ``config``.

    Returns ``None`` when the values look like ``config.style``; otherwise a sentence for a
    warning, e.g. that a [0, 1] mel was given to a natural-log (``hifigan``) model.
    """
    finite = mel[torch.isfinite(mel)]
    if finite.numel() == 0:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    if config.style == "hifigan":
        if lo >= 0.0 and hi <= 1.0:
            return (
                f"values lie in [{lo:.2f}, {hi:.2f}], like the [0,1]-normalised 'diffwave' "
                f"convention, but the model expects natural-log mels ('hifigan', about "
                f"{TYPICAL_RANGE['hifigan'][0]:.1f} to 2)"
            )
        if lo > -6.0 and hi < 2.0 and lo < -2.0:
            return (
                f"values lie in [{lo:.2f}, {hi:.2f}], like log10 mels (floor -5), but the model "
                "expects natural-log mels ('hifigan', floor -11.5); multiply by ln(10)"
            )
        if lo < math.log(MEL_FLOOR) - 0.5 or hi > 8.0:
            return (
                f"values lie in [{lo:.2f}, {hi:.2f}], outside the natural-log range of the "
                "'hifigan' convention (floor -11.5); was the mel computed in dB or another scale?"
            )
        return None
    if lo < -0.01 or hi > 1.01:
        likely = "natural-log ('hifigan')" if lo >= math.log(MEL_FLOOR) - 0.5 else "unnormalised dB"
        return (
            f"values lie in [{lo:.2f}, {hi:.2f}], outside [0, 1] of the 'diffwave' convention "
            f"the model expects; they look like {likely} mels"
        )
    return None
