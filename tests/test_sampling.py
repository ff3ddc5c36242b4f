"""The ancestral sampler, driven by an oracle noise predictor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audiodiff.diffusion.sampling import sample_ancestral
from audiodiff.diffusion.schedule import SCHEDULES, NoiseSchedule, sigmas_from_betas

BASE = NoiseSchedule(SCHEDULES["base"])


def oracle(x0: torch.Tensor, seen: list | None = None):
    """``eps_fn`` that knows the clean signal: the true noise in ``x`` at level ``sigma``."""

    def eps_fn(x: torch.Tensor, sigma: float) -> torch.Tensor:
        if seen is not None:
            seen.append(sigma)
        return (x - math.sqrt(1.0 - sigma**2) * x0) / sigma

    return eps_fn


def start(x0: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    return math.sqrt(1.0 - sigma**2) * x0 + sigma * eps


def clean_signal() -> torch.Tensor:
    t = torch.arange(2000) / 2000
    # peaks above 1: clip=None must leave them alone
    return torch.stack([1.5 * torch.sin(2 * math.pi * 5 * t), 0.3 * torch.cos(2 * math.pi * 13 * t) - 0.2])


@pytest.mark.parametrize(
    "sigmas",
    [sigmas_from_betas(SCHEDULES["base"].fast_betas), BASE.training_sigmas(), BASE.respaced_sigmas(8)],
    ids=["fast6", "ddpm50", "ddpm8"],
)
def test_oracle_recovers_clean_signal(sigmas):
    x0 = clean_signal()
    seen: list[float] = []
    draws = torch.Generator().manual_seed(1)
    out = sample_ancestral(
        oracle(x0, seen), start(x0, float(sigmas[0])), sigmas, clip=None,
        noise_fn=lambda x: torch.randn(x.shape, generator=draws),
    )
    assert out.shape == x0.shape
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(seen, sigmas[:-1])  # one call per level, noisiest first


def test_deterministic_part_is_the_ddpm_posterior_mean():
    # With the true noise and no fresh noise, one step from sigma_t to sigma_prev lands on the
    # DDPM posterior mean sqrt(abar_prev) beta / (1 - abar) x0 + sqrt(alpha) (1 - abar_prev) / (1 - abar) x_t.
    x0 = clean_signal()
    s_t, s_prev = float(BASE.sigmas[10]), float(BASE.sigmas[9])
    x_t = start(x0, s_t)
    abar, abar_prev = 1 - s_t**2, 1 - s_prev**2
    alpha, beta = abar / abar_prev, 1 - abar / abar_prev
    mean = (math.sqrt(abar_prev) * beta / (1 - abar)) * x0 + (math.sqrt(alpha) * (1 - abar_prev) / (1 - abar)) * x_t
    seen_x: list[torch.Tensor] = []

    def recording(x, sigma):
        seen_x.append(x.clone())
        return oracle(x0)(x, sigma)

    out = sample_ancestral(recording, x_t, [s_t, s_prev, 0.0], clip=None, noise_fn=torch.zeros_like)
    assert len(seen_x) == 2
    torch.testing.assert_close(seen_x[1], mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_fresh_noise_variance_and_clip():
    s_t, s_prev = 0.8, 0.5
    seen_x: list[torch.Tensor] = []

    def recording(x, sigma):
        seen_x.append(x.clone())
        return torch.zeros_like(x)

    sample_ancestral(recording, torch.zeros(1, 8), [s_t, s_prev, 0.0], clip=None, noise_fn=torch.ones_like)
    abar, abar_prev = 1 - s_t**2, 1 - s_prev**2
    beta = 1 - abar / abar_prev
    expected_std = math.sqrt(beta * (1 - abar_prev) / (1 - abar))
    torch.testing.assert_close(seen_x[1], torch.full((1, 8), expected_std), atol=1e-6, rtol=0)
    # clip bounds every step's output, the final one included
    out = sample_ancestral(lambda x, s: -torch.ones_like(x) * 100, torch.zeros(1, 8), [s_t, s_prev, 0.0], clip=0.5)
    assert float(out.abs().max()) == 0.5


def test_fresh_noise_is_not_added_on_the_last_step():
    calls = []

    def noise_fn(x):
        calls.append(1)
        return torch.randn_like(x)

    sigmas = sigmas_from_betas(SCHEDULES["base"].fast_betas)
    sample_ancestral(lambda x, s: torch.zeros_like(x), torch.randn(1, 16), sigmas, noise_fn=noise_fn)
    assert len(calls) == len(sigmas) - 2


def test_same_noise_gives_same_output():
    x = torch.randn(2, 64)
    sigmas = BASE.respaced_sigmas(5)

    def run():
        g = torch.Generator().manual_seed(7)
        return sample_ancestral(lambda x, s: 0.1 * x, x, sigmas, noise_fn=lambda y: torch.randn(y.shape, generator=g))

    assert torch.equal(run(), run())


@pytest.mark.parametrize(
    "sigmas",
    [
        [0.5, 0.1],  # does not end at 0
        [0.1, 0.5, 0.0],  # increases
        [0.5, 0.5, 0.0],  # not strictly decreasing
        [1.0, 0.5, 0.0],  # starts at 1 (no signal left)
        [0.0],  # no step
        [[0.5, 0.0]],  # not 1-D
    ],
)
def test_invalid_sigmas_raise(sigmas):
    with pytest.raises(ValueError):
        sample_ancestral(lambda x, s: x, torch.zeros(1, 4), sigmas)


def test_callback_called_once_per_step():
    events: list[tuple[int, int]] = []
    sigmas = sigmas_from_betas(SCHEDULES["base"].fast_betas)
    sample_ancestral(lambda x, s: torch.zeros_like(x), torch.zeros(1, 4), sigmas, callback=lambda i, n: events.append((i, n)))
    assert events == [(i, 6) for i in range(1, 7)]
