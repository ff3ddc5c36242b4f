"""Interrupted work leaves whole files: SIGKILL during training, Ctrl-C during vocode and
generate, and writes that fail half-way (checkpoints, models, audio)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.training.checkpoint_io import AtomicCheckpointIO, use_atomic_checkpoints
from audiodiff.cli import main
from audiodiff.pipeline import CHECKPOINT_CONFIG_KEY, load_model
from conftest import make_tiny_generator, make_tiny_model
from test_training import fast_args
from test_vocode import real_mel

TRAIN = [sys.executable, "-m", "audiodiff.cli", "train"]
QUIET_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
#: One torch thread: tiny models run several times slower with two threads on busy cores.
ONE_THREAD = ["--threads", "1"]


def temporaries(folder: Path) -> list[Path]:
    """Temporary files of :func:`audiodiff.io.files.write_atomically` under ``folder``."""
    return sorted(folder.rglob(".*.tmp"))


def wait_until(condition: Callable[[], bool], process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Poll ``condition`` every 2 ms while ``process`` runs; fail with its log if it ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the process ended (code {process.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out:\n{log.read_text()[-3000:]}"
        time.sleep(0.002)


@contextlib.contextmanager
def running(command: list[str], log: Path, cwd: Path) -> Iterator[subprocess.Popen]:
    """``command`` in a subprocess, its output in ``log``, with Ctrl-C (SIGINT) not ignored even
    where the test runner ignores it; killed on leaving if still running."""
    def default_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd, env=QUIET_ENV,
                                   preexec_fn=default_sigint)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def half_then_fail(monkeypatch, owner, name: str, path_index: int, fail_on_call: int, error: BaseException) -> None:
    """Patch the writer ``owner.name``, whose argument ``path_index`` is the file it writes, to
    write the file, cut it in half and raise ``error`` on call number ``fail_on_call`` (from 1)."""
    real = getattr(owner, name)
    calls = []

    def writer(*args, **kwargs):
        calls.append(args)
        result = real(*args, **kwargs)
        if len(calls) == fail_on_call:
            target = Path(os.fsdecode(args[path_index]))
            target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
            raise error
        return result

    monkeypatch.setattr(owner, name, writer)


# ----------------------------------------------------------- checkpoint writer
def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "weight": torch.ones(1000)}, path)
    half_then_fail(monkeypatch, torch, "save", 1, 1, OSError("No space left on device"))
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"global_step": 2, "weight": torch.zeros(1000)}, path)
    assert io.load_checkpoint(path)["global_step"] == 1
    assert list(path.parent.iterdir()) == [path]


def test_temporaries_of_a_killed_run_are_removed_by_the_next_save(tmp_path):
    stale = tmp_path / ".last.ckpt.0123abcd.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".take.wav.0123abcd.tmp"
    other.write_bytes(b"not ours")
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, tmp_path / "step-3.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "step-3.ckpt"]


def test_the_atomic_writer_replaces_only_lightnings_default(tmp_path):
    from pytorch_lightning import Trainer
    from pytorch_lightning.plugins.io import AsyncCheckpointIO, TorchCheckpointIO

    class Mine(TorchCheckpointIO):
        pass

    def checkpoint_io(**kwargs):
        trainer = Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False, **kwargs)
        use_atomic_checkpoints(trainer)
        return trainer.strategy.checkpoint_io

    assert isinstance(checkpoint_io(), AtomicCheckpointIO)
    assert isinstance(checkpoint_io(plugins=[AsyncCheckpointIO()]).checkpoint_io, AtomicCheckpointIO)
    assert type(checkpoint_io(plugins=[Mine()])) is Mine


# ------------------------------------------------------------- killed training
def kill_args(root: Path, tmp_path: Path, max_steps: int, resume: Path | None) -> list[str]:
    """:func:`fast_args` without validation, saving ``last.ckpt`` every step and the two latest
    ``step-N.ckpt`` every 3 steps (deleting older ones) into ``tmp_path/checkpoints``."""
    folder = str(tmp_path / "checkpoints")
    callbacks = [  # in the recipe's order: jsonargparse merges each with the recipe's callback there
        {"class_path": "audiodiff.training.callbacks.EMA", "init_args": {"decay": 0.9}},
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": folder, "filename": "step-{step}", "every_n_train_steps": 3, "save_top_k": 2,
                       "monitor": "step", "mode": "max", "auto_insert_metric_name": False,
                       "enable_version_counter": False}},
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": folder, "filename": "last", "every_n_train_steps": 1, "save_top_k": 1,
                       "enable_version_counter": False}},
    ]
    args = fast_args(root, tmp_path / "runs", max_steps, tmp_path / "cache")
    args[args.index("--trainer.callbacks") + 1] = json.dumps(callbacks)
    args += ["--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0"]
    return args + (["--ckpt_path", str(resume)] if resume else [])


def saved_steps(folder: Path) -> dict[str, int]:
    """``global_step`` of every checkpoint at its final path, each read with ``weights_only=True``."""
    steps = {}
    for path in sorted(folder.glob("*.ckpt")):
        steps[path.name] = torch.load(path, map_location="cpu", weights_only=True)["global_step"]
        if path.stem.startswith("step-"):
            assert steps[path.name] == int(path.stem.removeprefix("step-")), path
    return steps


def newer_than(path: Path, inode: int | None, mid_write: bool) -> Callable[[], bool]:
    """True once ``path`` was replaced since ``inode`` (and, with ``mid_write``, while its next
    version is being written)."""
    def ready() -> bool:
        try:
            replaced = path.stat().st_ino != inode
        except FileNotFoundError:
            return False
        return replaced and (not mid_write or bool(list(path.parent.glob(f".{path.name}.*.tmp"))))

    return ready


# (wait for a writing in progress, extra delay): right after a save, during one, and later
KILL_POINTS = [(False, 0.0), (True, 0.0), (False, 0.3)]


@pytest.mark.slow
def test_training_killed_at_any_point_resumes_from_whole_checkpoints(tmp_path, speech_dir):
    folder, last = tmp_path / "checkpoints", tmp_path / "checkpoints" / "last.ckpt"
    step, resume = 0, None
    for k, (mid_write, delay) in enumerate(KILL_POINTS):
        log = tmp_path / f"train{k}.log"
        inode = last.stat().st_ino if last.exists() else None
        with running(TRAIN + kill_args(speech_dir, tmp_path, 10_000, resume), log, tmp_path) as process:
            wait_until(newer_than(last, inode, mid_write), process, log)
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            assert process.wait() == -signal.SIGKILL
        steps = saved_steps(folder)
        assert steps["last.ckpt"] > step, f"kill {k}: the step count went from {step} to {steps}"
        step, resume = steps["last.ckpt"], last

    log = tmp_path / "final.log"
    with running(TRAIN + kill_args(speech_dir, tmp_path, step + 3, last), log, tmp_path) as process:
        assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
    steps = saved_steps(folder)
    assert steps["last.ckpt"] == step + 3 and max(steps.values()) == step + 3
    assert not temporaries(folder), "the resumed run removes the temporaries of killed runs"


# ------------------------------------------------------------------- Ctrl-C
def vocode_job(tmp_path: Path, n: int, seconds: float) -> tuple[list[str], int]:
    """``n`` mels of ``seconds`` for a tiny vocoder: the arguments and the length of each output."""
    model = make_tiny_model()
    inputs = []
    for k in range(n):
        mel = real_mel(model, seconds, seed=k)
        inputs.append(str(tmp_path / f"utt{k}.npy"))
        np.save(inputs[-1], mel)
    args = ["vocode", *inputs, "--model", str(model.save(tmp_path / "v.safetensors"))]
    return args, mel.shape[-1] * model.hop_length


def generate_job(tmp_path: Path, n: int, seconds: float) -> tuple[list[str], int]:
    """``n`` clips of ``seconds`` from a tiny unconditional generator."""
    model = make_tiny_generator(None)
    args = ["generate", "--model", str(model.save(tmp_path / "g.safetensors")), "--n", str(n),
            "--seconds", str(seconds)]
    return args, round(seconds * model.sample_rate)


JOBS = {"vocode": vocode_job, "generate": generate_job}


def assert_whole_wavs(out: Path, length: int) -> list[Path]:
    """Every wav in ``out`` is readable and ``length`` samples long; no temporary is left."""
    wavs = sorted(out.glob("*.wav"))
    for wav in wavs:
        assert sf.read(wav)[0].shape == (length,), wav
    assert not temporaries(out)
    return wavs


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(JOBS))
def test_ctrl_c_stops_cleanly_and_keeps_the_finished_files(tmp_path, command):
    args, length = JOBS[command](tmp_path, 6, 0.4)
    out, log = tmp_path / "out", tmp_path / "log.txt"
    argv = [sys.executable, "-m", "audiodiff.cli", *args, "--out", str(out), "--device", "cpu",
            "--sampler", "ddpm", "--steps", "20", "--batch-size", "1", *ONE_THREAD, "--quiet"]
    with running(argv, log, tmp_path) as process:
        wait_until(lambda: any(out.glob("*.wav")), process, log)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130, log.read_text()
    wavs = assert_whole_wavs(out, length)
    assert 1 <= len(wavs) < 6
    assert log.read_text().strip().splitlines()[-1] == f"interrupted: {len(wavs)} file(s) finished in {out}"


# -------------------------------------------------------- writes that fail
@pytest.mark.parametrize("command", sorted(JOBS))
def test_ctrl_c_while_a_file_is_written_leaves_no_partial_file(tmp_path, monkeypatch, capsys, command, torch_threads):
    args, length = JOBS[command](tmp_path, 2, 0.2)
    half_then_fail(monkeypatch, sf, "write", 0, 2, KeyboardInterrupt())
    out = tmp_path / "out"
    assert main([*args, "--out", str(out), "--device", "cpu", "--batch-size", "1", *ONE_THREAD, "--quiet"]) == 130
    assert len(assert_whole_wavs(out, length)) == 1
    assert f"interrupted: 1 file(s) finished in {out}" in capsys.readouterr().err


def fake_checkpoint(path: Path) -> Path:
    """A training checkpoint as :func:`audiodiff.pipeline.loading.load_checkpoint` reads it."""
    model = make_tiny_model()
    state = {f"model.network.{k}": v for k, v in model.network.state_dict().items()}
    torch.save({CHECKPOINT_CONFIG_KEY: model.config.to_dict(), "state_dict": state}, path)
    return path


def test_an_export_that_fails_half_way_keeps_the_old_model(tmp_path, monkeypatch):
    import safetensors.torch

    target = make_tiny_generator(None).save(tmp_path / "model.safetensors")
    before = target.read_bytes()
    half_then_fail(monkeypatch, safetensors.torch, "save_file", 1, 1, KeyboardInterrupt())
    assert main(["export", str(fake_checkpoint(tmp_path / "run.ckpt")), "-o", str(target)]) == 130
    assert target.read_bytes() == before
    assert load_model(target).network.conditional is False
    assert not temporaries(tmp_path)


def test_ctrl_c_outside_a_jobs_loop_is_one_line(tmp_path, monkeypatch, capsys, tiny_model_file):
    """Ctrl-C while the model loads (before vocode's own handler) exits 130 without a traceback."""
    import audiodiff.pipeline.loading as loading
    from audiodiff.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loading, "load_any", interrupted)
    assert main(["vocode", str(tmp_path / "a.npy"), "--model", str(tiny_model_file), "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"
