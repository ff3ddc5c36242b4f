"""The DiffWave denoiser: sizes, shapes, conditioning reuse and input errors."""

from __future__ import annotations

import math

import pytest
import torch

from audiodiff.diffusion.schedule import SCHEDULES
from audiodiff.mel import mel_preset
from audiodiff.network.diffwave import (
    DiffWave,
    MelUpsampler,
    count_parameters,
    denoiser_config,
    subpixel_kernel,
    subpixel_transposed_conv,
    upsample_strides,
)
from audiodiff.pipeline import AudioDiffusion, ModelConfig

HOPS = [200, 240, 256, 300, 320]

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning")


def tiny(**overrides) -> DiffWave:
    torch.manual_seed(0)
    return DiffWave(denoiser_config("tiny", **overrides)).eval()


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial weights everywhere (the output projection starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


# ------------------------------------------------------------------- sizes
def test_base_parameter_count_equals_reference():
    from diffwave.model import DiffWave as ReferenceDiffWave
    from diffwave.params import AttrDict, params

    reference = count_parameters(ReferenceDiffWave(AttrDict(params)))
    ours = count_parameters(DiffWave(denoiser_config("base")))
    assert ours == reference
    assert round(ours / 1e6, 2) == 2.62  # the paper rounds to 2.64 M


def test_large_size():
    config = denoiser_config("large")
    assert config.residual_channels == 128 and config.residual_layers == 30
    count = count_parameters(DiffWave(config))
    assert 6.8e6 < count < 7.0e6  # the paper: 6.91 M
    assert count > 2.5 * count_parameters(DiffWave(denoiser_config("base")))


def test_unknown_size_raises():
    with pytest.raises(ValueError, match="huge"):
        denoiser_config("huge")


# --------------------------------------------------------------- upsampler
@pytest.mark.parametrize("hop", HOPS)
def test_upsample_strides_multiply_to_hop(hop):
    strides = upsample_strides(hop)
    assert math.prod(strides) == hop
    assert all(s > 1 for s in strides)


def test_upsample_strides_256_is_reference():
    assert upsample_strides(256) == (16, 16)
    stage = MelUpsampler(256).stages[0]
    assert stage.kernel_size == (3, 32) and stage.stride == (1, 16) and stage.padding == (1, 8)


@pytest.mark.parametrize("stride", [1, 2, 3, 7, 15, 16, 20])
def test_subpixel_form_equals_the_transposed_convolution(stride):
    """The upsampler's sub-pixel convolution computes what ``ConvTranspose2d`` computes, values
    and gradients, for even and odd strides (odd ones give one sample more than ``L s``)."""
    torch.manual_seed(stride)
    stage = torch.nn.ConvTranspose2d(1, 1, (3, 2 * stride), stride=(1, stride), padding=(1, stride // 2))
    x = torch.randn(2, 1, 9, 13, requires_grad=True)
    expected = stage(x)
    got = subpixel_transposed_conv(x, stage)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    upstream = torch.randn_like(expected)
    grads = torch.autograd.grad((expected * upstream).sum(), [x, stage.weight, stage.bias])
    grads_subpixel = torch.autograd.grad((got * upstream).sum(), [x, stage.weight, stage.bias])
    for ours, theirs in zip(grads_subpixel, grads):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_subpixel_kernel_places_each_phase_two_taps():
    """Hand-derived for stride 2, padding 1: phase 0 (even outputs o = 2q) reads input q with
    tap 1 and input q - 1 with tap 3; phase 1 reads input q + 1 with tap 0 and input q with tap 2."""
    weight = torch.arange(12.0).reshape(1, 1, 3, 4)  # mel row m, time tap k: 4 m + k
    kernel = subpixel_kernel(weight, 2, 1)  # (2, 1, 3, 3): phase, -, mel offset, time offset
    flipped = weight[0, 0].flip(0)
    assert torch.equal(kernel[0, 0], torch.stack([flipped[:, 3], flipped[:, 1], torch.zeros(3)], 1))
    assert torch.equal(kernel[1, 0], torch.stack([torch.zeros(3), flipped[:, 2], flipped[:, 0]], 1))


def test_subpixel_rejects_other_kernels():
    with pytest.raises(ValueError, match="kernel"):
        subpixel_transposed_conv(torch.randn(1, 1, 4, 4), torch.nn.ConvTranspose2d(1, 1, (3, 5), stride=(1, 2)))


@pytest.mark.parametrize("hop", HOPS)
def test_output_length_is_frames_times_hop(hop):
    frames = 5
    model = tiny(hop_length=hop)
    mel = torch.randn(2, 80, frames)
    assert model.mel_upsampler(mel).shape == (2, 80, frames * hop)
    audio = torch.randn(2, frames * hop)
    eps = model(audio, torch.tensor([3, 7]), mel)
    assert eps.shape == (2, frames * hop)


# ------------------------------------------------------------------ forward
def test_conditional_forward_shapes():
    model = tiny()
    randomize(model)
    audio = torch.randn(3, 4 * 256)
    out = model(audio, torch.tensor([0.0, 4.5, 49.0]), torch.randn(3, 80, 4))
    assert out.shape == (3, 1024) and out.dtype == torch.float32
    assert out.abs().sum() > 0
    # scalar step broadcasts over the batch
    assert model(audio, torch.tensor(2.0), torch.randn(3, 80, 4)).shape == (3, 1024)


def test_unconditional_forward_shapes():
    model = tiny(n_mels=None)
    assert not model.conditional and model.mel_upsampler is None
    assert all(layer.conditioner_projection is None for layer in model.residual_layers)
    out = model(torch.randn(2, 1000), torch.tensor([1, 2]))
    assert out.shape == (2, 1000)
    assert model.condition(None) is None


def test_fresh_model_predicts_zero():
    # the output projection's weight is zero-initialised, as in the reference: only its bias shows
    model = tiny()
    out = model(torch.randn(1, 512), torch.tensor([3]), torch.randn(1, 80, 2))
    assert torch.count_nonzero(model.output_projection.weight) == 0
    assert torch.equal(out, model.output_projection.bias.expand(1, 512))


def test_condition_then_denoise_equals_forward():
    model = tiny()
    randomize(model, seed=1)
    mel = torch.randn(2, 80, 6)
    audio = torch.randn(2, 6 * 256)
    conditioning = model.condition(mel)
    assert len(conditioning) == model.config.residual_layers
    assert conditioning[0].shape == (2, 2 * model.config.residual_channels, 6 * 256)
    for step in (torch.tensor([0, 49]), torch.tensor([4.087, 22.992])):
        assert torch.equal(model.denoise(audio, step, conditioning), model(audio, step, mel))


def test_step_embedding_interpolates():
    model = tiny()
    emb = model.diffusion_embedding
    table = emb.table
    low, high = emb(torch.tensor([3.0])), emb(torch.tensor([4.0]))
    mid = emb(torch.tensor([3.25]))
    assert not torch.allclose(mid, low) and not torch.allclose(mid, high)
    x = table[3] + 0.25 * (table[4] - table[3])
    expected = torch.nn.functional.silu(emb.projection2(torch.nn.functional.silu(emb.projection1(x))))
    torch.testing.assert_close(mid[0], expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- caching
def test_vocode_upsamples_the_mel_once():
    config = ModelConfig(
        denoiser=denoiser_config("tiny"), mel=mel_preset("diffwave"),
        schedule=SCHEDULES["base"], sample_rate=22050,
    )
    model = AudioDiffusion(config).eval()
    calls = {"upsampler": 0, "projection": 0, "denoise": 0}
    model.network.mel_upsampler.register_forward_hook(lambda *_: calls.__setitem__("upsampler", calls["upsampler"] + 1))
    model.network.residual_layers[0].conditioner_projection.register_forward_hook(
        lambda *_: calls.__setitem__("projection", calls["projection"] + 1)
    )
    model.network.input_projection.register_forward_hook(lambda *_: calls.__setitem__("denoise", calls["denoise"] + 1))
    audio = model.vocode(torch.rand(1, 80, 4), sampler="fast", seed=0)
    assert audio.shape == (1, 4 * 256)
    assert calls == {"upsampler": 1, "projection": 1, "denoise": 6}


# ------------------------------------------------------------------ errors
def test_wrong_n_mels_raises():
    model = tiny()
    with pytest.raises(ValueError, match="80"):
        model(torch.randn(1, 1024), torch.tensor([1]), torch.randn(1, 64, 4))
    with pytest.raises(ValueError):
        model(torch.randn(1, 1024), torch.tensor([1]), torch.randn(80, 4))  # no batch axis


def test_mel_required_for_conditional_model():
    with pytest.raises(ValueError, match="mel"):
        tiny()(torch.randn(1, 1024), torch.tensor([1]))


def test_mel_for_unconditional_model_raises():
    with pytest.raises(ValueError, match="unconditional"):
        tiny(n_mels=None)(torch.randn(1, 1024), torch.tensor([1]), torch.randn(1, 80, 4))


def test_invalid_config_raises():
    with pytest.raises(ValueError):
        denoiser_config("tiny", residual_layers=0)
    with pytest.raises(ValueError):
        upsample_strides(0)
