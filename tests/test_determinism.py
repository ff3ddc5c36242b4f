"""The same seed gives bit-identical audio on the CPU, across two processes (vocode and generate)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import soundfile as sf

from conftest import make_tiny_generator, make_tiny_model, speech_like

# each test runs the command line in two fresh processes
pytestmark = pytest.mark.slow


def _run_twice(tmp_path, args: list[str]) -> tuple:
    """Run ``audiodiff ARGS --out <dir>`` in two fresh processes; the two output folders."""
    outs = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        command = [sys.executable, "-m", "audiodiff.cli", *args, "--out", str(out), "--quiet", "--device", "cpu"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        outs.append(out)
    return tuple(outs)


def _same_files(first, second) -> None:
    names = sorted(p.name for p in first.glob("*.wav"))
    assert names and names == sorted(p.name for p in second.glob("*.wav"))
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_vocode_is_bit_identical_across_processes(tmp_path):
    model = make_tiny_model().save(tmp_path / "v.safetensors")
    sf.write(tmp_path / "a.wav", speech_like(0.4, 22050), 22050)
    sf.write(tmp_path / "b.wav", speech_like(0.3, 22050, seed=1), 22050)
    first, second = _run_twice(tmp_path, ["vocode", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"),
                                          "--model", str(model), "--seed", "11"])
    _same_files(first, second)


def test_generate_is_bit_identical_across_processes(tmp_path):
    model = make_tiny_generator(("door", "rain")).save(tmp_path / "g.safetensors")
    first, second = _run_twice(tmp_path, ["generate", "--model", str(model), "--all-classes", "--n", "2",
                                          "--seconds", "0.2", "--guidance", "2.5", "--seed", "4"])
    _same_files(first, second)
