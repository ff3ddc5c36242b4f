"""Quality vs number of sampling steps: the eval metrics of a vocoder for each sampler and step count.

For a model and a held-out folder, resynthesises every file with each (sampler, steps) pair —
``ddpm`` at ``--steps`` (default 2 3 4 6 12 50) and ``fast`` at its own schedule length — scores
it against the reference with :mod:`audiodiff.eval`, and adds the Griffin-Lim floor. Prints
a table, writes JSON and a PNG plot (one panel per metric, metric vs steps, log x).

    python benchmarks/quality_vs_steps.py --model vocoder.safetensors --data held_out/ \
        --out quality-out/ --json quality.json --png quality.png

Resynthesised audio is kept under ``--out`` (one folder per sampler and step count) and reused
when the script is run again, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_METRICS = ("pesq", "stoi", "mrstft", "mel", "mcd")


def runs_to_do(model, samplers: list[str], steps: list[int]) -> list[tuple[str, int | None, int]]:
    """``(sampler, steps argument, number of network calls)`` for every valid combination."""
    runs = []
    for sampler in samplers:
        if sampler == "fast":
            runs.append(("fast", None, len(model.sigmas("fast")) - 1))
            continue
        for n in steps:
            try:
                runs.append((sampler, n, len(model.sigmas(sampler, n)) - 1))
            except ValueError as error:
                print(f"skipping {sampler} at {n} steps: {error}", file=sys.stderr)
    return runs


def score(model, data: Path, out: Path, sampler: str, steps: int | None, seed: int, metrics, griffin_lim: bool):
    """Resynthesise ``data`` into ``out`` and score it; returns ``{"model": EvalResult, "griffin-lim"?: ...}``."""
    from audiodiff.eval import evaluate_pairs, pair_files, resynthesise_folder

    report = resynthesise_folder(model, data, out, sampler=sampler, steps=steps, seed=seed,
                                 include_griffin_lim=griffin_lim, progress=False,
                                 on_error=lambda line: print(f"error: {line}", file=sys.stderr))
    preset = model.config.mel.preset
    results = {"model": evaluate_pairs(pair_files(report.reference_dir, report.model_dir), model.sample_rate,
                                       mel_preset=preset, metrics=metrics, progress=False)}
    if griffin_lim:
        results["griffin-lim"] = evaluate_pairs(pair_files(report.reference_dir, report.griffin_lim_dir),
                                                model.sample_rate, mel_preset=preset, metrics=metrics, progress=False)
    return results


def plot(rows: list[dict], floor: dict, keys: list[str], path: Path, title: str) -> Path:
    """One panel per metric: mean vs steps for each sampler, the Griffin-Lim floor as a dashed line."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from audiodiff.eval import METRICS
    from audiodiff.io.figures import save_figure

    from matplotlib.ticker import NullFormatter, ScalarFormatter

    headers = {m.key: m.header for m in METRICS}
    columns = min(3, len(keys))
    rows_of_panels = -(-len(keys) // columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(4.0 * columns, 3.0 * rows_of_panels), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    ticks = sorted({r["steps"] for r in rows})
    for ax, key in zip(axes.flat, keys):
        for sampler in sorted({r["sampler"] for r in rows}):
            points = sorted((r["steps"], r["means"][key]) for r in rows if r["sampler"] == sampler
                            and r["means"].get(key) is not None)
            if points:
                ax.plot(*zip(*points), marker="o", label=sampler)
        if floor.get(key) is not None:
            ax.axhline(floor[key], linestyle="--", color="grey", label="Griffin-Lim")
        ax.set_xscale("log")
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("network calls")
        ax.set_title(headers.get(key, key), fontsize=9)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(path, fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a vocoder (.safetensors or .ckpt)")
    parser.add_argument("--data", required=True, help="held-out audio folder")
    parser.add_argument("--out", default="quality-out", help="resynthesised audio, one folder per run")
    parser.add_argument("--samplers", nargs="+", default=["ddpm", "fast"])
    parser.add_argument("--steps", nargs="+", type=int, default=[2, 3, 4, 6, 12, 50])
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--png", default=None)
    args = parser.parse_args(argv)

    from audiodiff.eval import result_keys, write_json
    from audiodiff.pipeline import load_any

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import machine_info

    model = load_any(args.model, args.device, engine="eager")
    if model.mel_frontend is None:
        parser.error(f"{args.model} is not a vocoder")
    keys = result_keys(args.metrics)
    rows, floor = [], {}
    for i, (sampler, steps, calls) in enumerate(runs_to_do(model, args.samplers, args.steps)):
        out = Path(args.out) / f"{sampler}-{calls}"
        results = score(model, Path(args.data), out, sampler, steps, args.seed, args.metrics, griffin_lim=i == 0)
        means = {k: m.mean for k, m in results["model"].means().items()}
        rows.append({"sampler": sampler, "steps": calls, "means": means, "files": len(results["model"].files),
                     "errors": results["model"].errors})
        if "griffin-lim" in results:
            floor = {k: m.mean for k, m in results["griffin-lim"].means().items()}
        print(f"{sampler} {calls} steps: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items() if v is not None),
              flush=True)
    result = {"machine": machine_info(args.device), "model": Path(args.model).name,
              "training_step": model.config.training_step, "data": Path(args.data).name, "seed": args.seed,
              "metrics": keys, "rows": rows, "griffin_lim": floor}
    print_table(result)
    if args.json:
        write_json(args.json, result)
    if args.png:
        plot(rows, floor, keys, Path(args.png), f"{result['model']} (step {result['training_step']}) "
                                                  f"on {result['data']}")
    return result


def print_table(result: dict) -> None:
    from audiodiff.eval import METRICS

    headers = {m.key: m.header for m in METRICS}
    keys = result["metrics"]
    print(f"\n{result['model']} (trained {result['training_step']} steps) on {result['data']}, seed {result['seed']}")
    print(f"{'sampler':<12}{'steps':>6}" + "".join(f"{headers.get(k, k):>10}" for k in keys))
    for row in result["rows"] + [{"sampler": "Griffin-Lim", "steps": None, "means": result["griffin_lim"]}]:
        cells = "".join(f"{row['means'][k]:>10.3f}" if row["means"].get(k) is not None else f"{'-':>10}"
                        for k in keys)
        steps = "-" if row["steps"] is None else str(row["steps"])
        print(f"{row['sampler']:<12}{steps:>6}{cells}")


if __name__ == "__main__":
    main()
