"""Fast Griffin-Lim in torch: torchaudio's algorithm without its compiled extension."""

from __future__ import annotations

import pytest
import torch

from audiodiff.dsp.griffin_lim import fast_griffin_lim
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


def test_project_magnitude_keeps_the_phase_of_a_consistent_waveform():
    """Projecting a waveform onto its own magnitude gives it back; onto another magnitude, with its
    phase as the start, the result's magnitude nears the target within a few iterations, closer
    than a random start gets with the same iterations."""
    from audiodiff.dsp.griffin_lim import project_magnitude

    audio = torch.from_numpy(speech_like(0.5, 16000)).double()
    kwargs = dict(n_fft=N_FFT, hop_length=HOP, win_length=N_FFT)
    same = project_magnitude(audio, _magnitude(audio), n_iter=0, **kwargs)
    torch.testing.assert_close(same, audio, rtol=0, atol=1e-6)
    torch.testing.assert_close(project_magnitude(audio, _magnitude(audio), n_iter=3, **kwargs), audio,
                               rtol=0, atol=1e-6)
    target = _magnitude(audio)
    noisy = audio + 0.1 * torch.randn(audio.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    projected = project_magnitude(noisy, target, n_iter=4, **kwargs)
    assert projected.shape == audio.shape and projected.dtype == torch.float64
    error = (_magnitude(projected) - target).norm() / target.norm()
    random_start = fast_griffin_lim(target, n_iter=4, length=audio.shape[-1], generator=torch.Generator().manual_seed(0),
                                    **kwargs)
    random_error = (_magnitude(random_start) - target).norm() / target.norm()
    noisy_error = (_magnitude(noisy) - target).norm() / target.norm()
    assert error < 0.5 * random_error and error < noisy_error, (float(error), float(random_error), float(noisy_error))
    # the phase came from the waveform: the projection stays near the clean audio, a random start does not
    assert (projected - audio).norm() < 0.5 * (noisy - audio).norm() + 0.5 * audio.norm()
    assert (projected - audio).norm() < (random_start - audio).norm()


def test_project_magnitude_batches_and_refuses_a_wrong_frame_count():
    from audiodiff.dsp.griffin_lim import project_magnitude

    audio = torch.from_numpy(speech_like(0.2, 16000, seed=3)).expand(2, -1)
    kwargs = dict(n_fft=N_FFT, hop_length=HOP, win_length=N_FFT)
    out = project_magnitude(audio, _magnitude(audio), n_iter=1, **kwargs)
    assert out.shape == audio.shape and out.dtype == torch.float32
    torch.testing.assert_close(out[0], project_magnitude(audio[0], _magnitude(audio[0]), n_iter=1, **kwargs))
    with pytest.raises(ValueError, match="magnitude must be"):
        project_magnitude(audio, _magnitude(audio)[..., :-1], **kwargs)
    with pytest.raises(ValueError, match="n_iter"):
        project_magnitude(audio, _magnitude(audio), n_iter=-1, **kwargs)
