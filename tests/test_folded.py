"""The folded engine (:mod:`audiodiff.engines.folded`) against the eager network whose weights it refolds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_tiny_generator, make_tiny_model, random_network

from audiodiff.engines.folded import RESCALE_EVERY, FoldedDenoiser, FoldedProjections, _residual_scales
from audiodiff.network.diffwave import DiffWave


def both_conditionings(network: DiffWave, engine: FoldedDenoiser, mode: str, length: int):
    """``(for the network, for the engine)``: the conditioning of ``mode`` for 2 rows of ``length`` samples."""
    if mode == "class":
        labels = torch.tensor([0, 3])  # 3 is the null class
        return network.condition(None, labels=labels), network.condition(None, labels=labels)
    if mode == "unconditional":
        return None, None
    mel = torch.randn(2, 80, length // 64)
    engine_form = {
        "folded cache": lambda: engine.condition(mel),
        "per-step mel": lambda: engine.condition(mel, cache_projections=False),
        "network cache": lambda: network.condition(mel),
    }[mode]()
    return network.condition(mel), engine_form


@pytest.mark.parametrize("mode, overrides", [
    ("folded cache", {}), ("per-step mel", {}), ("network cache", {}),
    ("unconditional", {"n_mels": None}), ("class", {"n_mels": None, "num_classes": 3}),
    # 30 blocks of 8 channels: u is rescaled three times, and the dilations up to 512 pass the ends
    ("folded cache", {"residual_channels": 8, "residual_layers": 30, "dilation_cycle": 10}),
])
@pytest.mark.parametrize("length", [320, 64 * 11])
def test_folded_denoiser_matches_the_network(mode, overrides, length):
    network = random_network(**overrides)
    engine = FoldedDenoiser(network)
    audio = torch.randn(2, length)
    step = torch.tensor([3.5, 40.0])
    with torch.inference_mode():
        for_network, for_engine = both_conditionings(network, engine, mode, length)
        expected = network.denoise(audio, step, for_network)
        folded = engine(audio, step, for_engine)
    assert folded.shape == expected.shape == (2, length) and folded.dtype == torch.float32
    scale = expected.abs().max().item()
    assert scale > 0.1
    assert (folded - expected).abs().max().item() < 1e-5 * scale


def test_residual_scales_follow_the_recurrence_of_the_residual_stream():
    """``x_{k+1} = (x_k + b_k) / sqrt(2)`` must equal ``(u_k + beta_k) / s_k`` with ``u_{k+1} = u_k`` rescaled."""
    biases = [torch.tensor([float(k + 1)], dtype=torch.float64) for k in range(20)]
    scales, offsets, rescale_after = _residual_scales(biases)
    assert [k for k, r in enumerate(rescale_after) if r] == [RESCALE_EVERY - 1, 2 * RESCALE_EVERY - 1]
    assert scales[:3] == pytest.approx([1.0, math.sqrt(2), 2.0]) and max(scales) < 16
    x, u = 0.7, 0.7  # with the weights zero, u only changes by the rescaling
    for k, bias in enumerate(biases):
        assert (u + offsets[k].item()) / scales[k] == pytest.approx(x, rel=1e-12)
        x = (x + bias.item()) / math.sqrt(2)
        u = u / 16 if rescale_after[k] else u


def test_folded_projections_are_the_engines_own_layout():
    network = random_network()
    mel = torch.randn(2, 80, 5)
    projections = FoldedDenoiser(network).condition(mel)
    assert isinstance(projections, FoldedProjections) and len(projections.per_block) == 12
    assert projections.per_block[0].shape == (2, 5 * 64, 64)  # (B, T, 2C), time-major
    with pytest.raises(TypeError):  # the eager network cannot mistake it for its own (B, 2C, T) list
        network.denoise(torch.zeros(2, 320), torch.tensor([1.0, 1.0]), projections)


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_folded_reduced_precision_is_as_close_to_fp32_as_eager(precision, dtype):
    network = random_network(residual_channels=16, residual_layers=30, dilation_cycle=10)
    engine = FoldedDenoiser(network)
    audio, step, mel = torch.randn(2, 1280), torch.tensor([2.0, 30.0]), torch.randn(2, 80, 20)
    with torch.inference_mode():
        exact = network.denoise(audio, step, network.condition(mel))
        with torch.autocast("cpu", dtype=dtype):
            eager = network.denoise(audio, step, network.condition(mel)).float()
            folded = engine(audio, step, engine.condition(mel))
    assert engine.weights(dtype).taps.dtype == dtype and folded.dtype == torch.float32
    eager_error = (eager - exact).abs().max().item()
    folded_error = (folded - exact).abs().max().item()
    assert torch.isfinite(folded).all()
    assert 0 < folded_error < 2 * eager_error  # 16-bit rounding at other places, of the same size


@pytest.fixture
def short_mel() -> torch.Tensor:
    """A smooth log-mel-like input ``(1, 80, 5)`` in the hifigan range: 1280 samples."""
    frames = torch.linspace(0, 3, 5)
    bins = torch.linspace(0, 1, 80).unsqueeze(1)
    return (-6 + 3 * torch.sin(frames + 4 * bins)).unsqueeze(0)


@pytest.mark.parametrize("budget", [2**30, 0])  # cached folded projections, or the mel projected per step
def test_folded_vocoding_gives_the_eager_audio(short_mel, budget):
    model = make_tiny_model()
    eager = model.vocode(short_mel, seed=2, chunk_seconds=None)
    folded = model.fold_denoiser().vocode(short_mel, seed=2, chunk_seconds=None, conditioning_budget=budget)
    assert (folded - eager).abs().max().item() < 1e-5 * eager.abs().max().item()


class ConditioningSpy:
    """An engine wrapper that records the type of conditioning each denoiser call receives."""

    name, reads_mel = "spy", False

    def __init__(self, engine: FoldedDenoiser) -> None:
        self.engine, self.condition, self.seen = engine, engine.condition, []

    def denoise(self, x, step, conditioning):
        self.seen.append(type(conditioning).__name__)
        return self.engine.denoise(x, step, conditioning)


def test_folded_vocoding_caches_its_own_projections_within_the_budget(short_mel):
    model = make_tiny_model().fold_denoiser()
    spy = model.engine = ConditioningSpy(model.engine)
    model.vocode(short_mel, seed=0, chunk_seconds=None)
    model.vocode(short_mel, seed=0, chunk_seconds=None, conditioning_budget=0)
    assert spy.seen == ["FoldedProjections"] * 6 + ["ProjectedPerStep"] * 6


def test_folded_chunked_vocoding_matches_one_piece():
    model = make_tiny_model().fold_denoiser()
    mel = -6 + torch.rand(1, 80, 12, generator=torch.Generator().manual_seed(0))
    whole = model.vocode(mel, seed=1, chunk_seconds=None, sampler="ddim", steps=2)
    chunked = model.vocode(mel, seed=1, chunk_seconds=0.05, sampler="ddim", steps=2)  # 5 frames a chunk
    assert (whole - chunked).abs().max().item() < 1e-4 * whole.abs().max().item()


def test_folded_generation_with_guidance_gives_the_eager_clips():
    model = make_tiny_generator()
    eager = model.generate(2, 1000, labels=["door", "rain"], guidance=2.0, seed=5)
    folded = model.fold_denoiser().generate(2, 1000, labels=["door", "rain"], guidance=2.0, seed=5)
    assert (folded - eager).abs().max().item() < 1e-5 * eager.abs().max().item()


def test_folded_weights_are_built_once_per_dtype_and_refolding_reads_new_weights(short_mel):
    model = make_tiny_model().fold_denoiser()
    engine = model.engine
    assert engine.weights(torch.float32) is engine.weights(torch.float32)
    assert engine.weights(torch.bfloat16).residual.dtype == torch.bfloat16
    before = model.vocode(short_mel, seed=0, chunk_seconds=None)
    with torch.no_grad():
        model.network.residual_layers[3].dilated_conv.bias.add_(0.5)  # as a further training step would
    refolded = model.fold_denoiser().vocode(short_mel, seed=0, chunk_seconds=None)
    model.use_engine("eager")
    expected = model.vocode(short_mel, seed=0, chunk_seconds=None)
    assert (refolded - expected).abs().max().item() < 1e-5 * expected.abs().max().item()
    assert (before - expected).abs().max().item() > 1e-3


def test_cli_runs_the_folded_engine_on_a_cpu_by_default_with_the_eager_audio(tmp_path, tiny_model_file, monkeypatch):
    from audiodiff.io.audio import load_audio
    from audiodiff.cli import main
    from audiodiff.pipeline import AudioDiffusion

    engines = []  # the engine each command set up, through the library's one entry
    use_engine = AudioDiffusion.use_engine
    monkeypatch.setattr(AudioDiffusion, "use_engine",
                        lambda self, name, **options: engines.append(name) or use_engine(self, name, **options))
    np.save(tmp_path / "m.npy", -6 + np.sin(np.arange(80 * 6, dtype=np.float32)).reshape(80, 6))
    base = ["vocode", str(tmp_path / "m.npy"), "-m", str(tiny_model_file), "--device", "cpu", "-q"]
    assert main(base + ["--out", str(tmp_path / "auto")]) == 0 and engines[-1] == "folded"  # loaded eager, then set up
    assert main(base + ["--out", str(tmp_path / "eager"), "--engine", "eager"]) == 0 and engines[-1] == "eager"
    auto, _ = load_audio(tmp_path / "auto" / "m.wav")
    eager, _ = load_audio(tmp_path / "eager" / "m.wav")
    assert auto.shape == eager.shape and (auto - eager).abs().max().item() < 1e-3
