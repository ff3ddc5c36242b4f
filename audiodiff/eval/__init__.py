"""Objective evaluation of generated audio against references: the engine of ``audiodiff eval``.

Two folders are paired by file name (:func:`pair_files`), each pair is scored with a set of
objective metrics (:func:`score_pair`, :func:`evaluate_pairs`), and the result prints as a
fixed-width table or writes as JSON (:class:`EvalResult`). :func:`resynthesise_folder` makes the
folders for a vocoder: the references trimmed to whole frames, the model's resynthesis from their
mels and a Griffin-Lim floor (:func:`griffin_lim`) from the same mels.

Modules: :mod:`~audiodiff.eval.pairing` (folders to pairs), :mod:`~audiodiff.eval.metrics` (the
signal metrics and their exact definitions), :mod:`~audiodiff.eval.judges` (optional judges),
:mod:`~audiodiff.eval.registry` (every metric: what it is and what computes it),
:mod:`~audiodiff.eval.evaluate` (scoring pairs), :mod:`~audiodiff.eval.report` (results, table, JSON),
:mod:`~audiodiff.eval.resynthesis` (Griffin-Lim and the folders to score a vocoder on).

Metrics: one :class:`PairScore` field each, ``None`` with a note when not computable.

Silence: a clip whose peak is below -80 dBFS counts as silent. A silent reference leaves every
reference-based metric ``None`` (judges still score the generated clip); a silent generated clip
gets a note, and the metrics that cannot score silence (PESQ, F0 RMSE) are ``None``.
"""

from audiodiff.eval.evaluate import evaluate_pairs, result_keys, score_pair
from audiodiff.eval.metrics import (
    SPEECH_RATE, MetricUnavailable, estimate_delay, f0_scores, is_silent, mel_cepstra, mel_cepstral_distortion,
    pesq_wb, stoi_scores,
)
from audiodiff.eval.pairing import Pairing, pair_files
from audiodiff.eval.registry import (
    JUDGE_METRICS, JUDGES, METRIC_GROUPS, METRIC_INFO, METRICS, REGISTRY, Clips, MetricGroup, MetricInfo,
    available_judges, check_judges, register,
)
from audiodiff.eval.report import EvalResult, FileResult, MetricMean, PairScore
from audiodiff.eval.resynthesis import ResynthesisReport, griffin_lim, mel_to_linear, resynthesise_folder
from audiodiff.io.files import write_json

__all__ = [
    "Clips", "EvalResult", "FileResult", "JUDGES", "JUDGE_METRICS", "METRICS", "METRIC_GROUPS", "METRIC_INFO",
    "MetricGroup", "MetricInfo", "MetricMean", "MetricUnavailable", "PairScore", "Pairing", "REGISTRY",
    "ResynthesisReport", "SPEECH_RATE", "available_judges", "check_judges", "estimate_delay", "evaluate_pairs",
    "f0_scores", "griffin_lim", "is_silent", "mel_cepstra", "mel_cepstral_distortion", "mel_to_linear",
    "pair_files", "pesq_wb", "register", "result_keys", "resynthesise_folder", "score_pair", "stoi_scores",
    "write_json",
]
