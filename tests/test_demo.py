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


def test_shipped_demo_vocodes_held_out_speech_and_a_tts_layout_mel(tmp_path: Path, capsys):
    from audiodiff.demo import run_shipped_demo

    written = run_shipped_demo(tmp_path / "out", seconds=0.4, seed=0)
    out = capsys.readouterr().out
    assert len(written["wav"]) == 3 and len(written["png"]) == 2 and len(written["mel"]) == 1
    for path in written["wav"] + written["png"] + written["mel"]:
        assert path.is_file() and f"wrote {path}" in out
    mel = np.load(written["mel"][0])
    from_audio, from_file = (sf.read(p)[0] for p in written["wav"][:2])
    assert mel.shape == (int(0.4 * 22050) // 256, 80), "(frames, n_mels) as a TTS writes it"
    assert len(from_audio) == mel.shape[0] * 256
    # the same mel and seed through the file reader give the same wav
    assert np.array_equal(from_audio, from_file)
    assert "log-mel L1" in out
