"""The inference engine: reduced-precision network arithmetic, a compiled denoiser, half-precision files.

Runs on the CPU by default; ``AUDIODIFF_TEST_DEVICE=cuda`` runs the same checks on a GPU.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_generator, make_tiny_model

from audiodiff.pipeline import PRECISIONS, load_model


@pytest.fixture
def mel() -> torch.Tensor:
    """A smooth log-mel-like input ``(1, 80, 24)`` in the hifigan range."""
    frames = torch.linspace(0, 6.28, 24)
    bins = torch.linspace(0, 1, 80).unsqueeze(1)
    return (-6 + 3 * torch.sin(frames + 4 * bins)).unsqueeze(0)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_stays_close_to_fp32(device, mel, precision):
    model = make_tiny_model().to(device)
    reference = model.vocode(mel, seed=3)
    audio = model.vocode(mel, seed=3, precision=precision)
    assert audio.dtype == torch.float32 and audio.shape == reference.shape
    # bf16 keeps 8 bits of mantissa: about 0.4 % relative error per op, well below the signal
    error = (audio - reference).abs().max().item()
    assert 0 < error < 0.05 * reference.abs().max().item()


@pytest.mark.slow
def test_precision_changes_the_network_dtype_only(device, mel):
    model = make_tiny_model().to(device)
    seen = []
    handle = model.network.residual_layers[0].dilated_conv.register_forward_hook(
        lambda module, inputs, output: seen.append(output.dtype))
    model.vocode(mel, seed=0, precision="bf16")
    handle.remove()
    assert seen and set(seen) == {torch.bfloat16}
    assert model.vocode(mel, seed=0).dtype == torch.float32


def test_unknown_precision_is_a_value_error_naming_the_choices(mel):
    with pytest.raises(ValueError, match="int8.*fp32"):
        make_tiny_model().vocode(mel, precision="int8")


@pytest.mark.slow
def test_chunked_vocoding_in_bf16_matches_one_piece_in_bf16(device):
    model = make_tiny_model().to(device)
    mel = -6 + torch.rand(1, 80, 60, generator=torch.Generator().manual_seed(0))
    whole = model.vocode(mel, seed=1, precision="bf16", chunk_seconds=None)
    chunked = model.vocode(mel, seed=1, precision="bf16", chunk_seconds=0.5)
    # same network calls on overlapping windows; bf16 rounding differs only through cuDNN/oneDNN
    # algorithm choice per shape
    assert (whole - chunked).abs().max().item() < 0.05


def test_generate_takes_a_precision(device):
    model = make_tiny_generator().to(device)
    exact = model.generate(2, 2048, labels="door", guidance=2.0, seed=5)
    fast = model.generate(2, 2048, labels="door", guidance=2.0, seed=5, precision="bf16")
    assert fast.dtype == torch.float32 and fast.shape == exact.shape
    assert (fast - exact).abs().max().item() < 0.1 * exact.abs().max().item()


@pytest.mark.slow
def test_compiled_denoiser_gives_the_eager_audio(device, mel):
    model = make_tiny_model().to(device)
    eager = model.vocode(mel, seed=2)
    compiled = model.compile_denoiser(dynamic=False).vocode(mel, seed=2)
    # the same arithmetic, fused: equal up to float reassociation (amplified a little by the sampler)
    assert torch.allclose(compiled, eager, atol=1e-3)


@pytest.mark.slow
def test_half_precision_file_round_trip(tmp_path, mel):
    model = make_tiny_model()
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    model.save(full)
    model.save(half, dtype=torch.float16)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded = load_model(half)
    assert all(p.dtype == torch.float32 for p in loaded.network.parameters())
    for name, value in model.network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[name], value.half().float()), name
    # fp16 weights (11-bit mantissa) move the audio by well under 1 % of its peak
    reference, audio = model.vocode(mel, seed=4), loaded.vocode(mel, seed=4)
    assert (audio - reference).abs().max().item() < 0.01 * reference.abs().max().item()


def test_precisions_name_their_dtypes():
    assert PRECISIONS == {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def test_cli_precision_auto_is_bf16_on_cuda_and_fp32_on_cpu():
    from audiodiff.cli.common import _precision

    assert (_precision("auto", "cuda"), _precision("auto", "cuda:1"), _precision("auto", "cpu")) == ("bf16", "bf16", "fp32")
    assert _precision("fp16", "cpu") == "fp16"


def test_cli_vocode_with_bf16_writes_the_audio_of_the_api(tmp_path, tiny_model_file):
    import numpy as np
    import soundfile as sf

    from audiodiff.cli import main

    mel = -6 + np.random.default_rng(0).random((80, 10), dtype=np.float32)
    np.save(tmp_path / "m.npy", mel)
    assert main(["vocode", str(tmp_path / "m.npy"), "-m", str(tiny_model_file), "--precision", "bf16",
                 "--device", "cpu", "--out", str(tmp_path / "out"), "-q"]) == 0
    written, _ = sf.read(tmp_path / "out" / "m.wav", dtype="float32")
    model = load_model(tiny_model_file).fold_denoiser()  # the CLI's engine on a CPU
    expected = model.vocode(torch.from_numpy(mel), seed=0, precision="bf16")[0].numpy()
    assert np.abs(written - expected).max() <= 1.5 / 32768  # the wav's 16-bit rounding
