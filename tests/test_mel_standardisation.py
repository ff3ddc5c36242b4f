"""The network's mel standardisation (``DenoiserConfig.mel_shift`` / ``mel_scale``)."""

from __future__ import annotations

import pytest
import torch

from audiodiff.diffusion.schedule import SCHEDULES
from audiodiff.mel import mel_preset
from audiodiff.network.diffwave import DenoiserConfig, DiffWave, denoiser_config
from audiodiff.pipeline import AudioDiffusion, load_model, ModelConfig

SHIFT, SCALE = -4.0, 2.0


def _network(**overrides) -> DiffWave:
    torch.manual_seed(0)
    network = DiffWave(denoiser_config("tiny", hop_length=64, residual_layers=4, **overrides)).eval()
    torch.nn.init.normal_(network.output_projection.weight, std=0.1)
    return network


def test_identity_by_default_and_absent_from_old_style_dicts():
    config = denoiser_config("tiny")
    assert (config.mel_shift, config.mel_scale) == (0.0, 1.0)
    assert "mel_shift" not in config.to_dict() and "mel_scale" not in config.to_dict()
    assert DenoiserConfig.from_dict(config.to_dict()) == config  # a file written before the fields
    standardised = denoiser_config("tiny", mel_shift=SHIFT, mel_scale=SCALE)
    assert standardised.to_dict()["mel_shift"] == SHIFT
    assert DenoiserConfig.from_dict(standardised.to_dict()) == standardised
    with pytest.raises(ValueError, match="mel_scale"):
        denoiser_config("tiny", mel_scale=0.0)


def test_the_network_sees_the_standardised_mel():
    plain = _network()
    standardised = _network(mel_shift=SHIFT, mel_scale=SCALE)
    standardised.load_state_dict(plain.state_dict())
    mel = torch.randn(2, 80, 5) * 2 - 4
    audio, step = torch.randn(2, 5 * 64), torch.tensor([3, 17])
    with torch.no_grad():
        expected = plain(audio, step, (mel - SHIFT) / SCALE)
        got = standardised(audio, step, mel)
        raw = plain(audio, step, mel)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(got, raw, atol=1e-3)  # it really changes what the network sees


def test_saved_model_keeps_it_and_the_folded_engine_agrees(tmp_path):
    mel_config = mel_preset("hifigan")
    schedule = SCHEDULES["base"]
    denoiser = denoiser_config("tiny", n_mels=80, hop_length=256, max_steps=schedule.num_steps,
                               residual_layers=4, mel_shift=SHIFT, mel_scale=SCALE)
    torch.manual_seed(1)
    model = AudioDiffusion(ModelConfig(denoiser=denoiser, mel=mel_config, schedule=schedule,
                                       sample_rate=22050)).eval()
    torch.nn.init.normal_(model.network.output_projection.weight, std=0.1)
    mel = torch.randn(1, 80, 6) * 2 - 4
    audio = model.vocode(mel, sampler="fast", seed=0)
    path = model.save(tmp_path / "m.safetensors")
    assert model.config.format_version == 4  # older audiodiff refuses it instead of feeding the raw mel
    loaded = load_model(path)
    assert loaded.config.denoiser.mel_shift == SHIFT and loaded.config.denoiser.mel_scale == SCALE
    torch.testing.assert_close(loaded.vocode(mel, sampler="fast", seed=0), audio, rtol=0, atol=1e-6)
    folded = loaded.fold_denoiser().vocode(mel, sampler="fast", seed=0)
    torch.testing.assert_close(folded, audio, rtol=0, atol=1e-4)
