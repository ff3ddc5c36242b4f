"""Untrusted files: a pickle that would run code is refused with one line, wherever it is given,
and a ``.safetensors`` model is read without unpickling anything."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from audiodiff.cli import main
from audiodiff.pipeline import load_any
from audiodiff.training.run import run_training
from conftest import make_tiny_model
from test_interruption import ONE_THREAD
from test_training import fast_args


class Payload:
    """Unpickling this calls ``Path(marker).touch()``: code run by merely loading a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """The file the payload creates when it is unpickled."""
    return tmp_path / "payload-ran"


@pytest.fixture
def malicious(tmp_path: Path, marker: Path):
    """``malicious(name)`` writes a checkpoint-like file ``name`` carrying the payload, after
    checking that an unsafe ``torch.load`` of it really would create the marker."""
    def write(name: str) -> Path:
        path = tmp_path / name
        torch.save({"state_dict": {}, "params": Payload(marker), "mel": Payload(marker)}, path)
        torch.load(path, weights_only=False)
        assert marker.exists(), "the payload is not armed"
        marker.unlink()
        return path

    return write


def assert_one_line_error(stderr: str, path: Path) -> None:
    """``stderr`` holds one ``error:`` line naming ``path`` and saying it was refused, no traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0] and "refused" in errors[0], stderr
    assert "Traceback" not in stderr and str(path) not in stderr.replace(errors[0], "")


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    return make_tiny_model().save(tmp_path / "model.safetensors")


@pytest.fixture
def mel_file(tmp_path: Path) -> Path:
    path = tmp_path / "mel.npy"
    np.save(path, np.full((80, 4), -5.0, np.float32))
    return path


CPU_QUIET = ["--device", "cpu", "--quiet"]
CASES = {  # name of the untrusted file -> the command, given that file, a mel, a model and a folder
    "run.ckpt": lambda bad, mel, model, out: ["export", bad, "-o", out / "m.safetensors"],
    "diffwave.pt": lambda bad, mel, model, out: ["import-diffwave", bad, "-o", out / "m.safetensors"],
    "model.ckpt": lambda bad, mel, model, out: ["vocode", mel, "--model", bad, "--out", out, *CPU_QUIET],
    "sfx.ckpt": lambda bad, mel, model, out: ["generate", "--model", bad, "--out", out, *CPU_QUIET],
    "info.ckpt": lambda bad, mel, model, out: ["info", bad],
    "mel.pt": lambda bad, mel, model, out: ["vocode", bad, "--model", model, "--out", out, *CPU_QUIET],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_malicious_pickle_is_refused_with_one_line(name, malicious, marker, mel_file, model_file, tmp_path, capsys):
    bad, out = malicious(name), tmp_path / "out"
    assert main([str(a) for a in CASES[name](bad, mel_file, model_file, out)]) != 0
    assert not marker.exists(), "unpickling the untrusted file ran its code"
    assert_one_line_error(capsys.readouterr().err, bad)
    assert not out.exists() or not any(out.iterdir()), "nothing is written"


def test_training_refuses_to_resume_from_a_malicious_checkpoint(malicious, marker, speech_dir, tmp_path):
    bad = malicious("last.ckpt")
    args = fast_args(speech_dir, tmp_path / "runs", 2, tmp_path / "cache") + ["--ckpt_path", str(bad)]
    with pytest.raises(SystemExit) as exit_info:
        run_training(args)
    assert not marker.exists(), "unpickling the untrusted checkpoint ran its code"
    assert_one_line_error(str(exit_info.value.code), bad)
    assert not list((tmp_path / "runs").rglob("*.ckpt")), "nothing was trained"


def test_a_safetensors_model_is_read_without_unpickling(model_file, mel_file, tmp_path, monkeypatch, torch_threads):
    def refuse(*args, **kwargs):
        raise AssertionError("a .safetensors model must load without unpickling")

    for owner, name in [(pickle, "Unpickler"), (pickle, "load"), (pickle, "loads"), (torch, "load"),
                        (torch.serialization, "load")]:
        monkeypatch.setattr(owner, name, refuse)
    assert load_any(model_file).network.conditional
    assert main(["vocode", str(mel_file), "--model", str(model_file), "--out", str(tmp_path / "o"),
                 *CPU_QUIET, *ONE_THREAD]) == 0
    assert (tmp_path / "o" / "mel.wav").is_file()


class SystemCall:
    """Unpickling this runs ``os.system`` (the classic payload), touching ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch '{self.marker}'",)


@pytest.mark.parametrize("writer", ["torch.save", "pickle protocol 4"])
def test_a_refused_pickle_says_why_and_never_suggests_turning_the_protection_off(writer, marker, model_file,
                                                                                  tmp_path, capsys):
    """torch's own refusal says re-running with ``weights_only=False`` "will likely succeed": the one
    thing not to do with an untrusted file. Ours says it was refused because it could run code."""
    bad = tmp_path / "mel.pt"
    if writer == "torch.save":
        torch.save({"mel": SystemCall(marker)}, bad)
    else:
        bad.write_bytes(pickle.dumps({"mel": SystemCall(marker)}, protocol=4))
    out = tmp_path / "out"
    assert main(["vocode", str(bad), "--model", str(model_file), "--out", str(out), *CPU_QUIET]) != 0
    assert not marker.exists(), "unpickling the untrusted mel ran its code"
    stderr = capsys.readouterr().err
    assert_one_line_error(stderr, bad)
    assert "could run code" in stderr
    assert "weights_only" not in stderr and "will likely succeed" not in stderr and "Warning" not in stderr
