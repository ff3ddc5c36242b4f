"""Unconditional and class-conditional generation: the network, guidance, model files and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.cli import main
from audiodiff.diffusion.sampling import classifier_free_guidance, combine_guidance
from audiodiff.jobs.generate import Clip, plan_clips
from audiodiff.network.diffwave import DenoiserConfig
from audiodiff.pipeline import load_model, read_config_dict
from conftest import make_tiny_generator, make_tiny_model

CLASSES = ("door", "rain")


@pytest.fixture
def generator_file(tmp_path):
    return make_tiny_generator(CLASSES).save(tmp_path / "sfx.safetensors")


# ------------------------------------------------------------------- network
def test_class_conditioning_is_one_projection_per_block_broadcast_over_time():
    network = make_tiny_generator(CLASSES).network
    conditioning = network.condition(None, labels=torch.tensor([0, 1, 2]))
    assert len(conditioning) == network.config.residual_layers
    assert all(c.shape == (3, 2 * network.config.residual_channels, 1) for c in conditioning)
    x, step = torch.randn(3, 400), torch.tensor([3.0, 3.0, 3.0])
    eps = network.denoise(x, step, conditioning)
    assert eps.shape == (3, 400)
    # rows with different classes see different conditioning, so their predictions differ
    same_input = network.denoise(x[:1].expand(3, -1), step, conditioning)
    assert not torch.allclose(same_input[0], same_input[1])
    assert not torch.allclose(same_input[1], same_input[2])


def test_class_conditioning_rejects_bad_labels():
    network = make_tiny_generator(CLASSES).network
    assert network.config.null_class == 2
    with pytest.raises(ValueError, match="0..2"):
        network.condition(None, labels=torch.tensor([3]))
    with pytest.raises(ValueError, match="labels"):
        network.condition(None)
    with pytest.raises(ValueError, match="not a mel"):
        network.condition(torch.zeros(1, 80, 4), labels=torch.tensor([0]))
    with pytest.raises(ValueError, match="integer"):
        network.condition(None, labels=torch.tensor([0.5]))
    with pytest.raises(ValueError, match="not class-conditional"):
        make_tiny_model().network.condition(torch.zeros(1, 80, 4), labels=torch.tensor([0]))


def test_a_model_is_either_mel_or_class_conditional():
    with pytest.raises(ValueError, match="either"):
        DenoiserConfig(n_mels=80, num_classes=3)
    assert "num_classes" not in DenoiserConfig().to_dict()  # vocoder configs are unchanged


# ------------------------------------------------------------------ guidance
def test_combine_guidance_is_exact_at_zero_and_one_and_linear_between():
    eps_class, eps_null = torch.randn(2, 100), torch.randn(2, 100)
    assert torch.equal(combine_guidance(eps_class, eps_null, 0.0), eps_null)
    assert torch.equal(combine_guidance(eps_class, eps_null, 1.0), eps_class)
    expected = eps_null + 3.0 * (eps_class - eps_null)
    torch.testing.assert_close(combine_guidance(eps_class, eps_null, 3.0), expected, atol=1e-6, rtol=0)


def _separate_predictions(model, x, sigma, labels):
    """The class and null predictions of the network, each from its own call."""
    network, null = model.network, model.config.denoiser.null_class
    eps_class = model.eps_fn(network.condition(None, labels=labels))(x, sigma)
    eps_null = model.eps_fn(network.condition(None, labels=torch.full_like(labels, null)))(x, sigma)
    return eps_class, eps_null


@pytest.mark.parametrize("guidance", [0.0, 1.0, 2.5])
def test_batched_guidance_matches_separate_class_and_null_predictions(guidance):
    model = make_tiny_generator(CLASSES)
    labels = torch.tensor([0, 1, 0])
    x, sigma = torch.randn(3, 500), 0.4
    with torch.inference_mode():
        pairs = model.network.condition(None, labels=torch.cat([labels, torch.full_like(labels, 2)]))
        guided = classifier_free_guidance(model.eps_fn(pairs), guidance)(x, sigma)
        eps_class, eps_null = _separate_predictions(model, x, sigma, labels)
    expected = {0.0: eps_null, 1.0: eps_class}.get(guidance, eps_null + guidance * (eps_class - eps_null))
    torch.testing.assert_close(guided, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(eps_class, eps_null, atol=1e-3)  # the test can tell the two apart


def test_generate_with_guidance_zero_is_the_null_class():
    model = make_tiny_generator(CLASSES)
    null = model.generate(2, 800, labels=None, seed=5)
    guided_off = model.generate(2, 800, labels="door", guidance=0.0, seed=5)
    door = model.generate(2, 800, labels="door", seed=5)
    torch.testing.assert_close(guided_off, null, atol=1e-5, rtol=0)
    assert not torch.allclose(door, null, atol=1e-3)


def test_generate_seeds_and_labels():
    model = make_tiny_generator(CLASSES)
    a = model.generate(3, 600, labels=["door", "rain", 1], seed=[7, 8, 8])
    b = model.generate(1, 600, labels="rain", seed=8)
    assert a.shape == (3, 600)
    # a row depends on its own seed and class only (up to float rounding of other batch sizes)
    torch.testing.assert_close(a[1], b[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(a[1], a[2], atol=1e-5, rtol=0)  # "rain" and id 1 are the same class
    assert not torch.allclose(a[0], a[1], atol=1e-3)
    with pytest.raises(ValueError, match="door, rain"):
        model.generate(1, 600, labels="dog")
    with pytest.raises(ValueError, match="2 labels for 3"):
        model.generate(3, 600, labels=["door", "rain"])


def test_unconditional_generator():
    model = make_tiny_generator(None)
    audio = model.generate(2, 700, seed=1)
    assert audio.shape == (2, 700) and audio.abs().max() <= 1.0
    with pytest.raises(ValueError, match="unconditional"):
        model.generate(2, 700, labels="door")
    with pytest.raises(ValueError, match="unconditional"):
        model.generate(2, 700, guidance=3.0)
    with pytest.raises(ValueError, match="vocode"):
        make_tiny_model().generate(1, 700)


# ---------------------------------------------------------------- model files
def test_class_names_survive_save_and_load(generator_file):
    metadata_config = read_config_dict(generator_file)
    assert metadata_config["class_names"] == list(CLASSES)
    loaded = load_model(generator_file, engine="eager")  # as the in-memory model: bit for bit
    assert loaded.config.class_names == CLASSES
    original = make_tiny_generator(CLASSES)
    torch.testing.assert_close(loaded.generate(2, 500, labels="rain", guidance=2.0, seed=3),
                               original.generate(2, 500, labels="rain", guidance=2.0, seed=3), atol=0, rtol=0)


def test_format_version_is_two_only_for_class_models(tmp_path):
    from safetensors import safe_open

    def version(model):
        path = model.save(tmp_path / "m.safetensors")
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata()["format_version"]

    assert version(make_tiny_generator(CLASSES)) == "2"
    assert version(make_tiny_generator(None)) == "1"
    assert version(make_tiny_model()) == "1"


def test_info_lists_the_classes(generator_file, capsys):
    assert main(["info", str(generator_file)]) == 0
    out = capsys.readouterr().out
    assert "class-conditional (2 classes)" in out
    assert "classes: door, rain" in out


# ------------------------------------------------------------------------ CLI
def test_plan_clips_names_and_seeds():
    clips = plan_clips(["door", None], 2, seed=7)
    assert clips == [Clip("door", 0, 7), Clip("door", 1, 8), Clip(None, 0, 7), Clip(None, 1, 8)]
    assert clips[1].file_name == "door-001-seed8.wav"
    assert clips[2].file_name == "sample-000-seed7.wav"


@pytest.mark.slow
def test_generate_cli_writes_one_file_per_clip_and_a_sheet(generator_file, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["generate", "--model", str(generator_file), "--class", "door", "--class", "rain", "--n", "3",
            "--seconds", "0.25", "--guidance", "2", "--seed", "7", "--out", str(out), "--sheet", "--batch-size", "2"]
    assert main(args + ["--quiet"]) == 0
    names = sorted(p.name for p in out.glob("*.wav"))
    assert names == [f"{c}-{k:03d}-seed{7 + k}.wav" for c in CLASSES for k in range(3)]
    audio, rate = sf.read(out / "rain-002-seed9.wav")
    assert rate == 8000 and audio.shape == (2000,)
    sheet = out / "sheet-all-seed7.png"
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same command gives the same sounds; another batch size at most float rounding apart
    again, rebatched = tmp_path / "again", tmp_path / "rebatched"
    assert main(args + ["--out", str(again), "--quiet"]) == 0
    assert main(args[:-2] + ["--batch-size", "5", "--out", str(rebatched), "--quiet"]) == 0
    for name in names:
        first = sf.read(out / name)[0]
        assert np.array_equal(first, sf.read(again / name)[0]), name
        assert np.abs(first - sf.read(rebatched / name)[0]).max() <= 2 / 32768, name


def test_generate_cli_errors_are_one_line_usage_errors(generator_file, tmp_path, tiny_model_file, capsys):
    code = main(["generate", "--model", str(generator_file), "--class", "dog", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown class 'dog'" in err and "door, rain" in err and len(err.strip().splitlines()) == 1
    assert main(["generate", "--model", str(tiny_model_file), "--out", str(tmp_path)]) == 2
    assert "vocoder" in capsys.readouterr().err
    unconditional = make_tiny_generator(None).save(tmp_path / "u.safetensors")
    assert main(["generate", "--model", str(unconditional), "--guidance", "3", "--out", str(tmp_path)]) == 2
    assert main(["generate", "--model", str(unconditional), "--class", "door", "--out", str(tmp_path)]) == 2
    assert main(["generate", "--model", str(generator_file), "--seconds", "0", "--out", str(tmp_path)]) == 2
    assert not list(tmp_path.glob("*.wav"))


def test_generate_cli_unconditional_and_all_classes(generator_file, tmp_path):
    unconditional = make_tiny_generator(None).save(tmp_path / "u.safetensors")
    assert main(["generate", "--model", str(unconditional), "--n", "2", "--seconds", "0.1",
                 "--out", str(tmp_path / "u"), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "u").glob("*.wav")) == ["sample-000-seed0.wav", "sample-001-seed1.wav"]
    assert main(["generate", "--model", str(generator_file), "--all-classes", "--n", "1", "--seconds", "0.1",
                 "--out", str(tmp_path / "all"), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "all").glob("*.wav")) == ["door-000-seed0.wav", "rain-000-seed0.wav"]


# ------------------------------------------------------- conditioning is learnt
SFX_TINY = Path(__file__).resolve().parents[1] / "configs" / "sfx-tiny-cpu.yaml"


def _two_class_folder(root: Path, sample_rate: int, per_class: int = 8) -> Path:
    """``root/tonal`` (sines of random pitch) and ``root/noisy`` (white noise), 0.5 s each."""
    rng = np.random.default_rng(0)
    t = np.arange(sample_rate // 2) / sample_rate
    for k in range(per_class):
        for name in ("tonal", "noisy"):
            (root / name).mkdir(parents=True, exist_ok=True)
        tone = 0.5 * np.sin(2 * np.pi * rng.uniform(250, 900) * t + rng.uniform(0, 6))
        sf.write(root / "tonal" / f"t{k}.wav", tone.astype(np.float32), sample_rate)
        sf.write(root / "noisy" / f"n{k}.wav", (0.25 * rng.standard_normal(t.size)).astype(np.float32), sample_rate)
    return root


def _flatness(path: Path) -> float:
    """Median spectral flatness (librosa): near 0 for a tone, near 0.5+ for white noise."""
    import librosa

    audio, _ = sf.read(path, dtype="float32")
    return float(np.median(librosa.feature.spectral_flatness(y=audio)))


@pytest.mark.slow
def test_trained_tiny_model_generates_the_requested_class(tmp_path):
    """Train sfx-tiny-cpu (shrunk) for 150 steps on tonal vs noisy sounds; generated clips of
    each class must be told apart by spectral flatness, every one of them."""
    from audiodiff.training.run import run_training

    data = _two_class_folder(tmp_path / "sounds", 8000)
    run_training([
        "--config", str(SFX_TINY), "--data.root", str(data), "--data.cache_dir", str(tmp_path / "cache"),
        "--model.sample_rate", "8000", "--model.denoiser_overrides", "{residual_layers: 8, dilation_cycle: 8}",
        "--data.crop_frames", "8", "--data.val_files", "0", "--trainer.max_steps", "150",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--trainer.callbacks", json.dumps([
            {"class_path": "audiodiff.training.callbacks.EMA", "init_args": {"decay": 0.98}},
            {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
             "init_args": {"filename": "last", "every_n_train_steps": 150}},
        ]),
    ])
    checkpoint = next((tmp_path / "runs").rglob("last.ckpt"))
    model_file = tmp_path / "sfx.safetensors"
    assert main(["export", str(checkpoint), "-o", str(model_file)]) == 0
    assert load_model(model_file).config.class_names == ("noisy", "tonal")
    out = tmp_path / "generated"
    assert main(["generate", "--model", str(model_file), "--all-classes", "--n", "6", "--seconds", "0.5",
                 "--guidance", "2", "--seed", "3", "--out", str(out), "--sheet", "-q"]) == 0
    tonal = [_flatness(p) for p in sorted(out.glob("tonal-*.wav"))]
    noisy = [_flatness(p) for p in sorted(out.glob("noisy-*.wav"))]
    assert len(tonal) == len(noisy) == 6
    assert max(tonal) < min(noisy), (tonal, noisy)
    assert np.mean(noisy) > 3 * np.mean(tonal), (tonal, noisy)


@pytest.mark.slow
def test_sfx_class_stats_benchmark_smoke(tmp_path, generator_file):
    """The per-class statistics script: a row per class, features of real and generated clips."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "sfx_class_stats.py"
    spec = importlib.util.spec_from_file_location("sfx_class_stats", script)
    stats = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stats)
    data = tmp_path / "data"
    t = np.arange(4000) / 8000
    for name, audio in [("door/a.wav", 0.5 * np.sin(2 * np.pi * 440 * t)),
                        ("rain/b.wav", 0.2 * np.random.default_rng(0).standard_normal(t.size))]:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(data / name, audio.astype(np.float32), 8000)
    result = stats.main(["--model", str(generator_file), "--data", str(data), "--labels", "folder", "--n", "2",
                         "--seconds", "0.3", "--json", str(tmp_path / "s.json"), "--out", str(tmp_path / "clips")])
    assert [r["class"] for r in result["rows"]] == list(CLASSES)
    door = result["rows"][0]
    assert door["real_clips"] == 1 and door["generated_clips"] == 2
    assert door["real_flatness"] < 0.01  # a pure tone
    assert 0.0 <= result["nearest_class_accuracy"] <= 1.0 and result["chance"] == 0.5
    assert result["rank_correlation"] == {f: None for f in stats.FEATURES}  # needs 3+ classes
    opposite = [{**{f"real_{f}": k for f in stats.FEATURES}, **{f"gen_{f}": -k for f in stats.FEATURES}}
                for k in range(4)]
    assert stats.rank_correlations(opposite) == pytest.approx({f: -1.0 for f in stats.FEATURES})
    assert json.loads((tmp_path / "s.json").read_text())["rows"] == result["rows"]
    assert (tmp_path / "clips" / "sheet-rain-seed0.png").is_file()
