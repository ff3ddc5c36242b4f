"""Objective evaluation: pairing, metrics, Griffin-Lim floor, resynthesis of a folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.io.audio import load_audio
from audiodiff.eval import (
    JUDGES,
    Pairing,
    available_judges,
    check_judges,
    evaluate_pairs,
    f0_scores,
    griffin_lim,
    mel_cepstral_distortion,
    pair_files,
    resynthesise_folder,
    score_pair,
    write_json,
)
from audiodiff.mel import MelSpectrogram, mel_preset
from conftest import make_tiny_model, sine, speech_like

SR = 22050
SPEECH_22K = Path(__file__).parent / "data" / "speech-cs-22k.ogg"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """2.5 s of real speech at 22.05 kHz, float64 (T,)."""
    audio, _ = load_audio(SPEECH_22K, SR, start_seconds=0.5, duration_seconds=2.5)
    return audio.numpy().astype(np.float64)


@pytest.fixture(scope="module")
def noise(speech: np.ndarray) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(len(speech))


def _write(path: Path, audio: np.ndarray, sample_rate: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.astype(np.float32), sample_rate)
    return path


# ------------------------------------------------------------------ pairing
def test_pairing_by_relative_name_across_suffixes(tmp_path):
    clip = sine(0.1, 8000)
    for name in ["a/x.flac", "a/b/y.wav", "z.ogg", "only-ref.wav", ".hidden.wav", ".cache/w.wav", "notes.txt"]:
        (tmp_path / "ref" / name).parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".txt"):
            (tmp_path / "ref" / name).write_text("not audio")
        else:
            _write(tmp_path / "ref" / name, clip, 8000)
    for name in ["a/x.wav", "a/b/y.wav", "z.wav", "only-gen.wav", ".hidden.wav", ".cache/w.wav", "a/y.wav"]:
        _write(tmp_path / "gen" / name, clip, 8000)
    pairing = pair_files(tmp_path / "ref", tmp_path / "gen")
    relative = [(n, r.relative_to(tmp_path).as_posix(), g.relative_to(tmp_path).as_posix())
                for n, r, g in pairing.pairs]
    assert relative == [
        ("a/b/y", "ref/a/b/y.wav", "gen/a/b/y.wav"),
        ("a/x", "ref/a/x.flac", "gen/a/x.wav"),
        ("z", "ref/z.ogg", "gen/z.wav"),
    ]
    assert pairing.missing_gen == ["only-ref"]
    assert pairing.missing_ref == ["a/y", "only-gen"]


def test_pairing_errors_are_clear(tmp_path):
    _write(tmp_path / "ref" / "x.wav", sine(0.1, 8000), 8000)
    _write(tmp_path / "gen" / "y.wav", sine(0.1, 8000), 8000)
    with pytest.raises(FileNotFoundError, match="nope: folder not found"):
        pair_files(tmp_path / "ref", tmp_path / "nope")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        pair_files(tmp_path / "ref" / "x.wav", tmp_path / "gen")
    with pytest.raises(ValueError, match=r"no files pair up: 1 audio file\(s\) in .*ref, 1 in .*gen"):
        pair_files(tmp_path / "ref", tmp_path / "gen")
    _write(tmp_path / "gen" / "y.flac", sine(0.1, 8000), 8000)
    with pytest.raises(ValueError, match="same name 'y'"):
        pair_files(tmp_path / "ref", tmp_path / "gen")


# ------------------------------------------------------------------ metrics
@pytest.mark.slow
def test_identical_signals_give_ideal_scores(speech):
    score = score_pair(speech, speech.copy(), SR)
    assert score.pesq_wb == pytest.approx(4.644, abs=1e-3)
    assert score.stoi == pytest.approx(1.0, abs=1e-6)
    assert score.estoi == pytest.approx(1.0, abs=1e-6)
    assert score.mrstft == pytest.approx(0.0, abs=1e-6)
    assert score.mel_l1 == pytest.approx(0.0, abs=1e-6)
    assert score.mcd_db == pytest.approx(0.0, abs=1e-9)
    assert score.f0_rmse_cents == 0.0 and score.f0_rmse_hz == 0.0
    assert score.vuv_f1 == 1.0
    assert score.delay_ms == 0.0
    assert score.notes == []
    assert score.duration_s == pytest.approx(2.5, abs=1e-3)


@pytest.mark.slow
def test_added_noise_lowers_pesq_and_stoi_monotonically(speech, noise):
    levels = [0.0, 0.003, 0.01, 0.03, 0.1]
    scores = [score_pair(speech, speech + level * noise, SR, metrics=("pesq", "stoi", "mcd")) for level in levels]
    for key in ("pesq_wb", "stoi", "estoi"):
        values = [getattr(s, key) for s in scores]
        assert all(a > b for a, b in zip(values, values[1:])), (key, values)
    mcd = [s.mcd_db for s in scores]
    assert all(a < b for a, b in zip(mcd, mcd[1:])), mcd
    assert scores[-1].pesq_wb < 1.5 and scores[-1].stoi < 0.8


@pytest.mark.slow
def test_delayed_copy_is_detected_and_can_be_compensated(speech):
    lag = round(0.020 * SR)
    reference = np.concatenate([speech, np.zeros(lag)])
    delayed = np.concatenate([np.zeros(lag), speech])  # the same speech, 20 ms later
    score = score_pair(reference, delayed, SR, metrics=("pesq", "stoi", "mrstft", "delay"))
    assert score.delay_ms == pytest.approx(20.0, abs=0.05)
    assert any("lags the reference by 20.00 ms" in note for note in score.notes)
    assert score.pesq_wb > 4.6  # PESQ aligns the signals itself
    assert score.stoi < 0.8 and score.mrstft > 0.5  # these do not: the documented reason for align=True
    aligned = score_pair(reference, delayed, SR, metrics=("pesq", "stoi", "mrstft", "delay"), align=True)
    assert aligned.delay_ms == pytest.approx(20.0, abs=0.05)
    assert aligned.stoi > 0.999 and aligned.pesq_wb > 4.6 and aligned.mrstft < 1e-5
    assert aligned.duration_s == pytest.approx(2.5, abs=1e-3)
    assert any("compensated before scoring" in note for note in aligned.notes)


def test_unrelated_signals_report_no_delay(speech, noise):
    score = score_pair(speech, 0.1 * noise, SR, metrics=("delay",))
    assert score.delay_ms is None
    assert any(note.startswith("delay_ms: waveforms not coherent") for note in score.notes)


def test_mcd_ignores_gain_but_not_spectral_shape(speech, noise):
    assert mel_cepstral_distortion(speech, 0.5 * speech, SR) == pytest.approx(0.0, abs=1e-6)  # c0 excluded
    lowpassed = np.convolve(speech, np.ones(8) / 8, mode="same")
    assert mel_cepstral_distortion(speech, lowpassed, SR) > 1.0


@pytest.mark.slow
def test_f0_rmse_of_a_detuned_tone_is_its_interval():
    sr16 = 16000
    reference = sine(1.0, sr16, freq=220.0).astype(np.float64)
    detuned = sine(1.0, sr16, freq=220.0 * 2 ** (100 / 1200)).astype(np.float64)  # +100 cents
    scores = f0_scores(reference, detuned)
    assert scores["f0_rmse_cents"] == pytest.approx(100.0, abs=5.0)
    assert scores["f0_rmse_hz"] == pytest.approx(220.0 * (2 ** (100 / 1200) - 1), abs=1.0)
    assert scores["vuv_f1"] > 0.95
    half = reference.copy()
    half[len(half) // 2:] = 0.0  # voiced half the time: recall 1/2, precision 1, F1 2/3
    scores = f0_scores(reference, half)
    assert scores["vuv_f1"] == pytest.approx(2 / 3, abs=0.03)
    assert scores["f0_rmse_cents"] < 5.0


def test_length_mismatch_is_trimmed_with_a_note(speech):
    short = score_pair(speech, speech[:-2000], SR, metrics=("mrstft",))
    assert short.mrstft == pytest.approx(0.0, abs=1e-6)
    assert short.duration_s == pytest.approx((len(speech) - 2000) / SR)
    assert any("lengths differ by 2000 samples" in note for note in short.notes)
    within_a_hop = score_pair(speech[:-100], speech, SR, metrics=("mrstft",))
    assert within_a_hop.notes == []


@pytest.mark.slow
def test_silent_and_short_clips_give_none_with_notes(speech):
    silent = np.zeros_like(speech)
    ref_silent = score_pair(silent, speech, SR)
    assert all(value is None for value in ref_silent.values().values())
    assert any("reference is silent" in note for note in ref_silent.notes)

    gen_silent = score_pair(speech, silent, SR, metrics=("pesq", "stoi", "f0", "mcd"))
    assert gen_silent.pesq_wb is None and gen_silent.f0_rmse_cents is None
    assert gen_silent.vuv_f1 == 0.0 and gen_silent.mcd_db > 3.0
    assert any(note.startswith("pesq_wb: generated clip is silent") for note in gen_silent.notes)

    tiny = score_pair(speech[:3000], speech[:3000], SR)
    assert tiny.pesq_wb is None and tiny.stoi is None
    assert any(note.startswith("pesq_wb:") for note in tiny.notes)
    assert any(note.startswith("stoi/estoi: clip shorter than the 0.4 s") for note in tiny.notes)

    pause = np.concatenate([np.zeros(SR), speech[:3000], np.zeros(SR)])  # long enough, but 0.14 s of sound
    mostly_silent = score_pair(pause, pause, SR, metrics=("stoi",))
    assert mostly_silent.stoi is None
    assert any(note.startswith("stoi/estoi: fewer than 30 non-silent") for note in mostly_silent.notes)
    assert tiny.mrstft == pytest.approx(0.0, abs=1e-6)

    blip = score_pair(speech[:100], speech[:100], SR)
    assert blip.mrstft is None and blip.mel_l1 is None and blip.mcd_db is None and blip.vuv_f1 is None
    for key in ("mrstft", "mel_l1", "mcd_db", "f0_rmse_cents/f0_rmse_hz/vuv_f1"):
        assert any(note.startswith(f"{key}: clip shorter") for note in blip.notes), blip.notes


def test_bad_arguments_raise(speech):
    with pytest.raises(ValueError, match="unknown metric"):
        score_pair(speech, speech, SR, metrics=("loudness",))
    with pytest.raises(ValueError, match="unknown judge"):
        score_pair(speech, speech, SR, judges=("oracle",))
    with pytest.raises(ValueError, match="1-D"):
        score_pair(np.stack([speech, speech]), speech, SR)


# ------------------------------------------------------------------ judges
def test_missing_judge_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "distillmos", None)  # import distillmos now fails
    assert "distillmos" not in available_judges()
    with pytest.raises(ValueError, match=r"judge 'distillmos' needs `pip install distillmos`"):
        check_judges(["distillmos"])


@pytest.mark.slow
@pytest.mark.parametrize("judge", sorted(JUDGES))
def test_installed_judges_prefer_clean_speech(judge, speech, noise):
    if judge not in available_judges():
        pytest.skip(f"{judge} is not installed")
    key = JUDGES[judge][2][0]
    clean = score_pair(speech, speech, SR, metrics=(), judges=(judge,)).judges[key]
    noisy = score_pair(speech, speech + 0.03 * noise, SR, metrics=(), judges=(judge,)).judges[key]
    assert 1.0 <= noisy < clean <= 5.0


# ------------------------------------------------------------------ many files
def test_evaluate_pairs_rows_means_errors_table_and_json(tmp_path, speech, noise):
    clip = speech[: SR]
    _write(tmp_path / "ref" / "a.wav", clip)
    _write(tmp_path / "gen" / "a.wav", clip)
    _write(tmp_path / "ref" / "b.flac", clip)
    _write(tmp_path / "gen" / "b.wav", clip + 0.03 * noise[: SR])
    _write(tmp_path / "ref" / "c.wav", clip)
    (tmp_path / "gen" / "c.wav").write_bytes(b"RIFF but not really a wav file")
    _write(tmp_path / "ref" / "d.wav", clip)
    errors: list[str] = []
    pairing = pair_files(tmp_path / "ref", tmp_path / "gen")
    result = evaluate_pairs(pairing, SR, metrics=("pesq", "mrstft"), progress=False, on_error=errors.append)

    assert [f.name for f in result.files] == ["a", "b", "c"]
    assert result.files[2].score is None and "c.wav" in result.files[2].error
    assert errors == [result.files[2].error] and "\n" not in errors[0]
    assert result.keys == ["pesq_wb", "mrstft"]
    means = result.means()
    assert means["pesq_wb"].count == 2
    assert means["pesq_wb"].mean == pytest.approx((result.files[0].score.pesq_wb + result.files[1].score.pesq_wb) / 2)
    assert result.files[0].score.pesq_wb > result.files[1].score.pesq_wb

    table = result.table()
    lines = table.splitlines()
    assert lines[0].split() == ["file", "PESQ", "MR-STFT"]
    assert lines[1].startswith("a ") and "4.644" in lines[1]
    assert lines[3].split() == ["c", "error", "error"]
    assert lines[4].startswith("mean") and lines[5].split() == ["n", "2", "2"]
    assert f"error: {result.files[2].error}" in table
    assert "1 reference(s) without a generated file: d" in table

    target = write_json(tmp_path / "out" / "scores.json", result.to_json())
    data = json.loads(target.read_text())
    assert data["means"]["pesq_wb"]["count"] == 2
    assert data["files"][1]["metrics"]["mrstft"] == pytest.approx(result.files[1].score.mrstft)
    assert data["files"][2]["error"] == result.files[2].error and data["missing_generated"] == ["d"]
    assert data["metrics"]["pesq_wb"]["higher_is_better"] is True
    assert sorted(p.name for p in target.parent.iterdir()) == ["scores.json"]  # no temporary file left


def test_empty_pairing_gives_empty_means():
    result = evaluate_pairs(Pairing(pairs=[]), SR, metrics=("mel",), progress=False)
    assert result.means()["mel_l1"].mean is None and result.means()["mel_l1"].count == 0
    assert "mean" in result.table()


# ------------------------------------------------------------------ Griffin-Lim
@pytest.mark.parametrize("preset", ["hifigan", "diffwave"])
def test_griffin_lim_reproduces_the_mel(preset):
    config = mel_preset(preset)
    frontend = MelSpectrogram(config)
    audio = torch.from_numpy(speech_like(1.0, SR))
    mel = frontend(audio)[0]
    frames = mel.shape[-1]
    rebuilt = griffin_lim(mel, config, n_iter=32)
    assert rebuilt.shape == (frames * config.hop_length,)
    rebuilt_error = float((frontend(rebuilt)[0] - mel).abs().mean())
    noise = torch.randn(audio.shape, generator=torch.Generator().manual_seed(0)) * audio.std()
    noise_error = float((frontend(noise)[0] - mel).abs().mean())
    assert rebuilt_error < 0.2 * noise_error, (rebuilt_error, noise_error)
    torch.testing.assert_close(griffin_lim(mel, config, n_iter=32), rebuilt)  # seeded
    batch = griffin_lim(torch.stack([mel, mel]), config, n_iter=4)
    assert batch.shape == (2, frames * config.hop_length)


# ------------------------------------------------------------------ resynthesis
@pytest.mark.slow
def test_resynthesise_folder_writes_three_folders_and_resumes(tmp_path):
    model = make_tiny_model()
    hop = model.hop_length
    data = tmp_path / "data"
    _write(data / "one.wav", speech_like(0.5, SR, seed=1))
    _write(data / "sub" / "two.flac", speech_like(0.4, 16000, seed=2), 16000)  # resampled to the model's rate
    (data / "broken.wav").write_bytes(b"nothing")
    _write(data / ".hidden.wav", speech_like(0.3, SR))
    _write(data / "blip.wav", speech_like(0.01, SR))
    out = data / "eval"  # inside the data folder: must not be read back as input
    errors: list[str] = []
    with pytest.raises(ValueError, match="unknown sampler"):
        resynthesise_folder(model, data, out, sampler="euler", progress=False)

    report = resynthesise_folder(model, data, out, seed=3, progress=False, on_error=errors.append)
    assert sorted(report.written) == ["one", "sub/two"] and report.skipped == []
    assert len(report.errors) == 2 and errors == report.errors
    assert any("broken.wav: not an audio file" in e for e in report.errors)
    assert any("blip.wav: audio is too short" in e for e in report.errors)
    for folder in ("reference", "model", "griffin-lim"):
        info = sf.info(str(out / folder / "one.wav"))
        assert info.samplerate == SR and info.frames == (int(0.5 * SR) // hop) * hop
        assert (out / folder / "sub" / "two.wav").is_file()
    reference, _ = sf.read(str(out / "reference" / "one.wav"))
    np.testing.assert_allclose(reference, speech_like(0.5, SR, seed=1)[: len(reference)], atol=1 / 2**15)

    first = (out / "model" / "one.wav").read_bytes()
    mtime = (out / "model" / "one.wav").stat().st_mtime_ns
    again = resynthesise_folder(model, data, out, seed=3, progress=False)
    assert again.written == [] and sorted(again.skipped) == ["one", "sub/two"]
    assert (out / "model" / "one.wav").stat().st_mtime_ns == mtime
    (out / "model" / "one.wav").unlink()
    resumed = resynthesise_folder(model, data, out, seed=3, progress=False)
    assert resumed.written == ["one"] and resumed.skipped == ["sub/two"]
    assert (out / "model" / "one.wav").read_bytes() == first  # same seed, same audio

    floor = evaluate_pairs(pair_files(out / "reference", out / "griffin-lim"), SR, metrics=("mel",), progress=False)
    noise = evaluate_pairs(pair_files(out / "reference", out / "model"), SR, metrics=("mel",), progress=False)
    assert floor.means()["mel_l1"].count == 2
    assert floor.means()["mel_l1"].mean < noise.means()["mel_l1"].mean  # random weights: worse than the floor


# ---------------------------------------------------------------------- CLI
def test_eval_cli_scores_two_folders_and_writes_json(tmp_path, speech, noise, capsys):
    from audiodiff.cli import main

    _write(tmp_path / "ref" / "a.flac", speech)
    _write(tmp_path / "ref" / "b.wav", speech)
    _write(tmp_path / "ref" / "only-ref.wav", speech)
    _write(tmp_path / "gen" / "a.wav", speech)
    _write(tmp_path / "gen" / "b.wav", speech + 0.03 * noise)
    code = main(["eval", "--ref", str(tmp_path / "ref"), "--gen", str(tmp_path / "gen"), "--metrics", "pesq", "stoi",
                 "--json", str(tmp_path / "out.json"), "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert "1 reference(s) without a generated file: only-ref" in out
    data = json.loads((tmp_path / "out.json").read_text())
    by_name = {f["name"]: f["metrics"] for f in data["files"]}
    assert by_name["a"]["pesq_wb"] > 4.6 and by_name["b"]["pesq_wb"] < 3.0
    assert data["means"]["stoi"]["count"] == 2 and data["sample_rate"] == SR
    assert data["missing_generated"] == ["only-ref"]


def test_eval_cli_usage_errors(tmp_path, capsys):
    from audiodiff.cli import main

    assert main(["eval", "--ref", str(tmp_path)]) == 2
    assert main(["eval", "--model", "m.safetensors"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["eval", "--ref", str(tmp_path / "nope"), "--gen", str(tmp_path)]) == 1
    assert "nope" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_cli_runs_the_chosen_engine_and_each_engine_gives_the_same_audio(tmp_path, monkeypatch):
    from audiodiff.pipeline import audio_diffusion as pretrained
    from audiodiff.cli import main

    model_file = make_tiny_model().save(tmp_path / "tiny.safetensors")
    _write(tmp_path / "held-out" / "utt.wav", speech_like(0.3, SR))
    engines = []  # the engine each command set up, through the library's one entry
    original = pretrained.AudioDiffusion.use_engine
    monkeypatch.setattr(pretrained.AudioDiffusion, "use_engine",
                        lambda self, name, **options: engines.append(name) or original(self, name, **options))
    outputs, ran = {}, []
    for engine in ("eager", "folded", "auto"):
        out = tmp_path / engine
        assert main(["eval", "--model", str(model_file), "--data", str(tmp_path / "held-out"), "--out", str(out),
                     "--engine", engine, "--threads", "1", "--no-griffin-lim", "--metrics", "mel", "-q"]) == 0
        outputs[engine] = sf.read(str(out / "model" / "utt.wav"))[0]
        ran.append(engines[-1])  # the model is loaded eager, then set up with --engine
    assert ran == ["eager", "folded", "folded"]  # auto is folded on a CPU
    assert np.abs(outputs["folded"] - outputs["eager"]).max() < 1e-3  # the same function, up to rounding
    assert np.array_equal(outputs["folded"], outputs["auto"])


def test_eval_cli_model_mode_scores_the_model_and_the_griffin_lim_floor(tmp_path, capsys):
    from audiodiff.cli import main

    model_file = make_tiny_model().save(tmp_path / "tiny.safetensors")
    _write(tmp_path / "held-out" / "utt.wav", speech_like(0.6, SR))
    out = tmp_path / "eval"
    args = ["eval", "--model", str(model_file), "--data", str(tmp_path / "held-out"), "--out", str(out),
            "--metrics", "mrstft", "mel", "--json", str(tmp_path / "e.json"), "-q"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Griffin-Lim" in printed and "better" in printed
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["steps"] == 6 and data["sampler"] == "fast"
    model_l1 = data["model"]["means"]["mel_l1"]["mean"]
    floor_l1 = data["griffin-lim"]["means"]["mel_l1"]["mean"]
    assert floor_l1 < model_l1  # a random-weight model is worse than Griffin-Lim, and the table says so
    assert sorted(p.name for p in out.iterdir()) == ["griffin-lim", "model", "reference"]
    assert main(args) == 0  # a second run reuses the files
    assert "resynthesised 0 file(s)" in (again := capsys.readouterr().out) and "1 already there" in again
