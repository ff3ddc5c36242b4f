"""The models that ship inside the package, and the commands that use them by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.cli import main
from audiodiff.examples import example_files
from audiodiff.pipeline import DEFAULT_GENERATOR, DEFAULT_VOCODER, SHIPPED_MODELS, load_model, resolve_model_path, shipped_model_path
from audiodiff.io.safe_load import describe_load_error  # noqa: F401 - the loader imports it lazily

MAX_SHIPPED_MB = 8


@pytest.mark.parametrize("name", list(SHIPPED_MODELS))
def test_shipped_model_files_are_small_half_precision_and_trained(name):
    path = shipped_model_path(name)
    assert path.is_file(), f"{path} is missing: the package ships it"
    assert path.stat().st_size < MAX_SHIPPED_MB * 1e6
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        dtypes = {handle.get_slice(key).get_dtype() for key in handle.keys()}
    assert dtypes == {"F16"}
    model = load_model(name)
    assert all(p.dtype == torch.float32 for p in model.network.parameters())
    assert model.config.training_step > 1000 and model.sample_rate == 22050


def test_shipped_vocoder_is_in_the_hifigan_convention():
    model = load_model()  # no argument: the shipped speech vocoder
    mel = model.config.mel
    assert (DEFAULT_VOCODER, mel.preset, mel.n_mels, mel.hop_length, mel.f_max) == ("speech-22k", "hifigan", 80, 256, 8000)
    assert model.network.conditional
    assert len(model.sigmas("searched-3")) == 4, "the searched 3-step schedule ships with it"


def test_shipped_generator_has_the_sound_effect_classes():
    model = load_model(DEFAULT_GENERATOR)
    assert model.network.class_conditional
    assert {"bd", "sn", "tabla", "ambi", "opensfx"} <= set(model.config.class_names)


def test_a_file_named_like_a_shipped_model_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("speech-22k") == shipped_model_path("speech-22k")
    Path("speech-22k").write_bytes(b"")
    assert resolve_model_path("speech-22k") == Path("speech-22k")


@pytest.mark.slow
def test_shipped_vocoder_beats_noise_on_held_out_speech():
    """A real property of a trained vocoder: its output's mel is far closer to the input's than
    silence's or white noise's is (a random network fails this)."""
    from audiodiff.io.audio import load_audio
    from audiodiff.dsp.spectral import mel_l1_distance

    model = load_model()
    audio, _ = load_audio(example_files()[1], model.sample_rate, duration_seconds=0.6)
    audio = audio[: audio.shape[-1] // 256 * 256]
    mel = model.mel(audio)
    vocoded = model.vocode(mel, seed=0)
    noise = 0.1 * torch.randn(1, audio.shape[-1], generator=torch.Generator().manual_seed(0))
    ours = float(mel_l1_distance(model.mel(vocoded), mel)[0])
    assert ours < 0.7 * float(mel_l1_distance(model.mel(noise), mel)[0])
    assert ours < 0.7 * float(mel_l1_distance(model.mel(torch.zeros_like(noise)), mel)[0])


@pytest.mark.slow
def test_vocode_and_generate_use_the_shipped_models_by_default(tmp_path, capsys):
    mel = tmp_path / "tts.npy"
    np.save(mel, np.linspace(-9.0, 0.5, 12 * 80, dtype=np.float32).reshape(12, 80))  # (frames, n_mels), as a TTS writes
    assert main(["vocode", str(mel), "--out", str(tmp_path / "wavs"), "--sampler", "ddim", "--steps", "2",
                 "--device", "cpu", "-q"]) == 0
    audio, rate = sf.read(tmp_path / "wavs" / "tts.wav")
    assert rate == 22050 and len(audio) == 12 * 256
    assert main(["generate", "--class", "bd", "--n", "1", "--seconds", "0.1", "--steps", "2", "--sampler", "ddim",
                 "--out", str(tmp_path / "gen"), "--device", "cpu", "-q"]) == 0
    assert [p.name for p in (tmp_path / "gen").iterdir()] == ["bd-000-seed0.wav"]


def test_examples_ship_with_the_package():
    files = example_files()
    assert [f.name for f in files] == ["cs-m-pravidla.ogg", "cs-v-neboj1.ogg"]
    assert all(sf.info(f).samplerate == 22050 for f in files)
