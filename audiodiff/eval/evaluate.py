"""Scoring: one pair (:func:`score_pair`) and every pair of a :class:`~audiodiff.eval.pairing.Pairing`
(:func:`evaluate_pairs`). What is computed comes from :mod:`audiodiff.eval.registry`."""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np
from torch import Tensor

from audiodiff.eval.metrics import (
    DELAY_NOTE_MS, MIN_COHERENCE, SPEECH_RATE, MetricUnavailable, is_silent, to_rate, undo_lag,
)
from audiodiff.eval.pairing import Pairing
from audiodiff.eval.registry import (
    JUDGES, METRICS, REGISTRY, Clips, MetricGroup, check_judges, groups_of, resolve_groups,
)
from audiodiff.eval.report import EvalResult, FileResult, PairScore
from audiodiff.io.audio import AudioError, as_mono_array, display_path, load_audio, one_line
from audiodiff.mel import mel_preset as get_mel_preset

_FIELDS = frozenset(m.key for m in METRICS)


def _measure(score: PairScore, group: MetricGroup, clips: Clips) -> None:
    """Store ``group.compute(clips)`` (a float, a tuple for several keys, or a dict) in ``score``.

    Keys outside :data:`METRICS` go to ``score.judges``. A :class:`MetricUnavailable` or any
    other error, or a non-finite value, leaves the values ``None`` and adds a note naming them;
    then ``group.extra_note`` may add one more.
    """
    keys, notes_before = group.keys, len(score.notes)
    try:
        result = group.compute(clips)
    except Exception as error:  # noqa: BLE001 - one metric must not sink the others
        reason = str(error) if isinstance(error, MetricUnavailable) else f"failed ({type(error).__name__}: {error})"
        score.notes.append(f"{'/'.join(keys)}: {' '.join(reason.split())}")
        result = {}
    if not isinstance(result, dict):
        result = dict(zip(keys, result if isinstance(result, tuple) else (result,)))
    values: dict[str, float | None] = {}
    for key in keys:
        value = result.get(key)
        if value is not None and not math.isfinite(value):
            score.notes.append(f"{key}: not a finite number ({value})")
            value = None
        values[key] = value = None if value is None else float(value)
        if key in _FIELDS:
            setattr(score, key, value)
        else:
            score.judges[key] = value
    if group.extra_note is not None and (note := group.extra_note(values, len(score.notes) == notes_before)):
        score.notes.append(note)


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

    The registry's groups run in three stages: the delay (before the others, as it may shift the
    clips), the reference metrics (only against a non-silent reference), then the judges in the
    order given.
    """
    groups, judges = resolve_groups(metrics), check_judges(judges)
    ref = as_mono_array(ref_audio, np.float64, "reference audio")
    gen = as_mono_array(gen_audio, np.float64, "generated audio")
    score = PairScore()
    ref, gen = _trim(ref, gen, sample_rate, get_mel_preset(mel_preset, sample_rate=sample_rate).hop_length, score.notes)
    if is_silent(ref):
        score.notes.append("reference is silent (peak below -80 dBFS): reference-based metrics are undefined")
    elif not is_silent(gen):
        for group in groups_of("delay"):
            if group.name in groups or align:
                ref, gen = _delay(score, group, Clips(ref, gen, sample_rate, mel_preset), align)
    score.duration_s = len(ref) / sample_rate
    if is_silent(gen):
        score.notes.append("generated clip is silent (peak below -80 dBFS)")
    clips = Clips(ref, gen, sample_rate, mel_preset,
                  to_rate(ref, sample_rate, SPEECH_RATE), to_rate(gen, sample_rate, SPEECH_RATE))
    if not is_silent(ref):
        for group in groups_of("reference"):
            if group.name in groups:
                _measure(score, group, clips)
    for name in judges:
        _measure(score, REGISTRY[name], clips)
    return score


def _delay(score: PairScore, group: MetricGroup, clips: Clips, align: bool) -> tuple[np.ndarray, np.ndarray]:
    """Fill the delay (and note / compensate it); returns the clips to score."""
    ref, gen, sample_rate = clips.reference, clips.generated, clips.sample_rate
    (key,) = group.keys
    lag, coherence = group.compute(clips)
    if coherence < MIN_COHERENCE:
        score.notes.append(
            f"{key}: waveforms not coherent enough to measure a delay (correlation < {MIN_COHERENCE})"
        )
        return ref, gen
    delay_ms = 1000.0 * lag / sample_rate
    setattr(score, key, delay_ms)
    if abs(delay_ms) >= DELAY_NOTE_MS:
        if align:
            score.notes.append(f"generated lags the reference by {delay_ms:.2f} ms; compensated before scoring")
            return undo_lag(ref, gen, lag)
        score.notes.append(
            f"generated lags the reference by {delay_ms:.2f} ms (correlation {coherence:.2f}); STOI, MR-STFT, "
            "mel, MCD and F0 metrics are not delay-compensated (align=True compensates)"
        )
    return ref, gen


def result_keys(metrics: Iterable[str] | None = None, judges: Iterable[str] = ()) -> list[str]:
    """The metric keys (table columns) that ``metrics`` groups and ``judges`` produce, in order."""
    groups = resolve_groups(metrics)
    keys = [key for g in REGISTRY.values() if g.kind != "judge" and g.name in groups for key in g.keys]
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
