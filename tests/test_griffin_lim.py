"""Fast Griffin-Lim in torch: torchaudio's algorithm without its compiled extension."""

from __future__ import annotations

import pytest
import torch

from audiodiff.griffin_lim import fast_griffin_lim
from conftest import speech_like, torchaudio_or_skip

N_FFT, HOP = 512, 128


def _magnitude(audio: torch.Tensor) -> torch.Tensor:
    return torch.stft(audio, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True).abs()


def test_recovers_a_signal_with_the_given_magnitude():
    audio = torch.from_numpy(speech_like(0.5, 16000))
    magnitude = _magnitude(audio)
    rebuilt = fast_griffin_lim(magnitude, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, n_iter=48,
                               length=audio.shape[-1], generator=torch.Generator().manual_seed(0))
    assert rebuilt.shape == audio.shape
    error = (_magnitude(rebuilt) - magnitude).norm() / magnitude.norm()
    start = fast_griffin_lim(magnitude, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, n_iter=0,
                             length=audio.shape[-1], generator=torch.Generator().manual_seed(0))
    start_error = (_magnitude(start) - magnitude).norm() / magnitude.norm()
    assert error < 0.25 < start_error, (float(error), float(start_error))


def test_batch_shape_seed_and_bad_arguments():
    magnitude = _magnitude(torch.from_numpy(speech_like(0.2, 16000, seed=1))).expand(2, 3, -1, -1)
    kwargs = dict(n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, n_iter=2, length=3200)
    a = fast_griffin_lim(magnitude, generator=torch.Generator().manual_seed(5), **kwargs)
    b = fast_griffin_lim(magnitude, generator=torch.Generator().manual_seed(5), **kwargs)
    assert a.shape == (2, 3, 3200)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert fast_griffin_lim(magnitude.double(), **kwargs).dtype == torch.float64
    with pytest.raises(ValueError, match="momentum"):
        fast_griffin_lim(magnitude, momentum=1.0, **kwargs)


def test_equals_torchaudio_griffin_lim():
    torchaudio = torchaudio_or_skip()
    magnitude = _magnitude(torch.from_numpy(speech_like(0.3, 16000, seed=2))).unsqueeze(0).repeat(2, 1, 1)
    transform = torchaudio.transforms.GriffinLim(n_fft=N_FFT, n_iter=8, win_length=N_FFT, hop_length=HOP,
                                                 power=1.0, length=4800)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        expected = transform(magnitude)
    ours = fast_griffin_lim(magnitude, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, n_iter=8, length=4800,
                            generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
