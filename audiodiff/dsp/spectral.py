"""Objective distances between a generated and a reference waveform."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

#: (n_fft, hop, win) of the multi-resolution STFT loss of Parallel WaveGAN (Yamamoto et al. 2020).
MRSTFT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))


def _magnitude(audio: Tensor, n_fft: int, hop: int, win: int) -> Tensor:
    window = torch.hann_window(win, device=audio.device)
    spec = torch.stft(audio, n_fft, hop, win, window=window, center=True, return_complex=True)
    return spec.abs().clamp(min=1e-7)


def multi_resolution_stft_distance(
    generated: Tensor, reference: Tensor, resolutions: Sequence[tuple[int, int, int]] = MRSTFT_RESOLUTIONS
) -> Tensor:
    """Mean over resolutions of spectral convergence + log-magnitude L1; 0 for identical signals.

    ``generated`` and ``reference`` are ``(B, T)`` or ``(T,)`` of equal length; returns ``(B,)``.
    """
    if generated.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(generated.shape)} vs {tuple(reference.shape)}")
    generated, reference = torch.atleast_2d(generated).float(), torch.atleast_2d(reference).float()
    return mean_stft_distance(generated, reference, resolutions, _magnitude)


def mean_stft_distance(generated: Tensor, reference: Tensor, resolutions: Sequence[tuple[int, int, int]],
                       magnitude: Callable[[Tensor, int, int, int], Tensor]) -> Tensor:
    """Spectral convergence + log-magnitude L1 of ``(B, T)`` float32 pairs, averaged over
    ``resolutions`` ``(n_fft, hop, win)``: ``(B,)``. ``magnitude(audio, n_fft, hop, win)`` is the
    STFT magnitude ``(B, bins, frames)`` (clamped for the metric, smooth for a training loss)."""
    total = torch.zeros(generated.shape[0], device=generated.device)
    for n_fft, hop, win in resolutions:
        gen, ref = magnitude(generated, n_fft, hop, win), magnitude(reference, n_fft, hop, win)
        convergence = torch.linalg.norm((ref - gen).flatten(1), dim=1) / torch.linalg.norm(ref.flatten(1), dim=1)
        log_l1 = (ref.log() - gen.log()).abs().flatten(1).mean(dim=1)
        total = total + convergence + log_l1
    return total / len(resolutions)


def mel_l1_distance(generated_mel: Tensor, reference_mel: Tensor) -> Tensor:
    """Mean absolute difference of two log-mel spectrograms ``(B, n_mels, frames)`` -> ``(B,)``."""
    if generated_mel.shape != reference_mel.shape:
        raise ValueError(f"shapes differ: {tuple(generated_mel.shape)} vs {tuple(reference_mel.shape)}")
    return (generated_mel - reference_mel).abs().flatten(1).mean(dim=1)
