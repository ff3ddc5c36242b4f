"""Vocoding speed: real-time factor (audio seconds per wall second) of ``AudioDiffusion.vocode``.

Prints a table and writes JSON. Speed does not depend on the weights, so each size is built with
random weights. Median of ``--repeats`` runs after one warm-up run.

    python benchmarks/vocode_speed.py --sizes tiny base --batch 1 16 --seconds 5 --json out.json
    python benchmarks/vocode_speed.py --device cuda --precision bf16 --sizes base --batch 1 16
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from audiodiff.mel import mel_preset
from audiodiff.model import denoiser_config
from audiodiff.diffusion.schedule import SCHEDULES
from audiodiff.pretrained import AudioDiffusion, ModelConfig

SCHEDULE_FOR_SIZE = {"tiny": "base", "base": "base", "large": "large"}


def build(size: str, device: str) -> AudioDiffusion:
    mel = mel_preset("hifigan")
    schedule = SCHEDULES[SCHEDULE_FOR_SIZE[size]]
    denoiser = denoiser_config(size, n_mels=mel.n_mels, hop_length=mel.hop_length, max_steps=schedule.num_steps)
    config = ModelConfig(denoiser=denoiser, mel=mel, schedule=schedule, sample_rate=mel.sample_rate)
    return AudioDiffusion(config).to(device).eval()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_one(model: AudioDiffusion, mel: torch.Tensor, sampler: str, steps: int | None, precision: str) -> float:
    device = str(model.device)
    autocast = (torch.autocast(device_type=model.device.type, dtype=torch.bfloat16)
                if precision == "bf16" else nullcontext())
    synchronize(device)
    start = time.perf_counter()
    with autocast:
        model.vocode(mel, sampler=sampler, steps=steps, seed=0)
    synchronize(device)
    return time.perf_counter() - start


def measure(size: str, batch: int, seconds: float, sampler: str, steps: int | None, device: str,
            precision: str, repeats: int) -> dict:
    model = build(size, device)
    frames = int(seconds * model.sample_rate / model.hop_length)
    mel = torch.randn(batch, model.config.mel.n_mels, frames, device=device) - 5.0
    n_steps = len(model.sigmas(sampler, steps)) - 1
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    time_one(model, mel, sampler, steps, precision)  # warm-up
    times = [time_one(model, mel, sampler, steps, precision) for _ in range(repeats)]
    median = statistics.median(times)
    audio_seconds = batch * frames * model.hop_length / model.sample_rate
    row = {
        "size": size, "batch": batch, "sampler": sampler, "steps": n_steps, "device": device,
        "precision": precision, "audio_seconds": audio_seconds, "median_s": median,
        "min_s": min(times), "rtf": audio_seconds / median,
    }
    if device.startswith("cuda"):
        row["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def machine() -> dict:
    info = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "torch": torch.__version__}
    try:
        model_name = [l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")]
        info["cpu"] = model_name[0].split(":", 1)[1].strip() if model_name else info["cpu"]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True, check=False).stdout.strip()
    except OSError:
        pass
    return info


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--seconds", type=float, default=5.0, help="audio length per utterance")
    parser.add_argument("--sampler", default="fast")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    rows = []
    print(f"{'size':6} {'batch':>5} {'steps':>5} {'device':6} {'prec':5} {'audio s':>8} {'median s':>9} {'RTF':>8}")
    for size in args.sizes:
        for batch in args.batch:
            row = measure(size, batch, args.seconds, args.sampler, args.steps, args.device,
                          args.precision, args.repeats)
            rows.append(row)
            print(f"{size:6} {batch:5d} {row['steps']:5d} {args.device:6} {args.precision:5} "
                  f"{row['audio_seconds']:8.2f} {row['median_s']:9.3f} {row['rtf']:8.2f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
