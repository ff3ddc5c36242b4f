"""Phase recovery from a magnitude spectrogram: the fast Griffin-Lim algorithm, in torch.

:func:`fast_griffin_lim` is Perraudin et al.'s fast Griffin-Lim (2013) with librosa's and
torchaudio's conventions: a centred, reflect-padded STFT, momentum ``m`` applied as
``rebuilt - m / (1 + m) * previous``, and a random initial phase whose real and imaginary parts
are uniform in [0, 1). It gives what ``torchaudio.transforms.GriffinLim(power=1)`` gives for the
same random draws, without torchaudio's compiled extension (tests compare the two).

:func:`project_magnitude` runs the same iterations from a given waveform's phase instead of a
random one: the projection GLA-Grad applies to a diffusion sampler's clean-audio estimate.
"""

from __future__ import annotations

import torch
from torch import Tensor


def fast_griffin_lim(
    magnitude: Tensor,
    *,
    n_fft: int,
    hop_length: int,
    win_length: int,
    n_iter: int = 64,
    momentum: float = 0.99,
    length: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A waveform whose STFT magnitude approximates ``magnitude``.

    Args:
        magnitude: Linear STFT magnitude ``(..., n_fft // 2 + 1, frames)`` of a centred STFT
            with a Hann window of ``win_length``.
        n_iter: Projections onto consistent spectrograms; 0 returns the initial random phase's
            inverse.
        momentum: In ``[0, 1)``; 0 is the original Griffin-Lim.
        length: Samples of the output (``None``: what the inverse STFT gives).
        generator: Source of the random initial phase (the global one when ``None``).

    Returns:
        Audio ``(..., length)`` in ``magnitude``'s real dtype, on its device.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    shape = magnitude.shape
    magnitude = magnitude.reshape(-1, *shape[-2:])
    complex_dtype = torch.complex128 if magnitude.dtype == torch.float64 else torch.complex64
    angles = torch.rand(magnitude.shape, dtype=complex_dtype, device=magnitude.device, generator=generator)
    audio = _iterate(magnitude, angles, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
                     n_iter=n_iter, momentum=momentum, length=length)
    return audio.reshape(*shape[:-2], audio.shape[-1])


def project_magnitude(
    audio: Tensor,
    magnitude: Tensor,
    *,
    n_fft: int,
    hop_length: int,
    win_length: int,
    n_iter: int = 8,
    momentum: float = 0.99,
) -> Tensor:
    """``audio`` moved towards a waveform whose STFT magnitude is ``magnitude``, keeping its phase.

    The phase of ``audio``'s centred STFT (Hann window of ``win_length``) is put under
    ``magnitude`` and inverted; then ``n_iter`` fast Griffin-Lim iterations (as in
    :func:`fast_griffin_lim`) refine it. ``n_iter = 0`` is the single projection: ``audio``'s phase,
    ``magnitude``'s magnitude. A bin where ``audio`` has no energy gets phase 0.

    Args:
        audio: Waveform ``(..., T)``.
        magnitude: Target linear magnitude ``(..., n_fft // 2 + 1, T // hop_length + 1)`` (the
            frame count of a centred STFT of ``T`` samples); leading dimensions match ``audio``'s.

    Returns:
        Audio ``(..., T)`` in ``magnitude``'s real dtype.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    length = audio.shape[-1]
    frames = length // hop_length + 1
    if magnitude.shape[-2:] != (n_fft // 2 + 1, frames):
        raise ValueError(f"magnitude must be (..., {n_fft // 2 + 1}, {frames}) for {length} samples, "
                         f"got {tuple(magnitude.shape)}")
    shape = magnitude.shape
    magnitude = magnitude.reshape(-1, *shape[-2:])
    window = torch.hann_window(win_length, dtype=magnitude.dtype, device=magnitude.device)
    spectrum = torch.stft(audio.reshape(-1, length).to(magnitude.dtype), n_fft=n_fft, hop_length=hop_length,
                          win_length=win_length, window=window, center=True, pad_mode="reflect",
                          normalized=False, onesided=True, return_complex=True)
    angles = torch.where(spectrum.abs() > 0, spectrum / (spectrum.abs() + 1e-16), torch.ones_like(spectrum))
    projected = _iterate(magnitude, angles, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
                         n_iter=n_iter, momentum=momentum, length=length)
    return projected.reshape(*shape[:-2], length)


def _iterate(magnitude: Tensor, angles: Tensor, *, n_fft: int, hop_length: int, win_length: int, n_iter: int,
             momentum: float, length: int | None) -> Tensor:
    """Fast Griffin-Lim from unit-modulus (or, for the random start, any) ``angles``; ``(B, T)``."""
    window = torch.hann_window(win_length, dtype=magnitude.dtype, device=magnitude.device)
    stft = dict(n_fft=n_fft, hop_length=hop_length, win_length=win_length, window=window)
    weight = momentum / (1.0 + momentum)
    previous = torch.zeros((), dtype=magnitude.dtype, device=magnitude.device)
    for _ in range(n_iter):
        inverse = torch.istft(magnitude * angles, length=length, **stft)
        rebuilt = torch.stft(inverse, center=True, pad_mode="reflect", normalized=False, onesided=True,
                             return_complex=True, **stft)
        angles = rebuilt - previous * weight if momentum else rebuilt
        angles = angles / (angles.abs() + 1e-16)
        previous = rebuilt
    return torch.istft(magnitude * angles, length=length, **stft)
