"""Mel presets against independent implementations of each convention, on real speech.

The references below are written from the conventions' own code (HiFi-GAN's ``meldataset.py``
and DiffWave's ``preprocess.py``, the latter down to its filterbank formula), not from
:mod:`audiodiff.mel`; where torchaudio is installed, the diffwave preset is also checked against
torchaudio's own transform.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.mel import MelSpectrogram, describe_range_mismatch, mel_preset
from conftest import torchaudio_or_skip

DATA = Path(__file__).parent / "data"
SPEECH_22K = DATA / "speech-cs-22k.ogg"
SPEECH_16K = DATA / "speech-en-16k.flac"


def load_speech(path: Path, expected_rate: int) -> torch.Tensor:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate == expected_rate
    return torch.from_numpy(audio.mean(axis=1))


@pytest.fixture(scope="module")
def speech22() -> torch.Tensor:
    return load_speech(SPEECH_22K, 22050)


@pytest.fixture(scope="module")
def speech16() -> torch.Tensor:
    return load_speech(SPEECH_16K, 16000)


# --------------------------------------------------------------- references
def hifigan_reference(y: torch.Tensor, sr: int, n_fft=1024, n_mels=80, hop=256, win=1024, fmin=0.0, fmax=8000.0):
    """HiFi-GAN ``meldataset.mel_spectrogram`` (center=False), written out."""
    import librosa

    basis = torch.from_numpy(librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)).float()
    window = torch.hann_window(win)
    y = y.unsqueeze(0) if y.dim() == 1 else y
    pad = int((n_fft - hop) / 2)
    y = torch.nn.functional.pad(y.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    spec = torch.stft(y, n_fft, hop_length=hop, win_length=win, window=window, center=False,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    spec = torch.view_as_real(spec)
    spec = torch.sqrt(spec.pow(2).sum(-1) + 1e-9)
    spec = torch.matmul(basis, spec)
    return torch.log(torch.clamp(spec, min=1e-5))


def diffwave_reference(audio: torch.Tensor, sr: int = 22050, hop: int = 256) -> torch.Tensor:
    """DiffWave ``preprocess.transform`` (PyPI diffwave 0.1.7), written out in numpy.

    torchaudio's ``MelSpectrogram(f_min=20, f_max=sr/2, n_mels=80, power=1, normalized=True)``:
    a centred, reflect-padded Hann STFT divided by the window's L2 norm, and HTK triangles of peak
    1 between mel points spaced evenly on ``2595 log10(1 + f / 700)`` (written here from that
    formula, not from librosa or torchaudio).
    """
    n_fft, n_mels, f_min, f_max = 1024, 80, 20.0, sr / 2.0
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    x = np.pad(audio.double().numpy(), n_fft // 2, mode="reflect")
    frames = 1 + (len(x) - n_fft) // hop
    spectrum = np.stack([np.fft.rfft(window * x[i * hop: i * hop + n_fft]) for i in range(frames)], axis=1)
    magnitude = np.abs(spectrum) / np.sqrt((window ** 2).sum())
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    points = 700.0 * (10 ** (np.linspace(mel(f_min), mel(f_max), n_mels + 2) / 2595.0) - 1.0)
    freqs = np.linspace(0, sr // 2, n_fft // 2 + 1)
    rising = (freqs[None, :] - points[:-2, None]) / (points[1:-1] - points[:-2])[:, None]
    falling = (points[2:, None] - freqs[None, :]) / (points[2:] - points[1:-1])[:, None]
    filterbank = np.maximum(0.0, np.minimum(rising, falling))
    db = 20 * np.log10(np.maximum(filterbank @ magnitude, 1e-5)) - 20
    return torch.from_numpy(np.clip((db + 100) / 100, 0.0, 1.0)).float()


# -------------------------------------------------------------- golden tests
def test_hifigan_matches_reference_on_real_speech(speech22):
    ours = MelSpectrogram(mel_preset("hifigan"))(speech22)
    ref = hifigan_reference(speech22, 22050)
    frames = speech22.shape[-1] // 256
    assert ours.shape == (1, 80, frames)
    assert ref.shape[-1] >= frames
    # real speech: a wide dynamic range, not a degenerate signal
    assert float(ours.max() - ours.min()) > 8.0
    torch.testing.assert_close(ours, ref[..., :frames], atol=1e-4, rtol=0)


def test_diffwave_matches_reference_on_real_speech(speech22):
    ours = MelSpectrogram(mel_preset("diffwave"))(speech22)
    ref = diffwave_reference(speech22)
    frames = speech22.shape[-1] // 256
    assert ours.shape == (1, 80, frames)
    assert ref.shape[-1] == frames + 1  # center=True gives one extra, trailing frame
    assert 0.3 < float(ours.mean()) < 0.9  # real speech, not all floor or all ceiling
    torch.testing.assert_close(ours, ref[None, :, :frames], atol=1e-4, rtol=0)


def test_diffwave_matches_torchaudio_on_real_speech(speech22):
    """The reference's own transform (torchaudio), where the test environment has torchaudio."""
    torchaudio = torchaudio_or_skip()
    transform = torchaudio.transforms.MelSpectrogram(
        sample_rate=22050, win_length=1024, hop_length=256, n_fft=1024, f_min=20.0,
        f_max=22050 / 2.0, n_mels=80, power=1.0, normalized=True,
    )
    with torch.no_grad():
        db = 20 * torch.log10(torch.clamp(transform(speech22), min=1e-5)) - 20
        reference = torch.clamp((db + 100) / 100, 0.0, 1.0)
    frames = speech22.shape[-1] // 256
    ours = MelSpectrogram(mel_preset("diffwave"))(speech22)
    torch.testing.assert_close(ours, reference[None, :, :frames], atol=1e-4, rtol=0)


def test_hifigan_override_16k_matches_reference(speech16):
    config = mel_preset("hifigan", sample_rate=16000)
    assert config.sample_rate == 16000 and config.nyquist_f_max == 8000.0 and config.hop_length == 256
    ours = MelSpectrogram(config)(speech16)
    ref = hifigan_reference(speech16, 16000, fmax=8000.0)
    frames = speech16.shape[-1] // 256
    assert ours.shape == (1, 80, frames)
    torch.testing.assert_close(ours, ref[..., :frames], atol=1e-4, rtol=0)
    # and it really is a different filterbank from the 22 kHz one
    assert not torch.allclose(ours, MelSpectrogram(mel_preset("hifigan"))(speech16), atol=1e-2)


def test_override_other_fields():
    config = mel_preset("hifigan", n_mels=64, hop_length=200, win_length=800, n_fft=800)
    assert (config.n_mels, config.hop_length, config.win_length, config.n_fft) == (64, 200, 800, 800)
    assert config.preset == "hifigan" and config.f_max == 8000.0
    mel = MelSpectrogram(config)(torch.randn(2, 4000))
    assert mel.shape == (2, 64, 20)
    # overriding does not change the preset itself
    assert mel_preset("hifigan").n_mels == 80


# ---------------------------------------------------------------- interface
def test_unknown_preset_and_field_raise():
    with pytest.raises(ValueError, match="nope"):
        mel_preset("nope")
    with pytest.raises(ValueError, match="fmax"):
        mel_preset("hifigan", fmax=8000)


@pytest.mark.parametrize("preset", ["hifigan", "diffwave"])
def test_shape_dtype_and_batch_consistency(preset, speech22):
    module = MelSpectrogram(mel_preset(preset))
    a = speech22[: 256 * 20 + 100]
    b = speech22[22050 : 22050 + 256 * 20 + 100]
    batch = module(torch.stack([a, b]))
    assert batch.shape == (2, 80, 20)
    assert batch.dtype == torch.float32
    torch.testing.assert_close(batch[0:1], module(a), atol=1e-5, rtol=0)
    torch.testing.assert_close(batch[1:2], module(b.unsqueeze(0)), atol=1e-5, rtol=0)
    # float64 input gives float32 output
    assert module(a.double()).dtype == torch.float32


def test_bad_shapes_raise():
    module = MelSpectrogram(mel_preset("hifigan"))
    with pytest.raises(ValueError):
        module(torch.zeros(1, 1, 4096))
    with pytest.raises(ValueError):
        module(torch.zeros(100))  # shorter than one hop


def test_filterbank_is_a_buffer_and_not_saved():
    module = MelSpectrogram(mel_preset("hifigan"))
    buffers = dict(module.named_buffers())
    assert buffers["mel_basis"].shape == (80, 513)
    assert module.state_dict() == {}


def test_describe_range_mismatch(speech22):
    hifigan = mel_preset("hifigan")
    diffwave = mel_preset("diffwave")
    real_hifigan = MelSpectrogram(hifigan)(speech22)
    real_diffwave = MelSpectrogram(diffwave)(speech22)
    assert describe_range_mismatch(real_hifigan, hifigan) is None
    assert describe_range_mismatch(real_diffwave, diffwave) is None
    speech16 = load_speech(SPEECH_16K, 16000)
    assert describe_range_mismatch(MelSpectrogram(mel_preset("hifigan", sample_rate=16000))(speech16), hifigan) is None
    message = describe_range_mismatch(real_diffwave, hifigan)
    assert message is not None and "diffwave" in message
    message = describe_range_mismatch(real_hifigan, diffwave)
    assert message is not None and "hifigan" in message
    # log10 mels given to a natural-log model
    message = describe_range_mismatch(real_hifigan / np.log(10.0), hifigan)
    assert message is not None and "log10" in message
