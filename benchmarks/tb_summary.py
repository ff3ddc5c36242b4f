"""Summarise a TensorBoard run: training steps/s and the last validation metrics.

    python benchmarks/tb_summary.py runs/diffwave-base-22k/version_0 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def summarise(run_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(run_dir.rglob("events.out.tfevents.*"))
    if not files:
        raise SystemExit(f"{run_dir}: no TensorBoard event files")
    summary: dict = {"run": str(run_dir)}
    for file in files:
        events = EventAccumulator(str(file), size_guidance={"scalars": 0})
        events.Reload()
        tags = events.Tags()["scalars"]
        if "train/loss" in tags:
            losses = events.Scalars("train/loss")
            if len(losses) >= 2:
                first, last = losses[1], losses[-1]  # skip the first log: it includes start-up
                summary["steps_per_s"] = (last.step - first.step) / (last.wall_time - first.wall_time)
                summary["train_loss_last"] = last.value
                summary["steps"] = last.step
        for tag in ("val/loss", "val/mrstft", "val/mel_l1"):
            if tag in tags:
                values = events.Scalars(tag)
                summary[tag] = [(v.step, round(v.value, 4)) for v in values]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    summary = summarise(args.run_dir)
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
