"""Samplers: pure functions over an explicit list of noise levels.

Every sampler has the signature ``sampler(eps_fn, noise, sigmas, *, noise_fn, ...) -> audio``:

* ``eps_fn(x, sigma)`` predicts the noise in ``x`` (``(B, T)``) at noise level ``sigma`` (a float);
  :func:`audiodiff.pipeline.AudioDiffusion.eps_fn` builds one from a network and a mel;
* ``noise`` is the starting point ``x`` at ``sigmas[0]`` (standard normal, ``(B, T)``);
* ``sigmas`` decreases and ends at ``0.0`` (see :mod:`audiodiff.diffusion.schedule`);
* ``noise_fn(x)`` draws fresh standard normal noise shaped like ``x`` for stochastic samplers
  (default ``torch.randn_like``; pass a seeded one for reproducible audio); deterministic
  samplers accept and ignore it, so all of them can be called the same way.

Samplers (:data:`SAMPLER_FUNCTIONS`):

* :func:`sample_ancestral` (``"ancestral"``): DDPM / DiffWave's fast sampler, stochastic;
* :func:`sample_ddim` (``"ddim"``): DDIM with ``eta = 0``, deterministic, first order;
* :func:`sample_dpmpp_2m` (``"dpmpp-2m"``): DPM-Solver++(2M), deterministic, second order.

With ``alpha = sqrt(1 - sigma^2)``, the two ODE solvers work on the data prediction
``x0 = (x - sigma * eps) / alpha`` and the half log-SNR ``lambda = log(alpha / sigma)``.

No state is kept between calls: the same inputs and the same noise give the same audio.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Mapping, Sequence

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


def _alphas(levels: np.ndarray) -> np.ndarray:
    """Signal scales ``alpha = sqrt(1 - sigma^2)`` (float64)."""
    return np.sqrt(1.0 - levels**2)


def _predict_x0(eps_fn: EpsFn, x: Tensor, sigma: float, alpha: float, clip: float | None) -> Tensor:
    """The data prediction ``x0 = (x - sigma * eps(x, sigma)) / alpha``, clamped to ``[-clip, clip]``."""
    x0 = (x - sigma * eps_fn(x, sigma)) / alpha
    return torch.clamp(x0, -clip, clip) if clip is not None else x0


def sample_ddim(
    eps_fn: EpsFn,
    noise: Tensor,
    sigmas: Sequence[float],
    *,
    noise_fn: NoiseFn | None = None,
    clip: float | None = 1.0,
    callback: StepCallback | None = None,
) -> Tensor:
    """Deterministic DDIM (Song et al. 2021, eq. 12 with ``eta = 0``) between consecutive levels.

    ``x0 = (x - sigma * eps) / alpha``, clamped to ``[-clip, clip]`` (``None``: no clamp); the
    noise is re-derived from the clamped ``x0`` as ``(x - alpha * x0) / sigma``, and
    ``x <- alpha_next * x0 + sigma_next * eps``. That is the first-order DPM-Solver++ step
    ``x <- (sigma_next / sigma) x + alpha_next (1 - exp(-h)) x0`` with
    ``h = lambda_next - lambda``; the step to ``sigma = 0`` returns ``x0``. Unlike
    :func:`sample_ancestral`, the noisy ``x`` is never clamped (at high noise it legitimately
    exceeds 1): only the clean-audio estimate is, so the returned audio lies in ``[-clip, clip]``.
    ``noise_fn`` is ignored (no fresh noise is drawn).

    Returns audio ``(B, T)``.
    """
    levels = _check_sigmas(sigmas)
    alphas = _alphas(levels)
    x = noise
    n_steps = len(levels) - 1
    for i in range(n_steps):
        sigma, alpha = float(levels[i]), float(alphas[i])
        x0 = _predict_x0(eps_fn, x, sigma, alpha, clip)
        eps = (x - alpha * x0) / sigma
        x = float(alphas[i + 1]) * x0 + float(levels[i + 1]) * eps
        if callback is not None:
            callback(i + 1, n_steps)
    return x


def sample_dpmpp_2m(
    eps_fn: EpsFn,
    noise: Tensor,
    sigmas: Sequence[float],
    *,
    noise_fn: NoiseFn | None = None,
    clip: float | None = 1.0,
    callback: StepCallback | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, algorithm 2): multistep second order in ``lambda``.

    With ``lambda = log(alpha / sigma)``, ``h_i = lambda_{i+1} - lambda_i`` and the data
    prediction ``D_i = x0(x_i, sigma_i)`` (clamped to ``[-clip, clip]`` like :func:`sample_ddim`):

    ``x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} (exp(-h_i) - 1) D``, where
    ``D = D_0`` on the first step and otherwise
    ``D = (1 + 1 / (2 r)) D_i - 1 / (2 r) D_{i-1}`` with ``r = h_{i-1} / h_i``.

    The last step, to ``sigma = 0`` (``lambda = inf``), returns ``D_i`` itself (the first-order
    limit; the second-order weights diverge there). One network call per step, as DDIM; the
    noisy ``x`` is never clamped. ``noise_fn`` is ignored.

    The correction extrapolates with weight ``1 / (2 r)``, so it wants steps ``h`` that change
    slowly: on Karras or log-SNR-uniform levels it beats DDIM at 4+ steps, but on evenly spaced
    training steps of a linear beta schedule (base, 6 steps: ``h`` jumps from 0.7 to 3.2 before
    ``sigma_0``) it can be less accurate than DDIM.

    Returns audio ``(B, T)``.
    """
    levels = _check_sigmas(sigmas)
    alphas = _alphas(levels)
    with np.errstate(divide="ignore"):
        lambdas = np.log(alphas) - np.log(levels)  # +inf at sigma = 0
    x = noise
    n_steps = len(levels) - 1
    previous: tuple[Tensor, float] | None = None  # (D_{i-1}, h_{i-1})
    for i in range(n_steps):
        sigma, alpha = float(levels[i]), float(alphas[i])
        x0 = _predict_x0(eps_fn, x, sigma, alpha, clip)
        if i == n_steps - 1:
            x = x0
        else:
            h = float(lambdas[i + 1] - lambdas[i])
            d = x0
            if previous is not None:
                r = previous[1] / h
                d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * previous[0]
            x = float(levels[i + 1] / sigma) * x - float(alphas[i + 1] * np.expm1(-h)) * d
            previous = (x0, h)
        if callback is not None:
            callback(i + 1, n_steps)
    return x


#: Sampler functions by name (read-only); all share the signature of :func:`sample_ancestral`.
SAMPLER_FUNCTIONS: Mapping[str, Callable[..., Tensor]] = MappingProxyType({
    "ancestral": sample_ancestral,
    "ddim": sample_ddim,
    "dpmpp-2m": sample_dpmpp_2m,
})
