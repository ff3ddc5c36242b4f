"""Objective distances between waveforms and between mels."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

from audiodiff.dsp.spectral import mel_l1_distance, multi_resolution_stft_distance

SPEECH_22K = Path(__file__).parent / "data" / "speech-cs-22k.ogg"


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    audio, _ = sf.read(str(SPEECH_22K), dtype="float32", frames=22050, start=11025)
    return torch.from_numpy(audio)


def test_identical_signals_have_zero_distance(speech):
    distance = multi_resolution_stft_distance(speech, speech.clone())
    assert distance.shape == (1,)
    assert abs(float(distance)) < 1e-6


def test_distance_grows_with_noise_level(speech):
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(speech.shape, generator=g)
    levels = [0.0, 1e-3, 1e-2, 0.05, 0.2]
    distances = [float(multi_resolution_stft_distance(speech + level * noise, speech)) for level in levels]
    assert distances[0] < 1e-6
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


def test_batch_rows_are_independent(speech):
    noisy = speech + 0.05 * torch.randn(speech.shape, generator=torch.Generator().manual_seed(1))
    batch = multi_resolution_stft_distance(torch.stack([speech, noisy]), torch.stack([speech, speech]))
    assert batch.shape == (2,)
    assert abs(float(batch[0])) < 1e-6
    torch.testing.assert_close(batch[1], multi_resolution_stft_distance(noisy, speech)[0])


def test_distance_is_scale_sensitive(speech):
    assert float(multi_resolution_stft_distance(0.5 * speech, speech)) > 0.3


def test_stft_shape_mismatch_raises(speech):
    with pytest.raises(ValueError, match="shapes differ"):
        multi_resolution_stft_distance(speech[:-1], speech)
    with pytest.raises(ValueError):
        multi_resolution_stft_distance(speech.unsqueeze(0).repeat(2, 1), speech.unsqueeze(0))


def test_mel_l1_golden_value():
    generated = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, -2.0]]])
    reference = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    distance = mel_l1_distance(generated, reference)
    torch.testing.assert_close(distance, torch.tensor([1.5, 0.5]))
    assert torch.equal(mel_l1_distance(reference, reference), torch.zeros(2))


def test_mel_l1_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shapes differ"):
        mel_l1_distance(torch.zeros(1, 80, 10), torch.zeros(1, 80, 11))
