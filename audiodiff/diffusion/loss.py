"""The training objective, as a function of the network (improved-diffusion style)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from audiodiff.dsp.spectral import MRSTFT_RESOLUTIONS, mean_stft_distance

DenoiseFn = Callable[[Tensor, Tensor], Tensor]
#: ``x0_loss(predicted_x0 (B, T), audio (B, T)) -> (B,)``: an auxiliary loss on the clean-audio estimate.
X0Loss = Callable[[Tensor, Tensor], Tensor]


def noisy_sample(audio: Tensor, noise: Tensor, alpha_bar: Tensor) -> Tensor:
    """``x_t = sqrt(abar) * x_0 + sqrt(1 - abar) * eps``; ``audio``/``noise`` ``(B, T)``, ``alpha_bar`` ``(B,)``."""
    a = alpha_bar.to(audio.dtype).unsqueeze(-1)
    return a.sqrt() * audio + (1.0 - a).sqrt() * noise


def predicted_x0(x_t: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """The clean-audio estimate ``(x_t - sqrt(1 - abar) * eps) / sqrt(abar)``: ``(B, T)``; ``alpha_bar`` ``(B,)``.

    The inverse of :func:`noisy_sample`: with the true ``eps`` it returns ``x_0``.
    """
    a = alpha_bar.to(x_t.dtype).unsqueeze(-1)
    return (x_t - (1.0 - a).sqrt() * eps) / a.sqrt()


def _magnitude(audio: Tensor, n_fft: int, hop: int, win: int) -> Tensor:
    """STFT magnitude with a gradient everywhere (``sqrt(re^2 + im^2 + 1e-9)``): ``(B, bins, frames)``."""
    window = torch.hann_window(win, device=audio.device)
    spec = torch.stft(audio.float(), n_fft, hop, win, window=window, center=True, return_complex=True)
    return (spec.real.square() + spec.imag.square() + 1e-9).sqrt()


def mrstft_loss(generated: Tensor, reference: Tensor,
                resolutions: Sequence[tuple[int, int, int]] = MRSTFT_RESOLUTIONS) -> Tensor:
    """Differentiable multi-resolution STFT loss (Parallel WaveGAN): ``(B, T)`` pair -> ``(B,)``.

    Per resolution spectral convergence + log-magnitude L1, averaged over resolutions: the
    quantity :func:`audiodiff.dsp.spectral.multi_resolution_stft_distance` reports, with a
    magnitude that has a gradient at zero.
    """
    return mean_stft_distance(generated, reference, resolutions, _magnitude)


def spectral_x0_loss(mel_fn: Callable[[Tensor], Tensor] | None) -> X0Loss:
    """MR-STFT + log-mel L1 (``mel_fn``: audio ``(B, T)`` -> log-mel, the model's front end;
    ``None``: MR-STFT only) of the clean-audio estimate against the clean audio: ``(B,)``."""

    def loss(generated: Tensor, reference: Tensor) -> Tensor:
        value = mrstft_loss(generated, reference)
        if mel_fn is not None:
            value = value + (mel_fn(generated.float()) - mel_fn(reference.float())).abs().flatten(1).mean(dim=1)
        return value

    return loss


def epsilon_loss(
    denoise: DenoiseFn,
    audio: Tensor,
    alpha_bars: Tensor,
    *,
    steps: Tensor | None = None,
    noise: Tensor | None = None,
    kind: str = "l1",
    generator: torch.Generator | None = None,
    noise_std: Tensor | None = None,
    x0_loss: X0Loss | None = None,
    x0_weight: float = 0.0,
) -> Tensor:
    """The epsilon-prediction loss of ``denoise(x_t (B, T), t (B,)) -> eps (B, T)``.

    ``audio`` is clean ``(B, T)``; ``alpha_bars`` ``(T_train,)`` float; ``steps`` ``(B,)`` integer
    training steps (uniform at random when omitted). ``kind`` is ``l1`` (DiffWave's choice) or ``l2``.
    Without a ``generator``, steps and noise are drawn on ``audio``'s device (no host work or
    copy per step on a GPU; on the CPU the same numbers as before); with one, on its device.

    ``noise_std`` ``(B, T)``: PriorGrad's prior (:mod:`audiodiff.diffusion.prior`). The noise is
    ``noise_std * eps``, the network predicts it, and the error is weighted by ``Sigma^-1``
    (``|e| / std`` for ``l1``, ``e^2 / std^2`` for ``l2``); ``None`` is today's loss exactly.

    ``x0_loss`` with ``x0_weight > 0`` adds ``x0_weight * mean_b(abar_b * x0_loss(x0_hat_b, x0_b))``
    on the clean-audio estimate :func:`predicted_x0` (e.g. :func:`spectral_x0_loss`): weighted by
    ``abar``, so the noisiest steps, whose estimate is necessarily blurred, pull least.
    Returns a scalar.
    """
    batch = audio.shape[0]
    device = generator.device if generator is not None else audio.device
    if steps is None:
        steps = torch.randint(0, alpha_bars.shape[0], (batch,), generator=generator, device=device).to(audio.device)
    if noise is None:
        noise = torch.randn(audio.shape, generator=generator, device=device).to(audio.device, audio.dtype)
    if noise_std is not None:
        noise = noise * noise_std.to(noise.dtype)
    alpha_bar = alpha_bars.to(audio.device)[steps]
    x_t = noisy_sample(audio, noise, alpha_bar)
    predicted = denoise(x_t, steps)
    if kind not in ("l1", "l2"):
        raise ValueError(f"unknown loss {kind!r}; choose 'l1' or 'l2'")
    error = predicted.float() - noise.float()
    if noise_std is None:
        loss = F.l1_loss(predicted.float(), noise.float()) if kind == "l1" else F.mse_loss(predicted.float(), noise.float())
    elif kind == "l1":
        loss = (error.abs() / noise_std.float()).mean()
    else:
        loss = (error.square() / noise_std.float().square()).mean()
    if x0_loss is not None and x0_weight > 0:
        x0_hat = predicted_x0(x_t.float(), predicted.float(), alpha_bar)
        loss = loss + x0_weight * (alpha_bar.float() * x0_loss(x0_hat, audio.float())).mean()
    return loss
