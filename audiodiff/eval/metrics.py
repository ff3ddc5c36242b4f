"""The signal metrics of an evaluation, each a function of two mono clips ``(T,)``.

``ref`` and ``gen`` are the two clips at the evaluation rate ``sr`` after trimming to the shorter
one; "at 16 kHz" means both resampled with :func:`audiodiff.io.audio.resample` (soxr). Each
function raises :class:`MetricUnavailable` (one line saying why) when the pair cannot be scored.

``pesq_wb``
    Wideband PESQ (ITU-T P.862.2), ``pesq.pesq(16000, ref, gen, "wb")`` at 16 kHz. MOS-LQO,
    1.04 (bad) to 4.64 (identical). PESQ aligns the signals itself: a copy delayed by 20 ms
    still scores 4.63 (when no speech is cut off at the ends).
``stoi``, ``estoi``
    ``pystoi.stoi(ref, gen, sr, extended=False / True)`` (pystoi resamples to 10 kHz and drops
    frames 40 dB below the reference's loudest). 0..1, 1 for identical signals. Not robust to a
    delay: 20 ms costs about 0.4 on speech.
``mrstft``
    :func:`audiodiff.dsp.spectral.multi_resolution_stft_distance`: mean over the three Parallel
    WaveGAN resolutions of spectral convergence + mean ``|ln|S_ref| - ln|S_gen||``; 0 for
    identical signals, lower is better.
``mel_l1``
    :func:`audiodiff.dsp.spectral.mel_l1_distance` of the log-mels of the named preset at ``sr``
    (``mel_preset(name, sample_rate=sr)``): mean absolute difference in that preset's log units
    (natural log for ``hifigan``, [0, 1]-scaled dB/100 for ``diffwave``).
``mcd_db``
    Mel-cepstral distortion in dB, frame-aligned (no DTW: vocoder output is time-aligned), see
    :func:`mel_cepstral_distortion` for the exact definition.
``f0_rmse_cents``, ``f0_rmse_hz``, ``vuv_f1``
    From ``librosa.pyin`` at 16 kHz, see :func:`f0_scores`.
``delay_ms``
    Lag of ``gen`` behind ``ref`` found by cross-correlation (:func:`estimate_delay`); ``None``
    when the waveforms are not coherent enough to tell (e.g. Griffin-Lim's random phase). A lag
    of 1 ms or more adds a note; ``align=True`` compensates it before scoring.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch
from torch import Tensor

from audiodiff.io.audio import resample
from audiodiff.mel import MelSpectrogram, mel_preset as get_mel_preset

#: Rate of PESQ, pyin and the judges.
SPEECH_RATE = 16000
#: A clip whose peak is below this (-80 dBFS) is silent.
SILENCE_PEAK = 1e-4
#: pyin settings (at :data:`SPEECH_RATE`): 64 ms frames (two periods of ``F0_FMIN``), 10 ms hop.
F0_FMIN, F0_FMAX, F0_FRAME, F0_HOP = 50.0, 600.0, 1024, 160
#: Mel-cepstral distortion: coefficients c1..c13 of 40 Slaney mel bands; frames within 40 dB of
#: the reference's loudest frame count.
MCD_ORDER, MCD_N_MELS, MCD_TOP_DB = 13, 40, 40.0
#: Delays are searched within +-250 ms; a normalised cross-correlation peak below 0.5 means
#: "not coherent enough to tell" (Griffin-Lim output of speech peaks near 0.2, at a random lag);
#: a lag of at least 1 ms gets a note.
MAX_DELAY_S, MIN_COHERENCE, DELAY_NOTE_MS = 0.25, 0.5, 1.0


class MetricUnavailable(Exception):
    """A metric that cannot be computed for this pair; ``str()`` says why in one line."""


# ---------------------------------------------------------------- signal helpers
def to_rate(audio: np.ndarray, sample_rate: int, new_rate: int) -> np.ndarray:
    """Resample ``(T,)`` with :func:`audiodiff.io.audio.resample` (float64 in and out)."""
    if sample_rate == new_rate or audio.size == 0:
        return audio
    return resample(torch.from_numpy(audio), sample_rate, new_rate).numpy()


def is_silent(audio: np.ndarray) -> bool:
    """True when ``audio`` is empty or its peak is below -80 dBFS (:data:`SILENCE_PEAK`)."""
    return audio.size == 0 or float(np.abs(audio).max()) < SILENCE_PEAK


def estimate_delay(
    reference: np.ndarray, generated: np.ndarray, sample_rate: int, max_seconds: float = MAX_DELAY_S
) -> tuple[int, float]:
    """``(lag, coherence)``: lag in samples of ``generated`` behind ``reference`` (``(T,)`` each).

    The lag maximises the cross-correlation ``sum_n gen[n + lag] * ref[n]`` within
    ``+-max_seconds``; ``coherence`` is that peak divided by ``||ref|| * ||gen||`` (1 for a
    delayed copy, near 0 for unrelated or phase-randomised signals).
    """
    from scipy.signal import correlate, correlation_lags

    corr = correlate(generated, reference, mode="full", method="fft")
    lags = correlation_lags(len(generated), len(reference), mode="full")
    keep = np.abs(lags) <= int(max_seconds * sample_rate)
    corr, lags = corr[keep], lags[keep]
    best = int(np.argmax(corr))
    norm = float(np.linalg.norm(reference) * np.linalg.norm(generated))
    return int(lags[best]), float(corr[best]) / norm if norm > 0 else 0.0


def undo_lag(reference: np.ndarray, generated: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Undo a lag of ``generated`` behind ``reference``; both come back with equal length."""
    if lag > 0:
        generated = generated[lag:]
    elif lag < 0:
        reference = reference[-lag:]
    n = min(len(reference), len(generated))
    return reference[:n], generated[:n]


# ---------------------------------------------------------------- the metrics
def pesq_wb(reference16: np.ndarray, generated16: np.ndarray) -> float:
    """Wideband PESQ of two 16 kHz clips ``(T,)``; raises :class:`MetricUnavailable`."""
    import pesq

    if is_silent(generated16):
        raise MetricUnavailable("generated clip is silent; PESQ cannot score silence")
    try:
        return float(pesq.pesq(SPEECH_RATE, reference16, generated16, "wb"))
    except pesq.NoUtterancesError:
        raise MetricUnavailable("PESQ found no speech (no utterances) in the clip") from None
    except pesq.BufferTooShortError:
        raise MetricUnavailable("clip too short for PESQ") from None
    except pesq.PesqError as error:
        raise MetricUnavailable(f"PESQ failed: {error}") from None


def stoi_scores(reference: np.ndarray, generated: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """``(STOI, ESTOI)`` of two clips ``(T,)`` at ``sample_rate``; raises :class:`MetricUnavailable`."""
    from pystoi import stoi

    if len(reference) < 0.4 * sample_rate:
        raise MetricUnavailable("clip shorter than the 0.4 s (30 frames) STOI needs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = (stoi(reference, generated, sample_rate, extended=False),
                  stoi(reference, generated, sample_rate, extended=True))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise MetricUnavailable("fewer than 30 non-silent STOI frames (about 0.4 s of speech) in the reference")
    return float(scores[0]), float(scores[1])


def _mcd_frame(sample_rate: int) -> tuple[int, int]:
    """``(n_fft, hop)`` of the MCD analysis: the power of two nearest 46.4 ms, a quarter of it."""
    n_fft = 2 ** round(math.log2(sample_rate * 1024 / 22050))
    return n_fft, n_fft // 4


def mel_cepstra(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """``(c, energy_db)``: mel-cepstra ``(MCD_ORDER, frames)`` (c1..c13) and frame energy ``(frames,)`` in dB.

    STFT: Hann window of ``n_fft`` (the power of two nearest 46.4 ms: 1024 at 16-24 kHz, 2048 at
    44.1/48 kHz), hop ``n_fft / 4``, centred. ``P`` = 40-band Slaney mel filterbank (0 Hz to
    Nyquist) times ``|X|^2``; ``L = 0.5 * ln(max(P, 1e-10))`` (natural log of the band amplitude);
    ``c_d = DCT-II_ortho(L)[d] / sqrt(2 * 40)``. The division makes ``c_d`` the cepstrum of the
    mel-warped log-amplitude spectrum, ``L(w) = c_0 + 2 sum_d c_d cos(d w)``: the scale of
    SPTK-style mel-cepstra that the MCD formula assumes.
    """
    import librosa

    n_fft, hop = _mcd_frame(sample_rate)
    power = np.abs(librosa.stft(audio, n_fft=n_fft, hop_length=hop, window="hann", center=True)) ** 2
    mel_power = librosa.feature.melspectrogram(S=power, sr=sample_rate, n_mels=MCD_N_MELS, fmin=0.0,
                                               fmax=sample_rate / 2, htk=False, norm="slaney")
    log_amplitude = 0.5 * np.log(np.maximum(mel_power, 1e-10))
    cepstra = librosa.feature.mfcc(S=log_amplitude, n_mfcc=MCD_ORDER + 1, dct_type=2, norm="ortho")
    energy_db = 10 * np.log10(np.maximum(power.sum(axis=0), 1e-20))
    return cepstra[1:] / math.sqrt(2 * MCD_N_MELS), energy_db


def mel_cepstral_distortion(reference: np.ndarray, generated: np.ndarray, sample_rate: int) -> float:
    """Frame-aligned mel-cepstral distortion in dB of two clips ``(T,)`` of equal length.

    ``MCD = mean_t (10 / ln 10) * sqrt(2 * sum_{d=1..13} (c_d(t) - c'_d(t))^2)`` with the
    mel-cepstra of :func:`mel_cepstra`, over the frames ``t`` whose reference energy is within
    40 dB of the reference's loudest frame (pauses are left out). No DTW: vocoder output is
    time-aligned with its reference. 0 for identical signals. Values are on the scale of
    SPTK-based MCDs but not identical to them (mel filterbank instead of a warped all-pass
    cepstrum).
    """
    n_fft, _ = _mcd_frame(sample_rate)
    if len(reference) < n_fft:
        raise MetricUnavailable(f"clip shorter than one {n_fft}-sample MCD frame")
    ref_c, energy = mel_cepstra(reference, sample_rate)
    gen_c, _ = mel_cepstra(generated, sample_rate)
    frames = energy >= energy.max() - MCD_TOP_DB
    per_frame = (10 / math.log(10)) * np.sqrt(2 * ((ref_c - gen_c) ** 2).sum(axis=0))
    return float(per_frame[frames].mean())


def _pyin(audio16: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(f0 Hz (frames,), voiced bool (frames,))`` of a 16 kHz clip by pyin (50-600 Hz, 64 ms / 10 ms)."""
    import librosa

    f0, voiced, _ = librosa.pyin(audio16, fmin=F0_FMIN, fmax=F0_FMAX, sr=SPEECH_RATE,
                                 frame_length=F0_FRAME, hop_length=F0_HOP)
    return f0, voiced.astype(bool) & np.isfinite(f0)


def f0_scores(reference16: np.ndarray, generated16: np.ndarray) -> dict[str, float | None]:
    """F0 RMSE and voicing F1 of two 16 kHz clips ``(T,)`` of equal length, from ``librosa.pyin``.

    pyin runs at 16 kHz with fmin 50 Hz, fmax 600 Hz, 1024-sample (64 ms) frames and a 160-sample
    (10 ms) hop; a frame is voiced when pyin's ``voiced_flag`` says so. Over the frames voiced in
    both clips: ``f0_rmse_cents = sqrt(mean((1200 * log2(f0_gen / f0_ref))^2))`` and
    ``f0_rmse_hz = sqrt(mean((f0_gen - f0_ref)^2))`` (``None`` without such frames).
    ``vuv_f1 = 2 TP / (2 TP + FP + FN)`` with the reference's voiced frames as the positive truth
    (``None`` when the reference has no voiced frame).
    """
    if len(reference16) < F0_FRAME:
        raise MetricUnavailable(f"clip shorter than one {F0_FRAME}-sample pyin frame at 16 kHz (64 ms)")
    ref_f0, ref_voiced = _pyin(reference16)
    gen_f0, gen_voiced = _pyin(generated16)
    both = ref_voiced & gen_voiced
    scores: dict[str, float | None] = {"f0_rmse_cents": None, "f0_rmse_hz": None, "vuv_f1": None}
    if both.any():
        cents = 1200 * np.log2(gen_f0[both] / ref_f0[both])
        scores["f0_rmse_cents"] = float(np.sqrt(np.mean(cents**2)))
        scores["f0_rmse_hz"] = float(np.sqrt(np.mean((gen_f0[both] - ref_f0[both]) ** 2)))
    if ref_voiced.any():
        tp = int(both.sum())
        fp, fn = int((gen_voiced & ~ref_voiced).sum()), int((ref_voiced & ~gen_voiced).sum())
        scores["vuv_f1"] = 2 * tp / (2 * tp + fp + fn)
    return scores


@functools.lru_cache(maxsize=8)
def _mel_frontend(preset: str, sample_rate: int, device: torch.device) -> MelSpectrogram:
    return MelSpectrogram(get_mel_preset(preset, sample_rate=sample_rate)).to(device)


def mrstft_distance(reference: np.ndarray | Tensor, generated: np.ndarray | Tensor) -> float:
    """:func:`audiodiff.dsp.spectral.multi_resolution_stft_distance` of two clips ``(T,)`` (arrays,
    or tensors on any device); raises :class:`MetricUnavailable` for a clip shorter than half the
    largest window. The ``mrstft`` of ``audiodiff eval``."""
    from audiodiff.dsp.spectral import MRSTFT_RESOLUTIONS, multi_resolution_stft_distance

    longest = max(n_fft for n_fft, _, _ in MRSTFT_RESOLUTIONS)
    if len(reference) <= longest // 2:
        raise MetricUnavailable(f"clip shorter than {longest // 2 + 1} samples, the largest MR-STFT window")
    ref, gen = torch.as_tensor(reference).float(), torch.as_tensor(generated).float()
    return float(multi_resolution_stft_distance(gen, ref)[0])


def log_mel_l1(reference: np.ndarray | Tensor, generated: np.ndarray | Tensor, sample_rate: int, preset: str) -> float:
    """Mean |log-mel difference| of two clips ``(T,)`` in the mels of ``preset`` at ``sample_rate``.

    The ``mel_l1`` of ``audiodiff eval`` (and of ``audiodiff search-schedule``, which calls this):
    :func:`audiodiff.dsp.spectral.mel_l1_distance` of the two log-mels of
    ``MelSpectrogram(mel_preset(preset, sample_rate=sample_rate))``. Arrays, or tensors on any
    device (the front end is built there once); raises :class:`MetricUnavailable` for a clip
    shorter than one ``n_fft`` window.
    """
    from audiodiff.dsp.spectral import mel_l1_distance

    reference, generated = torch.as_tensor(reference), torch.as_tensor(generated)
    frontend = _mel_frontend(preset, sample_rate, reference.device)
    if len(reference) < frontend.config.n_fft:
        raise MetricUnavailable(f"clip shorter than one {frontend.config.n_fft}-sample mel window")
    with torch.no_grad():
        ref, gen = frontend(reference.float()), frontend(generated.float())
    return float(mel_l1_distance(gen, ref)[0])
