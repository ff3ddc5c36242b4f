"""Sampler names: what a name (built-in or stored) or an explicit schedule stands for.

A :class:`SamplingSchedule` is a solver of :data:`~audiodiff.diffusion.sampling.SAMPLER_FUNCTIONS`
and the noise levels it walks. :func:`resolve_sampling_schedule` turns what a caller passes
(``"fast"``, ``"ddim-karras"``, a stored schedule's name, a schedule) into one,
:class:`StepTable` maps its levels to the network's training steps once, before sampling, and
:func:`run_sampling_schedule` walks it from seeded noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from audiodiff.diffusion.noise import Seed, row_seeds
from audiodiff.diffusion.positional_noise import PositionalNoise
from audiodiff.diffusion.sampling import SAMPLER_FUNCTIONS, EpsFn, StepCallback
from audiodiff.diffusion.schedule import NoiseSchedule, karras_sigmas, log_snr_sigmas, sigmas_from_betas

#: Sampler names: ``fast`` and ``ddpm`` (ancestral), then the deterministic ODE samplers ``ddim``
#: and ``dpmpp-2m`` on evenly spaced training levels or, with a suffix, on Karras / log-SNR levels.
SAMPLERS = ("fast", "ddpm", "ddim", "ddim-karras", "ddim-log-snr", "dpmpp-2m", "dpmpp-2m-karras", "dpmpp-2m-log-snr")


@dataclass(frozen=True)
class SamplingSchedule:
    """A solver and the explicit noise levels it walks: what a stored schedule holds.

    ``sampler`` is a key of :data:`~audiodiff.diffusion.sampling.SAMPLER_FUNCTIONS`
    (``ancestral``, ``ddim``, ``dpmpp-2m``); ``sigmas`` ``(N + 1,)`` decreases strictly and ends
    at ``0.0`` (``N`` network calls). ``metric``, ``score`` and ``data`` record how a searched
    schedule was chosen (the metric's name, its mean over the clips, the data folder's name);
    they do not change the audio. Pass one as ``sampler=`` to ``AudioDiffusion.vocode`` to
    sample with explicit levels.
    """

    sampler: str
    sigmas: tuple[float, ...]
    metric: str | None = None
    score: float | None = None
    data: str | None = None

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLER_FUNCTIONS:
            raise ValueError(f"schedule sampler {self.sampler!r} is not one of {list(SAMPLER_FUNCTIONS)}")
        levels = tuple(float(s) for s in self.sigmas)
        if (len(levels) < 2 or levels[-1] != 0.0 or levels[0] >= 1.0
                or any(b >= a for a, b in zip(levels, levels[1:]))):
            raise ValueError(f"schedule sigmas must decrease strictly from below 1 to 0.0, got {list(levels)}")
        object.__setattr__(self, "sigmas", levels)
        if self.score is not None:
            object.__setattr__(self, "score", float(self.score))

    @property
    def steps(self) -> int:
        """Network calls per sample: the number of nonzero levels."""
        return len(self.sigmas) - 1

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"sampler": self.sampler, "sigmas": list(self.sigmas)}
        extras = {"metric": self.metric, "score": self.score, "data": self.data}
        data.update({k: v for k, v in extras.items() if v is not None})
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SamplingSchedule":
        score = data.get("score")
        if score is not None and not math.isfinite(float(score)):
            raise ValueError(f"schedule score must be finite, got {score}")
        return cls(sampler=str(data["sampler"]), sigmas=tuple(data["sigmas"]), metric=data.get("metric"),
                   score=score, data=data.get("data"))


def solver_name(sampler: str) -> str:
    """The :data:`SAMPLER_FUNCTIONS` key of a built-in sampler name (``fast``/``ddpm``: ancestral)."""
    if sampler in ("fast", "ddpm"):
        return "ancestral"
    return sampler.removesuffix("-karras").removesuffix("-log-snr")


def builtin_sigmas(sampler: str, steps: int | None, noise_schedule: NoiseSchedule, fast_betas: Sequence[float],
                   stored: Mapping[str, SamplingSchedule]) -> np.ndarray:
    """Levels ``(N + 1,)`` float64 of a built-in sampler name; ``stored`` only names the model's
    stored schedules in the error for an unknown name (see ``AudioDiffusion.sigmas``)."""
    if sampler == "fast":
        if steps is not None and steps != len(fast_betas):
            raise ValueError(
                f"the fast sampler uses this model's {len(fast_betas)}-step schedule; "
                f"use --sampler ddpm, ddim or dpmpp-2m for {steps} steps"
            )
        return sigmas_from_betas(fast_betas)
    if sampler == "ddpm":
        return noise_schedule.respaced_sigmas(steps or noise_schedule.num_steps)
    if sampler not in SAMPLERS:
        names = ", ".join(stored) or "none"
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)} "
                         f"or a schedule stored in this model (stored: {names})")
    n = len(fast_betas) if steps is None else steps
    if sampler.endswith("-karras"):
        return karras_sigmas(noise_schedule, n)
    if sampler.endswith("-log-snr"):
        return log_snr_sigmas(noise_schedule, n)
    return noise_schedule.respaced_sigmas(n)


def resolve_sampling_schedule(sampler: str | SamplingSchedule, steps: int | None, noise_schedule: NoiseSchedule,
                              fast_betas: Sequence[float], stored: Mapping[str, SamplingSchedule]) -> SamplingSchedule:
    """The solver and levels ``sampler`` stands for: a built-in name, the name of one of the
    ``stored`` schedules, or a :class:`SamplingSchedule` itself. A ``ValueError`` for an unknown
    name, a step count it cannot take, or levels outside ``noise_schedule``'s trained range."""
    if isinstance(sampler, SamplingSchedule):
        noise_schedule.step_for_sigma(sampler.sigmas[:-1])  # raises outside the trained range
        chosen = sampler
    elif sampler in stored:
        chosen = stored[sampler]
    else:
        sigmas = builtin_sigmas(sampler, steps, noise_schedule, fast_betas, stored)
        return SamplingSchedule(solver_name(sampler), tuple(sigmas))
    if steps is not None and steps != chosen.steps:
        what = f"schedule {sampler!r}" if isinstance(sampler, str) else "this schedule"
        raise ValueError(f"{what} has {chosen.steps} steps; leave out steps (or --steps) or pass {chosen.steps}")
    return chosen


class StepTable:
    """The (fractional) training step of each noise level a sampler walks, computed once.

    Built before sampling from the levels ``sigmas`` (``(N + 1,)``, ending at 0), so a sampler
    step looks its level up instead of interpolating the schedule again. Called as a step
    function: ``(x (B, T), sigma) -> steps (B,)`` float32 on ``x``'s device. A level outside
    the table (none of the samplers asks for one) is computed and remembered.
    """

    def __init__(self, noise_schedule: NoiseSchedule, sigmas: Sequence[float]) -> None:
        self.noise_schedule = noise_schedule
        levels = [float(s) for s in sigmas if float(s) > 0.0]
        self.steps: dict[float, float] = dict(zip(levels, noise_schedule.step_for_sigma(levels).tolist()))

    def step(self, sigma: float) -> float:
        """The training step of level ``sigma``."""
        if sigma not in self.steps:
            self.steps[sigma] = float(self.noise_schedule.step_for_sigma([sigma])[0])
        return self.steps[sigma]

    def __call__(self, x: Tensor, sigma: float) -> Tensor:
        return torch.full((x.shape[0],), self.step(sigma), device=x.device, dtype=torch.float32)


def run_sampling_schedule(eps_fn: EpsFn, schedule: SamplingSchedule, shape: tuple[int, int], *, seed: Seed,
                          device: torch.device, callback: StepCallback | None = None,
                          noise_std: Tensor | None = None, offset: int | Sequence[int] = 0) -> Tensor:
    """Walk ``schedule`` with ``eps_fn`` from seeded noise of ``shape`` ``(B, T)``; returns ``(B, T)``.

    The ancestral sampler starts from standard normal noise, as DiffWave does; the deterministic
    ones from noise of the first level's standard deviation ``sigmas[0]``. ``noise_std`` ``(B, T)``
    scales the starting noise and every fresh draw (PriorGrad's data-dependent prior).

    Seeded (``seed`` an int or one per row), the noise is
    :class:`~audiodiff.diffusion.positional_noise.PositionalNoise`: draw 0 is the start, draw ``d``
    the ``d``-th fresh noise, and sample ``t`` of row ``k`` is the noise of position ``offset + t``
    (``offset`` one int, or one per row), whatever the span: so a window of a mel vocoded with
    its offset sees the same noise as the whole. Unseeded (``None``), the noise comes from the
    global RNG on ``device`` (as the reference implementation draws it).
    """
    sigmas = np.asarray(schedule.sigmas, dtype=np.float64)
    batch, length = shape
    if seed is None:
        noise = torch.randn(*shape, device=device)
        def draw_fresh(like: Tensor) -> Tensor:
            return torch.randn(like.shape, device=like.device)
    else:
        offsets = [offset] * batch if isinstance(offset, int) else list(offset)
        positional = PositionalNoise.per_row(row_seeds(seed, batch), offsets, length, device)
        noise = positional.initial()
        draw_fresh = positional.fresh
    if schedule.sampler != "ancestral":
        # A deterministic solver starts from x's own distribution at the first level,
        # alpha * x0 + sigma * z; alpha^2 Var[x0] is neglected (under 0.02 for speech at the
        # base schedule's first level, sigma = 0.85). DiffWave's ancestral sampler starts from
        # N(0, 1) and its fresh noise corrects the excess; an ODE solver would carry it to
        # the end (measured: DDIM, log-SNR levels, 6 steps, log-mel L1 1.70 -> 1.14).
        noise = noise * float(sigmas[0])
    if noise_std is not None:  # PriorGrad: every draw from N(0, Sigma)
        noise = noise * noise_std.to(noise.device, noise.dtype)

    def fresh_noise(like: Tensor) -> Tensor:
        fresh = draw_fresh(like)
        return fresh if noise_std is None else fresh * noise_std.to(fresh.device, fresh.dtype)

    return SAMPLER_FUNCTIONS[schedule.sampler](eps_fn, noise, sigmas, noise_fn=fresh_noise, callback=callback)
