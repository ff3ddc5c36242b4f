"""Inference engine speed: the reference ``diffwave`` loop vs our engine settings, same weights and mel.

One size (default base), the 6-step fast schedule, for each batch size: first the reference
package's sampling loop (fp32, as ``diffwave.inference.predict`` runs; see ``vocode_speed.py``),
then ``AudioDiffusion.vocode`` under each engine of ``--engines``:

* ``fp32-seeded``: fp32, ``seed=0`` -- noise drawn on the CPU per batch row, so the same seed
  gives the same audio on any device (the CLI's behaviour);
* ``fp32``, ``bf16``, ``fp16``: the network under that autocast dtype (sampler arithmetic stays
  fp32), noise drawn on the device as the reference does;
* ``fp32-folded``, ``bf16-folded``: ``fold_denoiser()``, the residual blocks as time-major matrix
  products with folded weights (:mod:`audiodiff.engines.folded`; the CLI's default on a CPU);
* ``bf16-compile``: ``bf16`` plus ``compile_denoiser()`` (``torch.compile``, default mode);
* ``bf16-graphs``: ``bf16`` plus ``compile_denoiser(mode="reduce-overhead")`` (CUDA graphs);
* ``bf16-fused``, ``fp16-fused``, ``fp32-fused``: ``fuse_denoiser()``, one Triton kernel per
  residual block (:mod:`audiodiff.engines.fused`; CUDA), once per launch of ``--launches`` (e.g. ``64x4
  128x8``: samples x warps per program, ``r168`` caps registers); the row is named
  ``bf16-fused@64x4`` when there are several; ``bf16-fused-cached`` reads the cached per-block
  projections instead of projecting the mel in the kernel.

Every engine gets a freshly loaded model. RTF = audio seconds per wall second, median of
``--repeats`` runs after one warm-up run (the warm-up, which includes any compilation, is
reported as ``warmup s``); ``x ref`` = our RTF / the reference's RTF measured in the same run at
the same batch, ``x best ref`` = our RTF / the reference's best RTF at any batch so far (the
reference runs out of memory at large batches, where ours keeps going).
The batch-1 row is the latency of one ``--seconds`` utterance. The JSON (``--json``) is
rewritten after every row, so a run cut short keeps what it measured. ``--profile`` adds the
top CUDA kernels of one vocode at the largest batch (``torch.profiler``) by ``--profile-engine``.

    python benchmarks/engine_speed.py --device cuda --json engine.json --profile
    python benchmarks/engine_speed.py --device cpu --batch 1 --seconds 1 --engines fp32 bf16 fp32-folded bf16-folded
"""

from __future__ import annotations

import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    HOP,
    SAMPLE_RATE,
    PeakMemory,
    fmt,
    load_ours,
    load_reference,
    machine_info,
    machine_lines,
    markdown_table,
    parser_from_doc,
    save_reference_checkpoint,
    synchronize,
    write_json,
)
from vocode_speed import N_MELS, reference_sample  # noqa: E402

ENGINES: dict[str, dict[str, Any]] = {
    "fp32-seeded": dict(precision="fp32", seeded=True),
    "fp32": dict(precision="fp32"),
    "bf16": dict(precision="bf16"),
    "fp16": dict(precision="fp16"),
    "fp32-folded": dict(precision="fp32", folded=True),
    "bf16-folded": dict(precision="bf16", folded=True),
    "bf16-compile": dict(precision="bf16", compile="default"),
    "bf16-graphs": dict(precision="bf16", compile="reduce-overhead"),
    "bf16-fused": dict(precision="bf16", fused=True),
    "fp16-fused": dict(precision="fp16", fused=True),
    "fp32-fused": dict(precision="fp32", fused=True),
    "bf16-fused-cached": dict(precision="bf16", fused=True, read_mel=False),
}


def time_runs(run: Callable[[], torch.Tensor], device: str, repeats: int, expected: tuple[int, int]) -> dict[str, Any]:
    """One warm-up and ``repeats`` timed calls of ``run``; wall times and peak memory."""
    times = []
    with PeakMemory(device) as memory:
        for _ in range(repeats + 1):
            synchronize(device)
            start = time.perf_counter()
            audio = run()
            synchronize(device)
            times.append(time.perf_counter() - start)
            if tuple(audio.shape) != expected:
                raise RuntimeError(f"audio {tuple(audio.shape)}, expected {expected}")
            del audio
    return {"warmup_s": times[0], "times_s": times[1:], "median_s": statistics.median(times[1:]),
            "peak_mb": memory.mb}


def engine_runner(checkpoint: Path, engine: str, mel: torch.Tensor, device: str,
                  sampler: Any = "fast", launch: str | None = None) -> Callable[[], torch.Tensor]:
    """A fresh model of ``checkpoint`` set up as ``engine`` (a fused one with ``launch``), as a
    zero-argument vocode call with ``sampler``."""
    settings = ENGINES[engine]
    model = load_ours(checkpoint, device)
    if settings.get("fused"):
        model.fuse_denoiser(launch, read_mel=settings.get("read_mel", True))
    if settings.get("folded"):
        model.fold_denoiser()
    if settings.get("compile"):
        model.compile_denoiser(mode=None if settings["compile"] == "default" else settings["compile"], dynamic=False)
    seed = 0 if settings.get("seeded") else None
    return lambda: model.vocode(mel, sampler=sampler, seed=seed, precision=settings["precision"])


def profile_table(checkpoint: Path, mel: torch.Tensor, device: str, engine: str = "bf16",
                  launch: str | None = None, rows: int = 15) -> str:
    """The ``rows`` CUDA kernels that take the most time in one vocode of ``mel`` by ``engine``."""
    from torch.profiler import ProfilerActivity, profile

    run = engine_runner(checkpoint, engine, mel, device, launch=launch)
    run()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
        synchronize(device)
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=60)


def our_schedules(schedule_from: list[str] | None) -> list[tuple[str, Any, int]]:
    """``(name, sampler, steps)`` for each schedule ours is timed with: ``fast`` (6 steps) alone,
    or each NAME of ``--schedule-from MODEL NAME...`` (``fast``, or one stored in MODEL)."""
    if not schedule_from:
        return [("fast", "fast", 6)]
    from audiodiff.pipeline import load_any

    path, *names = schedule_from
    model = load_any(path, engine="eager")
    stored = {name: model.sampling_schedule(name) for name in names if name != "fast"}
    return [(name, "fast", 6) if name == "fast" else (name, stored[name], stored[name].steps) for name in names]


def parse_args(argv: list[str] | None):
    parser = parser_from_doc(__doc__)
    parser.add_argument("--size", default="base", choices=["tiny", "base", "large"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=5.0, help="audio per batch item (default 5)")
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--reference-again", action="store_true",
                        help="time the reference again after our engines, and compare with the faster of its two "
                             "timings (a shared machine's speed drifts during a long run)")
    parser.add_argument("--profile", action="store_true", help="print the top CUDA kernels of one vocode")
    parser.add_argument("--profile-engine", default="bf16", choices=list(ENGINES), help="the engine --profile runs")
    parser.add_argument("--launches", nargs="+", default=[None],
                        help="launches of the fused engines, e.g. 64x4 128x8 128x8r168 (default: the package's)")
    parser.add_argument("--schedule-from", nargs="+", metavar="MODEL NAME", default=None,
                        help="MODEL NAME [NAME ...]: ours samples with each schedule NAME stored in MODEL (e.g. a "
                             "searched 4-step one; 'fast' is the 6-step fast schedule) instead of fast alone; the "
                             "reference keeps its 6 steps")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.schedule_from is not None and len(args.schedule_from) < 2:
        parser.error("--schedule-from takes MODEL and at least one schedule NAME")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("CUDA is not available")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.backends.cudnn.benchmark = True  # fixed shapes per row: let cuDNN pick its fastest kernels
    frames = max(1, round(args.seconds * SAMPLE_RATE / HOP))
    report: dict[str, Any] = {"benchmark": "engine_speed", "machine": machine_info(args.device),
                              "settings": {k: v for k, v in vars(args).items() if k != "json"}, "rows": []}
    with tempfile.TemporaryDirectory(prefix="engine-speed-") as tmp:
        checkpoint = save_reference_checkpoint(args.size, Path(tmp) / args.size)
        schedules = our_schedules(args.schedule_from)
        for batch in args.batch:
            mel = torch.rand(batch, N_MELS, frames, generator=torch.Generator().manual_seed(batch)).to(args.device)
            expected = (batch, frames * HOP)
            audio_seconds = batch * frames * HOP / SAMPLE_RATE
            if not args.skip_reference:
                time_reference(report, args, checkpoint, mel, batch, audio_seconds, expected, "reference")
            for (engine, launch), (schedule, sampler, steps) in itertools.product(
                    engine_launches(args.engines, args.launches), schedules):
                try:
                    run = engine_runner(checkpoint, engine, mel, args.device, sampler, launch)
                    result = time_runs(run, args.device, args.repeats, expected)
                except Exception as error:  # noqa: BLE001 - one engine failing must not end the run
                    result = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
                name = engine if len(args.launches) == 1 or not ENGINES[engine].get("fused") else f"{engine}@{launch}"
                add_row(report, args, batch, name, schedule, steps, audio_seconds, result)
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()
            if args.reference_again and not args.skip_reference:
                time_reference(report, args, checkpoint, mel, batch, audio_seconds, expected, "reference again")
        if args.profile and args.device.startswith("cuda"):
            largest = max(args.batch)
            mel = torch.rand(largest, N_MELS, frames).to(args.device)
            report["profile"] = profile_table(checkpoint, mel, args.device, args.profile_engine, args.launches[0])
            print(report["profile"])
    print(format_report(report))
    if args.json:
        write_json(args.json, report)
    return report


def engine_launches(engines: list[str], launches: list[str | None]) -> list[tuple[str, str | None]]:
    """``(engine, launch)`` pairs: every launch for a fused engine, ``None`` for the others."""
    return [(engine, launch) for engine in engines
            for launch in (launches if ENGINES[engine].get("fused") else [None])]


def time_reference(report: dict[str, Any], args, checkpoint: Path, mel: torch.Tensor, batch: int,
                   audio_seconds: float, expected: tuple[int, int], name: str) -> None:
    """Time the reference's 6-step loop on ``mel`` and add its row as ``name`` (an out-of-memory is the row's error)."""
    try:  # the reference keeps all 30 skips alive at once: it runs out of memory first
        reference = load_reference(checkpoint, args.device)
        result = time_runs(lambda: reference_sample(reference, mel, True), args.device, args.repeats, expected)
    except torch.OutOfMemoryError as error:
        result = {"error": f"OutOfMemoryError: {str(error).splitlines()[0][:160]}"}
    reference = None
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    add_row(report, args, batch, name, "fast", 6, audio_seconds, result)


def is_reference(row: dict[str, Any]) -> bool:
    return row["engine"].startswith("reference")


def add_row(report: dict[str, Any], args, batch: int, engine: str, schedule: str, steps: int, audio_seconds: float,
            result: dict[str, Any]) -> None:
    """Append one measurement, update every row's ratios to the reference, and save the JSON so far."""
    row = {"size": args.size, "batch": batch, "engine": engine, "schedule": schedule, "steps": steps,
           "audio_seconds": audio_seconds, **result}
    if "median_s" in result:
        row["rtf"] = audio_seconds / result["median_s"]
    report["rows"].append(row)
    update_ratios(report["rows"])
    print(f"  batch {batch} {engine} {schedule}: " + (f"RTF {row['rtf']:.1f}" if "rtf" in row else row.get("error", "")),
          file=sys.stderr, flush=True)
    if args.json:
        write_json(args.json, report)


def update_ratios(rows: list[dict[str, Any]]) -> None:
    """``x_reference``: a row's RTF over the reference's at the same batch (the faster of its
    timings, when ``--reference-again`` timed it twice); ``x_best_reference``: over the reference's
    fastest RTF at any batch (it runs out of memory at large batches, where ours keeps going)."""
    references = [r for r in rows if is_reference(r) and "rtf" in r]
    best = max((r["rtf"] for r in references), default=None)
    for row in rows:
        if "rtf" not in row or is_reference(row):
            continue
        same_batch = max((r["rtf"] for r in references if r["batch"] == row["batch"]), default=None)
        row["x_reference"] = row["rtf"] / same_batch if same_batch else None
        row["x_best_reference"] = row["rtf"] / best if best else None


def format_report(report: dict[str, Any]) -> str:
    settings = report["settings"]
    headers = ["size", "batch", "engine", "schedule", "steps", "audio s", "median s", "RTF", "x ref", "x best ref", "warmup s",
               "peak MB"]
    table = [[r["size"], r["batch"], r["engine"], r.get("schedule", "fast"), r["steps"], fmt(r["audio_seconds"]), fmt(r.get("median_s")), fmt(r.get("rtf")),
              fmt(r.get("x_reference")), fmt(r.get("x_best_reference")), fmt(r.get("warmup_s")),
              fmt(r.get("peak_mb")) if "error" not in r
              else r["error"][:60]] for r in report["rows"]]
    lines = machine_lines(report["machine"])
    lines.append(f"the reference: 6-step fast schedule; {settings['seconds']:g} s per item, median of {settings['repeats']} runs "
                 "after 1 warm-up; same random weights and mel for the reference and ours")
    return "\n".join(lines + ["", markdown_table(headers, table)])


if __name__ == "__main__":
    main()
