"""Unit tests of the training objective (:mod:`audiodiff.diffusion.loss`) against hand-computed values.

Every expected number here comes from a formula written out in the test (or worked by hand in a
comment), not from the module under test: the forward process and its inverse, the L1/L2 epsilon
loss with and without PriorGrad's weighting, their gradients, the abar-weighted x0 term, and the
multi-resolution STFT loss on signals whose answer is known in closed form. All run in well under
a second (no network, no training run); tests/test_recipe_losses.py covers the same options at
the model level.
"""

from __future__ import annotations

import math

import pytest
import torch

from audiodiff.diffusion.loss import epsilon_loss, mrstft_loss, noisy_sample, predicted_x0, spectral_x0_loss
from audiodiff.diffusion.schedule import SCHEDULES, NoiseSchedule


def _returns(prediction: torch.Tensor, seen: dict | None = None):
    """A stand-in network that ignores its input and returns ``prediction`` (recording what it got)."""

    def denoise(x_t, t):
        if seen is not None:
            seen.update(x_t=x_t, t=t)
        return prediction

    return denoise


# --- the forward process and its inverse -----------------------------------------------------------

def test_noisy_sample_by_hand():
    # abar = 0.64: sqrt(abar) = 0.8, sqrt(1 - abar) = 0.6; abar = 0.36: 0.6 and 0.8
    audio = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    noise = torch.tensor([[3.0, 4.0], [1.0, -2.0]])
    x_t = noisy_sample(audio, noise, torch.tensor([0.64, 0.36]))
    expected = torch.tensor([[0.8 * 1 + 0.6 * 3, 0.8 * 2 + 0.6 * 4], [0.6 * -1 + 0.8 * 1, 0.6 * 0.5 + 0.8 * -2]])
    torch.testing.assert_close(x_t, expected)
    assert x_t.shape == audio.shape and x_t.dtype == audio.dtype


def test_noisy_sample_keeps_the_audio_dtype():
    audio = torch.randn(2, 16, dtype=torch.float64)
    x_t = noisy_sample(audio, torch.randn(2, 16, dtype=torch.float64), torch.tensor([0.5, 0.9]))
    assert x_t.dtype == torch.float64


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_predicted_x0_inverts_noisy_sample_at_every_training_step(name):
    """With the true eps, x0_hat is x0 (float64: to rounding) at every abar of the shipped schedules,
    and noising the estimate again with the same eps gives x_t back."""
    alpha_bars = torch.from_numpy(NoiseSchedule(SCHEDULES[name]).alpha_bars)  # float64, (T,)
    steps = torch.arange(alpha_bars.shape[0])
    generator = torch.Generator().manual_seed(0)
    audio = 0.3 * torch.randn(steps.shape[0], 256, generator=generator, dtype=torch.float64)
    noise = torch.randn(steps.shape[0], 256, generator=generator, dtype=torch.float64)
    abar = alpha_bars[steps]
    x_t = noisy_sample(audio, noise, abar)
    x0_hat = predicted_x0(x_t, noise, abar)
    # the noisiest steps divide by a small sqrt(abar): allow its amplification of rounding
    tolerance = 1e-12 / float(abar.min().sqrt())
    torch.testing.assert_close(x0_hat, audio, atol=tolerance, rtol=0)
    torch.testing.assert_close(noisy_sample(x0_hat, noise, abar), x_t, atol=1e-12, rtol=0)


def test_predicted_x0_by_hand():
    # x_t = 2, eps = 1, abar = 0.64: (2 - 0.6 * 1) / 0.8 = 1.75
    x0 = predicted_x0(torch.tensor([[2.0]]), torch.tensor([[1.0]]), torch.tensor([0.64]))
    torch.testing.assert_close(x0, torch.tensor([[1.75]]))


# --- the epsilon loss ----------------------------------------------------------------------------

AUDIO = torch.tensor([[0.5, -0.25], [0.0, 1.0]])
NOISE = torch.tensor([[1.0, -1.0], [0.5, 2.0]])
PREDICTION = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
# PREDICTION - NOISE = [[-1, 1], [0.5, -1]]
L1 = (1 + 1 + 0.5 + 1) / 4  # 0.875
L2 = (1 + 1 + 0.25 + 1) / 4  # 0.8125
ALPHA_BARS = torch.tensor([0.9, 0.64, 0.36, 0.1])


@pytest.mark.parametrize(("kind", "expected"), [("l1", L1), ("l2", L2)])
def test_epsilon_loss_by_hand(kind, expected):
    seen = {}
    steps = torch.tensor([1, 2])
    loss = epsilon_loss(_returns(PREDICTION, seen), AUDIO, ALPHA_BARS, steps=steps, noise=NOISE, kind=kind)
    assert loss.shape == () and loss.dtype == torch.float32
    assert float(loss) == pytest.approx(expected, abs=1e-7)
    # the network sees x_t at the requested steps' abar (0.64 and 0.36), and the steps themselves
    expected_x_t = torch.tensor([[0.8 * 0.5 + 0.6 * 1, 0.8 * -0.25 + 0.6 * -1],
                                 [0.6 * 0.0 + 0.8 * 0.5, 0.6 * 1.0 + 0.8 * 2]])
    torch.testing.assert_close(seen["x_t"], expected_x_t)
    assert torch.equal(seen["t"], steps)


def test_default_kind_is_l1():
    loss = epsilon_loss(_returns(PREDICTION), AUDIO, ALPHA_BARS, steps=torch.tensor([0, 3]), noise=NOISE)
    assert float(loss) == pytest.approx(L1, abs=1e-7)


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_a_perfect_prediction_has_zero_loss_at_any_step(kind):
    steps = torch.tensor([0, 3])
    assert float(epsilon_loss(_returns(NOISE), AUDIO, ALPHA_BARS, steps=steps, noise=NOISE, kind=kind)) == 0.0


def test_the_loss_does_not_depend_on_the_audio_for_a_fixed_prediction():
    """The target is the noise, not the audio: the audio enters only through what the network sees."""
    steps = torch.tensor([1, 2])
    a = epsilon_loss(_returns(PREDICTION), AUDIO, ALPHA_BARS, steps=steps, noise=NOISE, kind="l2")
    b = epsilon_loss(_returns(PREDICTION), 10 * AUDIO + 3, ALPHA_BARS, steps=steps, noise=NOISE, kind="l2")
    assert float(a) == float(b)


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_gradient_with_respect_to_the_prediction(kind):
    """d mean|p - n| / dp = sign(p - n) / N and d mean (p - n)^2 / dp = 2 (p - n) / N."""
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(3, 40, generator=generator)
    prediction = torch.randn(3, 40, generator=generator, requires_grad=True)
    loss = epsilon_loss(_returns(prediction), torch.randn(3, 40, generator=generator), ALPHA_BARS,
                        steps=torch.tensor([0, 1, 3]), noise=noise, kind=kind)
    loss.backward()
    error = prediction.detach() - noise
    expected = error.sign() / error.numel() if kind == "l1" else 2 * error / error.numel()
    torch.testing.assert_close(prediction.grad, expected)


def test_gradient_reaches_the_network_through_x_t():
    """For a one-parameter network ``w * x_t``, d mean (w x_t - n)^2 / dw = mean 2 (w x_t - n) x_t."""
    generator = torch.Generator().manual_seed(2)
    audio, noise = torch.randn(2, 64, generator=generator), torch.randn(2, 64, generator=generator)
    steps = torch.tensor([0, 2])
    weight = torch.tensor(0.7, requires_grad=True)
    epsilon_loss(lambda x, t: weight * x, audio, ALPHA_BARS, steps=steps, noise=noise, kind="l2").backward()
    abar = ALPHA_BARS[steps].unsqueeze(-1)
    x_t = abar.sqrt() * audio + (1 - abar).sqrt() * noise
    expected = (2 * (0.7 * x_t - noise) * x_t).mean()
    torch.testing.assert_close(weight.grad, expected)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown loss 'huber'"):
        epsilon_loss(_returns(PREDICTION), AUDIO, ALPHA_BARS, steps=torch.tensor([0, 1]), noise=NOISE, kind="huber")


def test_bad_shapes_and_steps_raise():
    with pytest.raises(RuntimeError, match="size"):  # noise of another length than the audio
        epsilon_loss(_returns(PREDICTION), AUDIO, ALPHA_BARS, steps=torch.tensor([0, 1]), noise=NOISE[:, :1].repeat(1, 3))
    with pytest.raises(RuntimeError, match="size"):  # a prediction of another length than the noise
        epsilon_loss(_returns(PREDICTION[:, :1].repeat(1, 3)), AUDIO, ALPHA_BARS, steps=torch.tensor([0, 1]), noise=NOISE)
    with pytest.raises(IndexError):  # a step past the schedule's end
        epsilon_loss(_returns(PREDICTION), AUDIO, ALPHA_BARS, steps=torch.tensor([0, 4]), noise=NOISE)


# --- drawn steps and noise -----------------------------------------------------------------------

def test_drawn_steps_and_noise_follow_the_generator():
    seen_a, seen_b, seen_c = {}, {}, {}
    audio = torch.zeros(64, 32)
    zero = torch.zeros(64, 32)
    a = epsilon_loss(_returns(zero, seen_a), audio, ALPHA_BARS, generator=torch.Generator().manual_seed(7))
    b = epsilon_loss(_returns(zero, seen_b), audio, ALPHA_BARS, generator=torch.Generator().manual_seed(7))
    epsilon_loss(_returns(zero, seen_c), audio, ALPHA_BARS, generator=torch.Generator().manual_seed(8))
    assert float(a) == float(b) and torch.equal(seen_a["x_t"], seen_b["x_t"])
    assert not torch.equal(seen_a["x_t"], seen_c["x_t"])
    steps = seen_a["t"]
    assert steps.shape == (64,) and steps.dtype == torch.int64
    assert int(steps.min()) >= 0 and int(steps.max()) <= 3 and len(set(steps.tolist())) == 4  # all of 0..3 drawn
    # silent audio: x_t = sqrt(1 - abar_t) * eps, so the noise is recovered exactly from x_t
    eps = seen_a["x_t"] / (1 - ALPHA_BARS[steps]).sqrt().unsqueeze(-1)
    # ... and the zero prediction's L1 loss is the mean |eps| of that noise
    torch.testing.assert_close(a, eps.abs().mean())


# --- PriorGrad's prior ---------------------------------------------------------------------------

def test_prior_weighting_by_hand():
    """noise_std scales the noise (the target) and weights the error by 1/std (L1) or 1/std^2 (L2)."""
    audio = torch.zeros(1, 2)
    noise = torch.tensor([[1.0, 1.0]])
    std = torch.tensor([[2.0, 0.5]])
    seen = {}
    steps = torch.tensor([1])
    # target std * eps = [2, 0.5]; prediction [1, 1]: error [-1, 0.5]
    l1 = epsilon_loss(_returns(torch.ones(1, 2), seen), audio, ALPHA_BARS, steps=steps, noise=noise, noise_std=std)
    assert float(l1) == pytest.approx((1 / 2 + 0.5 / 0.5) / 2)  # 0.75
    l2 = epsilon_loss(_returns(torch.ones(1, 2)), audio, ALPHA_BARS, steps=steps, noise=noise, noise_std=std, kind="l2")
    assert float(l2) == pytest.approx((1 / 4 + 0.25 / 0.25) / 2)  # 0.625
    # silent audio at abar 0.64: x_t = 0.6 * std * eps
    torch.testing.assert_close(seen["x_t"], torch.tensor([[1.2, 0.3]]))


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_prior_gradient_with_respect_to_the_prediction(kind):
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(2, 30, generator=generator)
    std = torch.rand(2, 30, generator=generator) + 0.2
    prediction = torch.randn(2, 30, generator=generator, requires_grad=True)
    epsilon_loss(_returns(prediction), torch.zeros(2, 30), ALPHA_BARS, steps=torch.tensor([0, 2]),
                 noise=noise, noise_std=std, kind=kind).backward()
    error = prediction.detach() - std * noise
    n = error.numel()
    expected = error.sign() / (std * n) if kind == "l1" else 2 * error / (std.square() * n)
    torch.testing.assert_close(prediction.grad, expected)


# --- the x0 term ---------------------------------------------------------------------------------

def _squared_error(generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """A per-example x0 loss with a closed form: sum of squared errors, ``(B,)``."""
    return (generated - reference).square().sum(dim=1)


def test_x0_term_by_hand():
    # abar 0.64 and 0.36; prediction = true noise + [[0.1, 0], [0, -0.2]]
    audio = torch.tensor([[0.5, -0.5], [1.0, 0.0]])
    noise = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    off = torch.tensor([[0.1, 0.0], [0.0, -0.2]])
    steps = torch.tensor([1, 2])
    plain = epsilon_loss(_returns(noise + off), audio, ALPHA_BARS, steps=steps, noise=noise)
    assert float(plain) == pytest.approx((0.1 + 0.2) / 4)
    total = epsilon_loss(_returns(noise + off), audio, ALPHA_BARS, steps=steps, noise=noise,
                         x0_loss=_squared_error, x0_weight=0.5)
    # x0_hat - x0 = -sqrt(1 - abar) / sqrt(abar) * off: example 0: -0.75 * 0.1; example 1: -(0.8 / 0.6) * -0.2
    per_example = [(0.75 * 0.1) ** 2, (0.8 / 0.6 * 0.2) ** 2]
    x0_term = (0.64 * per_example[0] + 0.36 * per_example[1]) / 2
    assert float(total) == pytest.approx(float(plain) + 0.5 * x0_term, rel=1e-6)


def test_x0_term_is_off_without_a_weight_or_a_loss():
    called = []

    def x0_loss(generated, reference):
        called.append(True)
        return _squared_error(generated, reference)

    args = dict(steps=torch.tensor([1, 2]), noise=NOISE)
    plain = epsilon_loss(_returns(PREDICTION), AUDIO, ALPHA_BARS, **args)
    assert float(epsilon_loss(_returns(PREDICTION), AUDIO, ALPHA_BARS, x0_loss=x0_loss, x0_weight=0.0, **args)) == float(plain)
    assert float(epsilon_loss(_returns(PREDICTION), AUDIO, ALPHA_BARS, x0_loss=None, x0_weight=1.0, **args)) == float(plain)
    assert not called


def test_x0_term_gradient_with_respect_to_the_prediction():
    """d/dp of w * mean_b(abar_b * sum (x0_hat - x0)^2) with x0_hat = (x_t - sqrt(1 - abar) p) / sqrt(abar):
    w / B * abar * 2 (x0_hat - x0) * (-sqrt(1 - abar) / sqrt(abar)) = -2 w / B * sqrt(abar (1 - abar)) (x0_hat - x0)."""
    generator = torch.Generator().manual_seed(4)
    audio, noise = torch.randn(2, 16, generator=generator), torch.randn(2, 16, generator=generator)
    prediction = (noise + 0.1 * torch.randn(2, 16, generator=generator)).requires_grad_(True)
    steps = torch.tensor([0, 3])
    weight = 0.3
    epsilon_loss(_returns(prediction), audio, ALPHA_BARS, steps=steps, noise=noise, kind="l2",
                 x0_loss=_squared_error, x0_weight=weight).backward()
    abar = ALPHA_BARS[steps].unsqueeze(-1)
    p = prediction.detach()
    x0_hat = (abar.sqrt() * audio + (1 - abar).sqrt() * noise - (1 - abar).sqrt() * p) / abar.sqrt()
    # the L2 term's 2 (p - n) / N plus the x0 term's
    expected = 2 * (p - noise) / p.numel() - 2 * weight / 2 * (abar * (1 - abar)).sqrt() * (x0_hat - audio)
    torch.testing.assert_close(prediction.grad, expected, atol=1e-6, rtol=1e-5)


# --- the spectral losses -------------------------------------------------------------------------

def _tone(freq: float, n: int = 8192, sample_rate: int = 22050) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float32) / sample_rate
    return 0.5 * torch.sin(2 * math.pi * freq * t)


def test_mrstft_loss_is_zero_for_identical_signals_and_positive_otherwise():
    reference = torch.stack([_tone(220.0), torch.randn(8192, generator=torch.Generator().manual_seed(0))])
    same = mrstft_loss(reference, reference.clone())
    assert same.shape == (2,) and torch.equal(same, torch.zeros(2))
    other = torch.stack([_tone(330.0), torch.randn(8192, generator=torch.Generator().manual_seed(1))])
    assert bool((mrstft_loss(other, reference) > 0.1).all())


@pytest.mark.parametrize("scale", [0.5, 2.0, 3.0])
def test_mrstft_loss_of_a_scaled_copy_in_closed_form(scale):
    """generated = c * reference: spectral convergence |1 - c| plus log-magnitude L1 |ln c| at every
    resolution (the 1e-9 floor of the smooth magnitude aside), so their sum is the average too."""
    reference = torch.randn(2, 4096, generator=torch.Generator().manual_seed(5))
    expected = abs(1 - scale) + abs(math.log(scale))
    torch.testing.assert_close(mrstft_loss(scale * reference, reference), torch.full((2,), expected),
                               atol=1e-4, rtol=1e-4)


def test_mrstft_loss_against_a_direct_single_resolution_formula():
    n_fft, hop, win = 256, 64, 200
    generator = torch.Generator().manual_seed(6)
    generated, reference = torch.randn(3, 2048, generator=generator), torch.randn(3, 2048, generator=generator)

    def magnitude(x):
        spec = torch.stft(x.double(), n_fft, hop, win, window=torch.hann_window(win, dtype=torch.float64),
                          center=True, return_complex=True)
        return (spec.abs().square() + 1e-9).sqrt()

    g, r = magnitude(generated), magnitude(reference)
    convergence = torch.linalg.norm((r - g).flatten(1), dim=1) / torch.linalg.norm(r.flatten(1), dim=1)
    log_l1 = (r.log() - g.log()).abs().flatten(1).mean(dim=1)
    got = mrstft_loss(generated, reference, resolutions=[(n_fft, hop, win)])
    torch.testing.assert_close(got.double(), convergence + log_l1, atol=1e-5, rtol=1e-5)


def test_mrstft_loss_of_different_lengths_raises():
    with pytest.raises(RuntimeError):
        mrstft_loss(torch.randn(1, 4096), torch.randn(1, 4000))


def test_spectral_x0_loss_adds_the_mel_l1():
    generator = torch.Generator().manual_seed(7)
    generated, reference = torch.randn(2, 4096, generator=generator), torch.randn(2, 4096, generator=generator)
    seen_dtypes = []

    def mel_fn(audio):  # a stand-in front end: (B, T) -> (B, 4, frames)
        seen_dtypes.append(audio.dtype)
        return audio.view(audio.shape[0], 4, -1).abs().add(1e-3).log()

    stft_only = spectral_x0_loss(None)(generated, reference)
    torch.testing.assert_close(stft_only, mrstft_loss(generated, reference))
    with_mel = spectral_x0_loss(mel_fn)(generated.double(), reference.double())
    mel_l1 = (mel_fn(generated) - mel_fn(reference)).abs().flatten(1).mean(dim=1)
    assert with_mel.shape == (2,)
    torch.testing.assert_close(with_mel, stft_only + mel_l1, atol=1e-5, rtol=1e-5)
    assert set(seen_dtypes) == {torch.float32}  # the front end always gets float32
    # identical signals: both terms vanish
    assert torch.equal(spectral_x0_loss(mel_fn)(reference, reference.clone()), torch.zeros(2))


def test_spectral_x0_loss_in_the_epsilon_loss_has_finite_gradients():
    """The whole objective as training uses it (the x0 term on), through silence included."""
    audio = torch.stack([torch.zeros(4096), _tone(440.0, 4096)])
    noise = torch.randn(2, 4096, generator=torch.Generator().manual_seed(9))
    prediction = noise.clone().requires_grad_(True)  # a perfect prediction: x0_hat = x0
    alpha_bars = torch.from_numpy(NoiseSchedule(SCHEDULES["base"]).alpha_bars).float()
    loss = epsilon_loss(_returns(prediction), audio, alpha_bars, steps=torch.tensor([0, 49]), noise=noise,
                        x0_loss=spectral_x0_loss(None), x0_weight=0.1)
    loss.backward()
    assert float(loss.detach()) < 1e-3
    assert bool(torch.isfinite(prediction.grad).all())
