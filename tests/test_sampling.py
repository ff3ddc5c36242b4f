"""Samplers: ancestral (DDPM), DDIM and DPM-Solver++(2M), driven by oracle and analytic noise predictors."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from audiodiff.diffusion.sampling import SAMPLER_FUNCTIONS, sample_ancestral, sample_ddim, sample_dpmpp_2m
from audiodiff.diffusion.schedule import SCHEDULES, NoiseSchedule, karras_sigmas, log_snr_sigmas, sigmas_from_betas
from audiodiff.pipeline import SAMPLERS
from conftest import make_tiny_model

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


# ------------------------------------------------------ DDIM and DPM-Solver++(2M)
ODE_SAMPLERS = [sample_ddim, sample_dpmpp_2m]
ODE_IDS = ["ddim", "dpmpp-2m"]
LEVELS = {
    "fast6": sigmas_from_betas(SCHEDULES["base"].fast_betas),
    "ddpm50": BASE.training_sigmas(),
    "uniform3": BASE.respaced_sigmas(3),
    "karras7": karras_sigmas(BASE, 7),
    "log-snr5": log_snr_sigmas(BASE, 5),
    "one-step": np.array([0.7, 0.0]),
    "arbitrary": np.array([0.999, 0.3, 0.29, 1e-3, 0.0]),  # outside the trained range: the math still holds
}


@pytest.mark.parametrize("sigmas", LEVELS.values(), ids=LEVELS.keys())
@pytest.mark.parametrize("sampler", ODE_SAMPLERS, ids=ODE_IDS)
@pytest.mark.parametrize("noise_scale", [None, 3.0], ids=["x_t", "any-noise"])
def test_ode_samplers_with_an_oracle_return_the_clean_signal(sampler, sigmas, noise_scale):
    # The oracle's data prediction (x - sigma eps) / alpha is x0 for *any* x, so both solvers
    # land on x0 from a proper x_t or from arbitrary noise, whatever the levels.
    x0 = clean_signal()
    seen: list[float] = []
    if noise_scale is None:
        noise = start(x0, float(sigmas[0]))
    else:
        noise = noise_scale * torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    out = sampler(oracle(x0, seen), noise, sigmas, clip=None)
    assert out.shape == x0.shape
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(seen, sigmas[:-1])  # one call per level, noisiest first


GAUSS_STD = 0.5


def gaussian_eps(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The exact noise predictor E[eps | x] for data x0 ~ N(0, s^2): sigma x / (alpha^2 s^2 + sigma^2)."""
    return sigma * x / ((1.0 - sigma**2) * GAUSS_STD**2 + sigma**2)


def gaussian_run(sampler, sigmas, z: torch.Tensor) -> torch.Tensor:
    """Start from the exact marginal at ``sigmas[0]``, std sqrt(alpha^2 s^2 + sigma^2) (1 only at sigma = 1)."""
    top = float(sigmas[0])
    return sampler(gaussian_eps, math.sqrt((1 - top**2) * GAUSS_STD**2 + top**2) * z, sigmas, clip=None)


def gaussian_exact(sigmas, z: torch.Tensor) -> torch.Tensor:
    """What an exact solver returns for ``gaussian_run``.

    For Gaussian data the probability-flow ODE is linear and keeps each sample's z-score:
    x(sigma) = z sqrt(alpha^2 s^2 + sigma^2), so at the last level sigma_min before 0 it is exact;
    the final step returns the data prediction there, alpha s^2 x / (alpha^2 s^2 + sigma^2).
    """
    low = float(sigmas[-2])
    var = (1 - low**2) * GAUSS_STD**2 + low**2
    return math.sqrt(1 - low**2) * GAUSS_STD**2 / math.sqrt(var) * z


def gaussian_z() -> torch.Tensor:
    return torch.randn(4, 1000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


@pytest.mark.parametrize("sampler", ODE_SAMPLERS, ids=ODE_IDS)
def test_many_steps_map_noise_to_the_data_distribution(sampler):
    z = gaussian_z()
    sigmas = log_snr_sigmas(BASE, 2000)
    out = gaussian_run(sampler, sigmas, z)
    torch.testing.assert_close(out, gaussian_exact(sigmas, z), atol=5e-3, rtol=0)
    torch.testing.assert_close(out, GAUSS_STD * z, atol=5e-3, rtol=0)  # sigma_min = 0.01 costs 2e-4 s
    assert abs(float(out.std()) / float(z.std()) - GAUSS_STD) < 2e-3


@pytest.mark.parametrize("chooser", [karras_sigmas, log_snr_sigmas])
def test_dpmpp_2m_is_closer_than_ddim_at_five_steps(chooser):
    z = gaussian_z()
    reference = gaussian_run(sample_dpmpp_2m, log_snr_sigmas(BASE, 2000), z)
    sigmas = chooser(BASE, 5)
    ddim_error = float((gaussian_run(sample_ddim, sigmas, z) - reference).abs().max())
    dpm_error = float((gaussian_run(sample_dpmpp_2m, sigmas, z) - reference).abs().max())
    assert ddim_error > 0.1  # five DDIM steps are visibly off (0.2-0.3 here) ...
    assert dpm_error < 0.5 * ddim_error  # ... and 2M is 3-10x closer (0.29 karras, 0.11 log-SNR)


def test_orders_of_accuracy():
    # Uniform steps in lambda: doubling them halves DDIM's error (first order) and quarters
    # DPM-Solver++(2M)'s (second order), measured against the exact solution.
    z = gaussian_z()

    def order(sampler, n):
        levels = [log_snr_sigmas(BASE, k) for k in (n, 2 * n)]
        errors = [float((gaussian_run(sampler, s, z) - gaussian_exact(s, z)).abs().max()) for s in levels]
        return math.log2(errors[0] / errors[1])

    assert 0.9 < order(sample_ddim, 40) < 1.1
    assert 1.8 < order(sample_dpmpp_2m, 40) < 2.2


def test_ddim_step_is_the_closed_form():
    # x_next = alpha_next x0 + sigma_next eps with x0 = (x - sigma eps) / alpha (Song et al. eq. 12, eta = 0)
    x = torch.randn(2, 16, dtype=torch.float64)
    eps = torch.randn(2, 16, dtype=torch.float64)
    s, s_next = 0.8, 0.3
    a, a_next = math.sqrt(1 - s**2), math.sqrt(1 - s_next**2)
    seen: list[torch.Tensor] = []

    def eps_fn(y, sigma):
        seen.append(y.clone())
        return eps

    sample_ddim(eps_fn, x, [s, s_next, 0.0], clip=None)
    torch.testing.assert_close(seen[1], a_next * (x - s * eps) / a + s_next * eps)


def test_dpmpp_2m_matches_algorithm_2_on_a_hand_worked_case():
    # An eps_fn whose data prediction is a known constant d_k at each level k; three levels
    # before 0: first-order step, then one second-order step, then the final x0.
    levels = [0.9, 0.5, 0.2, 0.0]
    targets = {0.9: 0.3, 0.5: -0.2, 0.2: 0.7}
    seen: list[float] = []

    def eps_fn(x, sigma):
        seen.append(float(x.flatten()[0]))
        return (x - math.sqrt(1 - sigma**2) * targets[sigma]) / sigma

    out = sample_dpmpp_2m(eps_fn, torch.full((1, 1), 1.3, dtype=torch.float64), levels, clip=None)
    alpha = [math.sqrt(1 - s**2) for s in levels[:3]]
    lam = [math.log(a / s) for a, s in zip(alpha, levels)]
    h0, h1 = lam[1] - lam[0], lam[2] - lam[1]
    x1 = levels[1] / levels[0] * 1.3 - alpha[1] * math.expm1(-h0) * 0.3
    r = h0 / h1
    d = (1 + 1 / (2 * r)) * -0.2 - 1 / (2 * r) * 0.3
    x2 = levels[2] / levels[1] * x1 - alpha[2] * math.expm1(-h1) * d
    assert seen == pytest.approx([1.3, x1, x2], abs=1e-12)
    assert float(out) == pytest.approx(0.7, abs=1e-12)


@pytest.mark.parametrize("sampler", ODE_SAMPLERS, ids=ODE_IDS)
def test_ode_samplers_are_deterministic_and_draw_no_noise(sampler):
    def no_noise(x):
        raise AssertionError("a deterministic sampler drew noise")

    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(5))
    sigmas = BASE.respaced_sigmas(5)
    first = sampler(lambda y, s: 0.1 * y, x, sigmas, noise_fn=no_noise)
    assert torch.equal(first, sampler(lambda y, s: 0.1 * y, x.clone(), sigmas, noise_fn=no_noise))
    assert not torch.equal(first, sampler(lambda y, s: 0.1 * y, x + 0.01, sigmas))


@pytest.mark.parametrize("sampler", ODE_SAMPLERS, ids=ODE_IDS)
def test_clip_bounds_the_clean_estimate_not_the_noisy_audio(sampler):
    seen: list[torch.Tensor] = []

    def eps_fn(x, sigma):
        seen.append(x.clone())
        return torch.full_like(x, -100.0)  # an x0 prediction far above 1

    out = sampler(eps_fn, torch.full((1, 8), 3.0), [0.8, 0.5, 0.0], clip=0.5)
    assert float(seen[1].min()) > 1.0  # the noisy x between steps is left alone
    assert torch.equal(out, torch.full((1, 8), 0.5))  # the returned x0 is clamped
    unclipped = sampler(eps_fn, torch.full((1, 8), 3.0), [0.8, 0.5, 0.0], clip=None)
    assert float(unclipped.min()) > 100.0


@pytest.mark.parametrize("name", list(SAMPLER_FUNCTIONS))
def test_registry_samplers_share_the_signature_and_step_callback(name):
    sampler = SAMPLER_FUNCTIONS[name]
    assert list(inspect.signature(sampler).parameters) == list(inspect.signature(sample_ancestral).parameters)
    events: list[tuple[int, int]] = []
    sigmas = sigmas_from_betas(SCHEDULES["base"].fast_betas)
    sampler(lambda x, s: torch.zeros_like(x), torch.zeros(1, 4), sigmas, callback=lambda i, n: events.append((i, n)))
    assert events == [(i, 6) for i in range(1, 7)]
    with pytest.raises(ValueError):
        sampler(lambda x, s: x, torch.zeros(1, 4), [0.1, 0.5, 0.0])


def test_registry_names_and_is_read_only():
    assert SAMPLER_FUNCTIONS == {"ancestral": sample_ancestral, "ddim": sample_ddim, "dpmpp-2m": sample_dpmpp_2m}
    with pytest.raises(TypeError):
        SAMPLER_FUNCTIONS["mine"] = sample_ddim  # type: ignore[index]


# ------------------------------------------------------------ AudioDiffusion
NEW_SAMPLERS = ["ddim", "ddim-karras", "ddim-log-snr", "dpmpp-2m", "dpmpp-2m-karras", "dpmpp-2m-log-snr"]


@pytest.fixture(scope="module")
def tiny():
    model = make_tiny_model()
    mel = torch.randn(2, model.config.denoiser.n_mels, 3, generator=torch.Generator().manual_seed(0)) - 5
    return model, mel


@pytest.mark.parametrize("sampler", NEW_SAMPLERS)
def test_model_vocodes_with_each_new_sampler(tiny, sampler):
    model, mel = tiny
    events: list[tuple[int, int]] = []
    audio = model.vocode(mel, sampler=sampler, seed=3, callback=lambda i, n: events.append((i, n)))
    assert audio.shape == (2, 3 * model.hop_length)
    assert bool(torch.isfinite(audio).all()) and float(audio.abs().max()) <= 1.0
    assert events == [(i, 6) for i in range(1, 7)]  # default: as many steps as the fast schedule
    assert torch.equal(audio, model.vocode(mel, sampler=sampler, seed=3))
    assert not torch.equal(audio, model.vocode(mel, sampler=sampler, seed=4))
    assert model.vocode(mel, sampler=sampler, steps=2, seed=3).shape == audio.shape


@pytest.mark.parametrize("sampler", NEW_SAMPLERS)
@pytest.mark.parametrize("steps", [None, 1, 2, 6, 50])
def test_model_levels_stay_in_the_trained_range(sampler, steps):
    model = make_tiny_model()
    sigmas = model.sigmas(sampler, steps)
    assert len(sigmas) == (steps or 6) + 1 and sigmas[-1] == 0.0
    assert sigmas[0] == model.schedule.sigmas[-1]
    model.schedule.step_for_sigma(sigmas[:-1])  # raises outside the trained range
    suffix = sampler.rsplit("-", 1)[-1] if sampler.endswith(("-karras", "-log-snr")) else ""
    expected = {"karras": karras_sigmas, "snr": log_snr_sigmas}.get(suffix)
    wanted = expected(model.schedule, steps or 6) if expected else model.schedule.respaced_sigmas(steps or 6)
    np.testing.assert_array_equal(sigmas, wanted)


def test_model_sampler_names_and_errors():
    model = make_tiny_model()
    assert SAMPLERS[:2] == ("fast", "ddpm") and set(NEW_SAMPLERS) == set(SAMPLERS[2:])
    np.testing.assert_array_equal(model.sigmas("fast"), sigmas_from_betas(SCHEDULES["base"].fast_betas))
    np.testing.assert_array_equal(model.sigmas("ddpm"), BASE.training_sigmas())
    with pytest.raises(ValueError, match="unknown sampler"):
        model.sigmas("ddim-linear")
    with pytest.raises(ValueError):
        model.sigmas("ddim", 51)  # more than the training steps
    with pytest.raises(ValueError):
        model.sigmas("dpmpp-2m-karras", 0)
    assert len(model.sigmas("dpmpp-2m-log-snr", 200)) == 201  # fractional steps allow more levels


def test_cli_offers_every_sampler():
    from audiodiff.cli import build_parser

    parser = build_parser()
    for command in ("vocode", "generate", "eval"):
        args = parser.parse_args([command, "x", "--model", "m.safetensors", "--sampler", "dpmpp-2m-karras"]
                                 if command == "vocode" else [command, "--model", "m", "--sampler", "ddim"])
        assert args.sampler in SAMPLERS
    sub = next(a for a in parser._actions if a.dest == "command").choices["vocode"]
    assert next(a for a in sub._actions if a.dest == "sampler").choices == list(SAMPLERS)


@pytest.mark.parametrize("sampler", ["ddim-log-snr", "dpmpp-2m-karras"])
def test_chunked_vocoding_matches_one_piece_with_ode_samplers(sampler):
    model = make_tiny_model()
    mel = torch.randn(1, model.config.denoiser.n_mels, 24, generator=torch.Generator().manual_seed(1)) - 4.0
    whole = model.vocode(mel, sampler=sampler, steps=3, seed=3, chunk_seconds=None)
    seconds = 9 * model.hop_length / model.sample_rate + 1e-9
    chunked = model.vocode(mel, sampler=sampler, steps=3, seed=3, chunk_seconds=seconds)
    assert float((chunked - whole).abs().max()) < 1e-5


@pytest.mark.parametrize("sampler, first_std", [("fast", None), ("ddpm", None), ("ddim-log-snr", "sigma"),
                                                ("dpmpp-2m-karras", "sigma")])
def test_starting_noise_matches_each_solvers_first_level(sampler, first_std):
    """Ancestral samplers start from N(0, 1) as DiffWave does; deterministic solvers from the first
    level's own noise, N(0, sigma_0^2) (the data's share alpha^2 Var[x0] is neglected)."""
    from conftest import make_tiny_model

    model = make_tiny_model()
    seen = []

    def record(x, sigma):
        seen.append((float(x.std()), sigma))
        return torch.zeros_like(x)

    model._run_sampler(record, (2, 40000), sampler=sampler, steps=None, seed=0, callback=None)
    std, sigma = seen[0]
    expected = 1.0 if first_std is None else sigma
    assert abs(std - expected) < 0.01, (std, expected)
