"""The training-recipe options of issue 19 (point 3): PriorGrad's prior and the x0-estimate loss.

Golden properties: the x0 formula inverts the forward process, the prior-weighted loss with
sigma = 1 is today's loss bit for bit, the prior has one std per frame above its floor, a model
file carries its prior and samples from it, and a model without one is written as before.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from audiodiff.diffusion.loss import epsilon_loss, mrstft_loss, noisy_sample, predicted_x0, spectral_x0_loss
from audiodiff.diffusion.prior import EnergyPrior
from audiodiff.diffusion.schedule import SCHEDULES, NoiseSchedule
from audiodiff.dsp.spectral import multi_resolution_stft_distance
from audiodiff.pipeline import AudioDiffusion, load_model, ModelConfig

from conftest import make_tiny_model, speech_like

ALPHA_BARS = torch.from_numpy(NoiseSchedule(SCHEDULES["base"]).alpha_bars).float()


def _linear_denoiser(seed: int = 0):
    """A fixed, non-trivial function of ``(x_t, t)`` standing in for the network."""
    weight = torch.Generator().manual_seed(seed)
    scale = torch.rand(1, generator=weight).item() + 0.5
    return lambda x, t: scale * x + 0.01 * t.float().unsqueeze(-1)


def test_predicted_x0_recovers_the_clean_audio_from_the_true_noise():
    audio, noise = torch.randn(3, 2048) * 0.3, torch.randn(3, 2048)
    alpha_bar = ALPHA_BARS[torch.tensor([0, 20, 49])]
    x_t = noisy_sample(audio, noise, alpha_bar)
    torch.testing.assert_close(predicted_x0(x_t, noise, alpha_bar), audio, atol=1e-5, rtol=0)
    # a wrong noise estimate moves x0_hat by exactly sqrt(1 - abar) / sqrt(abar) times the error
    off = predicted_x0(x_t, noise + 0.1, alpha_bar) - audio
    expected = -0.1 * ((1 - alpha_bar) / alpha_bar).sqrt().unsqueeze(-1).expand_as(off)
    torch.testing.assert_close(off, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_prior_loss_with_unit_std_is_todays_loss(kind):
    audio = torch.randn(4, 1024) * 0.2
    args = dict(kind=kind)
    today = epsilon_loss(_linear_denoiser(), audio, ALPHA_BARS, generator=torch.Generator().manual_seed(3), **args)
    unit = epsilon_loss(_linear_denoiser(), audio, ALPHA_BARS, generator=torch.Generator().manual_seed(3),
                        noise_std=torch.ones_like(audio), **args)
    assert float(today) > 0
    torch.testing.assert_close(unit, today, atol=1e-7, rtol=1e-6)


def test_prior_loss_scales_the_noise_and_weights_the_error_by_the_inverse_std():
    audio, noise = torch.randn(2, 512) * 0.2, torch.randn(2, 512)
    steps = torch.tensor([5, 40])
    std = torch.rand(2, 512) + 0.1
    seen = {}

    def zero(x, t):  # predicts no noise: the error is the scaled noise itself
        seen["x_t"] = x
        return torch.zeros_like(x)

    l1 = epsilon_loss(zero, audio, ALPHA_BARS, steps=steps, noise=noise, noise_std=std)
    # |0 - std * eps| / std = |eps|
    torch.testing.assert_close(l1, noise.abs().mean())
    torch.testing.assert_close(seen["x_t"], noisy_sample(audio, std * noise, ALPHA_BARS[steps]))
    l2 = epsilon_loss(zero, audio, ALPHA_BARS, steps=steps, noise=noise, noise_std=std, kind="l2")
    torch.testing.assert_close(l2, noise.square().mean())


def test_x0_loss_is_zero_for_a_perfect_prediction_and_weighted_by_alpha_bar():
    audio = torch.from_numpy(speech_like(0.3, 22050)).float()[None, :4096].repeat(2, 1)
    noise = torch.randn_like(audio)
    steps = torch.tensor([3, 45])
    x0 = spectral_x0_loss(make_tiny_model().mel_frontend)
    perfect = lambda x, t: noise  # noqa: E731
    plain = epsilon_loss(perfect, audio, ALPHA_BARS, steps=steps, noise=noise)
    with_x0 = epsilon_loss(perfect, audio, ALPHA_BARS, steps=steps, noise=noise, x0_loss=x0, x0_weight=0.1)
    assert float(plain) == 0.0 and float(with_x0) < 1e-3
    wrong = lambda x, t: noise + 0.05 * torch.randn_like(noise)  # noqa: E731
    torch.manual_seed(0)
    eps_only = epsilon_loss(wrong, audio, ALPHA_BARS, steps=steps, noise=noise)
    torch.manual_seed(0)
    total = epsilon_loss(wrong, audio, ALPHA_BARS, steps=steps, noise=noise, x0_loss=x0, x0_weight=0.1)
    torch.manual_seed(0)
    x0_hat = predicted_x0(noisy_sample(audio, noise, ALPHA_BARS[steps]), wrong(None, None), ALPHA_BARS[steps])
    expected = eps_only + 0.1 * (ALPHA_BARS[steps] * x0(x0_hat, audio)).mean()
    torch.testing.assert_close(total, expected, atol=1e-5, rtol=1e-5)


def test_mrstft_loss_matches_the_metric_and_has_finite_gradients_at_silence():
    a, b = torch.randn(2, 4096), torch.randn(2, 4096)
    torch.testing.assert_close(mrstft_loss(a, b), multi_resolution_stft_distance(a, b), atol=1e-3, rtol=1e-3)
    silent = torch.zeros(1, 4096, requires_grad=True)
    mrstft_loss(silent, torch.randn(1, 4096)).sum().backward()
    assert torch.isfinite(silent.grad).all()


def test_energy_prior_has_one_std_per_frame_above_its_floor():
    prior = EnergyPrior(energy_min=0.0, energy_max=2.0, std_min=0.1)
    energies = torch.tensor([0.0, 0.1, 1.0, 2.0, 3.0])
    mel = torch.log(energies.square() / 80 + 1e-12)[None, None, :].expand(1, 80, 5)  # sqrt(sum exp) = energy
    std = prior.frame_std(mel)
    assert std.shape == (1, 5)
    torch.testing.assert_close(std[0], torch.tensor([0.1, 0.1, 0.5, 1.0, 1.5]), atol=1e-5, rtol=1e-5)
    samples = prior.sample_std(torch.randn(2, 80, 7) * 3 - 4, hop_length=256)
    assert samples.shape == (2, 7 * 256) and float(samples.min()) >= 0.1
    assert bool((samples.view(2, 7, 256) == samples.view(2, 7, 256)[..., :1]).all())  # constant within a frame
    with pytest.raises(ValueError, match="energy_max"):
        EnergyPrior(energy_min=1.0, energy_max=1.0)
    with pytest.raises(ValueError, match="unknown prior"):
        EnergyPrior.from_dict({"kind": "gaussian-mixture"})


def _with_prior(model: AudioDiffusion, prior: EnergyPrior | None) -> AudioDiffusion:
    other = AudioDiffusion(dataclasses.replace(model.config, prior=prior))
    other.network.load_state_dict(model.network.state_dict())
    return other.eval()


@pytest.mark.parametrize("sampler", ["fast", "ddim"])
def test_sampling_draws_every_noise_from_the_prior(sampler):
    """With the network predicting no noise, unclamped sampling is linear in the noise: every draw
    (the start and each step's) is scaled by the prior's std, so doubling the std doubles the audio."""
    model = make_tiny_model()
    zero = lambda x, sigma: torch.zeros_like(x)  # noqa: E731

    def run(std):
        return model._run_sampler(zero, (2, 1024), sampler=sampler, steps=None, seed=5, callback=None,
                                  noise_std=None if std is None else torch.full((2, 1024), std))

    small, double = run(0.01), run(0.02)
    assert 0 < float(double.abs().max()) < 0.5  # nothing clamped
    torch.testing.assert_close(double, 2 * small, atol=1e-6, rtol=1e-4)
    assert float(run(None).abs().max()) > 10 * float(small.abs().max())


@pytest.mark.slow
def test_a_prior_is_part_of_the_model_file_and_old_files_are_unchanged(tmp_path):
    model = make_tiny_model()
    assert model.config.prior is None and "prior" not in model.config.to_dict()
    assert model.config.format_version == 1
    prior = EnergyPrior(energy_min=0.01, energy_max=2.5, std_min=0.2)
    with_prior = _with_prior(model, prior)
    assert with_prior.config.format_version == 4
    assert ModelConfig.from_dict(json.loads(json.dumps(with_prior.config.to_dict()))) == with_prior.config
    loaded = load_model(with_prior.save(tmp_path / "prior.safetensors"))
    assert loaded.config.prior == prior
    mel = model.mel(torch.from_numpy(speech_like(0.3, 22050)).float()[None])
    a = loaded.vocode(mel, seed=1, chunk_seconds=None)
    torch.testing.assert_close(a, with_prior.vocode(mel, seed=1, chunk_seconds=None))
    assert not torch.allclose(a, model.vocode(mel, seed=1, chunk_seconds=None))
    # chunked synthesis draws the same prior noise (one std per sample, from the whole mel)
    torch.testing.assert_close(loaded.vocode(mel, seed=1, chunk_seconds=0.1), a, atol=1e-4, rtol=0)
    # a file without a prior still loads as before and samples standard normal noise
    plain = load_model(model.save(tmp_path / "plain.safetensors"))
    assert plain.config.prior is None and plain.noise_std(mel) is None
    torch.testing.assert_close(plain.vocode(mel, seed=1, chunk_seconds=None), model.vocode(mel, seed=1, chunk_seconds=None))
    with pytest.raises(ValueError, match="needs a mel"):
        ModelConfig(denoiser=dataclasses.replace(model.config.denoiser, n_mels=None), mel=None,
                    schedule=model.config.schedule, sample_rate=22050, prior=prior)


def test_training_module_options_build_the_prior_and_the_x0_loss():
    from audiodiff.training.module import DiffusionModule

    torch.manual_seed(0)
    default = DiffusionModule(size="tiny")
    assert default.model_config.prior is None
    module = DiffusionModule(size="tiny", prior={"std_min": 0.2}, x0_loss_weight=0.1)
    assert module.model_config.prior == EnergyPrior(std_min=0.2)
    audio = torch.from_numpy(speech_like(0.3, 22050)).float()[None, :4096].repeat(2, 1)
    loss = module._loss(audio, module._mel(audio), generator=torch.Generator().manual_seed(0))
    loss.backward()
    grads = [p.grad for p in module.model.network.parameters() if p.grad is not None]
    assert math.isfinite(float(loss.detach())) and grads and all(torch.isfinite(g).all() for g in grads)
    with pytest.raises(ValueError, match="x0_loss_weight"):
        DiffusionModule(size="tiny", x0_loss_weight=-1.0)


@pytest.mark.slow
def test_recipe_efficiency_script_smoke(tmp_path, monkeypatch, capsys):
    """Two variants, a fraction of a CPU second each, on synthetic speech: the table, JSON and PNG.
    The workers run in this process (each is otherwise a fresh interpreter) to keep it short."""
    import importlib.util

    import soundfile as sf

    for name, seconds in (("train", 1.0), ("held", 0.6)):
        (tmp_path / name).mkdir()
        for k in range(2):
            sf.write(tmp_path / name / f"{k}.wav", speech_like(seconds, 22050, seed=k), 22050)
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "recipe_efficiency.py"
    spec = importlib.util.spec_from_file_location("bench_recipe_efficiency", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "run_worker", lambda _file, worker_spec: script.worker(worker_spec))
    monkeypatch.setattr(sys, "argv", [
        str(path), "--train", str(tmp_path / "train"), "--heldout", str(tmp_path / "held"),
        "--files", "2", "--clips", "1", "--clip-seconds", "0.5", "--variants", "baseline,prior+x0",
        "--cpu-seconds", "0.3", "--checkpoints", "0.1,0.3", "--layers", "2", "--jobs", "1",
        "--progress", str(tmp_path / "p.jsonl"), "--json", str(tmp_path / "r.json"), "--png", str(tmp_path / "r.png")])
    script.main()
    stdout = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["variant"] for r in report["results"]] == ["baseline", "prior+x0"]
    for variant in report["results"]:
        points = variant["points"]
        assert len(points) == 2 and points[0]["train_cpu_s"] >= 0.1 and points[1]["train_cpu_s"] >= 0.3
        assert points[1]["steps"] >= points[0]["steps"] >= 1
        assert points[-1]["mrstft"] is not None and np.isfinite(points[-1]["mel_l1"])
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 4
    assert {r["variant"] for r in report["ranking"]} == {"baseline", "prior+x0"}
    assert "| prior+x0" in stdout and "ranking" in stdout
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert str(tmp_path) not in json.dumps(report["settings"])  # no machine paths in the results
