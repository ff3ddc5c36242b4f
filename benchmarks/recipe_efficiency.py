"""Sample efficiency of training recipes: the same small vocoder, the same CPU time, held-out scores.

Issue 19, point 3. Each variant trains the same network (same data, same seed, same crops) for
the same *process CPU time* (not wall time: on a shared machine other jobs would distort wall
time), in its own process with one torch thread, and scores held-out clips at CPU-time
checkpoints along the way, vocoding with the ``fast`` sampler from the EMA weights:
V/UV F1 and F0 error (pitch appearing), MR-STFT, log-mel L1 and PESQ-wb (``score_pair``).

Variants (all through :class:`audiodiff.training.DiffusionModule`'s options, so a winner is a
recipe as it stands):

* ``baseline``: today's recipe, epsilon prediction, L1;
* ``prior``: PriorGrad's data-dependent prior (``prior: {}``, sampled from the same prior);
* ``x0``: an auxiliary MR-STFT + log-mel L1 loss on the clean-audio estimate, weighted by abar
  (``x0_loss_weight``);
* ``prior+x0``: both.

    python benchmarks/recipe_efficiency.py --train DIR [DIR ...] --heldout DIR \\
        --cpu-seconds 600 --checkpoints 75,150,300,600 --json out.json --png out.png

Training cost per step differs between variants (the auxiliary loss costs STFTs and mels), which
is the point of equal CPU time: a variant must win per second of compute, not per step.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks._common import fmt, machine_info, machine_lines, markdown_table, parser_from_doc, run_script, \
    run_worker, write_json

VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "prior": {"prior": {}},
    "x0": {"x0": True},
    "prior+x0": {"prior": {}, "x0": True},
}
#: Metrics in the table and plot: key, label, better ("max" or "min").
METRICS = (("vuv_f1", "V/UV F1", "max"), ("f0_rmse_cents", "F0 RMSE (cents)", "min"),
           ("mrstft", "MR-STFT", "min"), ("mel_l1", "log-mel L1", "min"), ("pesq_wb", "PESQ-wb", "max"))
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


# ------------------------------------------------------------------ worker
def _audio_files(directories: list[str], limit: int, seed: int) -> list[str]:
    """``limit`` files spread over ``directories`` (sorted, then a seeded shuffle), as strings."""
    per_dir = [sorted(str(p) for p in Path(d).iterdir() if p.suffix.lower() in AUDIO_SUFFIXES) for d in directories]
    files = [f for group in per_dir for f in group]
    random.Random(seed).shuffle(files)
    return sorted(files[:limit])


def _heldout_clips(files: list[str], seconds: float, sample_rate: int, hop: int) -> list[torch.Tensor]:
    """The loudest ``seconds`` of each file (1 s windows by RMS), cut to whole hops: ``(T,)`` each."""
    from audiodiff.io.audio import load_audio

    clips = []
    length = int(seconds * sample_rate) // hop * hop
    for path in files:
        audio, _ = load_audio(path, sample_rate)
        if len(audio) <= length:
            clips.append(audio[: len(audio) // hop * hop])
            continue
        step = sample_rate // 4
        starts = range(0, len(audio) - length, step)
        best = max(starts, key=lambda s: float(audio[s:s + length].square().mean()))
        clips.append(audio[best:best + length])
    return clips


def _crops(audio: list[torch.Tensor], batch: int, samples: int, hop: int, rng: random.Random) -> torch.Tensor:
    """``batch`` random crops of ``samples`` (starting on a hop), files picked by length: ``(B, samples)``."""
    weights = [max(len(a) - samples, 1) for a in audio]
    rows = []
    for index in rng.choices(range(len(audio)), weights=weights, k=batch):
        clip = audio[index]
        start = rng.randrange(0, max(len(clip) - samples, 1) // hop + 1) * hop
        row = clip[start:start + samples]
        rows.append(torch.nn.functional.pad(row, (0, samples - len(row))))
    return torch.stack(rows)


def _score(module: Any, clips: list[torch.Tensor], sample_rate: int) -> dict[str, float | None]:
    """Mean held-out scores of the module's current weights (fast sampler, seed 0)."""
    from audiodiff.eval import score_pair

    model = module.model.eval()
    values: dict[str, list[float]] = {key: [] for key, _, _ in METRICS}
    with torch.inference_mode():
        for clip in clips:
            generated = model.vocode(model.mel(clip.unsqueeze(0)), sampler="fast", seed=0)[0]
            score = score_pair(clip.numpy(), generated.numpy(), sample_rate, metrics=("pesq", "mrstft", "mel", "f0"))
            for key in values:
                value = getattr(score, key)
                if value is not None:
                    values[key].append(value)
    model.train()
    return {key: (sum(v) / len(v) if v else None) for key, v in values.items()}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one variant for ``cpu_seconds`` of process CPU time, scoring at each checkpoint."""
    from audiodiff.io.audio import load_audio
    from audiodiff.training.module import DiffusionModule

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    variant = VARIANTS[spec["variant"]]
    module = DiffusionModule(
        size=spec["size"], denoiser_overrides=spec["denoiser_overrides"], learning_rate=spec["learning_rate"],
        loss="l1", prior=variant.get("prior"), x0_loss_weight=spec["x0_weight"] if variant.get("x0") else 0.0,
    )
    sample_rate, hop = module.sample_rate, module.hop_length
    train_audio = [load_audio(path, sample_rate)[0] for path in spec["train_files"]]
    clips = _heldout_clips(spec["heldout_files"], spec["clip_seconds"], sample_rate, hop)
    network = module.model.network
    ema = [p.detach().clone() for p in network.parameters()]
    optimizer = torch.optim.AdamW(network.parameters(), lr=spec["learning_rate"])
    rng = random.Random(spec["seed"])  # the same crops, in the same order, for every variant
    checkpoints = sorted(spec["checkpoints"])
    points, losses, step, train_cpu = [], [], 0, 0.0
    while checkpoints:
        started = time.process_time()
        audio = _crops(train_audio, spec["batch_size"], spec["crop_frames"] * hop, hop, rng)
        loss = module._loss(audio, module._mel(audio))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        step += 1
        decay = min(spec["ema_decay"], (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in network.parameters()], 1.0 - decay)
        train_cpu += time.process_time() - started
        losses.append(float(loss.detach()))
        if train_cpu >= checkpoints[0]:
            checkpoints.pop(0)
            current = [p.detach().clone() for p in network.parameters()]
            with torch.no_grad():
                for p, a in zip(network.parameters(), ema):
                    p.copy_(a)
            scored_at = time.process_time()
            scores = _score(module, clips, sample_rate)
            with torch.no_grad():
                for p, c in zip(network.parameters(), current):
                    p.copy_(c)
            recent = losses[-100:]
            points.append({"train_cpu_s": round(train_cpu, 2), "steps": step,
                           "train_loss": sum(recent) / len(recent), "score_cpu_s": round(time.process_time() - scored_at, 2),
                           **scores})
            print(f"[{spec['variant']}] {json.dumps(points[-1])}", file=sys.stderr, flush=True)
            if spec.get("progress"):  # one JSON line per checkpoint, readable while the run goes on
                with open(spec["progress"], "a", encoding="utf-8") as log:
                    log.write(json.dumps({"variant": spec["variant"], **points[-1]}) + "\n")
    return {"variant": spec["variant"], "parameters": sum(p.numel() for p in network.parameters()),
            "points": points}


# -------------------------------------------------------------------- main
def _table(results: list[dict[str, Any]]) -> str:
    rows = []
    for result in results:
        for point in result["points"]:
            rows.append([result["variant"], fmt(point["train_cpu_s"]), point["steps"], fmt(point["train_loss"]),
                         *(fmt(point[key]) for key, _, _ in METRICS)])
    return markdown_table(["variant", "train CPU s", "steps", "loss", *(label for _, label, _ in METRICS)], rows)


def _ranking(results: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Variants by mean rank over the metrics at the last checkpoint (1 = best on every metric)."""
    ranks: dict[str, list[int]] = {r["variant"]: [] for r in results}
    for key, _, better in METRICS:
        scored = [(r["point"][key], r["variant"]) for r in
                  ({"variant": r["variant"], "point": r["points"][-1]} for r in results) if r["point"][key] is not None]
        scored.sort(reverse=better == "max")
        for rank, (_, name) in enumerate(scored, 1):
            ranks[name].append(rank)
    return sorted(((name, sum(r) / len(r) if r else math.inf) for name, r in ranks.items()), key=lambda x: x[1])


def _plot(results: list[dict[str, Any]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.4))
    for axis, (key, label, better) in zip(axes, METRICS):
        for result in results:
            xs = [p["train_cpu_s"] for p in result["points"] if p[key] is not None]
            ys = [p[key] for p in result["points"] if p[key] is not None]
            axis.plot(xs, ys, marker="o", label=result["variant"])
        axis.set_title(f"{label} ({'higher' if better == 'max' else 'lower'} is better)", fontsize=9)
        axis.set_xlabel("training CPU time (s)")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main() -> None:
    parser = parser_from_doc(__doc__)
    parser.add_argument("--train", nargs="+", required=True, help="folders of training audio")
    parser.add_argument("--heldout", required=True, help="folder of held-out audio (never trained on)")
    parser.add_argument("--files", type=int, default=40, help="training files drawn from --train")
    parser.add_argument("--clips", type=int, default=3, help="held-out files scored")
    parser.add_argument("--clip-seconds", type=float, default=3.0, help="seconds scored per held-out file")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {list(VARIANTS)}")
    parser.add_argument("--cpu-seconds", type=float, default=600.0, help="training CPU time per variant")
    parser.add_argument("--checkpoints", default=None,
                        help="comma-separated training CPU seconds to score at (default: 1/8, 1/4, 1/2, 1 of the budget)")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--layers", type=int, default=None, help="residual layers (default: the size's)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop-frames", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--ema-decay", type=float, default=0.99)
    parser.add_argument("--x0-weight", type=float, default=0.1, help="x0_loss_weight of the x0 variants")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per variant")
    parser.add_argument("--jobs", type=int, default=4, help="variants trained at once (each its own process)")
    parser.add_argument("--progress", default=None, help="append each checkpoint's scores to this JSON-lines file")
    parser.add_argument("--json", default=None)
    parser.add_argument("--png", default=None)
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    checkpoints = ([float(c) for c in args.checkpoints.split(",")] if args.checkpoints
                   else [args.cpu_seconds * f for f in (0.125, 0.25, 0.5, 1.0)])
    if max(checkpoints) > args.cpu_seconds:
        parser.error("a checkpoint lies beyond --cpu-seconds")
    base = {
        "train_files": _audio_files(args.train, args.files, args.seed),
        "heldout_files": _audio_files([args.heldout], args.clips, args.seed),
        "clip_seconds": args.clip_seconds, "checkpoints": checkpoints, "size": args.size,
        "denoiser_overrides": {"residual_layers": args.layers} if args.layers else None,
        "batch_size": args.batch_size, "crop_frames": args.crop_frames, "learning_rate": args.learning_rate,
        "ema_decay": args.ema_decay, "x0_weight": args.x0_weight, "seed": args.seed, "threads": args.threads,
        "progress": args.progress,
    }
    info = machine_info("cpu")
    started = time.time()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda v: run_worker(__file__, {**base, "variant": v}), variants))
    wall = time.time() - started
    print("\n".join(machine_lines(info)))
    print(f"{len(base['train_files'])} training files, {len(base['heldout_files'])} held-out clips of "
          f"{args.clip_seconds:g} s; {args.size} net ({results[0]['parameters']:,} parameters), batch "
          f"{args.batch_size} x {args.crop_frames} frames, lr {args.learning_rate:g}, EMA {args.ema_decay}; "
          f"{args.cpu_seconds:g} CPU s per variant ({args.jobs} at once, {wall / 60:.1f} min wall)\n")
    print(_table(results))
    ranking = _ranking(results)
    print("\nranking at the last checkpoint (mean rank over the metrics; 1 = best on all): "
          + ", ".join(f"{name} {rank:.2f}" for name, rank in ranking))
    if args.json:
        write_json(args.json, {"machine": info, "settings": {k: v for k, v in vars(args).items() if k not in ("train", "heldout", "json", "png", "progress")},
                               "train_files": [Path(f).name for f in base["train_files"]],
                               "heldout_files": [Path(f).name for f in base["heldout_files"]],
                               "wall_s": wall, "results": results,
                               "ranking": [{"variant": n, "mean_rank": r} for n, r in ranking]})
    if args.png:
        _plot(results, args.png, f"{args.size} vocoder, {len(base['train_files'])} files, held-out "
              f"{len(base['heldout_files'])} x {args.clip_seconds:g} s, fast sampler")


if __name__ == "__main__":
    run_script(main, worker)
