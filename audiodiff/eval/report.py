"""The result of an evaluation: per-pair scores, per-file rows, means, the table and the JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from audiodiff.eval.registry import METRIC_INFO, METRICS
from audiodiff.io.audio import display_path


@dataclass
class PairScore:
    """Scores of one (reference, generated) pair; ``None`` where not computable (see ``notes``).

    Field definitions are in :mod:`audiodiff.eval.metrics`; ``duration_s`` is the scored length in
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
        headers = [METRIC_INFO[k].header if k in METRIC_INFO else k for k in self.keys]
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
            "metrics": {k: {"description": info.description, "higher_is_better": info.higher_is_better}
                        for k in self.keys if (info := METRIC_INFO.get(k)) is not None},
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
    digits = METRIC_INFO[key].digits if key in METRIC_INFO else 3
    return f"{value:>{width}.{digits}f}"


def _legend(keys: Sequence[str]) -> str:
    higher = [METRIC_INFO[k].header for k in keys if k in METRIC_INFO and METRIC_INFO[k].higher_is_better is True]
    lower = [METRIC_INFO[k].header for k in keys if k in METRIC_INFO and METRIC_INFO[k].higher_is_better is False]
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
