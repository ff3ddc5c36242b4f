"""Vocoding speed: real-time factor of ours and of the reference ``diffwave`` package, side by side.

For each size (tiny / base / large), step count, batch size: the same random weights (saved once
as a reference checkpoint; ours loads it with ``audiodiff.pipeline.reference.import_diffwave``) vocode
the same mel, and the real-time factor (RTF, audio seconds per wall second) of both is the median
of ``--repeats`` runs after one warm-up run. ``ours/ref`` is the ratio of the two RTFs. Prints a
table (with the machine, date and commit) and writes JSON (``--json``, atomically).

What is timed:

* ours: ``AudioDiffusion.vocode(mel, ...)`` with ``seed=0`` as the CLI does (positional noise
  drawn on the CPU; ``--no-seed`` draws it on the device, as the reference does).
  6 steps = the model's ``fast`` sampler, any other count = ``ddpm`` over that many evenly
  spaced training steps (50 = all of them);
* reference: the sampling loop of ``diffwave.inference.predict`` (0.1.7), reproduced verbatim
  on the already loaded reference network (``predict`` would load ``weights.pt`` on its first
  call per model folder and can only build the base size). 6 steps = ``fast_sampling=True``,
  50 steps = ``fast_sampling=False`` (all T=50 training steps); other counts have no reference.
  Before timing, the reproduction is checked against ``predict`` itself (same seed, short mel,
  CPU; must be equal) and ours, unseeded from the same global RNG state, against ``predict``
  (within 1e-3).

The comparison model has the reference's fixed configuration for every size: ``diffwave`` mel
convention, hop 256, 22.05 kHz, T=50 training schedule and its 6-step inference schedule (so
``large`` is timed with T=50 rather than our T=200 recipe; the cost per step is the same).
Batch items are ``--seconds`` long; wall time includes the mel conditioning.

Peak memory (``ours MB``, ``ref MB``): on CUDA ``torch.cuda.max_memory_allocated`` during the
warm-up and timed runs, minus what was allocated before them (weights and the mel excluded).
On the CPU every measurement runs in a fresh process (``--isolate``) and reports the peak
resident set size during its runs minus the RSS before them (Linux: the kernel's ``VmHWM``
peak mark, reset just before the runs via ``/proc/self/clear_refs``).

    python benchmarks/vocode_speed.py                       # CPU defaults: tiny+base, 6 steps, batch 1, 1 s
    python benchmarks/vocode_speed.py --sizes tiny base large --steps 6 50 --batch 1 16 --seconds 1  # full CPU grid (estimated 6 h on 2 cores)
    python benchmarks/vocode_speed.py --device cuda --json out.json              # full grid, 5 s per item
    python benchmarks/vocode_speed.py --device cuda --precision bf16 --json out.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    HOP,
    SAMPLE_RATE,
    PeakMemory,
    apply_device_defaults,
    autocast,
    fmt,
    load_ours,
    load_reference,
    machine_info,
    machine_lines,
    markdown_table,
    parser_from_doc,
    reference_params,
    run_script,
    run_worker,
    save_reference_checkpoint,
    synchronize,
    use_isolation,
    write_json,
)

N_MELS = 80
LOOP_TOLERANCE = 1e-6  # reproduced loop vs diffwave.inference.predict (same ops, same RNG)
OURS_TOLERANCE = 1e-3  # ours vs predict, same seed (float rounding through up to 50 steps)
CHECK_FRAMES = 4  # 1024 samples: enough for a check, cheap for large at 50 steps
DEFAULTS = {  # per device kind: CPU defaults finish in a few minutes on 2 cores
    "cpu": dict(sizes=["tiny", "base"], steps=[6], batch=[1], seconds=1.0),
    "cuda": dict(sizes=["tiny", "base", "large"], steps=[6, 50], batch=[1, 16], seconds=5.0),
}


# ----------------------------------------------------------------- samplers
def our_sampler(model, steps: int) -> tuple[str, int | None]:
    """``fast`` for the model's fast-schedule length (6), else ``ddpm`` over ``steps`` training steps."""
    if steps == len(model.config.schedule.fast_betas):
        return "fast", None
    return "ddpm", steps


def reference_fast_sampling(params, steps: int) -> bool | None:
    """The reference's ``fast_sampling`` flag that walks ``steps`` steps, or ``None`` if none does."""
    if steps == len(params.inference_noise_schedule):
        return True
    if steps == len(params.noise_schedule):
        return False
    return None


@torch.no_grad()
def reference_sample(model, spectrogram: torch.Tensor, fast_sampling: bool) -> torch.Tensor:
    """The body of ``diffwave.inference.predict`` (0.1.7) after its model loading, unchanged.

    ``model`` is a loaded reference ``DiffWave`` on its device; returns audio ``(B, frames * 256)``.
    """
    training_noise_schedule = np.array(model.params.noise_schedule)
    inference_noise_schedule = np.array(model.params.inference_noise_schedule) if fast_sampling else training_noise_schedule

    talpha = 1 - training_noise_schedule
    talpha_cum = np.cumprod(talpha)

    beta = inference_noise_schedule
    alpha = 1 - beta
    alpha_cum = np.cumprod(alpha)

    T = []
    for s in range(len(inference_noise_schedule)):
        for t in range(len(training_noise_schedule) - 1):
            if talpha_cum[t + 1] <= alpha_cum[s] <= talpha_cum[t]:
                twiddle = (talpha_cum[t] ** 0.5 - alpha_cum[s] ** 0.5) / (talpha_cum[t] ** 0.5 - talpha_cum[t + 1] ** 0.5)
                T.append(t + twiddle)
                break
    T = np.array(T, dtype=np.float32)

    device = next(model.parameters()).device
    if len(spectrogram.shape) == 2:
        spectrogram = spectrogram.unsqueeze(0)
    spectrogram = spectrogram.to(device)

    audio = torch.randn(spectrogram.shape[0], model.params.hop_samples * spectrogram.shape[-1], device=device)
    noise_scale = torch.from_numpy(alpha_cum**0.5).float().unsqueeze(1).to(device)  # noqa: F841 (as in predict)

    for n in range(len(alpha) - 1, -1, -1):
        c1 = 1 / alpha[n] ** 0.5
        c2 = beta[n] / (1 - alpha_cum[n]) ** 0.5
        audio = c1 * (audio - c2 * model(audio, spectrogram, torch.tensor([T[n]], device=audio.device)).squeeze(1))
        if n > 0:
            noise = torch.randn_like(audio)
            sigma = ((1.0 - alpha_cum[n - 1]) / (1.0 - alpha_cum[n]) * beta[n]) ** 0.5
            audio += sigma * noise
        audio = torch.clamp(audio, -1.0, 1.0)
    return audio


# ------------------------------------------------------------------ checks
def check_against_predict(size: str, checkpoint: Path, steps_list: list[int], seed: int = 0) -> list[dict[str, Any]]:
    """Reproduced loop == ``diffwave.inference.predict``, and ours close to it, for the same seed (CPU)."""
    from diffwave import inference

    reference = load_reference(checkpoint, "cpu")
    ours = load_ours(checkpoint, "cpu")
    mel = torch.rand(1, N_MELS, CHECK_FRAMES, generator=torch.Generator().manual_seed(1))
    model_dir = str(checkpoint.parent)
    # predict caches its model per model_dir; give it the loaded one (it would build the base size)
    inference.models[model_dir] = reference
    results = []
    try:
        for steps in steps_list:
            fast = reference_fast_sampling(reference.params, steps)
            if fast is None:
                continue
            torch.manual_seed(seed)
            loop = reference_sample(reference, mel, fast)
            torch.manual_seed(seed)
            predicted, rate = inference.predict(mel, model_dir=model_dir, device=torch.device("cpu"),
                                                fast_sampling=fast)
            sampler, n = our_sampler(ours, steps)
            torch.manual_seed(seed)  # unseeded, ours draws from the global RNG as predict does
            mine = ours.vocode(mel, sampler=sampler, steps=n, seed=None)
            result = {
                "size": size, "steps": steps, "frames": CHECK_FRAMES, "seed": seed, "device": "cpu",
                "loop_vs_predict_max_abs": float((loop - predicted).abs().max()),
                "ours_vs_predict_max_abs": float((mine - predicted).abs().max()),
                "predict_mean_abs": float(predicted.abs().mean()),
            }
            result["ok"] = (rate == SAMPLE_RATE and loop.shape == predicted.shape == mine.shape
                            and result["loop_vs_predict_max_abs"] <= LOOP_TOLERANCE
                            and result["ours_vs_predict_max_abs"] <= OURS_TOLERANCE
                            and result["predict_mean_abs"] > 1e-3)
            results.append(result)
    finally:
        inference.models.pop(model_dir, None)
    return results


# ------------------------------------------------------------- measurement
def measure(impl: str, model, mel: torch.Tensor, steps: int, device: str, precision: str, repeats: int,
            seeded: bool) -> dict[str, Any]:
    """Warm-up plus ``repeats`` timed runs of one implementation; times and peak memory."""
    if impl == "ours":
        sampler, n = our_sampler(model, steps)
        description = f"audiodiff vocode, sampler {sampler}" + (f", {n} steps" if n else "")

        def run() -> torch.Tensor:
            return model.vocode(mel, sampler=sampler, steps=n, seed=0 if seeded else None)
    else:
        fast = reference_fast_sampling(model.params, steps)
        description = f"diffwave.inference.predict loop, fast_sampling={fast}"

        def run() -> torch.Tensor:
            return reference_sample(model, mel, fast)

    times = []
    with PeakMemory(device) as memory:
        for _ in range(repeats + 1):
            synchronize(device)
            start = time.perf_counter()
            with autocast(device, precision):
                audio = run()
            synchronize(device)
            times.append(time.perf_counter() - start)
            if audio.shape != (mel.shape[0], mel.shape[-1] * HOP):
                raise RuntimeError(f"{impl}: audio {tuple(audio.shape)} for mel {tuple(mel.shape)}")
            del audio
    timed = times[1:]
    return {
        "sampler": description, "warmup_s": times[0], "times_s": timed,
        "median_s": statistics.median(timed), "min_s": min(timed),
        "peak_mb": memory.mb, "peak_total_mb": memory.total_mb, "memory_method": memory.method,
    }


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process: load the model and the mel, then :func:`measure`."""
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = spec["device"]
    model, load_s = load_timed(spec["impl"], spec["checkpoint"], device)
    mel = torch.load(spec["mel"], weights_only=True).to(device)
    result = measure(spec["impl"], model, mel, spec["steps"], device, spec["precision"], spec["repeats"],
                     spec["seeded"])
    return {**result, "load_s": load_s}


def load_timed(impl: str, checkpoint: str | Path, device: str) -> tuple[Any, float]:
    """The model of ``impl`` from the checkpoint file and the seconds that took (not in the timings).

    For the reference this is what ``diffwave.inference.predict`` pays on its first call per model
    folder (``torch.load`` + build + ``load_state_dict``); later calls reuse its cached model.
    """
    synchronize(device)
    start = time.perf_counter()
    model = (load_ours if impl == "ours" else load_reference)(checkpoint, device)
    synchronize(device)
    return model, time.perf_counter() - start


# ------------------------------------------------------------------- driver
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = parser_from_doc(__doc__)
    parser.add_argument("--sizes", nargs="+", choices=["tiny", "base", "large"], default=None,
                        help="default: tiny base on CPU, tiny base large on CUDA")
    parser.add_argument("--steps", nargs="+", type=int, default=None,
                        help="sampling steps: 6 = fast schedule, 50 = all training steps (default: 6 on CPU, 6 50 on CUDA)")
    parser.add_argument("--batch", nargs="+", type=int, default=None, help="default: 1 on CPU, 1 16 on CUDA")
    parser.add_argument("--seconds", type=float, default=None, help="audio per item (default: 1 on CPU, 5 on CUDA)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: torch.autocast (both implementations)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row, after one warm-up run")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, all cores)")
    parser.add_argument("--skip-reference", action="store_true", help="time ours only")
    parser.add_argument("--no-seed", action="store_true", help="ours draws noise on the device instead of seeded on the CPU")
    parser.add_argument("--isolate", choices=["auto", "yes", "no"], default="auto",
                        help="one fresh process per measurement (auto: on the CPU only, for its memory peak)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows and the machine here")
    args = parser.parse_args(argv)
    apply_device_defaults(parser, args, DEFAULTS)
    if args.repeats < 1 or args.seconds <= 0 or min(args.batch) < 1 or min(args.steps) < 1:
        parser.error("--repeats, --seconds, --batch and --steps must be positive")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, isolate = args.device, use_isolation(args.isolate, args.device)
    info = machine_info(device)
    frames = max(1, round(args.seconds * SAMPLE_RATE / HOP))
    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vocode-speed-") as tmp:
        work = Path(tmp)
        checkpoints = {size: save_reference_checkpoint(size, work / size, seed=i) for i, size in enumerate(args.sizes)}
        mel_files = {}
        for batch in args.batch:  # a diffwave-convention mel is in [0, 1]
            mel_files[batch] = work / f"mel-b{batch}.pt"
            torch.save(torch.rand(batch, N_MELS, frames, generator=torch.Generator().manual_seed(batch)),
                       mel_files[batch])
        if not args.skip_reference:
            for size in args.sizes:
                checks += check_against_predict(size, checkpoints[size], args.steps)
            failed = [c for c in checks if not c["ok"]]
            if failed:
                raise SystemExit(f"reference check failed: {failed}")
        loaded: dict[tuple[str, str], Any] = {}  # in-process models, loaded once per size
        for size in args.sizes:
            for steps in args.steps:
                for batch in args.batch:
                    row = {"size": size, "steps": steps, "batch": batch, "device": device,
                           "precision": args.precision, "frames": frames,
                           "audio_seconds": batch * frames * HOP / SAMPLE_RATE}
                    for impl in ("ours", "reference"):
                        if impl == "reference" and (args.skip_reference or reference_fast_sampling(
                                reference_params(size), steps) is None):
                            row[impl] = None
                            continue
                        spec = {"impl": impl, "checkpoint": str(checkpoints[size]), "mel": str(mel_files[batch]),
                                "steps": steps, "device": device, "precision": args.precision,
                                "repeats": args.repeats, "seeded": not args.no_seed,
                                "threads": torch.get_num_threads()}
                        if isolate:
                            result = run_worker(__file__, spec)
                        else:
                            key = (impl, size)
                            if key not in loaded:
                                loaded[key] = load_timed(impl, checkpoints[size], device)
                            mel = torch.load(mel_files[batch], weights_only=True).to(device)
                            result = measure(impl, loaded[key][0], mel, steps, device, args.precision,
                                             args.repeats, not args.no_seed)
                            result["load_s"] = loaded[key][1]
                        result["rtf"] = row["audio_seconds"] / result["median_s"]
                        row[impl] = result
                    row["ratio"] = row["ours"]["rtf"] / row["reference"]["rtf"] if row["reference"] else None
                    rows.append(row)
                    print(f"  {size} {steps} steps batch {batch}: ours {row['ours']['rtf']:.3g}x"
                          + (f", reference {row['reference']['rtf']:.3g}x" if row["reference"] else ""),
                          file=sys.stderr, flush=True)
    report = {"benchmark": "vocode_speed", "machine": info, "isolated": isolate,
              "settings": {k: v for k, v in vars(args).items() if k != "json"},  # no local paths in results
              "checks": checks, "rows": rows}
    print(format_report(report))
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return report


def format_report(report: dict[str, Any]) -> str:
    settings = report["settings"]
    headers = ["size", "steps", "batch", "device", "precision", "audio s", "ours s", "ours RTF",
               "ref s", "ref RTF", "ours/ref", "ours MB", "ref MB"]
    table = []
    for row in report["rows"]:
        ours, ref = row["ours"], row["reference"] or {}
        table.append([row["size"], row["steps"], row["batch"], row["device"], row["precision"],
                      fmt(row["audio_seconds"]), fmt(ours["median_s"]), fmt(ours["rtf"]),
                      fmt(ref.get("median_s")), fmt(ref.get("rtf")), fmt(row["ratio"]),
                      fmt(ours["peak_mb"]), fmt(ref.get("peak_mb"))])
    lines = machine_lines(report["machine"])
    lines.append(f"RTF = audio seconds per wall second, median of {settings['repeats']} runs after 1 warm-up; "
                 f"{settings['seconds']:g} s per item; same weights and mel for both; "
                 f"ours {'unseeded' if settings['no_seed'] else 'seed=0'}")
    if report["rows"]:
        lines.append("MB = peak memory above the start of the runs: " + report["rows"][0]["ours"]["memory_method"])
    lines += ["", markdown_table(headers, table), ""]
    loads = {}
    for row in report["rows"]:
        loads.setdefault(row["size"], (row["ours"]["load_s"], (row["reference"] or {}).get("load_s")))
    for size, (ours_load, ref_load) in loads.items():
        lines.append(f"model load {size} (not timed; predict pays it on its first call per model folder, then "
                     f"caches the model): reference {fmt(ref_load)} s, ours (import_diffwave) {fmt(ours_load)} s")
    for check in report["checks"]:
        lines.append(f"check {check['size']} {check['steps']} steps ({check['frames']} frames, seed {check['seed']}, CPU): "
                     f"reproduced loop vs diffwave.inference.predict max |diff| {check['loop_vs_predict_max_abs']:.2g}, "
                     f"ours vs predict {check['ours_vs_predict_max_abs']:.2g}")
    return "\n".join(lines)


if __name__ == "__main__":
    run_script(main, worker)
