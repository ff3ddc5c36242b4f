"""The README's main job: the CPU demo (shortened to seconds here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from audiodiff.demo import DEFAULT_CLIP, run_demo
from audiodiff.pretrained import load_model


def test_demo_trains_vocodes_and_writes_wav_png_and_model(tmp_path: Path, capsys):
    paths = run_demo(audio_path=None, out_dir=tmp_path / "demo", minutes=0.1, seed=0)
    out = capsys.readouterr().out
    for key in ("wav", "png", "model"):
        assert paths[key].is_file() and f"wrote {paths[key]}" in out
    audio, rate = sf.read(paths["wav"])
    clip, clip_rate = sf.read(DEFAULT_CLIP)
    assert rate == clip_rate == 22050
    assert len(audio) == len(clip) // 256 * 256 and np.isfinite(audio).all()
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_model(paths["model"]).config.training_step > 0
