"""Can the training path learn pitch? Overfit a small vocoder on one or two short utterances (issue 19, point 1).

Trains with the real training path (``audiodiff.training.DiffusionModule``,
``audiodiff.data.AudioDataModule`` over a folder of the cut utterances, the ``audiodiff.training.callbacks.EMA``
callback, a Lightning ``Trainer`` with the tiny recipe's settings: gradient clipping 1.0, fp32,
AdamW) on the utterances themselves, and every ``--eval-every`` steps vocodes each whole utterance
from its own mel with the EMA weights (``--sampler``, fixed seed) and scores it against the original
with :func:`audiodiff.eval.score_pair`: V/UV F1 and F0 RMSE (pyin), MR-STFT and log-mel L1.
Griffin-Lim (64 iterations) from the same mels is scored once, as a floor.

Variants (``--variants``) differ only in what the network's conditioner sees; the mel used for
scoring is always the preset's own:

* ``raw``: the ``hifigan`` log-mel as it is (natural log, about -11.5 .. 2), as shipped;
* ``affine``: ``(mel + 4.75) / 6.75``, the preset's range mapped to about [-1, 1];
* ``standardise``: per-bin standardisation with the mean and standard deviation of each mel bin
  over the training utterances.

The normalisation is a module wrapped around the model's mel front end in this script only
(training and vocoding both go through it); the package's models are unchanged.

Each variant runs in its own process (``--jobs`` at a time, ``--threads`` torch threads each) and
stops at ``--steps`` or after ``--minutes`` of training (evaluation not counted). Prints the curve
per variant and writes JSON (``--json``, atomically).

    python benchmarks/overfit_pitch.py --json benchmarks/results/overfit-pitch-cpu.json
    python benchmarks/overfit_pitch.py --audio a.wav b.wav --seconds 2 --variants raw affine --steps 1500
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt, machine_info, machine_lines, markdown_table, parser_from_doc, write_json  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "audiodiff" / "examples"
DEFAULT_AUDIO = (EXAMPLES / "cs-m-pravidla.ogg", EXAMPLES / "cs-v-neboj1.ogg")
VARIANTS = ("raw", "affine", "standardise")
#: ``affine``: the hifigan preset's range (ln 1e-5 = -11.5 .. about 2) onto about [-1, 1].
AFFINE_SHIFT, AFFINE_SCALE = -4.75, 6.75
METRIC_KEYS = ("vuv_f1", "f0_rmse_cents", "mrstft", "mel_l1")
WORKER_FLAG = "--worker"


class NormalisedMel(nn.Module):
    """A mel front end followed by ``(mel - shift) / scale`` (``shift``/``scale`` scalars or ``(n_mels, 1)``)."""

    def __init__(self, frontend: nn.Module, shift: Tensor, scale: Tensor) -> None:
        super().__init__()
        self.frontend = frontend
        self.config = frontend.config
        self.register_buffer("shift", shift.float())
        self.register_buffer("scale", scale.float())

    def forward(self, audio: Tensor) -> Tensor:
        return (self.frontend(audio) - self.shift) / self.scale


def normaliser(variant: str, frontend: nn.Module, clips: list[Tensor]) -> nn.Module:
    """The conditioner's mel front end for ``variant`` (``frontend`` itself for ``raw``)."""
    if variant == "raw":
        return frontend
    if variant == "affine":
        return NormalisedMel(frontend, torch.tensor(AFFINE_SHIFT), torch.tensor(AFFINE_SCALE))
    if variant == "standardise":
        with torch.no_grad():
            mels = torch.cat([frontend(c)[0] for c in clips], dim=-1)  # (n_mels, frames)
        return NormalisedMel(frontend, mels.mean(-1, keepdim=True), mels.std(-1, keepdim=True).clamp_min(1e-3))
    raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")


# ------------------------------------------------------------------ data
def cut_utterances(paths: list[str], offset: float, seconds: float, sample_rate: int, hop: int,
                   folder: Path) -> list[dict[str, Any]]:
    """``seconds`` of each file from ``offset`` (whole hops), written to ``folder`` as float WAV."""
    from audiodiff.io.audio import load_audio, save_audio

    cuts = []
    for i, path in enumerate(paths):
        audio, _ = load_audio(path, sample_rate)
        start = int(round(offset * sample_rate))
        length = min(len(audio) - start, int(round(seconds * sample_rate))) // hop * hop
        if length < 4 * hop:
            raise SystemExit(f"{path}: fewer than 4 hops of audio after {offset} s")
        clip = audio[start: start + length]
        name = f"{i:02d}-{Path(path).stem}.wav"
        save_audio(folder / name, clip, sample_rate, subtype="FLOAT")
        cuts.append({"name": name, "source": Path(path).name, "offset_s": offset, "seconds": length / sample_rate})
    return cuts


# ------------------------------------------------------------------ worker
def score(reference: Tensor, generated: Tensor, sample_rate: int) -> dict[str, float | None]:
    from audiodiff.eval import score_pair

    result = score_pair(reference.numpy(), generated.numpy(), sample_rate, metrics=("f0", "mrstft", "mel"))
    return {key: getattr(result, key) for key in METRIC_KEYS}


def mean_scores(per_clip: list[dict[str, float | None]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in METRIC_KEYS:
        values = [s[key] for s in per_clip if s[key] is not None]
        out[key] = sum(values) / len(values) if values else None
    return out


def griffin_lim_floor(clips: list[Tensor], sample_rate: int) -> dict[str, float | None]:
    from audiodiff.eval import griffin_lim
    from audiodiff.mel import MelSpectrogram, mel_preset

    frontend = MelSpectrogram(mel_preset("hifigan", sample_rate=sample_rate))
    with torch.no_grad():
        generated = [griffin_lim(frontend(c)[0], frontend.config)[: len(c)].float() for c in clips]
    per_clip = [score(c, g, sample_rate) for c, g in zip(clips, generated)]
    return mean_scores(per_clip)


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one variant and return its curve (runs in a fresh process)."""
    import warnings

    import pytorch_lightning as pl

    from audiodiff.io.audio import load_audio
    from audiodiff.training.callbacks import EMA
    from audiodiff.data import AudioDataModule
    from audiodiff.training.module import DiffusionModule

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*no EMA.*")
    torch.set_num_threads(spec["threads"])
    pl.seed_everything(spec["seed"], verbose=False)
    folder = Path(spec["data"])
    clips = [load_audio(folder / c["name"])[0] for c in spec["clips"]]
    module = DiffusionModule(size=spec["size"], denoiser_overrides=spec["overrides"] or None,
                             learning_rate=spec["lr"], val_audio_clips=0)
    frontend = module.model.mel_frontend
    module.model.mel_frontend = normaliser(spec["variant"], frontend, clips)
    data = AudioDataModule(root=str(folder), sample_rate=module.sample_rate, hop_length=module.hop_length,
                           crop_frames=spec["crop_frames"], batch_size=spec["batch"],
                           crops_per_epoch=spec["batch"] * 1000, num_workers=0, val_files=0,
                           cache_dir=str(folder.parent / "cache"), seed=spec["seed"])
    ema = EMA(decay=spec["ema"])
    curve = _make_curve_class()(spec, clips, ema, module.sample_rate)
    accelerator = "gpu" if spec["device"] == "cuda" else "cpu"
    trainer = pl.Trainer(accelerator=accelerator, devices=1, precision="32", max_steps=spec["steps"],
                         gradient_clip_val=1.0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=[ema, curve])
    trainer.fit(module, datamodule=data)
    curve.evaluate(trainer, module)  # the last step, if not evaluated yet
    network = module.model.network
    return {"variant": spec["variant"], "curve": curve.rows, "receptive_field": network.config.receptive_field,
            "parameters": sum(p.numel() for p in network.parameters())}


def _make_curve_class():
    """The evaluation callback (a class made on demand: Lightning is imported only where training runs)."""
    import pytorch_lightning as pl

    class Curve(pl.Callback):
        """Scores the EMA weights' vocoding of the training utterances every ``eval_every`` steps."""

        def __init__(self, spec: dict[str, Any], clips: list[Tensor], ema: Any, sample_rate: int) -> None:
            self.spec, self.clips, self.ema, self.sample_rate = spec, clips, ema, sample_rate
            self.rows: list[dict[str, Any]] = []
            self.train_s = 0.0
            self.losses: list[float] = []
            self._t0 = 0.0

        def on_train_start(self, trainer, pl_module) -> None:
            self.evaluate(trainer, pl_module)  # the untrained network, step 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.train_s += time.perf_counter() - self._t0
            self.losses.append(float(outputs["loss"]))
            step = trainer.global_step
            if step % self.spec["eval_every"] == 0:
                self.evaluate(trainer, pl_module)
            if self.train_s >= 60 * self.spec["minutes"]:
                trainer.should_stop = True

        def evaluate(self, trainer, pl_module) -> None:
            step = trainer.global_step
            if self.rows and self.rows[-1]["step"] == step:
                return
            average = getattr(self.ema, "_average_model", None)
            model = (average.module if average is not None else pl_module).model
            was_training = model.training
            model.eval()
            per_clip = []
            started = time.perf_counter()
            with torch.no_grad():
                for i, clip in enumerate(self.clips):
                    mel = model.mel_frontend(clip.to(model.device))
                    generated = model.vocode(mel, sampler=self.spec["sampler"], seed=self.spec["seed"] + i,
                                             chunk_seconds=None)[0]
                    per_clip.append(score(clip, generated.float().cpu(), self.sample_rate))
            model.train(was_training)
            recent = self.losses[-self.spec["eval_every"]:]
            row = {"step": step, "train_s": round(self.train_s, 2), "eval_s": round(time.perf_counter() - started, 2),
                   "loss": sum(recent) / len(recent) if recent else None, **mean_scores(per_clip),
                   "per_clip": per_clip}
            self.rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "per_clip"}), file=sys.stderr, flush=True)

    return Curve


# ------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = parser_from_doc(__doc__)
    parser.add_argument("--audio", nargs="+", default=[str(p) for p in DEFAULT_AUDIO],
                        help="utterances to overfit (default: the package's two example clips)")
    parser.add_argument("--offset", type=float, default=0.0, help="start of the cut in each file, seconds")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the cut of each file")
    parser.add_argument("--variants", nargs="+", default=["raw", "affine"], choices=VARIANTS)
    parser.add_argument("--size", default="tiny", help="network size (tiny, base, large)")
    parser.add_argument("--layers", type=int, default=12, help="residual layers (overrides the size)")
    parser.add_argument("--channels", type=int, default=32, help="residual channels (overrides the size)")
    parser.add_argument("--cycle", type=int, default=10, help="dilation cycle (overrides the size)")
    parser.add_argument("--steps", type=int, default=1500, help="most training steps per variant")
    parser.add_argument("--minutes", type=float, default=20.0, help="most training minutes per variant")
    parser.add_argument("--eval-every", type=int, default=150, help="steps between evaluations")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop-frames", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--ema", type=float, default=0.99, help="EMA decay (with warm-up)")
    parser.add_argument("--sampler", default="fast")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to train and vocode")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per variant")
    parser.add_argument("--jobs", type=int, default=2, help="variants trained at the same time")
    parser.add_argument("--work", default=None, help="folder for the cut utterances (default: a temporary one)")
    parser.add_argument("--json", default=None, help="write the report here")
    return parser.parse_args(argv)


def run_variants(specs: list[dict[str, Any]], jobs: int) -> list[dict[str, Any]]:
    """Each spec in a fresh ``--worker`` process, ``jobs`` at a time; results in spec order."""
    results: list[dict[str, Any] | None] = [None] * len(specs)
    pending = list(enumerate(specs))
    running: list[tuple[int, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < jobs:
            i, spec = pending.pop(0)
            running.append((i, subprocess.Popen([sys.executable, __file__, WORKER_FLAG, json.dumps(spec)],
                                                stdout=subprocess.PIPE, text=True)))
        time.sleep(0.2)
        for i, process in list(running):
            if process.poll() is None:
                continue
            out = process.stdout.read()
            running.remove((i, process))
            if process.returncode != 0:
                raise SystemExit(f"variant {specs[i]['variant']} failed (exit {process.returncode})")
            results[i] = json.loads(out.strip().splitlines()[-1])
    return results  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from audiodiff.io.audio import load_audio
    from audiodiff.mel import mel_preset

    preset = mel_preset("hifigan")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        folder = work / "utterances"
        folder.mkdir(parents=True, exist_ok=True)
        cuts = cut_utterances(args.audio, args.offset, args.seconds, preset.sample_rate, preset.hop_length, folder)
        clips = [load_audio(folder / c["name"])[0] for c in cuts]
        floor = griffin_lim_floor(clips, preset.sample_rate)
        overrides = {"residual_layers": args.layers, "residual_channels": args.channels, "dilation_cycle": args.cycle}
        specs = [{"variant": v, "data": str(folder), "clips": cuts, "size": args.size, "overrides": overrides,
                  "steps": args.steps, "minutes": args.minutes, "eval_every": args.eval_every,
                  "batch": args.batch, "crop_frames": args.crop_frames, "lr": args.lr, "ema": args.ema,
                  "sampler": args.sampler, "seed": args.seed, "threads": args.threads,
                  "device": args.device} for v in args.variants]
        runs = run_variants(specs, args.jobs)
    torch.set_num_threads(args.threads)
    report = {
        "machine": machine_info(args.device),
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "work", "audio")},
        "utterances": cuts,
        "griffin_lim": floor,
        "runs": runs,
    }
    print(format_report(report))
    if args.json:
        write_json(args.json, report)
    return report


def format_report(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = machine_lines(report["machine"])
    lines.append("utterances: " + ", ".join(f"{u['source']} ({u['seconds']:.2f} s from {u['offset_s']:g} s)"
                                             for u in report["utterances"]))
    run = report["runs"][0]
    lines.append(f"network: {s['size']} with {s['layers']} layers x {s['channels']} channels, dilation cycle "
                 f"{s['cycle']} ({run['parameters']} parameters, receptive field {run['receptive_field']} samples); "
                 f"batch {s['batch']} x {s['crop_frames']} frames, lr {s['lr']:g}, EMA {s['ema']:g}, "
                 f"sampler {s['sampler']}")
    headers = ["variant", "step", "train min", "loss", "V/UV F1", "F0 cents", "MR-STFT", "mel L1"]
    rows = [["Griffin-Lim", "-", "-", "-", *(fmt(report["griffin_lim"][k]) for k in METRIC_KEYS)]]
    for run in report["runs"]:
        for row in run["curve"]:
            rows.append([run["variant"], row["step"], fmt(row["train_s"] / 60), fmt(row["loss"]),
                         *(fmt(row[k]) for k in METRIC_KEYS)])
    lines.append(markdown_table(headers, rows))
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == WORKER_FLAG:
        print(json.dumps(worker(json.loads(sys.argv[2]))))
    else:
        main()
