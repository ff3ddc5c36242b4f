"""Did a candidate vocoder improve on the shipped one? The rule ``benchmarks/gpu_train.sh`` lands by.

    python benchmarks/compare_heldout.py SHIPPED.json CANDIDATE.json
    python benchmarks/compare_heldout.py SHIPPED.json CANDIDATE.json --row row.md --gpu "NVIDIA H200" \
        --minutes 8 --steps-before 3468 --steps-after 9100

Both files are ``audiodiff eval --model M --data DIR --json F`` outputs on the same held-out files
with the same sampler, steps and seed. The candidate **improved** when, over the model's means:

* log-mel L1 is lower by at least ``--min-mel-gain`` (0.001, the card's third digit): the
  spectral envelope got closer, and
* PESQ-wb is not lower by more than ``--pesq-tolerance`` (0.02), and
* V/UV F1 is not lower by more than ``--vuv-tolerance`` (0.01): the pitch did not get worse.

MR-STFT is reported, not judged. A metric missing from either file (say ``pesq`` not installed
where the eval ran), a different file set, sampler, step count or seed means the two cannot be
compared: that is not an improvement. Exit status: 0 improved, 1 not improved, 2 not comparable
(the reasons are printed either way).

``--row FILE`` also writes the model card's training-log row for the candidate (a markdown table
line) with the verdict.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

#: Metrics of the training log, in its column order: key, header, higher is better.
LOG_METRICS = (("pesq_wb", "PESQ", True), ("vuv_f1", "V/UV F1", True), ("mrstft", "MR-STFT", False),
               ("mel_l1", "log-mel L1", False))

IMPROVED, NOT_IMPROVED, NOT_COMPARABLE = 0, 1, 2


@dataclass
class HeldOut:
    """One ``audiodiff eval --model`` JSON: settings, the scored file names and the model's means."""

    path: str
    sampler: str | None
    steps: int | None
    seed: int | None
    files: tuple[str, ...]
    means: dict[str, float | None]
    errors: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: str | Path) -> "HeldOut":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        model = data.get("model")
        if not isinstance(model, dict) or "means" not in model:
            raise ValueError(f"{path}: not an 'audiodiff eval --model ... --json' file (no model means)")
        files = tuple(sorted(f["name"] for f in model.get("files", []) if f.get("error") is None))
        means = {key: (value or {}).get("mean") for key, value in model["means"].items()}
        errors = list(data.get("resynthesis_errors") or []) + list(model.get("errors") or [])
        return cls(str(path), data.get("sampler"), data.get("steps"), data.get("seed"), files, means, errors)


@dataclass
class Verdict:
    code: int
    reasons: list[str]

    @property
    def improved(self) -> bool:
        return self.code == IMPROVED

    @property
    def word(self) -> str:
        return {IMPROVED: "improved", NOT_IMPROVED: "not improved", NOT_COMPARABLE: "not comparable"}[self.code]


def compare(shipped: HeldOut, candidate: HeldOut, *, min_mel_gain: float = 0.001, pesq_tolerance: float = 0.02,
            vuv_tolerance: float = 0.01) -> Verdict:
    """The rule of the module docstring, with one reason per check."""
    problems = []
    for what in ("sampler", "steps", "seed"):
        if getattr(shipped, what) != getattr(candidate, what):
            problems.append(f"different {what}: {getattr(shipped, what)!r} vs {getattr(candidate, what)!r}")
    if shipped.files != candidate.files:
        problems.append(f"different files scored: {len(shipped.files)} vs {len(candidate.files)} "
                        f"({sorted(set(shipped.files) ^ set(candidate.files))[:4]} in only one)")
    if not shipped.files:
        problems.append("no file scored")
    for held in (shipped, candidate):
        if held.errors:
            problems.append(f"{held.path}: {len(held.errors)} file(s) failed ({held.errors[0]})")
    for key in ("mel_l1", "pesq_wb", "vuv_f1"):
        for held in (shipped, candidate):
            if held.means.get(key) is None:
                problems.append(f"{held.path}: no mean {key} (is its metric installed?)")
    if problems:
        return Verdict(NOT_COMPARABLE, problems)

    s, c = shipped.means, candidate.means
    checks = [
        (c["mel_l1"] <= s["mel_l1"] - min_mel_gain,
         f"log-mel L1 {s['mel_l1']:.3f} -> {c['mel_l1']:.3f} (must fall by >= {min_mel_gain:g})"),
        (c["pesq_wb"] >= s["pesq_wb"] - pesq_tolerance,
         f"PESQ {s['pesq_wb']:.3f} -> {c['pesq_wb']:.3f} (may fall by <= {pesq_tolerance:g})"),
        (c["vuv_f1"] >= s["vuv_f1"] - vuv_tolerance,
         f"V/UV F1 {s['vuv_f1']:.3f} -> {c['vuv_f1']:.3f} (may fall by <= {vuv_tolerance:g})"),
    ]
    reasons = [f"{'ok' if ok else 'FAILED'}: {text}" for ok, text in checks]
    if s.get("mrstft") is not None and c.get("mrstft") is not None:
        reasons.append(f"(not judged) MR-STFT {s['mrstft']:.3f} -> {c['mrstft']:.3f}")
    return Verdict(IMPROVED if all(ok for ok, _ in checks) else NOT_IMPROVED, reasons)


def _cell(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def log_row(candidate: HeldOut, verdict: Verdict, *, date: str, steps_before: int, steps_after: int, gpu: str,
            minutes: float, device: str) -> str:
    """The model card's training-log row: ``| date | steps | GPU | minutes | PESQ | V/UV F1 | MR-STFT | log-mel L1 | result |``."""
    steps = f"{steps_before} → {steps_after} (+{steps_after - steps_before})"
    result = "landed" if verdict.improved else f"not landed ({verdict.word})"
    metrics = [_cell(candidate.means.get(key)) for key, _, _ in LOG_METRICS]
    return "| " + " | ".join([date, steps, gpu, f"{minutes:g}", *metrics,
                              f"{result}; scored on {device}, {candidate.sampler} {candidate.steps} steps, "
                              f"seed {candidate.seed}"]) + " |"


def table(shipped: HeldOut, candidate: HeldOut) -> str:
    lines = [f"{'metric':<12}{'shipped':>10}{'candidate':>11}{'change':>9}"]
    for key, header, higher in LOG_METRICS:
        a, b = shipped.means.get(key), candidate.means.get(key)
        change = "" if a is None or b is None else f"{b - a:+.3f}{' better' if (b > a) == higher and b != a else ''}"
        lines.append(f"{header:<12}{_cell(a):>10}{_cell(b):>11}  {change}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shipped", help="eval JSON of the shipped model")
    parser.add_argument("candidate", help="eval JSON of the candidate")
    parser.add_argument("--min-mel-gain", type=float, default=0.001)
    parser.add_argument("--pesq-tolerance", type=float, default=0.02)
    parser.add_argument("--vuv-tolerance", type=float, default=0.01)
    parser.add_argument("--row", help="write the candidate's training-log row (markdown) to this file")
    parser.add_argument("--date", default=None, help="the row's date (default today)")
    parser.add_argument("--gpu", default="?", help="the row's GPU name")
    parser.add_argument("--minutes", type=float, default=0.0, help="the row's training minutes")
    parser.add_argument("--steps-before", type=int, default=0)
    parser.add_argument("--steps-after", type=int, default=0)
    parser.add_argument("--device", default="cuda", help="where the eval vocoded (for the row)")
    args = parser.parse_args(argv)
    try:
        shipped, candidate = HeldOut.read(args.shipped), HeldOut.read(args.candidate)
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"not comparable: {error}")
        return NOT_COMPARABLE
    verdict = compare(shipped, candidate, min_mel_gain=args.min_mel_gain, pesq_tolerance=args.pesq_tolerance,
                      vuv_tolerance=args.vuv_tolerance)
    print(table(shipped, candidate))
    for reason in verdict.reasons:
        print(f"  {reason}")
    print(f"verdict: {verdict.word}")
    if args.row:
        import datetime

        date = args.date or datetime.date.today().isoformat()
        row = log_row(candidate, verdict, date=date, steps_before=args.steps_before, steps_after=args.steps_after,
                      gpu=args.gpu, minutes=args.minutes, device=args.device)
        Path(args.row).write_text(row + "\n", encoding="utf-8")
        print(f"training-log row: {row}")
    return verdict.code


if __name__ == "__main__":
    sys.exit(main())
