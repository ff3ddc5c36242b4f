"""Training through the real CLI on CPU: fit, resume, export, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.cli import main
from audiodiff.pipeline import load_checkpoint, load_model
from audiodiff.training.run import run_training
from conftest import speech_like

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny-cpu.yaml"


def fast_args(root: Path, runs: Path, steps: int, cache: Path) -> list[str]:
    """The tiny-cpu recipe, shrunk further so a test trains in seconds."""
    return [
        "--config", str(TINY),
        "--data.root", str(root),
        "--data.cache_dir", str(cache),
        "--data.crop_frames", "8",
        "--data.batch_size", "2",
        "--data.crops_per_epoch", "4",
        "--data.val_seconds", "0.3",
        "--model.denoiser_overrides", "{residual_layers: 3, residual_channels: 8}",
        "--trainer.max_steps", str(steps),
        "--trainer.val_check_interval", "2",
        "--trainer.log_every_n_steps", "1",
        "--trainer.callbacks", json.dumps([
            {"class_path": "audiodiff.training.callbacks.EMA", "init_args": {"decay": 0.9}},
            {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
             "init_args": {"monitor": "val/mel_l1", "mode": "min", "save_top_k": 1, "filename": "best-{step}"}},
            {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
             "init_args": {"filename": "last", "every_n_train_steps": 2, "save_top_k": 1,
                           "enable_version_counter": False}},
        ]),
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.logger.init_args.save_dir", str(runs),
    ]


def assert_tensorboard_logs(runs: Path) -> None:
    """Loss, grad norm, validation metrics, validation audio and the mel figure are logged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(runs.rglob("events.out.tfevents.*"))), size_guidance={"audio": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/grad_norm", "val/loss", "val/mrstft", "val/mel_l1"} <= set(tags["scalars"])
    assert {"val/0/real", "val/0/generated"} <= set(tags["audio"])
    assert "val/0/mel" in tags["images"]


@pytest.mark.slow
def test_fit_resume_export_and_vocode(tmp_path: Path, speech_dir: Path, capsys):
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    cli = run_training(fast_args(speech_dir, runs, 4, cache))
    assert cli.trainer.global_step == 4
    last = next(runs.rglob("last.ckpt"))
    assert list(runs.rglob("best-*.ckpt")), "the best checkpoint is kept"
    assert_tensorboard_logs(runs)
    assert load_checkpoint(last).config.training_step == 4

    # resume: the step count continues from the checkpoint
    resumed = run_training(fast_args(speech_dir, runs, 6, cache) + ["--ckpt_path", str(last)])
    assert resumed.trainer.global_step == 6
    last = max(runs.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)

    exported = tmp_path / "vocoder.safetensors"
    assert main(["export", str(last), "-o", str(exported)]) == 0
    model = load_model(exported, engine="eager")  # as load_checkpoint: bit for bit
    assert model.config.training_step == 6
    # the export holds the EMA weights stored as the checkpoint's state_dict
    state = torch.load(last, map_location="cpu", weights_only=True)
    ema = state["state_dict"]["model.network.input_projection.weight"]
    raw = state["current_model_state"]["model.network.input_projection.weight"]
    assert torch.equal(model.network.input_projection.weight, ema) and not torch.equal(ema, raw)

    mel = model.mel(torch.from_numpy(speech_like(0.3, 22050)))
    from_ckpt = load_checkpoint(last).vocode(mel, seed=5)
    assert torch.equal(model.vocode(mel, seed=5), from_ckpt), "export -> load -> vocode is bit-identical"

    assert main(["info", str(exported)]) == 0
    assert "trained 6 steps" in capsys.readouterr().out


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path: Path, speech_dir: Path):
    runs = tmp_path / "runs"
    args = fast_args(speech_dir, runs, 2, tmp_path / "cache") + [
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "audiodiff.cli", "train", *args], capture_output=True,
                            text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world_size: 2" in result.stderr + result.stdout or "GLOBAL_RANK: 1" in result.stderr + result.stdout
    last = next(runs.rglob("last.ckpt"))
    assert load_checkpoint(last).config.training_step == 2


@pytest.mark.slow
def test_bad_files_are_skipped_by_the_scan(tmp_path: Path, speech_dir: Path, capsys, caplog):
    (speech_dir / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wav")
    sf.write(speech_dir / "silent.wav", np.zeros(22050, np.float32), 22050)
    with caplog.at_level("WARNING", logger="audiodiff.data"):
        cli = run_training(fast_args(speech_dir, tmp_path / "runs", 2, tmp_path / "cache"))
    assert cli.trainer.global_step == 2
    assert "4 usable, 2 skipped" in capsys.readouterr().out
    skipped = [r.getMessage() for r in caplog.records]
    assert any("broken.wav" in m for m in skipped) and any("silent.wav" in m and "silent" in m for m in skipped)


def test_ema_warmup_decay_golden_values():
    from audiodiff.training.callbacks import warmup_ema_decay

    assert warmup_ema_decay(0.9999, 0) == pytest.approx(0.1)
    assert warmup_ema_decay(0.9999, 90) == pytest.approx(91 / 100)
    assert warmup_ema_decay(0.99, 10_000) == 0.99
    assert warmup_ema_decay(0.99, 0, warmup=False) == 0.99


def test_ema_callback_averages_like_the_formula():
    import copy

    import pytorch_lightning as pl

    from audiodiff.training.callbacks import EMA

    module = pl.LightningModule()
    module.weight = torch.nn.Parameter(torch.zeros(3))
    ema = EMA(decay=0.5)
    from torch.optim.swa_utils import AveragedModel

    averaged = AveragedModel(copy.deepcopy(module), multi_avg_fn=ema._kwargs["multi_avg_fn"], use_buffers=True)
    expected = torch.zeros(3)
    for n, value in enumerate([1.0, 2.0, 3.0, 4.0]):
        module.weight.data.fill_(value)
        averaged.update_parameters(module)
        if n == 0:
            expected = torch.full((3,), value)  # the first update copies
        else:
            d = min(0.5, (1 + n) / (10 + n))
            expected = d * expected + (1 - d) * value
    assert torch.allclose(averaged.module.weight, expected)


@pytest.mark.slow
def test_init_from_continues_the_weights_and_counts_steps(tmp_path: Path, speech_dir: Path, capsys):
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    run_training(fast_args(speech_dir, runs, 2, cache))
    first = tmp_path / "first.safetensors"
    assert main(["export", str(next(runs.rglob("last.ckpt"))), "-o", str(first), "--half"]) == 0
    start = load_model(first)

    runs2 = tmp_path / "runs2"
    cli = run_training(fast_args(speech_dir, runs2, 3, cache) + ["--init-from", str(first)])
    assert cli.trainer.global_step == 3 and cli.model.initial_step == 2
    # the run starts from the file's weights (the optimiser then moves them; the first step's
    # update is at most lr * a few in Adam, so the weights stay close to the start)
    current = cli.model.model.network.input_projection.weight.detach()
    assert (current - start.network.input_projection.weight).abs().max() < 0.1
    second = tmp_path / "second.safetensors"
    assert main(["export", str(next(runs2.rglob("last.ckpt"))), "-o", str(second)]) == 0
    assert load_model(second).config.training_step == 2 + 3, "cumulative steps"

    # resuming the init-from run keeps counting from the file's steps
    resumed = run_training(fast_args(speech_dir, runs2, 4, cache) + ["--init-from", str(first),
                                                                       "--ckpt_path", str(next(runs2.rglob("last.ckpt")))])
    assert resumed.model.total_steps == 2 + 4


def test_init_from_a_model_of_another_shape_is_one_line(tmp_path: Path, speech_dir: Path, capsys):
    other = tmp_path / "other.safetensors"
    from conftest import make_tiny_model
    make_tiny_model().save(other)  # 12 layers of 32 channels; the test recipe has 3 of 8
    with pytest.raises(SystemExit) as exit_info:
        run_training(fast_args(speech_dir, tmp_path / "runs", 2, tmp_path / "cache") + ["--init-from", str(other)])
    message = str(exit_info.value)
    assert message.startswith(f"error: {other}: cannot start from it")
    assert "denoiser.residual_channels: 32 vs 8" in message and "denoiser.residual_layers: 12 vs 3" in message
    with pytest.raises(SystemExit, match="no such model file"):
        run_training(fast_args(speech_dir, tmp_path / "runs", 2, tmp_path / "cache")
                     + ["--init-from", str(tmp_path / "missing.safetensors")])


@pytest.mark.slow
def test_last_checkpoint_holds_the_final_step_off_the_interval(tmp_path: Path, speech_dir: Path):
    runs = tmp_path / "runs"
    # last.ckpt is saved every 2 steps; 3 steps end between two saves
    cli = run_training(fast_args(speech_dir, runs, 3, tmp_path / "cache"))
    assert cli.trainer.global_step == 3
    last = next(runs.rglob("last.ckpt"))
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3 and load_checkpoint(last).config.training_step == 3
    assert not list(runs.rglob(".*.tmp")), "written atomically"
