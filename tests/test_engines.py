"""Engines behind one protocol, defaults decided in the library, engine weights that never go
stale, per-step work that is only the network call, and a mel checked once per vocode."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_generator, make_tiny_model

from audiodiff.diffusion.samplers import StepTable
from audiodiff.diffusion.schedule import NoiseSchedule
from audiodiff.engines import ENGINES, Engine, make_engine, resolve_engine, resolve_precision
from audiodiff.engines.folded import FoldedDenoiser
from audiodiff.engines.fused import triton_available
from audiodiff.pipeline import load_any, load_model


@pytest.fixture
def short_mel() -> torch.Tensor:
    """A smooth log-mel-like input ``(1, 80, 5)``: 1280 samples."""
    frames = torch.linspace(0, 3, 5)
    bins = torch.linspace(0, 1, 80).unsqueeze(1)
    return (-6 + 3 * torch.sin(frames + 4 * bins)).unsqueeze(0)


def _cpu_engines() -> list[str]:
    return ["eager", "compile", "folded"]


@pytest.mark.parametrize("name", _cpu_engines())
def test_each_engine_is_an_engine_and_predicts_the_eager_noise(name, short_mel):
    """Protocol conformance, and the same function: condition, then denoise ``(B, T)`` -> ``(B, T)``."""
    model = make_tiny_model()
    engine = make_engine(name, model.network)
    assert isinstance(engine, Engine) and engine.name == name and engine.reads_mel is False
    x = torch.randn(1, 5 * model.hop_length, generator=torch.Generator().manual_seed(0))
    step = torch.full((1,), 10.5)
    with torch.inference_mode():
        expected = model.network.denoise(x, step, model.network.condition(short_mel))
        eps = engine.denoise(x, step, engine.condition(short_mel))
    assert eps.shape == x.shape
    assert (eps - expected).abs().max().item() < 1e-5 * expected.abs().max().item()


@pytest.mark.skipif(not (torch.cuda.is_available() and triton_available()), reason="fused needs CUDA and Triton")
def test_the_fused_engine_is_an_engine_that_reads_the_mel():
    model = make_tiny_model().to("cuda")
    engine = make_engine("fused", model.network)
    assert isinstance(engine, Engine) and engine.name == "fused" and engine.reads_mel is True
    assert make_engine("fused", model.network, read_mel=False).reads_mel is False


def test_use_engine_sets_the_models_engine_and_rejects_unknown_names():
    model = make_tiny_model()
    assert model.engine.name == "eager"
    assert model.fold_denoiser() is model and model.engine.name == "folded"
    assert model.compile_denoiser().engine.name == "compile"
    assert model.use_engine("eager").engine.name == "eager"
    with pytest.raises(ValueError, match="unknown engine 'warp'"):
        model.use_engine("warp")
    assert set(ENGINES) == {"eager", "compile", "folded", "fused"}


def test_policy_decides_engine_and_precision_per_device():
    assert resolve_engine("auto", "cpu") == "folded"
    assert resolve_engine("auto", torch.device("cuda", 0)) == "eager"
    assert resolve_engine("fused", "cpu") == "fused"  # an explicit choice is kept (and may fail later)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "cuda:1") == "bf16"
    assert resolve_precision("fp16", "cpu") == "fp16"
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        resolve_precision("int8", "cpu")
    with pytest.raises(ValueError, match="unknown engine"):
        resolve_engine("turbo", "cpu")


def test_loading_applies_the_engine_policy(tiny_model_file):
    assert load_model(tiny_model_file).engine.name == "folded"  # auto on a CPU
    assert load_any(tiny_model_file, engine="eager").engine.name == "eager"


def test_auto_precision_is_fp32_on_a_cpu(short_mel):
    model = make_tiny_model()
    auto = model.vocode(short_mel, seed=1, chunk_seconds=None)
    fp32 = model.vocode(short_mel, seed=1, chunk_seconds=None, precision="fp32")
    assert torch.equal(auto, fp32)


def test_folded_weights_follow_a_weight_changed_in_place(short_mel):
    """A folded (or fused) engine keeps its own form of the weights: it must rebuild it after a
    change, as training does between validations, so its output follows the eager network."""
    model = make_tiny_model().fold_denoiser()
    engine = model.engine
    before = model.vocode(short_mel, seed=0, chunk_seconds=None)
    built = engine.weights(torch.float32)
    assert engine.weights(torch.float32) is built  # unchanged weights: built once
    with torch.no_grad():
        model.network.residual_layers[3].dilated_conv.bias.add_(0.5)
    after = model.vocode(short_mel, seed=0, chunk_seconds=None)
    assert engine.weights(torch.float32) is not built
    expected = model.use_engine("eager").vocode(short_mel, seed=0, chunk_seconds=None)
    assert (after - expected).abs().max().item() < 1e-5 * expected.abs().max().item()
    assert (before - expected).abs().max().item() > 1e-3


def test_folded_weights_follow_loaded_weights():
    """``load_state_dict`` copies in place: the folded engine must see the new weights too."""
    model, other = make_tiny_model(seed=0).fold_denoiser(), make_tiny_model(seed=1)
    x = torch.randn(1, 512, generator=torch.Generator().manual_seed(0))
    mel, step = -6 + torch.zeros(1, 80, 2), torch.full((1,), 7.0)
    with torch.inference_mode():
        model.engine.denoise(x, step, model.engine.condition(mel))
    model.network.load_state_dict(other.network.state_dict())
    with torch.inference_mode():
        eps = model.engine.denoise(x, step, model.engine.condition(mel))
        expected = other.network.denoise(x, step, other.network.condition(mel))
    assert (eps - expected).abs().max().item() < 1e-5 * expected.abs().max().item()


def test_step_table_maps_each_level_once_and_as_the_schedule_does():
    model = make_tiny_model()
    sigmas = model.sigmas("ddim-karras", 5)
    table = StepTable(model.schedule, sigmas)
    x = torch.zeros(3, 10)
    for sigma in sigmas[:-1]:
        expected = model.steps_for(x, float(sigma))
        assert torch.equal(table(x, float(sigma)), expected) and table(x, float(sigma)).shape == (3,)


@pytest.mark.parametrize("chunk_seconds", [None, 0.05])  # one piece, and chunks of 5 frames
def test_vocoding_maps_levels_to_steps_once_not_at_every_step(chunk_seconds, monkeypatch):
    model = make_tiny_model()
    calls = []
    original = NoiseSchedule.step_for_sigma
    monkeypatch.setattr(NoiseSchedule, "step_for_sigma", lambda self, s: calls.append(len(s)) or original(self, s))
    mel = -6 + torch.rand(1, 80, 12, generator=torch.Generator().manual_seed(0))
    model.vocode(mel, sampler="fast", seed=0, chunk_seconds=chunk_seconds)  # 6 steps (and 3 chunks)
    assert calls == [6]


def test_vocode_orients_and_checks_a_mel_once_and_the_jobs_not_again(monkeypatch, short_mel):
    import audiodiff.pipeline.audio_diffusion as facade
    from audiodiff.jobs.vocode import VocodeItem, vocode_batch

    model = make_tiny_model()
    calls = []
    original = facade.orient_mel
    monkeypatch.setattr(facade, "orient_mel", lambda *a, **k: calls.append(a[0].shape) or original(*a, **k))
    public = model.vocode(short_mel[0].T, seed=0, chunk_seconds=None)  # (frames, n_mels): transposed
    assert calls == [(5, 80)]
    items = [(0, VocodeItem("a", None, short_mel[0]))]
    batch = vocode_batch(model, items, sampler="fast", steps=None, seed=0, chunk_seconds=None)
    assert calls == [(5, 80)]  # read_mel_file checked the jobs' mels: not again
    assert torch.equal(batch[0], public[0])


def test_generation_conditions_through_the_engine():
    """A class model's labels go through the engine's ``condition``: no duck-typed fallback."""
    model = make_tiny_generator().fold_denoiser()
    seen = []
    condition = model.engine.condition
    model.engine.condition = lambda mel, cache_projections=True, *, labels=None: (
        seen.append(labels.tolist()) or condition(mel, cache_projections, labels=labels))
    model.generate(2, 600, labels=["door", "rain"], guidance=2.0, seed=1)
    assert seen == [[0, 1, 2, 2]]  # the classes, then the null class


def test_folded_engine_type_is_registered():
    model = make_tiny_model()
    assert isinstance(make_engine("folded", model.network), FoldedDenoiser)


def test_the_cli_offers_exactly_the_library_engines_and_resolves_auto_as_the_api_does():
    from audiodiff.cli.common import ENGINE_NAMES, _precision
    from audiodiff.engines import ENGINES
    from audiodiff.engines.policy import resolve_precision

    assert ENGINE_NAMES == tuple(ENGINES)
    for device in ("cpu", "cuda", "cuda:1"):
        for name in ("auto", "fp32", "bf16", "fp16"):
            assert _precision(name, device) == resolve_precision(name, device)
