"""Corpus throughput: audio-hours vocoded per hour by ``audiodiff vocode --manifest`` (Lightning's
prediction loop, one or more processes) against single-process ``audiodiff vocode`` of the same files.

A corpus of ``--files`` random mels (lengths spread evenly over 0.5-1.5x ``--seconds``, the same in
every row) is written once with its manifest. Each row runs one whole command in a fresh process,
as a user would, and times it from start to exit (Python start-up, model load, Lightning and DDP
start-up included); ``audio h/h`` is the audio's length over that wall time (audio-hours per
hour, i.e. times real time), ``per device`` the same divided by the processes, ``vs vocode`` the
ratio to the ``vocode`` row. The median of ``--repeats`` runs, each into a fresh output folder.

Rows on the CPU: ``vocode`` and ``corpus`` with one process of ``--threads`` threads, and
``corpus`` with 2 processes of half the threads each (``--devices 2``, DDP over gloo). On CUDA
(``--device cuda``): ``vocode`` and ``corpus`` on one GPU, and ``corpus`` on every visible GPU
(``per device`` = per GPU) when there are several. Each corpus run's summary must say that every
file was written. Prints a table (with the machine, date and commit) and writes JSON (``--json``).

    python benchmarks/corpus_throughput.py                                   # tiny model, CPU
    python benchmarks/corpus_throughput.py --device cuda --model speech-22k --files 256 --json out.json
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    REPO,
    apply_device_defaults,
    fmt,
    machine_info,
    machine_lines,
    markdown_table,
    parser_from_doc,
    write_json,
)

DEFAULTS = {
    "cpu": {"files": 32, "seconds": 2.0, "batch_size": 8, "threads": os.cpu_count() or 1},
    "cuda": {"files": 256, "seconds": 5.0, "batch_size": 16, "threads": 4},
}
HEADERS = ["path", "processes", "threads/proc", "files", "audio h", "wall s", "audio h/h", "per device", "vs vocode"]


def parse_args(argv: list[str] | None):
    parser = parser_from_doc(__doc__)
    parser.add_argument("--model", default="tiny", help="tiny (random weights, made here), a model file or a shipped name")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--files", type=int, default=None, help="mels in the corpus (CPU 32, CUDA 256)")
    parser.add_argument("--seconds", type=float, default=None, help="mean audio length per file (CPU 2, CUDA 5)")
    parser.add_argument("--batch-size", type=int, default=None, help="--batch-size of both commands (CPU 8, CUDA 16)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads in all, split between a row's processes (CPU: all cores; CUDA: 4)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the report here too (atomically)")
    args = parser.parse_args(argv)
    apply_device_defaults(parser, args, DEFAULTS)
    return args


def tiny_model_file(folder: Path) -> Path:
    """The ``tiny`` vocoder (hifigan mels) with random, non-trivial weights."""
    from audiodiff.diffusion.schedule import SCHEDULES
    from audiodiff.mel import mel_preset
    from audiodiff.network.diffwave import denoiser_config
    from audiodiff.pipeline.audio_diffusion import AudioDiffusion, ModelConfig

    torch.manual_seed(0)
    mel, schedule = mel_preset("hifigan"), SCHEDULES["base"]
    denoiser = denoiser_config("tiny", n_mels=mel.n_mels, hop_length=mel.hop_length, max_steps=schedule.num_steps)
    model = AudioDiffusion(ModelConfig(denoiser=denoiser, mel=mel, schedule=schedule, sample_rate=mel.sample_rate))
    torch.nn.init.normal_(model.network.output_projection.weight, std=0.05)
    return model.save(folder / "tiny.safetensors")


def write_corpus(folder: Path, files: int, seconds: float, n_mels: int, sample_rate: int, hop: int) -> tuple[Path, float]:
    """``files`` random log-mels of evenly spread lengths and a manifest naming them; returns it and the audio seconds."""
    rng = np.random.default_rng(0)
    mean = seconds * sample_rate / hop
    lengths = [max(1, round(mean * (0.5 + k / max(1, files - 1)))) for k in range(files)]
    rng.shuffle(lengths)
    (folder / "mels").mkdir(parents=True)
    for k, frames in enumerate(lengths):
        np.save(folder / "mels" / f"utt{k:05d}.npy", (rng.standard_normal((n_mels, frames)) - 5).astype(np.float32))
    manifest = folder / "list.txt"
    manifest.write_text("".join(f"mels/utt{k:05d}.npy\n" for k in range(files)))
    return manifest, sum(lengths) * hop / sample_rate


def run_command(arguments: list[str], threads: int, cwd: Path) -> float:
    """Wall seconds of ``python -m audiodiff.cli ...`` from start to exit; raises on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "audiodiff.cli", *arguments, "--threads", str(threads), "-q"],
                            capture_output=True, text=True, env=env, cwd=cwd, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"audiodiff {' '.join(arguments[:3])} failed (exit {result.returncode}):\n"
                           + "\n".join(result.stderr.strip().splitlines()[-15:]))
    return wall


def configurations(device: str, threads: int) -> list[dict[str, Any]]:
    """The rows: (path, processes, threads per process)."""
    rows = [{"path": "vocode", "processes": 1, "threads": threads}, {"path": "corpus", "processes": 1, "threads": threads}]
    if device == "cpu":
        rows.append({"path": "corpus", "processes": 2, "threads": max(1, threads // 2)})
    elif torch.cuda.device_count() > 1:
        rows.append({"path": "corpus", "processes": torch.cuda.device_count(), "threads": threads})
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    info = machine_info(args.device)
    rows = []
    with tempfile.TemporaryDirectory(prefix="corpus-throughput-") as tmp:
        work = Path(tmp)
        model_arg = str(tiny_model_file(work)) if args.model == "tiny" else args.model
        from audiodiff.pipeline import load_any

        model = load_any(model_arg, "cpu")
        manifest, audio_seconds = write_corpus(work, args.files, args.seconds, model.config.denoiser.n_mels,
                                               model.sample_rate, model.hop_length)
        mel_files = [line for line in manifest.read_text().splitlines()]
        common = ["--model", model_arg, "--device", args.device, "--batch-size", str(args.batch_size)]
        for config in configurations(args.device, args.threads):
            times, written = [], []
            for repeat in range(args.repeats):
                out = work / f"out-{len(rows)}-{repeat}"
                if config["path"] == "vocode":
                    command = ["vocode", *mel_files, "--out", str(out), *common]
                else:
                    command = ["vocode", "--manifest", str(manifest), "--out", str(out), "--devices",
                               str(config["processes"]), *common]
                times.append(run_command(command, config["threads"], work))
                written.append(len(list(out.glob("*.wav"))))
                if config["path"] == "corpus":
                    summary = json.loads((out / "vocode-summary.json").read_text())
                    if summary["written"] != args.files or summary["failed"]:
                        raise RuntimeError(f"corpus run wrote {summary['written']} of {args.files}: {summary['failures']}")
            if any(n != args.files for n in written):
                raise RuntimeError(f"{config['path']} wrote {written} wavs, expected {args.files} each")
            median = statistics.median(times)
            row = {**config, "files": args.files, "audio_seconds": audio_seconds, "times_s": times, "median_s": median,
                   "audio_h_per_h": audio_seconds / median}
            row["per_device"] = row["audio_h_per_h"] / config["processes"]
            rows.append(row)
            print(f"  {config['path']} x{config['processes']}: {row['audio_h_per_h']:.3g} audio h/h", file=sys.stderr,
                  flush=True)
    for row in rows:
        row["vs_vocode"] = row["audio_h_per_h"] / rows[0]["audio_h_per_h"]
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    report = {"benchmark": "corpus_throughput", "machine": info, "settings": settings, "rows": rows}
    print(format_report(report))
    if args.json:
        write_json(args.json, report)
    return report


def format_report(report: dict[str, Any]) -> str:
    body = [[r["path"], r["processes"], r["threads"], r["files"], fmt(r["audio_seconds"] / 3600), fmt(r["median_s"]),
             fmt(r["audio_h_per_h"]), fmt(r["per_device"]), fmt(r["vs_vocode"])] for r in report["rows"]]
    s = report["settings"]
    lines = machine_lines(report["machine"])
    lines.append(f"model {s['model']} on {s['device']}, {s['files']} mels of {s['seconds']:g} s on average, "
                 f"batch size {s['batch_size']}, fast sampler, median of {s['repeats']}; wall time of the whole command")
    return "\n".join(lines + ["", markdown_table(HEADERS, body)])


if __name__ == "__main__":
    main()
