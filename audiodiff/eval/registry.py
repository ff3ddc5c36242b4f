"""The metric registry: every metric an evaluation can report, and the function that computes it.

A :class:`MetricGroup` is what one function computes together (STOI and ESTOI, the three F0
scores, the four DNSMOS scores): its name, one :class:`MetricInfo` per result key (header,
direction, digits, description) and ``compute(clips)``. Groups are registered in table order
with :func:`register`; :func:`audiodiff.eval.score_pair` iterates the registry for the groups
asked for. There are three kinds:

``delay``
    Runs first on the clips at the evaluation rate (when asked for, or with ``align=True``);
    ``compute`` returns ``(lag in samples, coherence)``, from which ``score_pair`` fills the
    value, adds its notes and, with ``align``, shifts the clips.
``reference``
    Compares the generated clip with a non-silent reference; ``compute`` returns a float (one
    key), a tuple (in key order) or a dict by key, or raises :class:`MetricUnavailable`.
``judge``
    An optional judge (see :mod:`audiodiff.eval.judges`): asked for by name with ``judges=``,
    run on every pair (also against a silent reference) when its packages import.

:data:`METRICS` and :data:`METRIC_GROUPS` list the delay and reference groups, :data:`JUDGES`
and :data:`JUDGE_METRICS` the judges; all are read off the registry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal

import numpy as np

from audiodiff.eval.judges import distillmos_scores, dnsmos_scores, visqol_has_lattice, visqol_scores
from audiodiff.eval.metrics import (
    estimate_delay, f0_scores, log_mel_l1, mel_cepstral_distortion, mrstft_distance, pesq_wb, stoi_scores,
)


@dataclass(frozen=True)
class MetricInfo:
    """How one metric is named, printed and read."""

    key: str
    header: str
    higher_is_better: bool | None
    digits: int
    description: str


@dataclass(frozen=True)
class Clips:
    """What a metric compares: mono float64 clips ``(T,)`` of equal length.

    ``reference`` and ``generated`` are at ``sample_rate`` Hz, ``reference16`` and ``generated16``
    the same clips at 16 kHz (``None`` in the delay stage, which runs before resampling).
    """

    reference: np.ndarray
    generated: np.ndarray
    sample_rate: int
    mel_preset: str
    reference16: np.ndarray | None = None
    generated16: np.ndarray | None = None


@dataclass(frozen=True)
class MetricGroup:
    """Metrics computed together by one function; see the module docstring for ``kind``.

    ``extra_note(values, clean)``, when given, runs after ``compute`` with the stored values by key
    and whether computing them added no note; a string it returns is added as a note.
    ``requires`` (judges) names the modules that must import and ``package`` what to install.
    """

    name: str
    metrics: tuple[MetricInfo, ...]
    compute: Callable[[Clips], Any]
    kind: Literal["delay", "reference", "judge"] = "reference"
    extra_note: Callable[[dict[str, float | None], bool], str | None] | None = None
    requires: tuple[str, ...] = ()
    package: str = ""

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(m.key for m in self.metrics)


#: Every registered group by name, in table order (delay and reference groups, then judges).
REGISTRY: dict[str, MetricGroup] = {}


def register(group: MetricGroup) -> MetricGroup:
    """Add ``group`` to :data:`REGISTRY`; raises ``ValueError`` for a name or key already taken."""
    taken = {key for g in REGISTRY.values() for key in g.keys}
    if group.name in REGISTRY or taken & set(group.keys) or len(set(group.keys)) != len(group.keys):
        raise ValueError(f"metric group {group.name!r} or one of its keys {group.keys} is already registered")
    if group.kind == "judge" and not (group.requires and group.package):
        raise ValueError(f"judge {group.name!r} needs the modules it imports and the package to install")
    REGISTRY[group.name] = group
    return group


def groups_of(kind: str) -> list[MetricGroup]:
    """The registered groups of ``kind``, in registration order."""
    return [g for g in REGISTRY.values() if g.kind == kind]


def _f0_note(values: dict[str, float | None], clean: bool) -> str | None:
    """Why F0 scores are missing when pyin ran without a problem."""
    if clean and values["vuv_f1"] is None:
        return "f0_rmse/vuv_f1: pyin found no voiced frame in the reference"
    if clean and values["f0_rmse_cents"] is None:
        return "f0_rmse: no frame is voiced in both clips"
    return None


def _visqol_note(values: dict[str, float | None], clean: bool) -> str | None:
    if visqol_has_lattice():
        return None
    return ("visqol: polynomial MOS mapping (install ai-edge-litert for the lattice "
            "mapper of the C++ ViSQOL); it can read 1-2 points higher")


# ---------------------------------------------------------------- the signal metrics
register(MetricGroup("pesq", (
    MetricInfo("pesq_wb", "PESQ", True, 3, "wideband PESQ (P.862.2) at 16 kHz, MOS-LQO 1.04..4.64"),
), lambda c: pesq_wb(c.reference16, c.generated16)))
register(MetricGroup("stoi", (
    MetricInfo("stoi", "STOI", True, 3, "short-time objective intelligibility, 0..1"),
    MetricInfo("estoi", "ESTOI", True, 3, "extended STOI, 0..1"),
), lambda c: stoi_scores(c.reference, c.generated, c.sample_rate)))
register(MetricGroup("mrstft", (
    MetricInfo("mrstft", "MR-STFT", False, 3, "multi-resolution STFT distance (convergence + log-magnitude L1)"),
), lambda c: mrstft_distance(c.reference, c.generated)))
register(MetricGroup("mel", (
    MetricInfo("mel_l1", "mel-L1", False, 3, "mean |log-mel difference| in the preset's log units"),
), lambda c: log_mel_l1(c.reference, c.generated, c.sample_rate, c.mel_preset)))
register(MetricGroup("mcd", (
    MetricInfo("mcd_db", "MCD", False, 2, "mel-cepstral distortion (c1..c13, frame-aligned), dB"),
), lambda c: mel_cepstral_distortion(c.reference, c.generated, c.sample_rate)))
register(MetricGroup("f0", (
    MetricInfo("f0_rmse_cents", "F0-cents", False, 1, "F0 RMSE over frames voiced in both (pyin), cents"),
    MetricInfo("f0_rmse_hz", "F0-Hz", False, 2, "F0 RMSE over frames voiced in both (pyin), Hz"),
    MetricInfo("vuv_f1", "V/UV-F1", True, 3, "voiced/unvoiced F1 with the reference's voicing as truth"),
), lambda c: f0_scores(c.reference16, c.generated16), extra_note=_f0_note))
register(MetricGroup("delay", (
    MetricInfo("delay_ms", "delay-ms", None, 2, "lag of generated behind reference by cross-correlation, ms"),
), lambda c: estimate_delay(c.reference, c.generated, c.sample_rate), kind="delay"))

# ---------------------------------------------------------------- optional judges
register(MetricGroup("distillmos", (
    MetricInfo("distillmos", "DistillMOS", True, 3, "DistillMOS naturalness of the generated clip, 1..5"),
), lambda c: distillmos_scores(c.reference16, c.generated16), kind="judge",
    requires=("distillmos",), package="distillmos"))
register(MetricGroup("dnsmos", (
    MetricInfo("dnsmos_ovrl", "DNSMOS-ovrl", True, 3, "DNSMOS P.835 overall quality of the generated clip"),
    MetricInfo("dnsmos_sig", "DNSMOS-sig", True, 3, "DNSMOS P.835 speech signal quality"),
    MetricInfo("dnsmos_bak", "DNSMOS-bak", True, 3, "DNSMOS P.835 background noise quality"),
    MetricInfo("dnsmos_p808", "DNSMOS-p808", True, 3, "DNSMOS P.808 overall quality"),
), lambda c: dnsmos_scores(c.reference16, c.generated16), kind="judge",
    requires=("speechmos.dnsmos", "onnxruntime"), package="speechmos onnxruntime"))
register(MetricGroup("visqol", (
    MetricInfo("visqol", "ViSQOL", True, 3, "ViSQOL v3 speech-mode MOS-LQO against the reference"),
), lambda c: visqol_scores(c.reference16, c.generated16), kind="judge", extra_note=_visqol_note,
    requires=("visqol",), package="visqol-python"))

# ---------------------------------------------------------------- views of the registry
#: The delay and reference metrics, in table order.
METRICS: tuple[MetricInfo, ...] = tuple(m for g in REGISTRY.values() if g.kind != "judge" for m in g.metrics)

#: Metric groups that :func:`audiodiff.eval.score_pair` can compute, and the fields each fills.
METRIC_GROUPS: dict[str, tuple[str, ...]] = {g.name: g.keys for g in REGISTRY.values() if g.kind != "judge"}

#: Optional judges: name -> (module to import, pip package, result keys).
JUDGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    g.name: (g.requires[0], g.package, g.keys) for g in groups_of("judge")
}

#: What the judges report, in table order.
JUDGE_METRICS: tuple[MetricInfo, ...] = tuple(m for g in groups_of("judge") for m in g.metrics)

#: Every metric (judges included) by key.
METRIC_INFO: dict[str, MetricInfo] = {m.key: m for g in REGISTRY.values() for m in g.metrics}


def resolve_groups(metrics: Iterable[str] | None) -> tuple[str, ...]:
    """The metric group names ``metrics`` asks for (all of :data:`METRIC_GROUPS` for ``None``)."""
    groups = tuple(METRIC_GROUPS) if metrics is None else tuple(metrics)
    unknown = sorted(set(groups) - set(METRIC_GROUPS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRIC_GROUPS)}")
    return groups


# ---------------------------------------------------------------- judge availability
def available_judges() -> list[str]:
    """The optional judges (of :data:`JUDGES`) whose packages import on this machine."""
    return [name for name in JUDGES if _judge_missing(name) is None]


def _judge_missing(name: str) -> str | None:
    """``None`` when judge ``name`` can run, else a one-line reason."""
    group = REGISTRY[name]
    try:
        for module in group.requires:
            importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 - a broken install is as unusable as a missing one
        return f"judge {name!r} needs `pip install {group.package}` ({type(error).__name__}: {error})"
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
