"""Scoring: one pair (:func:`score_pair`) and every pair of a :class:`~audiodiff.eval.pairing.Pairing`
(:func:`evaluate_pairs`)."""

from __future__ import annotations

import math
from typing import Any, Callable, Collection, Iterable, Sequence

import numpy as np
from torch import Tensor

from audiodiff.eval.judges import JUDGES, _run_judge, _visqol_has_lattice, check_judges
from audiodiff.eval.metrics import (
    DELAY_NOTE_MS, MIN_COHERENCE, SPEECH_RATE, _mel_l1, _mrstft, _shift, _to_rate, estimate_delay, f0_scores,
    is_silent, mel_cepstral_distortion, pesq_wb, stoi_scores, MetricUnavailable,
)
from audiodiff.eval.pairing import Pairing
from audiodiff.eval.registry import METRIC_GROUPS, METRICS
from audiodiff.eval.report import EvalResult, FileResult, PairScore
from audiodiff.io.audio import AudioError, as_mono_array, display_path, load_audio, one_line
from audiodiff.mel import mel_preset as get_mel_preset

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
