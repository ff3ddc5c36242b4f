"""Noise schedules as plain data, computed in float64.

Conventions (variance-preserving diffusion, as in DDPM and DiffWave):

* training step ``t`` in ``0 .. T-1`` has ``beta_t``; ``abar_t = prod_{s<=t} (1 - beta_s)``;
* ``x_t = sqrt(abar_t) * x_0 + sigma_t * eps`` with **noise level** ``sigma_t = sqrt(1 - abar_t)``;
* a sampler walks an explicit, decreasing list of noise levels that ends at ``0.0`` (clean audio).

The network is trained on integer steps but DiffWave interpolates its step embedding, so any
noise level between ``sigma_0`` and ``sigma_{T-1}`` maps to a *fractional* training step
(:meth:`NoiseSchedule.step_for_sigma`), by linear interpolation in ``sqrt(abar)`` exactly as the
reference implementation aligns its fast-sampling schedule.

Besides the training levels themselves (:meth:`NoiseSchedule.respaced_sigmas`), two choosers
place ``n`` levels anywhere in that trained range, noisiest first: :func:`karras_sigmas` and
:func:`log_snr_sigmas`. Both keep the largest level at the noisiest training level
``sigma_{T-1}`` (the network's starting point in training) and the smallest at ``sigma_0``.
"""


from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

#: DiffWave's user-defined 6-step variance schedule for the T=50 base model (paper, section 4).
DIFFWAVE_FAST_BETAS_BASE: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 5e-2, 2e-1, 5e-1)
#: The 6-step schedule the DiffWave paper gives for its T=200 models.
DIFFWAVE_FAST_BETAS_LARGE: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 5e-2, 2e-1, 7e-1)


@dataclass(frozen=True)
class ScheduleConfig:
    """A linear training beta schedule plus named fast inference schedules (betas)."""

    num_steps: int = 50
    beta_start: float = 1e-4
    beta_end: float = 0.05
    fast_betas: tuple[float, ...] = field(default=DIFFWAVE_FAST_BETAS_BASE)

    def __post_init__(self) -> None:
        if self.num_steps < 2:
            raise ValueError("a schedule needs at least 2 steps")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError("betas must satisfy 0 < beta_start <= beta_end < 1")
        object.__setattr__(self, "fast_betas", tuple(float(b) for b in self.fast_betas))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["fast_betas"] = list(self.fast_betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScheduleConfig":
        return cls(**{**data, "fast_betas": tuple(data.get("fast_betas", DIFFWAVE_FAST_BETAS_BASE))})


SCHEDULES: dict[str, ScheduleConfig] = {
    "base": ScheduleConfig(50, 1e-4, 0.05, DIFFWAVE_FAST_BETAS_BASE),
    "large": ScheduleConfig(200, 1e-4, 0.02, DIFFWAVE_FAST_BETAS_LARGE),
}


class NoiseSchedule:
    """The training schedule's derived quantities, all float64 numpy arrays of length ``T``."""

    def __init__(self, config: ScheduleConfig) -> None:
        self.config = config
        self.betas = np.linspace(config.beta_start, config.beta_end, config.num_steps, dtype=np.float64)
        self.alpha_bars = np.cumprod(1.0 - self.betas)
        self.sigmas = np.sqrt(1.0 - self.alpha_bars)

    @property
    def num_steps(self) -> int:
        return self.config.num_steps

    def step_for_sigma(self, sigmas: Sequence[float] | np.ndarray) -> np.ndarray:
        """Fractional training steps for noise levels (float64, same shape as ``sigmas``).

        Linear in ``sqrt(abar)`` between neighbouring training steps; raises for a level
        outside the trained range ``[sigma_0, sigma_{T-1}]``.
        """
        sigmas = np.asarray(sigmas, dtype=np.float64)
        root_abar = np.sqrt(1.0 - sigmas**2)
        train_root = np.sqrt(self.alpha_bars)  # decreasing in t
        tol = 1e-12
        if np.any(root_abar > train_root[0] + tol) or np.any(root_abar < train_root[-1] - tol):
            raise ValueError(
                f"noise levels {np.round(sigmas, 5).tolist()} leave the trained range "
                f"[{self.sigmas[0]:.5f}, {self.sigmas[-1]:.5f}]"
            )
        steps = np.arange(self.num_steps, dtype=np.float64)
        return np.interp(root_abar, train_root[::-1], steps[::-1])

    def training_sigmas(self) -> np.ndarray:
        """All training noise levels, noisiest first, then ``0.0``: ``(T + 1,)``."""
        return np.append(self.sigmas[::-1], 0.0)

    def respaced_sigmas(self, num_steps: int) -> np.ndarray:
        """``num_steps`` training levels evenly spaced over ``0..T-1`` (both ends kept), then ``0.0``."""
        if not 1 <= num_steps <= self.num_steps:
            raise ValueError(f"steps must be between 1 and {self.num_steps}, got {num_steps}")
        if num_steps == 1:
            picks = np.array([self.num_steps - 1])
        else:
            picks = np.unique(np.round(np.linspace(0, self.num_steps - 1, num_steps)).astype(int))
        return np.append(self.sigmas[picks][::-1], 0.0)


def _ratio_range(schedule: NoiseSchedule) -> tuple[float, float]:
    """``(s_min, s_max)`` of the noise-to-signal ratio ``s = sigma / alpha`` over the training levels."""
    ratios = schedule.sigmas / np.sqrt(schedule.alpha_bars)
    return float(ratios[0]), float(ratios[-1])


def _sigmas_from_ratios(schedule: NoiseSchedule, ratios: np.ndarray) -> np.ndarray:
    """Levels ``sigma = s / sqrt(1 + s^2)`` for decreasing ratios ``s`` spanning the trained range,
    with both ends set to the training levels exactly (no rounding outside the range), then ``0.0``."""
    levels = ratios / np.sqrt(1.0 + ratios**2)
    levels[0] = schedule.sigmas[-1]
    if levels.size > 1:
        levels[-1] = schedule.sigmas[0]
    return np.append(levels, 0.0)


def _check_count(n: int) -> None:
    if n < 1:
        raise ValueError(f"steps must be at least 1, got {n}")


def karras_sigmas(schedule: NoiseSchedule, n: int, rho: float = 7.0) -> np.ndarray:
    """``n`` levels spaced as in Karras et al. 2022 (eq. 5), then ``0.0``: ``(n + 1,)`` float64.

    The spacing is applied to the VP noise-to-signal ratio ``s = sigma / alpha`` (Karras's
    sigma), between the training range's ``s_max`` (at ``sigma_{T-1}``) and ``s_min`` (at ``sigma_0``):
    ``s_i = (s_max^(1/rho) + i / (n - 1) * (s_min^(1/rho) - s_max^(1/rho)))^rho``, ``i = 0 .. n-1``,
    mapped back by ``sigma = s / sqrt(1 + s^2)``. ``n = 1`` gives ``sigma_{T-1}`` alone. Larger
    ``rho`` packs more levels near ``s_min``; ``rho = 1`` is uniform in ``s``.
    """
    _check_count(n)
    if rho <= 0:
        raise ValueError(f"rho must be positive, got {rho}")
    s_min, s_max = _ratio_range(schedule)
    ramp = np.linspace(0.0, 1.0, n)  # [0.0] for n = 1
    ratios = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    return _sigmas_from_ratios(schedule, ratios)


def log_snr_sigmas(schedule: NoiseSchedule, n: int) -> np.ndarray:
    """``n`` levels uniform in ``lambda = log(alpha / sigma)`` (half the log-SNR), then ``0.0``.

    ``lambda_i = lambda_min + i / (n - 1) * (lambda_max - lambda_min)`` between the noisiest and
    the cleanest training level, ``sigma = sqrt(1 / (1 + exp(2 lambda)))``; equivalently the
    ratios ``s = exp(-lambda)`` are geometric. DPM-Solver's default spacing. ``(n + 1,)`` float64.
    """
    _check_count(n)
    s_min, s_max = _ratio_range(schedule)
    ramp = np.linspace(0.0, 1.0, n)  # [0.0] for n = 1
    ratios = np.exp(np.log(s_max) + ramp * (np.log(s_min) - np.log(s_max)))
    return _sigmas_from_ratios(schedule, ratios)


def sigmas_from_betas(betas: Sequence[float]) -> np.ndarray:
    """Noise levels of a user-defined beta schedule, noisiest first, then ``0.0``: ``(N + 1,)``."""
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size == 0 or np.any(betas <= 0) or np.any(betas >= 1):
        raise ValueError("betas must be a non-empty list of values in (0, 1)")
    alpha_bars = np.cumprod(1.0 - betas)
    return np.append(np.sqrt(1.0 - alpha_bars)[::-1], 0.0)
