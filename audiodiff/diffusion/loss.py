"""The training objective, as a function of the network (improved-diffusion style)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

DenoiseFn = Callable[[Tensor, Tensor], Tensor]


def noisy_sample(audio: Tensor, noise: Tensor, alpha_bar: Tensor) -> Tensor:
    """``x_t = sqrt(abar) * x_0 + sqrt(1 - abar) * eps``; ``audio``/``noise`` ``(B, T)``, ``alpha_bar`` ``(B,)``."""
    a = alpha_bar.to(audio.dtype).unsqueeze(-1)
    return a.sqrt() * audio + (1.0 - a).sqrt() * noise


def epsilon_loss(
    denoise: DenoiseFn,
    audio: Tensor,
    alpha_bars: Tensor,
    *,
    steps: Tensor | None = None,
    noise: Tensor | None = None,
    kind: str = "l1",
    generator: torch.Generator | None = None,
) -> Tensor:
    """The epsilon-prediction loss of ``denoise(x_t (B, T), t (B,)) -> eps (B, T)``.

    ``audio`` is clean ``(B, T)``; ``alpha_bars`` ``(T_train,)`` float; ``steps`` ``(B,)`` integer
    training steps (uniform at random when omitted). ``kind`` is ``l1`` (DiffWave's choice) or ``l2``.
    Without a ``generator``, steps and noise are drawn on ``audio``'s device (no host work or
    copy per step on a GPU; on the CPU the same numbers as before); with one, on its device.
    Returns a scalar.
    """
    batch = audio.shape[0]
    device = generator.device if generator is not None else audio.device
    if steps is None:
        steps = torch.randint(0, alpha_bars.shape[0], (batch,), generator=generator, device=device).to(audio.device)
    if noise is None:
        noise = torch.randn(audio.shape, generator=generator, device=device).to(audio.device, audio.dtype)
    x_t = noisy_sample(audio, noise, alpha_bars.to(audio.device)[steps])
    predicted = denoise(x_t, steps)
    if kind == "l1":
        return F.l1_loss(predicted.float(), noise.float())
    if kind == "l2":
        return F.mse_loss(predicted.float(), noise.float())
    raise ValueError(f"unknown loss {kind!r}; choose 'l1' or 'l2'")
