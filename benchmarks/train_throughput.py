"""Training throughput: audio seconds per second of one optimiser step, ours vs the reference ``diffwave``.

One step = forward + L1 epsilon loss + backward + gradient clipping + AdamW step, at the base
recipe's batch (16 crops of 62 frames x 256 hop = 15 872 samples) by default, for the same
network size with the same weights, device, batch and precision. Median of ``--steps`` timed
steps after ``--warmup`` steps. Prints a table (with the machine, date and commit) and writes
JSON (``--json``, atomically).

Rows:

* ``ours incl. mel``: our training path (``DiffusionModule._mel`` + ``_loss``): the mel of the
  audio crops computed in the step (fp32, outside autocast, as in training), the conditioning
  (upsampling once per step, each block's projection when the block runs), ``epsilon_loss``
  (steps and noise drawn on the CPU, as in training), backward, ``clip_grad_norm_(1.0)`` (the
  recipes' ``gradient_clip_val``), AdamW.
* ``ours excl. mel``: the same with the mel precomputed, as the reference trains (its
  ``diffwave.preprocess`` writes the mels to disk before training).
* ``reference``: the math of ``diffwave.learner.DiffWaveLearner.train_step`` (0.1.7) on its own
  network: steps and noise drawn on the device, ``model(noisy, mel, t)``, ``nn.L1Loss``,
  backward, ``clip_grad_norm_(max_grad_norm or 1e9)``, optimiser step. Before timing it is
  checked to give the same loss and weights as ``train_step`` itself for the same seed (CPU,
  fp32), and ours to give the same loss and gradient norm as it for the same steps and noise.
  ``train_step`` itself is not timed because its ``torch.cuda.amp.autocast(enabled=fp16)``
  would switch bf16 autocast off; its GradScaler is a no-op without fp16.

Both use ``torch.optim.AdamW(lr=2e-4, weight_decay=0)`` and the same ``torch.autocast`` for
``--precision bf16``. Not timed: data loading, EMA (ours: a callback), logging.
Peak memory as in ``vocode_speed.py`` (CUDA: ``max_memory_allocated`` above the start; CPU: peak
RSS above the start in a fresh process per row), including gradients and AdamW state.

    python benchmarks/train_throughput.py                          # CPU defaults: tiny, batch 16, 3 steps
    python benchmarks/train_throughput.py --size base --steps 3    # base on the CPU (slow)
    python benchmarks/train_throughput.py --device cuda --precision bf16 --json out.json   # base, 20 steps
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

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
    publish,
    run_script,
    run_worker,
    save_reference_checkpoint,
    synchronize,
    use_isolation,
    write_json,
)

LEARNING_RATE = 2e-4  # DiffusionModule's and the reference's default
OURS_CLIP = 1.0  # the recipes' trainer.gradient_clip_val
IMPLS = ("ours incl. mel", "ours excl. mel", "reference")
DEFAULTS = {
    "cpu": dict(size="tiny", steps=3, warmup=1),
    "cuda": dict(size="base", steps=20, warmup=3),
}


# -------------------------------------------------------------------- steps
def ours_step(model, optimizer, alpha_bars: torch.Tensor, audio: torch.Tensor, mel: torch.Tensor | None,
              device: str, precision: str, *, steps: torch.Tensor | None = None,
              noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step of ours; ``mel=None`` computes it from ``audio`` in the step. Returns (loss, grad norm)."""
    from audiodiff.diffusion.loss import epsilon_loss

    optimizer.zero_grad(set_to_none=True)
    if mel is None:  # DiffusionModule._mel: fp32, outside autocast
        with torch.autocast(device_type=torch.device(device).type, enabled=False):
            mel = model.mel_frontend(audio.float())
    with autocast(device, precision):  # DiffusionModule._loss
        conditioning = model.network.condition(mel, cache_projections=False)  # as DiffusionModule._loss
        loss = epsilon_loss(lambda x, t: model.network.denoise(x, t, conditioning), audio, alpha_bars,
                            kind="l1", steps=steps, noise=noise)
    loss.backward()
    norm = nn.utils.clip_grad_norm_(model.network.parameters(), OURS_CLIP)
    optimizer.step()
    return loss.detach(), norm


def reference_step(model, optimizer, noise_level: torch.Tensor, audio: torch.Tensor, spectrogram: torch.Tensor,
                   device: str, precision: str, *, steps: torch.Tensor | None = None,
                   noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``DiffWaveLearner.train_step`` (0.1.7) without its fp16-only autocast/GradScaler. Returns (loss, grad norm)."""
    for param in model.parameters():
        param.grad = None
    N, T = audio.shape
    with autocast(device, precision):
        t = torch.randint(0, len(model.params.noise_schedule), [N], device=audio.device) if steps is None else steps
        noise_scale = noise_level[t].unsqueeze(1)
        noise_scale_sqrt = noise_scale**0.5
        noise = torch.randn_like(audio) if noise is None else noise
        noisy_audio = noise_scale_sqrt * audio + (1.0 - noise_scale) ** 0.5 * noise
        predicted = model(noisy_audio, spectrogram, t)
        loss = nn.L1Loss()(noise, predicted.squeeze(1))
    loss.backward()
    norm = nn.utils.clip_grad_norm_(model.parameters(), model.params.max_grad_norm or 1e9)
    optimizer.step()
    return loss.detach(), norm


def reference_noise_level(params) -> torch.Tensor:
    """``DiffWaveLearner.noise_level``: the cumulative product of ``1 - beta``, float32."""
    return torch.tensor(np.cumprod(1 - np.array(params.noise_schedule)).astype(np.float32))


def setup(impl: str, checkpoint: str | Path, audio: torch.Tensor, mel: torch.Tensor, device: str,
          precision: str) -> Callable[[], Any]:
    """The model, optimiser and a zero-argument step function for ``impl``."""
    if impl.startswith("ours"):
        model = load_ours(checkpoint, device, train=True)
        optimizer = torch.optim.AdamW(model.network.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
        alpha_bars = torch.from_numpy(model.schedule.alpha_bars).float().to(device)
        step_mel = None if impl == "ours incl. mel" else mel
        return lambda: ours_step(model, optimizer, alpha_bars, audio, step_mel, device, precision)
    model = load_reference(checkpoint, device, train=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    noise_level = reference_noise_level(model.params).to(device)
    return lambda: reference_step(model, optimizer, noise_level, audio, mel, device, precision)


def measure(step: Callable[[], Any], device: str, steps: int, warmup: int) -> dict[str, Any]:
    times, losses = [], []
    with PeakMemory(device) as memory:
        for _ in range(warmup + steps):
            synchronize(device)
            start = time.perf_counter()
            loss, _ = step()
            synchronize(device)
            times.append(time.perf_counter() - start)
            losses.append(float(loss))
    timed = times[warmup:]
    if not all(l == l and abs(l) < 1e4 for l in losses):
        raise RuntimeError(f"non-finite losses {losses}")
    return {"warmup_s": times[:warmup], "times_s": timed, "median_s": statistics.median(timed), "min_s": min(timed),
            "losses": losses, "peak_mb": memory.mb, "peak_total_mb": memory.total_mb,
            "memory_method": memory.method}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    if spec.get("pipeline"):
        return pipeline_worker(spec)
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = spec["device"]
    audio = torch.load(spec["audio"], weights_only=True).to(device)
    mel = torch.load(spec["mel"], weights_only=True).to(device)
    torch.manual_seed(0)
    step = setup(spec["impl"], spec["checkpoint"], audio, mel, device, spec["precision"])
    return measure(step, device, spec["steps"], spec["warmup"])


# ------------------------------------------------------------------- checks
def check(checkpoint: Path, work: Path, batch: int = 2, frames: int = 4) -> dict[str, Any]:
    """On the CPU in fp32: our reproduction of ``train_step`` equals it; ours equals the reference's math."""
    from diffwave.learner import DiffWaveLearner

    generator = torch.Generator().manual_seed(3)
    audio = torch.rand(batch, frames * HOP, generator=generator) - 0.5
    ours = load_ours(checkpoint, "cpu", train=True)
    mel = ours.mel(audio).detach()

    # 1. the reproduced step vs DiffWaveLearner.train_step, same seed
    shipped, mine = load_reference(checkpoint, "cpu", train=True), load_reference(checkpoint, "cpu", train=True)
    shipped_opt = torch.optim.AdamW(shipped.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    mine_opt = torch.optim.AdamW(mine.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.cuda.amp deprecation, CUDA-less GradScaler
        learner = DiffWaveLearner(str(work / "learner"), shipped, None, shipped_opt, shipped.params)
        torch.manual_seed(11)
        shipped_loss = learner.train_step({"audio": audio, "spectrogram": mel})
    torch.manual_seed(11)
    noise_level = reference_noise_level(mine.params)
    assert torch.equal(noise_level, learner.noise_level)
    mine_loss, mine_norm = reference_step(mine, mine_opt, noise_level, audio, mel, "cpu", "fp32")
    weights_diff = max(float((a - b).abs().max()) for a, b in zip(shipped.state_dict().values(), mine.state_dict().values()))

    # 2. ours vs the reference's math, same weights, steps and noise
    steps = torch.randint(0, len(mine.params.noise_schedule), (batch,), generator=generator)
    noise = torch.randn(audio.shape, generator=generator)
    reference = load_reference(checkpoint, "cpu", train=True)
    ref_loss, ref_norm = reference_step(reference, torch.optim.AdamW(reference.parameters(), lr=LEARNING_RATE),
                                        noise_level, audio, mel, "cpu", "fp32", steps=steps, noise=noise)
    alpha_bars = torch.from_numpy(ours.schedule.alpha_bars).float()
    our_loss, our_norm = ours_step(ours, torch.optim.AdamW(ours.network.parameters(), lr=LEARNING_RATE),
                                   alpha_bars, audio, None, "cpu", "fp32", steps=steps, noise=noise)
    result = {
        "device": "cpu", "batch": batch, "samples": frames * HOP,
        "train_step_vs_reproduction_loss_abs": abs(float(shipped_loss.detach()) - float(mine_loss)),
        "train_step_vs_reproduction_weights_max_abs": weights_diff,
        "train_step_grad_norm": float(learner.grad_norm),
        "ours_vs_reference_loss_abs": abs(float(our_loss) - float(ref_loss)),
        "ours_vs_reference_grad_norm_rel": abs(float(our_norm) - float(ref_norm)) / float(ref_norm),
        "reference_loss": float(ref_loss),
    }
    result["ok"] = (result["train_step_vs_reproduction_loss_abs"] == 0.0
                    and result["train_step_vs_reproduction_weights_max_abs"] <= 1e-6  # float rounding; one step moves weights ~lr
                    and result["ours_vs_reference_loss_abs"] <= 1e-5
                    and result["ours_vs_reference_grad_norm_rel"] <= 1e-3)
    return result


# ------------------------------------------------------------------ pipeline
# ``--pipeline``: whole training steps through Lightning, data loading included, today's recipe
# against the resident data path and its variants, each in a fresh process.
PIPELINE_DEFAULTS = {
    # (CPU: the tiny-cpu recipe's batch and crop; the resident path against the disk path)
    "cpu": dict(size="tiny", batch=4, frames=16, steps=12, warmup=3,
                variants=["disk:b4:fp32:w0", "resident:b4:fp32", "disk:b4:fp32:w0", "resident:b4:fp32"]),
    "cuda": dict(size="base", batch=16, frames=62, steps=40, warmup=10,
                 variants=["disk:b16:bf16:w4", "resident:b16:bf16", "resident:b64:bf16", "resident:b128:bf16",
                           "resident:b128:bf16:cudnn", "resident:b64:bf16:compile:cudnn",
                           "resident:b128:bf16:compile:cudnn", "disk:b16:bf16:w4"]),
}
PIPELINE_WINDOWS = 5  # the timed steps are split into this many windows; the rate is their median


def parse_variant(text: str, default_batch: int) -> dict[str, Any]:
    """``disk|resident[:bN][:fp32|bf16][:compile][:cudnn][:wN]`` -> its settings (``wN``: loader
    workers; ``cudnn``: ``Trainer(benchmark=True)``, cuDNN picks its fastest convolution algorithms)."""
    parts = text.split(":")
    if parts[0] not in ("disk", "resident"):
        raise ValueError(f"variant {text!r}: starts with disk or resident")
    spec = {"name": text, "data": parts[0], "batch": default_batch, "precision": "fp32", "compile": False,
            "cudnn": False, "workers": 4 if parts[0] == "disk" else 0}
    for part in parts[1:]:
        if part in ("fp32", "bf16"):
            spec["precision"] = part
        elif part in ("compile", "cudnn"):
            spec[part] = True
        elif part[:1] in "bw" and part[1:].isdigit():
            spec["batch" if part[0] == "b" else "workers"] = int(part[1:])
        else:
            raise ValueError(f"variant {text!r}: unknown part {part!r}")
    return spec


def synthetic_data(folder: Path, files: int = 48, seconds: float = 4.0) -> Path:
    """``files`` speech-like Ogg Vorbis files (the shared speech's format) at 22.05 kHz."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(files):
        length = seconds * (0.5 + rng.random())
        t = np.arange(int(length * SAMPLE_RATE)) / SAMPLE_RATE
        f0 = 110 + 60 * rng.random() + 30 * np.sin(2 * np.pi * (1 + rng.random()) * t)
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        voiced = sum(np.sin(k * phase) / k for k in range(1, 10))
        audio = 0.2 * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * voiced + rng.normal(0, 0.02, t.shape)
        sf.write(folder / f"utt{i:03d}.ogg", audio.astype(np.float32), SAMPLE_RATE, format="OGG", subtype="VORBIS")
    return folder


def pipeline_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Fit ``warmup + steps`` steps of one variant; the rate of each window of the timed steps."""
    import logging

    import pytorch_lightning as pl

    from audiodiff.training.callbacks import EMA
    from audiodiff.data import AudioDataModule
    from audiodiff.training.module import DiffusionModule

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device, warmup, steps = spec["device"], spec["warmup"], spec["steps"]
    window = max(1, steps // PIPELINE_WINDOWS)
    marks: list[tuple[int, float]] = []
    started = time.perf_counter()

    class Clock(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            self.setup_s = time.perf_counter() - started

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            done = trainer.global_step - warmup
            if done >= 0 and done % window == 0:
                synchronize(device)
                marks.append((trainer.global_step, time.perf_counter()))

    pl.seed_everything(0, verbose=False)
    data = AudioDataModule(root=spec["data_root"], sample_rate=SAMPLE_RATE, hop_length=HOP, crop_frames=spec["frames"],
                           batch_size=spec["batch"], num_workers=spec["workers"], val_files=8,
                           cache_dir=spec["cache_dir"], resident=spec["data"] == "resident")
    result = {"data_ms": data_only_ms(data, device)}
    model = DiffusionModule(size=spec["size"], compile=spec["compile"])
    clock = Clock()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    trainer = pl.Trainer(
        accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1,
        precision="bf16-mixed" if spec["precision"] == "bf16" else "32-true",
        max_steps=warmup + window * PIPELINE_WINDOWS, gradient_clip_val=1.0, log_every_n_steps=50,
        limit_val_batches=0, logger=pl.loggers.CSVLogger(spec["log_dir"]), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[EMA(decay=0.9999), clock],
        benchmark=spec.get("cudnn") or None,
    )
    trainer.fit(model, datamodule=data)
    rates = [(b[0] - a[0]) / (b[1] - a[1]) for a, b in zip(marks, marks[1:])]
    result |= {"steps_per_s_windows": rates, "steps_per_s": statistics.median(rates), "setup_s": clock.setup_s,
              "timed_steps": marks[-1][0] - marks[0][0], "warmup_steps": warmup}
    result["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.startswith("cuda") else None
    if data.resident_audio is not None:
        result["resident_mb"] = data.resident_audio.nbytes / 2**20
    return result


def data_only_ms(data, device: str, batches: int = 12) -> float:
    """Median milliseconds per training batch of the data alone: loader, copy to ``device`` and the
    data module's ``on_after_batch_transfer`` (the resident path's crops), after 2 batches."""
    data.setup("fit")
    times = []
    iterator = iter(data.train_dataloader())
    for _ in range(batches):
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(data.train_dataloader())
            batch = next(iterator)
        batch = data.on_after_batch_transfer({k: v.to(device) for k, v in batch.items()}, 0)
        synchronize(device)
        times.append(time.perf_counter() - start)
    del iterator
    return 1e3 * statistics.median(times[2:])


def pipeline(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device
    kind = "cuda" if device.startswith("cuda") else "cpu"
    defaults = PIPELINE_DEFAULTS[kind]
    size = args.size or defaults["size"]
    frames = args.frames if args.frames_given else defaults["frames"]
    batch = args.batch if args.batch_given else defaults["batch"]
    steps = args.steps or defaults["steps"]
    warmup = args.warmup if args.warmup is not None else defaults["warmup"]
    variants = [parse_variant(v, batch) for v in (args.variants or defaults["variants"])]
    info = machine_info(device)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="train-pipeline-") as tmp:
        work = Path(tmp)
        root = Path(args.data) if args.data else synthetic_data(work / "data")
        for variant in variants:
            spec = {**variant, "device": device, "size": size, "frames": frames, "steps": steps, "warmup": warmup,
                    "threads": torch.get_num_threads(), "data_root": str(root.absolute()),
                    "cache_dir": str(work / "cache"), "log_dir": str(work / "logs"), "pipeline": True}
            row = {k: v for k, v in variant.items()}
            row.update(size=size, frames=frames, device=device)
            try:
                result = run_worker(__file__, spec, timeout=args.variant_timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as err:
                row.update(error=str(err).strip().splitlines()[-1][:300])
                print(f"  {variant['name']}: failed: {row['error']}", file=sys.stderr, flush=True)
                rows.append(row)
                continue
            row.update(result)
            row["audio_seconds"] = variant["batch"] * frames * HOP / SAMPLE_RATE
            row["audio_s_per_s"] = row["audio_seconds"] * row["steps_per_s"]
            rows.append(row)
            print(f"  {variant['name']}: {row['audio_s_per_s']:.4g} audio s/s", file=sys.stderr, flush=True)
            if args.json:  # what is measured so far survives a run cut short
                write_json(args.json, {"benchmark": "train_throughput_pipeline", "partial": True, "rows": rows})
    baseline = rows[0] if rows and "audio_s_per_s" in rows[0] else None
    for row in rows:
        row["ratio"] = row["audio_s_per_s"] / baseline["audio_s_per_s"] if baseline and "audio_s_per_s" in row else None
    settings = {"pipeline": True, "device": device, "size": size, "frames": frames, "steps": steps, "warmup": warmup,
                "threads": torch.get_num_threads(), "data": "given" if args.data else "synthetic (48 Ogg files)"}
    return {"benchmark": "train_throughput_pipeline", "machine": info, "settings": settings, "rows": rows}


def format_pipeline(report: dict[str, Any]) -> str:
    s = report["settings"]
    headers = ["variant", "data", "batch", "precision", "options", "workers", "data ms/batch", "steps/s",
               "audio s/s", "vs first", "setup s", "peak MB"]
    table = []
    for r in report["rows"]:
        options = "+".join(o for o in ("compile", "cudnn") if r.get(o)) or "-"
        head = [r["name"], r["data"], r["batch"], r["precision"], options, r["workers"]]
        if "error" in r:
            table.append(head + ["failed", "-", "-", "-", "-", "-"])
            continue
        table.append(head + [fmt(r["data_ms"]), fmt(r["steps_per_s"]), fmt(r["audio_s_per_s"]), fmt(r["ratio"]), fmt(r["setup_s"]),
                             fmt(r["peak_mb"])])
    lines = machine_lines(report["machine"])
    lines.append(f"Lightning fit of {s['size']}, crops of {s['frames']} frames x {HOP}, data loading, EMA, clipping "
                 f"and logging included; rate = median over {PIPELINE_WINDOWS} windows of {s['steps']} steps after "
                 f"{s['warmup']} warm-up; data: {s['data']}; data ms/batch: the data alone (loader, copy, crops)")
    lines += ["", markdown_table(headers, table)]
    return "\n".join(lines)


# ------------------------------------------------------------------- driver
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = parser_from_doc(__doc__)
    parser.add_argument("--size", choices=["tiny", "base", "large"], default=None,
                        help="default: tiny on CPU, base on CUDA")
    parser.add_argument("--batch", type=int, default=16, help="audio crops per step (default 16, the base recipe's)")
    parser.add_argument("--frames", type=int, default=62, help="mel frames per crop (x 256 samples; default 62)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 1 on CPU, 3 on CUDA)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: torch.autocast")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, all cores)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--isolate", choices=["auto", "yes", "no"], default="auto",
                        help="one fresh process per row (auto: on the CPU only, for its memory peak)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--pipeline", action="store_true",
                        help="time whole Lightning training steps, data loading included: today's recipe vs "
                             "the resident data path and its variants (see --variants)")
    parser.add_argument("--variants", nargs="+", default=None,
                        help="with --pipeline: disk|resident[:bN][:fp32|bf16][:compile][:cudnn][:wN] each; the first is "
                             "the baseline (default: CPU 'disk:b4:fp32:w0 resident:b4:fp32' twice; CUDA "
                             "today's recipe 'disk:b16:bf16:w4', then resident at batch 16/64/128, bf16, with "
                             "and without compile)")
    parser.add_argument("--data", default=None, help="with --pipeline: a folder of audio (default: 48 synthetic "
                        "speech-like Ogg files)")
    parser.add_argument("--variant-timeout", type=float, default=600, help="with --pipeline: seconds per variant")
    args = parser.parse_args(argv)
    args.batch_given = args.batch != parser.get_default("batch")
    args.frames_given = args.frames != parser.get_default("frames")
    if args.pipeline:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            parser.error(f"--device {args.device}: CUDA is not available")
        return args
    apply_device_defaults(parser, args, DEFAULTS)
    if args.batch < 1 or args.frames < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--batch, --frames and --steps must be positive, --warmup not negative")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.pipeline:
        report = pipeline(args)
        return publish(report, format_pipeline(report), args.json)
    device, isolate = args.device, use_isolation(args.isolate, args.device)
    info = machine_info(device)
    samples = args.frames * HOP
    audio_seconds = args.batch * samples / SAMPLE_RATE
    impls = IMPLS[:2] if args.skip_reference else IMPLS
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as tmp:
        work = Path(tmp)
        checkpoint = save_reference_checkpoint(args.size, work / args.size)
        audio = (torch.rand(args.batch, samples, generator=torch.Generator().manual_seed(0)) - 0.5)
        mel = load_ours(checkpoint, "cpu").mel(audio).detach()  # the diffwave-convention mel, (B, 80, frames)
        torch.save(audio, work / "audio.pt")
        torch.save(mel, work / "mel.pt")
        checked = None if args.skip_reference else check(checkpoint, work)
        if checked is not None and not checked["ok"]:
            raise SystemExit(f"reference check failed: {checked}")
        for impl in impls:
            spec = {"impl": impl, "checkpoint": str(checkpoint), "audio": str(work / "audio.pt"),
                    "mel": str(work / "mel.pt"), "device": device, "precision": args.precision,
                    "steps": args.steps, "warmup": args.warmup, "threads": torch.get_num_threads()}
            result = run_worker(__file__, spec) if isolate else worker(spec)
            result.update(impl=impl, size=args.size, batch=args.batch, samples=samples, device=device,
                          precision=args.precision, audio_seconds=audio_seconds,
                          audio_s_per_s=audio_seconds / result["median_s"])
            rows.append(result)
            print(f"  {impl}: {result['audio_s_per_s']:.3g} audio s/s", file=sys.stderr, flush=True)
    reference = next((r for r in rows if r["impl"] == "reference"), None)
    for row in rows:
        row["ratio"] = row["audio_s_per_s"] / reference["audio_s_per_s"] if reference and row is not reference else None
    report = {"benchmark": "train_throughput", "machine": info, "isolated": isolate,
              "settings": {k: v for k, v in vars(args).items() if k not in ("json", "data")},  # no local paths in results
              "check": checked, "rows": rows}
    return publish(report, format_report(report), args.json)


def format_report(report: dict[str, Any]) -> str:
    settings = report["settings"]
    headers = ["implementation", "size", "batch x samples", "device", "precision", "step s", "audio s/s",
               "vs reference", "peak MB"]
    table = [[r["impl"], r["size"], f"{r['batch']} x {r['samples']}", r["device"], r["precision"],
              fmt(r["median_s"]), fmt(r["audio_s_per_s"]), fmt(r["ratio"]), fmt(r["peak_mb"])]
             for r in report["rows"]]
    lines = machine_lines(report["machine"])
    lines.append(f"one step = forward + L1 epsilon loss + backward + grad clipping + AdamW; median of "
                 f"{settings['steps']} steps after {settings['warmup']} warm-up; same weights, audio and mel")
    if report["rows"]:
        lines.append("peak MB = peak memory above the start of the steps: " + report["rows"][0]["memory_method"])
    lines += ["", markdown_table(headers, table), ""]
    c = report["check"]
    if c:
        lines.append(f"check (CPU, fp32, batch {c['batch']} x {c['samples']}): reproduced step vs "
                     f"DiffWaveLearner.train_step: loss diff {c['train_step_vs_reproduction_loss_abs']:.2g}, "
                     f"weights max diff {c['train_step_vs_reproduction_weights_max_abs']:.2g}; ours vs reference "
                     f"(same steps and noise): loss diff {c['ours_vs_reference_loss_abs']:.2g}, "
                     f"grad-norm rel diff {c['ours_vs_reference_grad_norm_rel']:.2g}")
    return "\n".join(lines)


if __name__ == "__main__":
    run_script(main, worker)
