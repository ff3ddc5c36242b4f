"""Objective evaluation of generated audio against references: the engine of ``audiodiff eval``.

Two folders are paired by file name (:func:`pair_files`), each pair is scored with a set of
objective metrics (:func:`score_pair`, :func:`evaluate_pairs`), and the result prints as a
fixed-width table or writes as JSON (:class:`EvalResult`). :func:`resynthesise_folder` makes the
folders for a vocoder: the references trimmed to whole frames, the model's resynthesis from their
mels and a Griffin-Lim floor (:func:`griffin_lim`) from the same mels.

Metrics (one :class:`PairScore` field each; ``None`` with a note when not computable). ``ref`` and
``gen`` are the two clips at the evaluation rate ``sr`` after trimming to the shorter one;
"at 16 kHz" means both resampled with :func:`audiodiff.io.audio.resample` (soxr).

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
judges (optional, when installed)
    ``distillmos`` (DistillMOS naturalness of ``gen``, 1..5), ``dnsmos`` (DNSMOS P.835 ``sig``,
    ``bak``, ``ovrl`` and P.808 ``p808`` of ``gen`` via ``speechmos``), ``visqol`` (ViSQOL v3
    speech mode MOS-LQO of ``gen`` against ``ref``, via ``visqol-python``; with
    ``ai-edge-litert`` installed it uses the C++ version's lattice mapper, else a polynomial
    mapping and a note), all at 16 kHz. The judges score whatever ``gen`` is; only ViSQOL
    needs a non-silent reference.

Silence: a clip whose peak is below -80 dBFS counts as silent. A silent reference leaves every
reference-based metric ``None`` (judges still score the generated clip); a silent generated clip
gets a note, and the metrics that cannot score silence (PESQ, F0 RMSE) are ``None``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from audiodiff.io.audio import (
    AudioError, PathLike, as_mono_array, display_path, load_audio, one_line, resample, save_audio,
)
from audiodiff.io.audio_files import audio_files_by_name
from audiodiff.io.files import write_json  # noqa: F401 - part of this module's API
from audiodiff.mel import MelConfig, MelSpectrogram, mel_preset as get_mel_preset

if TYPE_CHECKING:
    from audiodiff.pipeline.audio_diffusion import AudioDiffusion

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


# ---------------------------------------------------------------- metric table
@dataclass(frozen=True)
class MetricInfo:
    """How one metric is named, printed and read."""

    key: str
    header: str
    higher_is_better: bool | None
    digits: int
    description: str


METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("pesq_wb", "PESQ", True, 3, "wideband PESQ (P.862.2) at 16 kHz, MOS-LQO 1.04..4.64"),
    MetricInfo("stoi", "STOI", True, 3, "short-time objective intelligibility, 0..1"),
    MetricInfo("estoi", "ESTOI", True, 3, "extended STOI, 0..1"),
    MetricInfo("mrstft", "MR-STFT", False, 3, "multi-resolution STFT distance (convergence + log-magnitude L1)"),
    MetricInfo("mel_l1", "mel-L1", False, 3, "mean |log-mel difference| in the preset's log units"),
    MetricInfo("mcd_db", "MCD", False, 2, "mel-cepstral distortion (c1..c13, frame-aligned), dB"),
    MetricInfo("f0_rmse_cents", "F0-cents", False, 1, "F0 RMSE over frames voiced in both (pyin), cents"),
    MetricInfo("f0_rmse_hz", "F0-Hz", False, 2, "F0 RMSE over frames voiced in both (pyin), Hz"),
    MetricInfo("vuv_f1", "V/UV-F1", True, 3, "voiced/unvoiced F1 with the reference's voicing as truth"),
    MetricInfo("delay_ms", "delay-ms", None, 2, "lag of generated behind reference by cross-correlation, ms"),
)

#: Metric groups that :func:`score_pair` can compute, and the fields each fills.
METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "pesq": ("pesq_wb",),
    "stoi": ("stoi", "estoi"),
    "mrstft": ("mrstft",),
    "mel": ("mel_l1",),
    "mcd": ("mcd_db",),
    "f0": ("f0_rmse_cents", "f0_rmse_hz", "vuv_f1"),
    "delay": ("delay_ms",),
}

#: Optional judges: name -> (module to import, pip package, result keys).
JUDGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "distillmos": ("distillmos", "distillmos", ("distillmos",)),
    "dnsmos": ("speechmos.dnsmos", "speechmos onnxruntime", ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")),
    "visqol": ("visqol", "visqol-python", ("visqol",)),
}

JUDGE_METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("distillmos", "DistillMOS", True, 3, "DistillMOS naturalness of the generated clip, 1..5"),
    MetricInfo("dnsmos_ovrl", "DNSMOS-ovrl", True, 3, "DNSMOS P.835 overall quality of the generated clip"),
    MetricInfo("dnsmos_sig", "DNSMOS-sig", True, 3, "DNSMOS P.835 speech signal quality"),
    MetricInfo("dnsmos_bak", "DNSMOS-bak", True, 3, "DNSMOS P.835 background noise quality"),
    MetricInfo("dnsmos_p808", "DNSMOS-p808", True, 3, "DNSMOS P.808 overall quality"),
    MetricInfo("visqol", "ViSQOL", True, 3, "ViSQOL v3 speech-mode MOS-LQO against the reference"),
)

_INFO: dict[str, MetricInfo] = {m.key: m for m in METRICS + JUDGE_METRICS}


class MetricUnavailable(Exception):
    """A metric that cannot be computed for this pair; ``str()`` says why in one line."""


# ---------------------------------------------------------------- pairing
@dataclass
class Pairing:
    """Files of two folders matched by name (relative path without suffix, ``/``-separated).

    ``pairs`` holds ``(name, reference path, generated path)`` sorted by name; ``missing_gen``
    the names of references without a generated file, ``missing_ref`` the reverse.
    """

    pairs: list[tuple[str, Path, Path]]
    missing_gen: list[str] = field(default_factory=list)
    missing_ref: list[str] = field(default_factory=list)


def pair_files(ref_dir: PathLike, gen_dir: PathLike) -> Pairing:
    """Pair the audio files of ``ref_dir`` and ``gen_dir`` by name (see :func:`audiodiff.io.audio_files.audio_files_by_name`).

    ``ref/a/x.flac`` pairs with ``gen/a/x.wav``. Raises ``FileNotFoundError`` for a missing
    folder and ``ValueError`` when no file pairs up.
    """
    refs, gens = audio_files_by_name(ref_dir), audio_files_by_name(gen_dir)
    names = sorted(set(refs) & set(gens))
    if not names:
        raise ValueError(
            f"no files pair up: {len(refs)} audio file(s) in {ref_dir}, {len(gens)} in {gen_dir}; files pair "
            "by their path relative to the folder without the suffix (ref/a/x.flac with gen/a/x.wav)"
        )
    return Pairing(
        pairs=[(name, refs[name], gens[name]) for name in names],
        missing_gen=sorted(set(refs) - set(gens)),
        missing_ref=sorted(set(gens) - set(refs)),
    )


# ---------------------------------------------------------------- signal helpers
def _to_rate(audio: np.ndarray, sample_rate: int, new_rate: int) -> np.ndarray:
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


def _shift(reference: np.ndarray, generated: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
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
def _mel_frontend(preset: str, sample_rate: int) -> MelSpectrogram:
    return MelSpectrogram(get_mel_preset(preset, sample_rate=sample_rate))


def _mrstft(reference: np.ndarray, generated: np.ndarray) -> float:
    from audiodiff.dsp.spectral import MRSTFT_RESOLUTIONS, multi_resolution_stft_distance

    longest = max(n_fft for n_fft, _, _ in MRSTFT_RESOLUTIONS)
    if len(reference) <= longest // 2:
        raise MetricUnavailable(f"clip shorter than {longest // 2 + 1} samples, the largest MR-STFT window")
    ref, gen = torch.from_numpy(reference).float(), torch.from_numpy(generated).float()
    return float(multi_resolution_stft_distance(gen, ref)[0])


def _mel_l1(reference: np.ndarray, generated: np.ndarray, sample_rate: int, preset: str) -> float:
    from audiodiff.dsp.spectral import mel_l1_distance

    frontend = _mel_frontend(preset, sample_rate)
    if len(reference) < frontend.config.n_fft:
        raise MetricUnavailable(f"clip shorter than one {frontend.config.n_fft}-sample mel window")
    with torch.no_grad():
        ref, gen = frontend(torch.from_numpy(reference).float()), frontend(torch.from_numpy(generated).float())
    return float(mel_l1_distance(gen, ref)[0])


# ---------------------------------------------------------------- judges
def available_judges() -> list[str]:
    """The optional judges (of :data:`JUDGES`) whose packages import on this machine."""
    return [name for name in JUDGES if _judge_missing(name) is None]


def _judge_missing(name: str) -> str | None:
    """``None`` when judge ``name`` can run, else a one-line reason."""
    module, package, _ = JUDGES[name]
    try:
        importlib.import_module(module)
        if name == "dnsmos":
            importlib.import_module("onnxruntime")
    except Exception as error:  # noqa: BLE001 - a broken install is as unusable as a missing one
        return f"judge {name!r} needs `pip install {package}` ({type(error).__name__}: {error})"
    return None


def check_judges(judges: Iterable[str]) -> tuple[str, ...]:
    """Validate judge names; raises ``ValueError`` naming an unknown or not installed judge."""
    judges = tuple(judges)
    for name in judges:
        if name not in JUDGES:
            raise ValueError(f"unknown judge {name!r}; choose from {sorted(JUDGES)}")
        missing = _judge_missing(name)
        if missing:
            raise ValueError(missing)
    return judges


@functools.lru_cache(maxsize=1)
def _distillmos_model() -> torch.nn.Module:
    import distillmos

    with contextlib.redirect_stdout(io.StringIO()):  # it prints where it loaded its weights from
        return distillmos.ConvTransformerSQAModel().eval()


def _visqol_has_lattice() -> bool:
    """Whether ViSQOL can use its deep-lattice MOS mapper (the C++ default; needs ai-edge-litert)."""
    try:
        importlib.import_module("ai_edge_litert.interpreter")
    except Exception:  # noqa: BLE001
        return False
    return True


@functools.lru_cache(maxsize=1)
def _visqol_api() -> Any:
    from visqol import VisqolApi

    api = VisqolApi()
    api.create(mode="speech", use_lattice_model=_visqol_has_lattice())
    return api


def _run_judge(name: str, reference16: np.ndarray, generated16: np.ndarray) -> dict[str, float]:
    """Scores of judge ``name`` (keys of :data:`JUDGES`) for 16 kHz clips ``(T,)``."""
    if len(generated16) == 0:
        raise MetricUnavailable("empty clip")
    if name == "visqol" and is_silent(reference16):
        raise MetricUnavailable("ViSQOL needs a non-silent reference")
    if name == "distillmos":
        with torch.inference_mode():
            mos = _distillmos_model()(torch.from_numpy(generated16).float().unsqueeze(0))
        return {"distillmos": float(mos.reshape(-1)[0])}
    if name == "dnsmos":
        from speechmos import dnsmos

        result = dnsmos.run(np.clip(generated16, -1.0, 1.0).astype(np.float32), SPEECH_RATE)
        return {f"dnsmos_{k}": float(result[f"{k}_mos"]) for k in ("ovrl", "sig", "bak", "p808")}
    if name == "visqol":
        result = _visqol_api().measure_from_arrays(reference16, generated16, SPEECH_RATE)
        return {"visqol": float(result.moslqo)}
    raise ValueError(f"unknown judge {name!r}")


# ---------------------------------------------------------------- one pair
@dataclass
class PairScore:
    """Scores of one (reference, generated) pair; ``None`` where not computable (see ``notes``).

    Field definitions are in the module docstring; ``duration_s`` is the scored length in
    seconds after trimming (and alignment).
    """

    pesq_wb: float | None = None
    stoi: float | None = None
    estoi: float | None = None
    mrstft: float | None = None
    mel_l1: float | None = None
    mcd_db: float | None = None
    f0_rmse_cents: float | None = None
    f0_rmse_hz: float | None = None
    vuv_f1: float | None = None
    delay_ms: float | None = None
    judges: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def values(self) -> dict[str, float | None]:
        """Every metric (judges included) by key."""
        return {**{m.key: getattr(self, m.key) for m in METRICS}, **self.judges}


_FIELDS = frozenset(m.key for m in METRICS)


def _measure(score: PairScore, keys: Sequence[str], compute: Callable[[], Any]) -> None:
    """Store ``compute()`` (a float, a tuple for several keys, or a dict) in ``score``.

    Keys outside :data:`METRICS` go to ``score.judges``. A :class:`MetricUnavailable` or any
    other error, or a non-finite value, leaves the values ``None`` and adds a note naming them.
    """
    try:
        result = compute()
    except Exception as error:  # noqa: BLE001 - one metric must not sink the others
        reason = str(error) if isinstance(error, MetricUnavailable) else f"failed ({type(error).__name__}: {error})"
        score.notes.append(f"{'/'.join(keys)}: {' '.join(reason.split())}")
        result = {}
    if not isinstance(result, dict):
        result = dict(zip(keys, result if isinstance(result, tuple) else (result,)))
    for key in keys:
        value = result.get(key)
        if value is not None and not math.isfinite(value):
            score.notes.append(f"{key}: not a finite number ({value})")
            value = None
        value = None if value is None else float(value)
        if key in _FIELDS:
            setattr(score, key, value)
        else:
            score.judges[key] = value


def _resolve_groups(metrics: Iterable[str] | None) -> tuple[str, ...]:
    groups = tuple(METRIC_GROUPS) if metrics is None else tuple(metrics)
    unknown = sorted(set(groups) - set(METRIC_GROUPS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRIC_GROUPS)}")
    return groups


def _trim(
    reference: np.ndarray, generated: np.ndarray, sample_rate: int, hop: int, notes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Cut both clips to the shorter; a difference of more than ``hop`` samples adds a note."""
    n_ref, n_gen = len(reference), len(generated)
    if abs(n_ref - n_gen) > hop:
        notes.append(
            f"lengths differ by {abs(n_ref - n_gen)} samples (reference {n_ref / sample_rate:.3f} s, "
            f"generated {n_gen / sample_rate:.3f} s, more than one {hop}-sample hop); both trimmed to the shorter"
        )
    n = min(n_ref, n_gen)
    return reference[:n], generated[:n]


def score_pair(
    ref_audio: np.ndarray | Tensor,
    gen_audio: np.ndarray | Tensor,
    sample_rate: int,
    *,
    mel_preset: str = "hifigan",
    judges: Iterable[str] = (),
    metrics: Iterable[str] | None = None,
    align: bool = False,
) -> PairScore:
    """Score ``gen_audio`` against ``ref_audio``: mono ``(T,)`` float arrays at ``sample_rate`` Hz.

    Both are trimmed to the shorter (a note when they differ by more than one hop of
    ``mel_preset`` at ``sample_rate``). ``metrics`` picks groups of :data:`METRIC_GROUPS` (all by
    default); ``judges`` adds optional judges (``ValueError`` when one is not installed).
    ``align=True`` shifts ``gen_audio`` by the delay :func:`estimate_delay` finds before scoring.
    Never raises for the audio's content: a metric that cannot be computed is ``None`` plus a note.
    """
    groups, judges = _resolve_groups(metrics), check_judges(judges)
    ref = as_mono_array(ref_audio, np.float64, "reference audio")
    gen = as_mono_array(gen_audio, np.float64, "generated audio")
    score = PairScore()
    ref, gen = _trim(ref, gen, sample_rate, get_mel_preset(mel_preset, sample_rate=sample_rate).hop_length, score.notes)
    if is_silent(ref):
        score.notes.append("reference is silent (peak below -80 dBFS): reference-based metrics are undefined")
    elif not is_silent(gen) and ("delay" in groups or align):
        ref, gen = _delay(score, ref, gen, sample_rate, align)
    score.duration_s = len(ref) / sample_rate
    if is_silent(gen):
        score.notes.append("generated clip is silent (peak below -80 dBFS)")
    ref16, gen16 = _to_rate(ref, sample_rate, SPEECH_RATE), _to_rate(gen, sample_rate, SPEECH_RATE)
    if not is_silent(ref):
        _reference_metrics(score, groups, ref, gen, ref16, gen16, sample_rate, mel_preset)
    for name in judges:
        _measure(score, JUDGES[name][2], lambda name=name: _run_judge(name, ref16, gen16))
        if name == "visqol" and not _visqol_has_lattice():
            score.notes.append("visqol: polynomial MOS mapping (install ai-edge-litert for the lattice "
                               "mapper of the C++ ViSQOL); it can read 1-2 points higher")
    return score


def _delay(
    score: PairScore, ref: np.ndarray, gen: np.ndarray, sample_rate: int, align: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Fill ``delay_ms`` (and note / compensate it); returns the clips to score."""
    lag, coherence = estimate_delay(ref, gen, sample_rate)
    if coherence < MIN_COHERENCE:
        score.notes.append(
            f"delay_ms: waveforms not coherent enough to measure a delay (correlation < {MIN_COHERENCE})"
        )
        return ref, gen
    score.delay_ms = 1000.0 * lag / sample_rate
    if abs(score.delay_ms) >= DELAY_NOTE_MS:
        if align:
            score.notes.append(f"generated lags the reference by {score.delay_ms:.2f} ms; compensated before scoring")
            return _shift(ref, gen, lag)
        score.notes.append(
            f"generated lags the reference by {score.delay_ms:.2f} ms (correlation {coherence:.2f}); STOI, MR-STFT, "
            "mel, MCD and F0 metrics are not delay-compensated (align=True compensates)"
        )
    return ref, gen


def _reference_metrics(
    score: PairScore, groups: Collection[str], ref: np.ndarray, gen: np.ndarray,
    ref16: np.ndarray, gen16: np.ndarray, sample_rate: int, preset: str,
) -> None:
    """The metrics that compare ``gen`` with a non-silent ``ref``."""
    if "pesq" in groups:
        _measure(score, ("pesq_wb",), lambda: pesq_wb(ref16, gen16))
    if "stoi" in groups:
        _measure(score, ("stoi", "estoi"), lambda: stoi_scores(ref, gen, sample_rate))
    if "mrstft" in groups:
        _measure(score, ("mrstft",), lambda: _mrstft(ref, gen))
    if "mel" in groups:
        _measure(score, ("mel_l1",), lambda: _mel_l1(ref, gen, sample_rate, preset))
    if "mcd" in groups:
        _measure(score, ("mcd_db",), lambda: mel_cepstral_distortion(ref, gen, sample_rate))
    if "f0" in groups:
        before = len(score.notes)
        _measure(score, METRIC_GROUPS["f0"], lambda: f0_scores(ref16, gen16))
        if len(score.notes) == before and score.vuv_f1 is None:
            score.notes.append("f0_rmse/vuv_f1: pyin found no voiced frame in the reference")
        elif len(score.notes) == before and score.f0_rmse_cents is None:
            score.notes.append("f0_rmse: no frame is voiced in both clips")


# ---------------------------------------------------------------- many pairs
@dataclass
class FileResult:
    """One pair of :func:`evaluate_pairs`: a score, or the one-line ``error`` that prevented it."""

    name: str
    reference: Path
    generated: Path
    score: PairScore | None = None
    error: str | None = None


@dataclass(frozen=True)
class MetricMean:
    """Mean of a metric over the files where it is not ``None``, and how many those are."""

    mean: float | None
    count: int


@dataclass
class EvalResult:
    """Per-file scores of an evaluation, with means, a table and JSON."""

    files: list[FileResult]
    sample_rate: int
    mel_preset: str
    keys: list[str]
    missing_gen: list[str] = field(default_factory=list)
    missing_ref: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        """One line per file that could not be scored."""
        return [f.error for f in self.files if f.error]

    def means(self) -> dict[str, MetricMean]:
        """Per metric key: mean over the scored files where the value is not ``None``."""
        result: dict[str, MetricMean] = {}
        for key in self.keys:
            values = [v for f in self.files if f.score is not None and (v := f.score.values().get(key)) is not None]
            result[key] = MetricMean(float(np.mean(values)) if values else None, len(values))
        return result

    def table(self) -> str:
        """A fixed-width table: one row per file, then the mean and count rows, notes and errors."""
        width = max([len("mean (n)")] + [len(_short(f.name)) for f in self.files])
        headers = [_INFO[k].header if k in _INFO else k for k in self.keys]
        widths = [max(len(h), 8) for h in headers]
        lines = ["  ".join([f"{'file':<{width}}"] + [f"{h:>{w}}" for h, w in zip(headers, widths)])]
        for f in self.files:
            values = f.score.values() if f.score else {}
            cells = [_cell(values.get(k), k, w) if f.score else f"{'error':>{w}}" for k, w in zip(self.keys, widths)]
            lines.append("  ".join([f"{_short(f.name):<{width}}"] + cells))
        means = self.means()
        mean_cells = [_cell(means[k].mean, k, w) for k, w in zip(self.keys, widths)]
        lines.append("  ".join([f"{'mean':<{width}}"] + mean_cells))
        lines.append("  ".join([f"{'n':<{width}}"] + [f"{means[k].count:>{w}}" for k, w in zip(self.keys, widths)]))
        lines.append(_legend(self.keys))
        lines += _grouped_notes(self.files)
        lines += [f"error: {e}" for e in self.errors]
        if self.missing_gen:
            lines.append(f"{len(self.missing_gen)} reference(s) without a generated file: {_listing(self.missing_gen)}")
        if self.missing_ref:
            lines.append(f"{len(self.missing_ref)} generated file(s) without a reference: {_listing(self.missing_ref)}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: settings, metric definitions, means, per-file values, notes, errors."""
        return {
            "sample_rate": self.sample_rate,
            "mel_preset": self.mel_preset,
            "metrics": {k: {"description": _INFO[k].description, "higher_is_better": _INFO[k].higher_is_better}
                        for k in self.keys if k in _INFO},
            "means": {k: {"mean": m.mean, "count": m.count} for k, m in self.means().items()},
            "files": [
                {"name": f.name, "reference": str(f.reference), "generated": str(f.generated),
                 "metrics": {k: f.score.values().get(k) for k in self.keys} if f.score else None,
                 "duration_s": f.score.duration_s if f.score else None,
                 "notes": list(f.score.notes) if f.score else [], "error": f.error}
                for f in self.files
            ],
            "errors": self.errors,
            "missing_generated": list(self.missing_gen),
            "missing_reference": list(self.missing_ref),
        }


def _short(name: str, limit: int = 40) -> str:
    name = display_path(name)
    return name if len(name) <= limit else "..." + name[-(limit - 3):]


def _cell(value: float | None, key: str, width: int) -> str:
    if value is None:
        return f"{'-':>{width}}"
    digits = _INFO[key].digits if key in _INFO else 3
    return f"{value:>{width}.{digits}f}"


def _legend(keys: Sequence[str]) -> str:
    higher = [_INFO[k].header for k in keys if k in _INFO and _INFO[k].higher_is_better is True]
    lower = [_INFO[k].header for k in keys if k in _INFO and _INFO[k].higher_is_better is False]
    return (f"higher is better: {', '.join(higher) or '-'}; lower is better: {', '.join(lower) or '-'}; "
            "'-' = not computable (see notes)")


def _grouped_notes(files: Sequence[FileResult]) -> list[str]:
    """``note: <file>: <text>`` lines; a text that several files share is printed once."""
    by_text: dict[str, list[str]] = {}
    for f in files:
        for note in f.score.notes if f.score else []:
            by_text.setdefault(note, []).append(display_path(f.name))
    return [
        f"note: {names[0]}: {text}" if len(names) == 1 else f"note: {len(names)} files ({_listing(names, 5)}): {text}"
        for text, names in by_text.items()
    ]


def _listing(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def result_keys(metrics: Iterable[str] | None = None, judges: Iterable[str] = ()) -> list[str]:
    """The metric keys (table columns) that ``metrics`` groups and ``judges`` produce, in order."""
    groups = _resolve_groups(metrics)
    keys = [m.key for m in METRICS if any(m.key in METRIC_GROUPS[g] for g in groups)]
    return keys + [k for name in judges for k in JUDGES[name][2]]


def evaluate_pairs(
    pairing: Pairing,
    sample_rate: int,
    *,
    mel_preset: str = "hifigan",
    judges: Iterable[str] = (),
    metrics: Iterable[str] | None = None,
    align: bool = False,
    progress: bool = True,
    on_error: Callable[[str], None] | None = None,
) -> EvalResult:
    """Score every pair of ``pairing`` with :func:`score_pair`, both files loaded at ``sample_rate``.

    Files are read with :func:`audiodiff.io.audio.load_audio` (downmixed, resampled). A file that
    cannot be read (or scored) becomes one error line in its row, also passed to ``on_error``;
    the other pairs go on. A file that reading converts (another rate, stereo, 24-bit, a float
    peak beyond 1) gets a note saying so. ``progress`` shows a tqdm bar on stderr.
    """
    from tqdm import tqdm

    judges = check_judges(judges)
    result = EvalResult(files=[], sample_rate=sample_rate, mel_preset=mel_preset,
                        keys=result_keys(metrics, judges), missing_gen=list(pairing.missing_gen),
                        missing_ref=list(pairing.missing_ref))
    for name, ref_path, gen_path in tqdm(pairing.pairs, desc="scoring", unit="file", disable=not progress):
        row = FileResult(name=name, reference=ref_path, generated=gen_path)
        notes: list[str] = []
        try:
            ref, _ = load_audio(ref_path, sample_rate, on_conversion=lambda note: notes.append(f"reference: {note}"))
            gen, _ = load_audio(gen_path, sample_rate, on_conversion=lambda note: notes.append(f"generated: {note}"))
            row.score = score_pair(ref, gen, sample_rate, mel_preset=mel_preset, judges=judges,
                                   metrics=metrics, align=align)
            row.score.notes[:0] = notes
        except AudioError as error:
            row.error = str(error)
        except Exception as error:  # noqa: BLE001 - one bad pair must not end a long evaluation
            row.error = f"{display_path(name)}: {type(error).__name__}: {one_line(error)}"
        if row.error and on_error is not None:
            on_error(row.error)
        result.files.append(row)
    return result


# ---------------------------------------------------------------- Griffin-Lim floor
def mel_to_linear(mel: Tensor, mel_config: MelConfig) -> Tensor:
    """Undo a preset's log compression and filterbank: ``(..., n_mels, frames)`` -> ``(..., n_fft//2+1, frames)``.

    ``hifigan``: ``exp(mel)``; ``diffwave``: ``10 ** (5 * mel - 4)`` times the Hann window's L2
    norm (the inverse of ``(20 log10(m) - 20 + 100) / 100`` and the window normalisation). The
    linear magnitude is the pseudo-inverse of the module's filterbank applied to the mel
    magnitude, clamped to >= 0 (bins outside ``f_min..f_max`` come back as 0).
    """
    frontend = MelSpectrogram(mel_config)
    mel = mel.float().cpu()
    if mel_config.style == "hifigan":
        magnitude = mel.exp()
    else:
        magnitude = torch.pow(10.0, 5.0 * mel - 4.0) * frontend.window.pow(2).sum().sqrt()
    inverse = torch.linalg.pinv(frontend.mel_basis.double()).float()
    return (inverse @ magnitude).clamp(min=0.0)


def griffin_lim(mel: Tensor | np.ndarray, mel_config: MelConfig, n_iter: int = 64, *, seed: int = 0) -> Tensor:
    """Audio from a log-mel of ``mel_config``'s convention by Griffin-Lim: the no-vocoder floor.

    ``mel`` ``(n_mels, frames)`` or ``(B, n_mels, frames)`` -> float32 CPU audio ``(frames * hop,)``
    or ``(B, frames * hop)``. The linear magnitude comes from :func:`mel_to_linear`, the phase from
    :func:`audiodiff.dsp.griffin_lim.fast_griffin_lim` (momentum 0.99, Hann window, the preset's
    n_fft / hop / win, random initial phase drawn from ``seed``). ``hifigan`` frames are
    centred on ``(i + 1/2) * hop`` (reflect padding of ``(n_fft - hop) / 2``, ``center=False``),
    Griffin-Lim's on ``i * hop``, so its output is shifted by half a hop.
    """
    from audiodiff.dsp.griffin_lim import fast_griffin_lim

    mel = torch.as_tensor(mel)
    frames, hop = mel.shape[-1], mel_config.hop_length
    linear = mel_to_linear(mel, mel_config)
    linear = torch.cat([linear, linear[..., -1:]], dim=-1)  # a centred STFT of frames*hop samples has frames+1
    audio = fast_griffin_lim(
        linear, n_fft=mel_config.n_fft, hop_length=hop, win_length=mel_config.win_length,
        n_iter=n_iter, length=frames * hop, generator=torch.Generator().manual_seed(seed),
    )
    if mel_config.style == "hifigan":
        audio = torch.nn.functional.pad(audio, (hop // 2, 0))[..., : frames * hop]
    return audio


# ---------------------------------------------------------------- resynthesis
@dataclass
class ResynthesisReport:
    """What :func:`resynthesise_folder` did; ``errors`` holds one ``"<path>: <reason>"`` line per bad
    file, ``notes`` one ``"<path>: <conversion>"`` line per file that reading converted."""

    out_dir: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def reference_dir(self) -> Path:
        return self.out_dir / "reference"

    @property
    def model_dir(self) -> Path:
        return self.out_dir / "model"

    @property
    def griffin_lim_dir(self) -> Path:
        return self.out_dir / "griffin-lim"


def resynthesise_folder(
    model: "AudioDiffusion",
    data_dir: PathLike,
    out_dir: PathLike,
    *,
    sampler: str = "fast",
    steps: int | None = None,
    seed: int = 0,
    include_griffin_lim: bool = True,
    griffin_lim_iters: int = 64,
    progress: bool = True,
    on_error: Callable[[str], None] | None = None,
) -> ResynthesisReport:
    """Resynthesise every audio file of ``data_dir`` with ``model`` for scoring.

    Each file (named as in :func:`audiodiff.io.audio_files.audio_files_by_name`; ``out_dir`` is skipped if it lies inside
    ``data_dir``) is loaded at the model's rate, turned into ``model.mel`` ``(1, n_mels, frames)``
    and written as 16-bit wavs of ``frames * hop`` samples: ``out_dir/reference/<name>.wav``
    (the input trimmed), ``out_dir/model/<name>.wav`` (``model.vocode`` with ``sampler``,
    ``steps`` and seed ``seed + k`` for the k-th file in name order) and, with
    ``include_griffin_lim``, ``out_dir/griffin-lim/<name>.wav`` (:func:`griffin_lim`). Outputs
    that exist are kept (writes are atomic, so a stopped run resumes where it ended). A file
    that cannot be read or is too short becomes one error line (also passed to ``on_error``).
    Score afterwards with ``pair_files(report.reference_dir, report.model_dir)``.
    """
    from tqdm import tqdm

    if model.mel_frontend is None:
        raise ValueError("an unconditional model cannot resynthesise audio; it has no mel front end")
    model.sigmas(sampler, steps)  # a bad sampler or step count is a usage error, not one per file
    out_dir = Path(out_dir)
    report = ResynthesisReport(out_dir=out_dir)
    files = audio_files_by_name(data_dir, exclude=out_dir)
    bar = tqdm(sorted(files.items()), desc="resynthesising", unit="file", disable=not progress)
    for k, (name, path) in enumerate(bar):
        targets = {"reference": report.reference_dir, "model": report.model_dir}
        if include_griffin_lim:
            targets["griffin-lim"] = report.griffin_lim_dir
        todo = {kind: folder / f"{name}.wav" for kind, folder in targets.items()}
        todo = {kind: target for kind, target in todo.items() if not target.is_file()}
        if not todo:
            report.skipped.append(name)
            continue
        try:
            _resynthesise_one(model, path, todo, sampler=sampler, steps=steps, seed=seed + k, iters=griffin_lim_iters,
                              on_conversion=lambda note, path=path: report.notes.append(f"{display_path(path)}: {note}"))
        except AudioError as error:
            report.errors.append(str(error))
        except ValueError as error:
            report.errors.append(f"{display_path(path)}: {one_line(error)}")
        else:
            report.written.append(name)
            continue
        if on_error is not None:
            on_error(report.errors[-1])
    return report


def _resynthesise_one(
    model: "AudioDiffusion", path: Path, todo: dict[str, Path], *,
    sampler: str, steps: int | None, seed: int, iters: int, on_conversion: Callable[[str], None] | None = None,
) -> None:
    """Write the outputs in ``todo`` (kind -> path) for the audio file ``path``."""
    config = model.config.mel
    assert config is not None
    audio, _ = load_audio(path, model.sample_rate, on_conversion=on_conversion)
    if audio.shape[-1] < (needed := max(2 * model.hop_length, config.n_fft)):
        raise ValueError(f"audio is too short ({audio.shape[-1]} samples at {model.sample_rate} Hz) to compute a mel; "
                         f"it needs at least {needed}")
    with torch.inference_mode():
        mel = model.mel(audio).cpu()
    frames = mel.shape[-1]
    outputs: dict[str, Callable[[], Tensor]] = {
        "reference": lambda: audio[: frames * model.hop_length],
        "model": lambda: model.vocode(mel, sampler=sampler, steps=steps, seed=seed)[0].cpu(),
        "griffin-lim": lambda: griffin_lim(mel[0], config, iters, seed=seed),
    }
    for kind, target in todo.items():
        save_audio(target, outputs[kind](), model.sample_rate)
