"""Noise schedules: float64 data, published fast-sampling alignment, level <-> step mapping."""

from __future__ import annotations

import numpy as np
import pytest

from audiodiff.diffusion.schedule import (
    DIFFWAVE_FAST_BETAS_BASE,
    DIFFWAVE_FAST_BETAS_LARGE,
    SCHEDULES,
    NoiseSchedule,
    ScheduleConfig,
    karras_sigmas,
    log_snr_sigmas,
    sigmas_from_betas,
)

#: DiffWave's fast-sampling steps for the base schedule, as the reference implementation aligns them.
PUBLISHED_FAST_STEPS_BASE = [0.0, 0.894, 4.087, 10.452, 22.992, 42.919]


def reference_alignment(training_betas, inference_betas) -> np.ndarray:
    """The alignment loop of ``diffwave/inference.py`` (PyPI 0.1.7), copied (kept in float64)."""
    training_noise_schedule = np.array(training_betas)
    inference_noise_schedule = np.array(inference_betas)
    talpha = 1 - training_noise_schedule
    talpha_cum = np.cumprod(talpha)
    beta = inference_noise_schedule
    alpha = 1 - beta
    alpha_cum = np.cumprod(alpha)
    T = []
    for s in range(len(inference_noise_schedule)):
        for t in range(len(training_noise_schedule) - 1):
            if talpha_cum[t + 1] <= alpha_cum[s] <= talpha_cum[t]:
                twiddle = (talpha_cum[t] ** 0.5 - alpha_cum[s] ** 0.5) / (talpha_cum[t] ** 0.5 - talpha_cum[t + 1] ** 0.5)
                T.append(t + twiddle)
                break
    return np.array(T)


def aligned_steps(schedule: NoiseSchedule) -> np.ndarray:
    """Fractional training steps of the fast schedule, least noisy first."""
    return schedule.step_for_sigma(sigmas_from_betas(schedule.config.fast_betas)[:-1][::-1])


# -------------------------------------------------------------------- data
@pytest.mark.parametrize("name", ["base", "large"])
def test_arrays_are_float64(name):
    schedule = NoiseSchedule(SCHEDULES[name])
    for array in (schedule.betas, schedule.alpha_bars, schedule.sigmas):
        assert array.dtype == np.float64 and array.shape == (schedule.num_steps,)
    assert sigmas_from_betas([0.1, 0.2]).dtype == np.float64
    assert schedule.step_for_sigma([0.5]).dtype == np.float64
    assert schedule.training_sigmas().dtype == np.float64
    assert schedule.respaced_sigmas(6).dtype == np.float64


def test_base_betas_are_the_papers():
    schedule = NoiseSchedule(SCHEDULES["base"])
    assert schedule.num_steps == 50
    assert schedule.betas[0] == 1e-4 and schedule.betas[-1] == 0.05
    np.testing.assert_allclose(np.diff(schedule.betas), (0.05 - 1e-4) / 49, rtol=1e-9)
    np.testing.assert_array_equal(schedule.betas, np.linspace(1e-4, 0.05, 50))
    np.testing.assert_allclose(schedule.alpha_bars, np.cumprod(1 - np.linspace(1e-4, 0.05, 50)), rtol=0, atol=0)
    np.testing.assert_allclose(schedule.sigmas**2 + schedule.alpha_bars, 1.0, rtol=0, atol=1e-15)
    assert schedule.sigmas[0] == pytest.approx(0.01, rel=1e-9)  # sqrt(beta_0)


def test_large_schedule():
    schedule = NoiseSchedule(SCHEDULES["large"])
    assert schedule.num_steps == 200
    np.testing.assert_array_equal(schedule.betas, np.linspace(1e-4, 0.02, 200))
    assert SCHEDULES["large"].fast_betas == DIFFWAVE_FAST_BETAS_LARGE


def test_sigmas_from_betas():
    sigmas = sigmas_from_betas([0.1, 0.2])
    np.testing.assert_allclose(sigmas, [np.sqrt(1 - 0.9 * 0.8), np.sqrt(0.1), 0.0], rtol=1e-15)
    for bad in ([], [0.0, 0.1], [0.5, 1.0], [[0.1]]):
        with pytest.raises(ValueError):
            sigmas_from_betas(bad)


# ---------------------------------------------------------------- alignment
def test_base_fast_steps_match_published_values():
    schedule = NoiseSchedule(SCHEDULES["base"])
    assert schedule.config.fast_betas == DIFFWAVE_FAST_BETAS_BASE
    steps = aligned_steps(schedule)
    np.testing.assert_array_equal(np.round(steps, 3), PUBLISHED_FAST_STEPS_BASE)


@pytest.mark.parametrize("name", ["base", "large"])
def test_fast_steps_match_reference_loop(name):
    schedule = NoiseSchedule(SCHEDULES[name])
    ours = aligned_steps(schedule)
    theirs = reference_alignment(schedule.betas.tolist(), schedule.config.fast_betas)
    assert theirs.shape == ours.shape == (6,)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)


def test_alignment_of_custom_schedule_matches_reference_loop():
    config = ScheduleConfig(num_steps=100, beta_start=2e-4, beta_end=0.03, fast_betas=(3e-4, 0.004, 0.05, 0.3))
    schedule = NoiseSchedule(config)
    np.testing.assert_allclose(
        aligned_steps(schedule), reference_alignment(schedule.betas, config.fast_betas), rtol=0, atol=1e-9
    )


@pytest.mark.parametrize("name", ["base", "large"])
def test_training_sigmas_map_to_integer_steps(name):
    schedule = NoiseSchedule(SCHEDULES[name])
    steps = schedule.step_for_sigma(schedule.sigmas)
    # sqrt(1 - sigma^2) round-trips sqrt(abar) to within ~1e-16, so the steps are integers to
    # ~1e-14 in float64 and exactly integers in the float32 the network receives
    np.testing.assert_allclose(steps, np.arange(schedule.num_steps), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(steps.astype(np.float32), np.arange(schedule.num_steps, dtype=np.float32))


def test_step_for_sigma_is_monotonic_and_keeps_shape():
    schedule = NoiseSchedule(SCHEDULES["base"])
    levels = np.linspace(schedule.sigmas[0], schedule.sigmas[-1], 37)
    steps = schedule.step_for_sigma(levels)
    assert steps.shape == (37,)
    assert np.all(np.diff(steps) > 0)
    assert schedule.step_for_sigma(np.full((2, 3), 0.5)).shape == (2, 3)


def test_out_of_range_level_raises():
    schedule = NoiseSchedule(SCHEDULES["base"])
    with pytest.raises(ValueError):
        schedule.step_for_sigma([0.0])  # below sigma_0 = 0.01
    with pytest.raises(ValueError):
        schedule.step_for_sigma([0.5, 0.99])  # above sigma_49 ~ 0.85
    with pytest.raises(ValueError):
        schedule.step_for_sigma([schedule.sigmas[0] * 0.9])


# ---------------------------------------------------------------- respacing
@pytest.mark.parametrize("name", ["base", "large"])
@pytest.mark.parametrize("steps", [1, 2, 6, 25])
def test_respaced_sigmas(name, steps):
    schedule = NoiseSchedule(SCHEDULES[name])
    sigmas = schedule.respaced_sigmas(steps)
    assert sigmas.shape == (steps + 1,)
    assert sigmas[-1] == 0.0
    assert np.all(np.diff(sigmas) < 0)
    assert sigmas[0] == schedule.sigmas[-1]  # always starts from the noisiest training level
    assert set(sigmas[:-1]) <= set(schedule.sigmas)
    if steps > 1:
        assert sigmas[-2] == schedule.sigmas[0]


@pytest.mark.parametrize("name", ["base", "large"])
def test_respaced_all_steps_is_training_sigmas(name):
    schedule = NoiseSchedule(SCHEDULES[name])
    full = schedule.respaced_sigmas(schedule.num_steps)
    np.testing.assert_array_equal(full, schedule.training_sigmas())
    np.testing.assert_array_equal(full, np.append(schedule.sigmas[::-1], 0.0))


def test_respaced_out_of_range_raises():
    schedule = NoiseSchedule(SCHEDULES["base"])
    for bad in (0, 51):
        with pytest.raises(ValueError):
            schedule.respaced_sigmas(bad)


def test_config_round_trip_and_validation():
    config = SCHEDULES["large"]
    assert ScheduleConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError):
        ScheduleConfig(num_steps=1)
    with pytest.raises(ValueError):
        ScheduleConfig(beta_start=0.1, beta_end=0.01)


# ------------------------------------------------------------- level choosers
CHOOSERS = [karras_sigmas, log_snr_sigmas]


@pytest.mark.parametrize("name", ["base", "large"])
@pytest.mark.parametrize("n", [1, 2, 6, 25, 300])
@pytest.mark.parametrize("chooser", CHOOSERS, ids=["karras", "log-snr"])
def test_chooser_levels_span_the_trained_range(chooser, name, n):
    schedule = NoiseSchedule(SCHEDULES[name])
    sigmas = chooser(schedule, n)
    assert sigmas.dtype == np.float64 and sigmas.shape == (n + 1,)
    assert sigmas[-1] == 0.0 and np.all(np.diff(sigmas) < 0)
    assert sigmas[0] == schedule.sigmas[-1]  # starts where training's noisiest step is
    if n > 1:
        assert sigmas[-2] == schedule.sigmas[0]  # ends at the cleanest trained level
    steps = schedule.step_for_sigma(sigmas[:-1])  # raises outside the trained range
    assert abs(steps[0] - (schedule.num_steps - 1)) < 1e-12 and np.all(np.diff(steps) < 0)
    assert np.float32(steps[0]) == schedule.num_steps - 1  # what the network's float32 step sees


@pytest.mark.parametrize("name", ["base", "large"])
def test_log_snr_levels_are_uniform_in_log_snr(name):
    schedule = NoiseSchedule(SCHEDULES[name])
    n = 9
    # lambda = log(alpha / sigma) = 0.5 log(abar / (1 - abar)), from the training abar directly
    lam_train = 0.5 * np.log(schedule.alpha_bars / (1 - schedule.alpha_bars))
    expected = np.linspace(lam_train[-1], lam_train[0], n)
    levels = log_snr_sigmas(schedule, n)[:-1]
    np.testing.assert_allclose(np.log(np.sqrt(1 - levels**2) / levels), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(levels, np.sqrt(1 / (1 + np.exp(2 * expected))), rtol=1e-12)


@pytest.mark.parametrize("rho", [1.0, 3.0, 7.0])
def test_karras_levels_are_uniform_in_ratio_to_the_one_over_rho(rho):
    schedule = NoiseSchedule(SCHEDULES["base"])
    levels = karras_sigmas(schedule, 8, rho=rho)[:-1]
    warped = (levels / np.sqrt(1 - levels**2)) ** (1 / rho)
    np.testing.assert_allclose(np.diff(warped), np.full(7, np.diff(warped).mean()), rtol=1e-9)


def test_karras_packs_levels_towards_low_noise_as_rho_grows():
    schedule = NoiseSchedule(SCHEDULES["base"])
    assert np.all(karras_sigmas(schedule, 6, rho=7)[1:-2] < karras_sigmas(schedule, 6, rho=1)[1:-2])


#: beta = (0.2, 0.75): abar = (0.8, 0.2), so sigma / alpha runs over exactly [0.5, 2].
TINY = NoiseSchedule(ScheduleConfig(num_steps=2, beta_start=0.2, beta_end=0.75, fast_betas=(0.5,)))


def test_chooser_golden_values():
    r5 = np.sqrt(5.0)
    # log-SNR: ratios 2, 1, 0.5 (geometric); sigma = s / sqrt(1 + s^2)
    np.testing.assert_allclose(log_snr_sigmas(TINY, 3), [2 / r5, 1 / np.sqrt(2), 1 / r5, 0.0], rtol=1e-15, atol=0)
    # Karras rho = 1: ratios 2, 1.25, 0.5 -> 1.25 / sqrt(1 + 1.5625) = 5 / sqrt(41)
    np.testing.assert_allclose(karras_sigmas(TINY, 3, rho=1), [2 / r5, 5 / np.sqrt(41), 1 / r5, 0.0], rtol=1e-15)
    # Karras rho = 2: sqrt ratios sqrt(2), 1/sqrt(2) -> midpoint squared 9/8 -> 9 / sqrt(145)
    np.testing.assert_allclose(karras_sigmas(TINY, 3, rho=2), [2 / r5, 9 / np.sqrt(145), 1 / r5, 0.0], rtol=1e-15)
    np.testing.assert_array_equal(karras_sigmas(TINY, 1), [TINY.sigmas[-1], 0.0])
    np.testing.assert_array_equal(log_snr_sigmas(TINY, 1), [TINY.sigmas[-1], 0.0])


def test_chooser_bad_arguments_raise():
    for bad in (0, -3):
        with pytest.raises(ValueError):
            karras_sigmas(TINY, bad)
        with pytest.raises(ValueError):
            log_snr_sigmas(TINY, bad)
    with pytest.raises(ValueError):
        karras_sigmas(TINY, 4, rho=0)
