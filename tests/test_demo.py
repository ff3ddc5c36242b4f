"""The README's main job: the CPU demo (shortened to seconds here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiodiff.jobs.demo import DEFAULT_CLIP, run_demo
from audiodiff.pipeline import load_model

# each test trains or vocodes with a whole model: tens of seconds on a CPU
pytestmark = pytest.mark.slow


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
    from audiodiff.jobs.demo import run_shipped_demo

    written = run_shipped_demo(tmp_path / "out", seconds=0.4, seed=0)
    out = capsys.readouterr().out
    assert len(written["wav"]) == 3 and len(written["png"]) == 2 and len(written["mel"]) == 1
    assert len(written["floor"]) == 2
    for path in written["wav"] + written["png"] + written["mel"] + written["floor"]:
        assert path.is_file() and f"wrote {path}" in out
    mel = np.load(written["mel"][0])
    from_audio, from_file = (sf.read(p)[0] for p in written["wav"][:2])
    assert mel.shape == (int(0.4 * 22050) // 256, 80), "(frames, n_mels) as a TTS writes it"
    assert len(from_audio) == mel.shape[0] * 256
    # the same mel and seed through the file reader give the same wav, and the demo says so
    assert np.array_equal(from_audio, from_file)
    assert "read back and vocoded: the same audio as the clip's mel" in out


def _score_rows(out: str) -> list[list[str]]:
    """The cells of each clip's vocoder / Griffin-Lim / verdict rows."""
    lines = out.splitlines()
    rows = []
    for k, line in enumerate(lines):
        if line.strip().startswith("Griffin-Lim (64 it.)"):
            rows.append([lines[k - 1].split(), line.split(), lines[k + 1].split()])
    return rows


def test_shipped_demo_prints_each_clip_next_to_griffin_lim_and_whether_it_beats_it(tmp_path: Path, capsys):
    """Per clip: the vocoder's and Griffin-Lim's PESQ, V/UV F1, log-mel L1 and MR-STFT against the
    original -- the numbers score_pair gives for the same vocoding and Griffin-Lim run here -- and a
    row saying where the vocoder beats the floor."""
    pytest.importorskip("pesq")
    from audiodiff.jobs.demo import _clip_and_mel, as_saved, run_shipped_demo
    from audiodiff.eval import griffin_lim, score_pair
    from audiodiff.examples import example_files

    clip = example_files()[1]
    run_shipped_demo(tmp_path / "out", inputs=[clip], seconds=0.6, seed=3)
    out = capsys.readouterr().out
    assert "PESQ  V/UV F1  log-mel L1  MR-STFT" in out
    assert "(PESQ, V/UV F1: higher is better; log-mel L1, MR-STFT: lower is better)" in out
    ((model_row, floor_row, verdict),) = _score_rows(out)
    assert model_row[0] == "speech-22k" and verdict[:3] == ["beats", "the", "floor"]

    model = load_model().fold_denoiser()
    audio, mel = _clip_and_mel(model, clip, 0.6)
    keys, higher = ("pesq_wb", "vuv_f1", "mel_l1", "mrstft"), (True, True, False, False)
    floor = griffin_lim(mel[0], model.config.mel, 64, seed=3)
    for row, generated in ((model_row, model.vocode(mel, seed=3)[0]), (floor_row, floor)):
        values = score_pair(as_saved(audio, 22050), as_saved(generated, 22050), 22050,
                            metrics=["pesq", "f0", "mel", "mrstft"]).values()
        assert [float(v) for v in row[-4:]] == pytest.approx([values[k] for k in keys], abs=0.0015)
    ours, theirs = [float(v) for v in model_row[-4:]], [float(v) for v in floor_row[-4:]]
    assert verdict[-4:] == ["yes" if (a > b if up else a < b) else "no" for a, b, up in zip(ours, theirs, higher)]
    wins = verdict[-4:]
    assert (f"clips on which the vocoder beats Griffin-Lim: PESQ {int(wins[0] == 'yes')}/1, "
            f"V/UV F1 {int(wins[1] == 'yes')}/1") in out


def test_shipped_demo_without_pesq_says_how_to_get_it_and_prints_the_rest(tmp_path: Path, capsys, monkeypatch):
    import importlib.util

    from audiodiff.jobs import demo

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pesq" else real_find_spec(name, *a))
    demo.run_shipped_demo(tmp_path / "out", inputs=[demo.DEFAULT_CLIP], seconds=0.4, seed=0)
    out = capsys.readouterr().out
    (hint,) = [line for line in out.splitlines() if line.startswith("demo:") and "pesq" in line.lower()]
    assert "pip install 'audiodiff[eval]'" in hint
    assert "V/UV F1  log-mel L1  MR-STFT" in out and "PESQ  V/UV" not in out
    (rows,) = _score_rows(out)
    assert [len(row) for row in rows] == [4 + 3, 3 + 3, 3 + 3]  # label words + three scores each
    assert "clips on which the vocoder beats Griffin-Lim: V/UV F1 " in out
