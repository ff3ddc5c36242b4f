"""Samplers: pure functions over an explicit list of noise levels.

Every sampler has the signature ``sampler(eps_fn, noise, sigmas, *, noise_fn, ...) -> audio``:

* ``eps_fn(x, sigma)`` predicts the noise in ``x`` (``(B, T)``) at noise level ``sigma`` (a float);
  :func:`audiodiff.pretrained.AudioDiffusion.eps_fn` builds one from a network and a mel;
* ``noise`` is the starting point ``x`` at ``sigmas[0]`` (standard normal, ``(B, T)``);
* ``sigmas`` decreases and ends at ``0.0`` (see :mod:`audiodiff.diffusion.schedule`);
* ``noise_fn(x)`` draws fresh standard normal noise shaped like ``x`` for stochastic samplers
  (default ``torch.randn_like``; pass a seeded one for reproducible audio).

No state is kept between calls: the same inputs and the same noise give the same audio.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

EpsFn = Callable[[Tensor, float], Tensor]
NoiseFn = Callable[[Tensor], Tensor]
StepCallback = Callable[[int, int], None]


def _check_sigmas(sigmas: Sequence[float]) -> np.ndarray:
    levels = np.asarray(sigmas, dtype=np.float64)
    if levels.ndim != 1 or levels.size < 2:
        raise ValueError("sigmas must list at least one noise level and end with 0.0")
    if levels[-1] != 0.0 or np.any(np.diff(levels) >= 0) or levels[0] >= 1.0:
        raise ValueError(f"sigmas must decrease strictly from below 1 to 0.0, got {levels.tolist()}")
    return levels


def combine_guidance(eps_class: Tensor, eps_null: Tensor, guidance: float) -> Tensor:
    """Classifier-free guidance: ``eps_null + w * (eps_class - eps_null)``.

    Computed as ``(1 - w) * eps_null + w * eps_class``, the same value, but exact at the two
    ends: ``w = 0`` gives ``eps_null`` and ``w = 1`` gives ``eps_class`` bit for bit.
    """
    return (1.0 - guidance) * eps_null + guidance * eps_class


def classifier_free_guidance(eps_fn_pairs: EpsFn, guidance: float) -> EpsFn:
    """Wrap a noise predictor that sees each row twice into a guided one (one network call).

    ``eps_fn_pairs(x2 (2B, T), sigma)`` predicts rows ``[:B]`` with their class and rows
    ``[B:]`` with the null class; the returned ``eps_fn(x (B, T), sigma)`` feeds it ``x`` twice
    and combines the halves with :func:`combine_guidance`.
    """

    def guided(x: Tensor, sigma: float) -> Tensor:
        eps_class, eps_null = eps_fn_pairs(torch.cat([x, x]), sigma).chunk(2)
        return combine_guidance(eps_class, eps_null, guidance)

    return guided


def sample_ancestral(
    eps_fn: EpsFn,
    noise: Tensor,
    sigmas: Sequence[float],
    *,
    noise_fn: NoiseFn | None = None,
    clip: float | None = 1.0,
    callback: StepCallback | None = None,
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, eq. 11) between consecutive levels.

    From ``abar = 1 - sigma^2`` at the current level and ``abar_prev`` at the next one:
    ``alpha = abar / abar_prev``, ``beta = 1 - alpha``,
    ``x <- (x - beta / sqrt(1 - abar) * eps) / sqrt(alpha)``, plus fresh noise of variance
    ``beta * (1 - abar_prev) / (1 - abar)`` except on the last step. This is DiffWave's fast
    sampler when ``sigmas`` comes from its 6-step beta schedule, and plain DDPM over all
    training levels. ``clip`` clamps ``x`` to ``[-clip, clip]`` after each step (the reference
    clamps to [-1, 1]); ``None`` disables it.

    Returns audio ``(B, T)``.
    """
    levels = _check_sigmas(sigmas)
    alpha_bars = 1.0 - levels**2
    x = noise
    n_steps = len(levels) - 1
    for i in range(n_steps):
        abar, abar_prev = alpha_bars[i], alpha_bars[i + 1]
        alpha = abar / abar_prev
        beta = 1.0 - alpha
        eps = eps_fn(x, float(levels[i]))
        x = (x - float(beta / np.sqrt(1.0 - abar)) * eps) / float(np.sqrt(alpha))
        if i < n_steps - 1:
            variance = beta * (1.0 - abar_prev) / (1.0 - abar)
            fresh = noise_fn(x) if noise_fn is not None else torch.randn_like(x)
            x = x + float(np.sqrt(variance)) * fresh
        if clip is not None:
            x = torch.clamp(x, -clip, clip)
        if callback is not None:
            callback(i + 1, n_steps)
    return x
