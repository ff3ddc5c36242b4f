"""Vocoding from the command line and the Python API: layouts, lengths, errors, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import audiodiff
from audiodiff.cli import main
from audiodiff.pipeline import load_model
from audiodiff.io.mel_files import InputError, orient_mel, read_mel_file
from conftest import make_tiny_model, speech_like


def real_mel(model, seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    audio = torch.from_numpy(speech_like(seconds, model.sample_rate, seed))
    return model.mel(audio)[0].cpu().numpy()


def test_orientation_and_batch_axes_are_detected():
    mel = np.random.default_rng(0).normal(-5, 1, (80, 37)).astype(np.float32)
    for layout in (mel, mel.T, mel[None], mel.T[None]):
        oriented = orient_mel(layout, 80)
        assert oriented.shape == (1, 80, 37)
        assert torch.equal(oriented[0], torch.from_numpy(mel))


@pytest.mark.parametrize("bad, words", [
    (np.zeros((80,), np.float32), "expected"),
    (np.zeros((1, 1, 80, 10), np.float32), "expected"),
    (np.zeros((64, 10), np.float32), "expects 80 mel bins"),
    (np.zeros((80, 10), np.int16), "integer"),
    (np.full((80, 10), np.nan, np.float32), "NaN"),
    (np.zeros((80, 0), np.float32), "no frames"),
])
def test_bad_mels_are_rejected_with_a_reason(bad, words):
    with pytest.raises(InputError, match=words):
        orient_mel(bad, 80, "x.npy")


def test_mel_file_formats(tmp_path: Path):
    mel = np.random.default_rng(1).normal(-5, 1, (80, 12)).astype(np.float32)
    np.save(tmp_path / "a.npy", mel.T)
    np.savez(tmp_path / "b.npz", mel=mel)
    torch.save({"mel": torch.from_numpy(mel)}, tmp_path / "c.pt")
    for name in ("a.npy", "b.npz", "c.pt"):
        assert torch.equal(read_mel_file(tmp_path / name, 80)[0], torch.from_numpy(mel))


def test_vocode_cli_writes_exact_lengths_and_reports_bad_files(tmp_path: Path, tiny_model_file: Path, capsys):
    model = load_model(tiny_model_file)
    good = real_mel(model, 0.4)
    np.save(tmp_path / "tts_layout.npy", good.T)  # (T, n_mels), as a TTS model writes it
    np.save(tmp_path / "short.npy", good[:, :7])
    np.save(tmp_path / "wrong_bins.npy", np.zeros((64, 20), np.float32))
    out = tmp_path / "wavs"
    code = main(["vocode", str(tmp_path / "tts_layout.npy"), str(tmp_path / "wrong_bins.npy"),
                 str(tmp_path / "short.npy"), "--model", str(tiny_model_file), "--out", str(out),
                 "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "wrong_bins.npy" in err and "(64, 20)" in err and "80 mel bins" in err
    for name, frames in (("tts_layout", good.shape[1]), ("short", 7)):
        audio, rate = sf.read(out / f"{name}.wav")
        assert rate == model.sample_rate
        assert audio.shape == (frames * model.hop_length,)
    assert not (out / "wrong_bins.wav").exists()


@pytest.mark.slow
def test_inputs_with_the_same_output_name_do_not_overwrite_each_other(tmp_path: Path, tiny_model_file: Path,
                                                                      capsys):
    """``x/a.npy`` and ``y/a.npy`` would both become ``a.wav``: the second is one error line, the
    first is written (with the first input's audio: seed + 0), and the run exits 1."""
    model = load_model(tiny_model_file)
    for folder, frames in (("x", 9), ("y", 5)):
        (tmp_path / folder).mkdir()
        np.save(tmp_path / folder / "a.npy", real_mel(model, 0.4)[:, :frames])
    out = tmp_path / "wavs"
    code = main(["vocode", str(tmp_path / "x" / "a.npy"), str(tmp_path / "y" / "a.npy"), "--model",
                 str(tiny_model_file), "--out", str(out), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{tmp_path / 'y' / 'a.npy'}: its output a.wav is already taken by {tmp_path / 'x' / 'a.npy'}" in err
    assert sf.info(str(out / "a.wav")).frames == 9 * model.hop_length
    assert sorted(p.name for p in out.iterdir()) == ["a.wav"]


def test_vocode_warns_about_another_conventions_range(tmp_path: Path, tiny_model_file: Path, caplog):
    np.save(tmp_path / "diffwave_style.npy", np.random.default_rng(0).uniform(0, 1, (80, 10)).astype(np.float32))
    with caplog.at_level("WARNING"):
        code = main(["vocode", str(tmp_path / "diffwave_style.npy"), "--model", str(tiny_model_file),
                     "--out", str(tmp_path / "o"), "--device", "cpu", "--quiet"])
    assert code == 0
    assert "diffwave" in caplog.text and "diffwave_style.npy" in caplog.text


def test_resynthesis_from_audio_file_at_another_rate(tmp_path: Path, tiny_model_file: Path):
    sf.write(tmp_path / "speech.flac", np.stack([speech_like(0.5, 16000)] * 2, axis=1), 16000)
    code = main(["vocode", str(tmp_path / "speech.flac"), "--model", str(tiny_model_file),
                 "--out", str(tmp_path / "o"), "--device", "cpu", "--quiet"])
    assert code == 0
    audio, rate = sf.read(tmp_path / "o" / "speech.wav")
    assert rate == 22050
    assert audio.shape[0] % 256 == 0 and 0 <= int(0.5 * 22050) - audio.shape[0] < 256


@pytest.mark.slow
def test_same_seed_same_audio_and_batching_keeps_lengths(tiny_model, device):
    model = tiny_model.to(device)
    mel_a = torch.from_numpy(real_mel(model, 0.3, seed=1))
    first = model.vocode(mel_a, seed=11)
    again = model.vocode(mel_a, seed=11)
    other = model.vocode(mel_a, seed=12)
    if device == "cpu":
        assert torch.equal(first, again), "bit-identical on the CPU"
    else:  # cuDNN may pick other kernels from call to call (H200: max difference 1.6e-4) ...
        assert (first - again).abs().max() < 1e-3
        deterministic = torch.backends.cudnn.deterministic
        torch.backends.cudnn.deterministic = True
        try:  # ... unless told to be deterministic
            assert torch.equal(model.vocode(mel_a, seed=11), model.vocode(mel_a, seed=11))
        finally:
            torch.backends.cudnn.deterministic = deterministic
    assert not torch.allclose(first, other, atol=1e-2)
    assert first.shape == (1, mel_a.shape[-1] * model.hop_length)


def test_python_api_in_three_lines(tmp_path: Path, tiny_model_file: Path):
    model = audiodiff.load_model(tiny_model_file)
    mel = model.mel(torch.from_numpy(speech_like(0.3, model.sample_rate)))
    audio = model.vocode(mel, seed=0)
    assert mel.shape[:2] == (1, 80)
    assert audio.shape == (1, mel.shape[-1] * 256)
    assert torch.isfinite(audio).all() and audio.abs().max() <= 1.0


def test_mel_cli_writes_n_mels_by_frames_float32(tmp_path: Path):
    sf.write(tmp_path / "speech.wav", speech_like(0.5, 22050), 22050)
    code = main(["mel", str(tmp_path / "speech.wav"), "--preset", "hifigan", "-o", str(tmp_path / "speech.npy"),
                 "--quiet"])
    assert code == 0
    mel = np.load(tmp_path / "speech.npy")
    assert mel.dtype == np.float32 and mel.shape == (80, int(0.5 * 22050) // 256)
    model = make_tiny_model()
    audio, _ = sf.read(tmp_path / "speech.wav", dtype="float32")
    np.testing.assert_allclose(mel, model.mel(torch.from_numpy(audio))[0].numpy(), atol=1e-4)


def test_mel_cli_overrides_a_preset_field(tmp_path: Path):
    sf.write(tmp_path / "speech.wav", speech_like(0.5, 16000), 16000)
    code = main(["mel", str(tmp_path / "speech.wav"), "--preset", "hifigan", "--sample-rate", "16000",
                 "--n-mels", "64", "-o", str(tmp_path / "m.npy"), "--quiet"])
    assert code == 0
    assert np.load(tmp_path / "m.npy").shape == (64, 8000 // 256)


def test_usage_errors_exit_with_2(tmp_path: Path, tiny_model_file: Path, capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["vocode"])
    assert excinfo.value.code == 2
    assert main(["mel", "x.wav", "--preset", "nope", "-o", str(tmp_path / "m.npy")]) == 2
    assert "unknown mel preset" in capsys.readouterr().err


def test_info_prints_the_full_config(tiny_model_file: Path, capsys):
    assert main(["info", str(tiny_model_file)]) == 0
    out = capsys.readouterr().out
    assert "preset hifigan" in out and '"residual_channels": 32' in out and '"fast_betas"' in out


def test_missing_model_is_one_line(tmp_path: Path, capsys):
    code = main(["info", str(tmp_path / "nope.safetensors")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "nope.safetensors" in err


def test_a_seed_gives_the_same_audio_on_every_device(tiny_model, device):
    """Noise is drawn on the CPU, so CPU and GPU differ only by arithmetic (TF32, kernels)."""
    import copy

    mel = torch.from_numpy(real_mel(tiny_model, 0.3, seed=2))
    on_cpu = tiny_model.vocode(mel, seed=3)
    on_device = copy.deepcopy(tiny_model).to(device).vocode(mel, seed=3).cpu()
    assert on_device.shape == on_cpu.shape
    assert (on_device - on_cpu).abs().max() < 2e-2
    assert (on_device - on_cpu).abs().mean() < 1e-3


def test_import_diffwave_cli_writes_a_loadable_model(tmp_path: Path, capsys):
    from diffwave.model import DiffWave as ReferenceDiffWave
    from diffwave.params import AttrDict, params

    small = AttrDict(params).override({"residual_layers": 4, "residual_channels": 8})
    reference = ReferenceDiffWave(small)
    torch.save({"model": reference.state_dict(), "params": dict(small)}, tmp_path / "weights.pt")
    target = tmp_path / "converted.safetensors"
    assert main(["import-diffwave", str(tmp_path / "weights.pt"), "-o", str(target)]) == 0
    model = load_model(target)
    assert model.config.mel.preset == "diffwave"
    assert model.config.denoiser.residual_layers == 4 and model.config.denoiser.residual_channels == 8
    assert main(["import-diffwave", str(tmp_path / "missing.pt"), "-o", str(target)]) == 1
    assert "missing.pt" in capsys.readouterr().err


@pytest.mark.slow
def test_uncached_conditioning_gives_the_same_audio(tiny_model):
    mel = torch.from_numpy(real_mel(tiny_model, 0.3, seed=4))
    cached = tiny_model.vocode(mel, seed=1)
    recomputed = tiny_model.vocode(mel, seed=1, conditioning_budget=0)
    assert torch.allclose(cached, recomputed, atol=1e-6)


def test_batches_respect_size_and_frame_budget():
    from audiodiff.jobs.vocode import VocodeItem, batches

    items = [VocodeItem(f"x{k}", Path("x"), torch.zeros(80, frames)) for k, frames in enumerate([10, 10, 50, 10, 10, 10])]
    groups = [[index for index, _ in group] for group in batches(items, batch_size=3, max_frames=60)]
    assert groups == [[0, 1], [2], [3, 4, 5]]
    assert [[i for i, _ in g] for g in batches(items, batch_size=4)] == [[0, 1, 2, 3], [4, 5]]


def test_vocode_files_writes_the_good_inputs_and_sums_up_the_failed(tmp_path: Path, tiny_model):
    from audiodiff.jobs.vocode import vocode_files

    good = real_mel(tiny_model, 0.3)
    np.save(tmp_path / "a.npy", good)
    np.save(tmp_path / "bad.npy", np.zeros((64, 20), np.float32))
    np.save(tmp_path / "b.npy", good[:, :5])
    errors, written = [], []
    summary = vocode_files(tiny_model, [tmp_path / "a.npy", tmp_path / "bad.npy", tmp_path / "b.npy"], tmp_path / "out",
                           sampler="fast", steps=None, seed=0, batch_size=1, progress=False, on_error=errors.append,
                           on_written=lambda path, seconds: written.append((path.name, seconds)))
    out = tmp_path / "out"
    assert summary.written == [out / "a.wav", out / "b.wav"]
    assert len(summary.failed) == 1 and "bad.npy" in summary.failed[0]
    assert [str(error) for error in errors] == summary.failed
    seconds = [frames * tiny_model.hop_length / tiny_model.sample_rate for frames in (good.shape[1], 5)]
    assert written == [("a.wav", pytest.approx(seconds[0])), ("b.wav", pytest.approx(seconds[1]))]


def test_ctrl_c_in_vocode_files_says_which_files_were_finished(tmp_path: Path, tiny_model):
    from audiodiff.jobs.vocode import VocodeInterrupted, vocode_files

    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", real_mel(tiny_model, 0.2))

    def stop_after_a(path: Path, seconds: float) -> None:
        if path.name == "a.wav":
            raise KeyboardInterrupt

    with pytest.raises(VocodeInterrupted) as caught:
        vocode_files(tiny_model, [tmp_path / "a.npy", tmp_path / "b.npy"], tmp_path / "out", sampler="fast",
                     steps=None, seed=0, batch_size=1, progress=False, on_written=stop_after_a)
    assert isinstance(caught.value, KeyboardInterrupt)  # still Ctrl-C to a caller that does not know the job
    assert caught.value.summary.written == [tmp_path / "out" / "a.wav"]
    assert not (tmp_path / "out" / "b.wav").exists()
