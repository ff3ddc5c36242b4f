"""Chunked synthesis of long inputs: the plan, exactness against one piece, and a memory bound."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.engines.chunking import chunked_eps_fn, halo_frames, plan_chunks
from audiodiff.network.diffwave import denoiser_config
from conftest import make_tiny_model

#: Peak resident memory allowed for vocoding ten minutes with the tiny model on the CPU
#: (the README states it; measured about 1.2 GB, of which the process itself is about 0.5 GB).
TEN_MINUTE_PEAK_BYTES = 2 * 2**30


@pytest.mark.parametrize("frames, chunk, halo", [(1, 5, 3), (10, 3, 2), (100, 7, 14), (64, 64, 4), (65, 64, 0)])
def test_chunks_cover_every_frame_once_with_clipped_halos(frames: int, chunk: int, halo: int):
    chunks = plan_chunks(frames, chunk, halo)
    covered = np.concatenate([np.arange(c.start, c.stop) for c in chunks])
    np.testing.assert_array_equal(covered, np.arange(frames))
    for c in chunks:
        assert c.stop - c.start <= chunk
        assert c.window_start == max(0, c.start - halo) and c.window_stop == min(frames, c.stop + halo)


def test_plan_rejects_empty_input_and_zero_chunks():
    with pytest.raises(ValueError, match="frames >= 1"):
        plan_chunks(0, 4, 1)
    with pytest.raises(ValueError, match="chunk_frames >= 1"):
        plan_chunks(10, 0, 1)


@pytest.mark.parametrize("size", ["tiny", "base", "large"])
def test_halo_covers_half_the_receptive_field_plus_the_upsampler(size: str):
    config = denoiser_config(size, n_mels=80, hop_length=256)
    dilations = [2 ** (layer % config.dilation_cycle) for layer in range(config.residual_layers)]
    one_side = sum(dilations)  # kernel 3: one dilation each side per layer
    assert halo_frames(config) == -(-one_side // 256) + 2
    assert halo_frames(config) == {"tiny": 3, "base": 14, "large": 14}[size]


@pytest.fixture(scope="module")
def long_mel() -> torch.Tensor:
    """Two rows of 180 frames in the hifigan range (2.1 s at 22.05 kHz: the CPU default chunks them)."""
    return torch.randn(2, 80, 180, generator=torch.Generator().manual_seed(1)) - 4.0


@pytest.mark.slow
@pytest.mark.parametrize("sampler, steps", [("fast", None), ("ddpm", 3)])
def test_chunked_audio_equals_one_piece(long_mel: torch.Tensor, sampler: str, steps: int | None):
    model = make_tiny_model()
    whole = model.vocode(long_mel, sampler=sampler, steps=steps, seed=3, chunk_seconds=None)
    for chunk_frames in (9, 100):
        seconds = chunk_frames * model.hop_length / model.sample_rate + 1e-9
        chunked = model.vocode(long_mel, sampler=sampler, steps=steps, seed=3, chunk_seconds=seconds)
        assert chunked.shape == whole.shape == (2, 180 * model.hop_length)
        assert (chunked - whole).abs().max() < 1e-5, chunk_frames


@pytest.mark.slow
def test_without_the_halo_the_seams_differ(long_mel: torch.Tensor):
    """The exactness above is the halo's doing: with none, predictions at the seams change."""
    model = make_tiny_model()
    mel = long_mel[:1]
    x = torch.randn(1, mel.shape[-1] * model.hop_length, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        whole = model.network.denoise(x, model.steps_for(x, 0.5), model.network.condition(mel))
        seams = chunked_eps_fn(model.network, mel, model.steps_for, 64, halo=0)(x, 0.5)
        exact = chunked_eps_fn(model.network, mel, model.steps_for, 64)(x, 0.5)
    assert (exact - whole).abs().max() < 1e-5
    seam = 64 * model.hop_length
    assert (seams - whole)[:, seam - 100: seam + 100].abs().max() > 1e-3
    assert (seams - whole)[:, 1000: seam - 1000].abs().max() < 1e-5  # far from the seams they agree


@pytest.mark.slow
def test_auto_chunks_long_inputs_on_the_cpu_only_beyond_two_seconds(long_mel: torch.Tensor, monkeypatch):
    import audiodiff.pipeline.audio_diffusion as pretrained

    calls = []
    original = pretrained.chunked_eps_fn
    monkeypatch.setattr(pretrained, "chunked_eps_fn", lambda *a, **k: calls.append(a[3]) or original(*a, **k))
    model = make_tiny_model()
    short_frames = int(2.0 * model.sample_rate / model.hop_length)
    model.vocode(long_mel[:1, :, :short_frames], seed=0)
    assert calls == []
    model.vocode(long_mel[:1], seed=0)
    assert calls == [short_frames]


@pytest.mark.slow
def test_ten_minutes_vocode_in_bounded_memory(tmp_path: Path, tiny_model_file: Path):
    """``audiodiff vocode`` on a 10-minute mel (tiny model, one step to keep the test short: the
    memory does not depend on the step count) stays under the README's bound."""
    model = make_tiny_model()
    frames = int(600 * model.sample_rate / model.hop_length)
    mel = np.random.default_rng(0).normal(-5.0, 1.0, (80, frames)).astype(np.float32)
    np.save(tmp_path / "long.npy", mel)
    command = [sys.executable, "-m", "audiodiff.cli", "vocode", str(tmp_path / "long.npy"), "--model",
               str(tiny_model_file), "--out", str(tmp_path / "out"), "--sampler", "ddpm", "--steps", "1",
               "--device", "cpu", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(process.pid, 0)
    output = process.stdout.read().decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, output
    peak_bytes = usage.ru_maxrss * 1024  # Linux reports kilobytes
    assert peak_bytes < TEN_MINUTE_PEAK_BYTES, f"peak {peak_bytes / 2**30:.2f} GiB"
    info = sf.info(str(tmp_path / "out" / "long.wav"))
    assert info.frames == frames * model.hop_length


@pytest.mark.slow
def test_chunk_seconds_option_gives_the_same_file(tmp_path: Path, tiny_model_file: Path, long_mel: torch.Tensor,
                                                  capsys):
    from audiodiff.cli import main

    np.save(tmp_path / "a.npy", long_mel[0].numpy())
    outputs = {}
    for option in ("0.5", "0"):
        out = tmp_path / f"out-{option}"
        assert main(["vocode", str(tmp_path / "a.npy"), "--model", str(tiny_model_file), "--out", str(out),
                     "--sampler", "ddpm", "--steps", "2", "--chunk-seconds", option, "--quiet"]) == 0
        outputs[option], _ = sf.read(str(out / "a.wav"), dtype="int16")
    assert np.abs(outputs["0.5"].astype(int) - outputs["0"]).max() <= 1  # PCM rounding of float-level differences
    assert main(["vocode", str(tmp_path / "a.npy"), "--model", str(tiny_model_file), "--chunk-seconds", "-1"]) == 2
    assert "--chunk-seconds must be positive" in capsys.readouterr().err
