"""The fused residual-block kernels (:mod:`audiodiff.engines.fused`) against the eager network.

On the CPU the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``, numpy), which checks
its indexing, masking and arithmetic; ``AUDIODIFF_TEST_DEVICE=cuda`` runs the same tests compiled
on a GPU, in bf16 too (the interpreter has no bf16).
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_generator, make_tiny_model, random_network

from audiodiff.engines.fused import COND_CACHED, BlockWeights, FusedDenoiser, Launch, group_plan, residual_blocks
from audiodiff.network.diffwave import DiffWave, denoiser_config

pytest.importorskip("triton")


@pytest.fixture
def fused_device(device, monkeypatch) -> str:
    """The device under test, with Triton's interpreter switched on when it is the CPU."""
    if device == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    return device


def cpu_launch(device: str, block_t: int, group_halo: int = 0) -> Launch:
    """The interpreter runs one program at a time in numpy: few, large tiles keep it quick."""
    return Launch(block_t, group_halo=group_halo) if device == "cpu" else Launch(group_halo=group_halo)


def conditioning_of(network: DiffWave, mode: str, batch: int, length: int, device: str):
    if mode == "class":
        return network.condition(None, labels=torch.tensor([0, 3]))
    if mode == "unconditional":
        return network.condition(None)
    mel = torch.randn(batch, 80, length // 64).to(device)
    return network.condition(mel, cache_projections=(mode == "cached mel"))


@pytest.mark.slow
@pytest.mark.parametrize("group_halo", [0, 16], ids=["one block a kernel", "grouped blocks"])
@pytest.mark.parametrize("mode, overrides", [
    ("cached mel", {}), ("mel", {}), ("unconditional", {"n_mels": None}),
    ("class", {"n_mels": None, "num_classes": 3}),
])
def test_fused_denoiser_matches_the_network(fused_device, mode, overrides, group_halo):
    """Grouped: tiny's dilations 1, 2, 4, 8, 16, 32 (twice) run as [1 2 4 8] [16] [32 1 2 4 8] [16]
    [32]; cached projections stay one block a kernel."""
    network = random_network(**overrides).to(fused_device)
    batch, length = 2, 64 * 11  # 704 samples: tiles of 256 cut it unevenly, dilations reach across tiles
    audio = torch.randn(batch, length, device=fused_device)
    step = torch.tensor([3.5, 40.0], device=fused_device)
    with torch.inference_mode():
        conditioning = conditioning_of(network, mode, batch, length, fused_device)
        expected = network.denoise(audio, step, conditioning)
        fused = FusedDenoiser(network, cpu_launch(fused_device, 256, group_halo))(audio, step, conditioning)
    assert fused.shape == expected.shape == (batch, length) and fused.dtype == torch.float32
    scale = expected.abs().max().item()
    assert scale > 0.1
    # the interpreter multiplies in IEEE float32; a GPU in TF32 (10-bit mantissa)
    tolerance = 1e-5 if fused_device == "cpu" else 2e-2
    assert (fused - expected).abs().max().item() < tolerance * scale


@pytest.fixture
def short_mel() -> torch.Tensor:
    """A smooth log-mel-like input ``(1, 80, 5)`` in the hifigan range: 1280 samples."""
    frames = torch.linspace(0, 3, 5)
    bins = torch.linspace(0, 1, 80).unsqueeze(1)
    return (-6 + 3 * torch.sin(frames + 4 * bins)).unsqueeze(0)


@pytest.mark.slow
@pytest.mark.parametrize("group_halo", [0, 30])
def test_fused_vocoding_gives_the_eager_audio(fused_device, short_mel, group_halo):
    model = make_tiny_model().to(fused_device)
    eager = model.vocode(short_mel, seed=2, chunk_seconds=None)
    fused = model.fuse_denoiser(cpu_launch(fused_device, 2048, group_halo)).vocode(short_mel, seed=2,
                                                                                  chunk_seconds=None)
    tolerance = 1e-4 if fused_device == "cpu" else 3e-2
    assert (fused - eager).abs().max().item() < tolerance * eager.abs().max().item()


@pytest.mark.slow
def test_fused_vocoding_reads_the_mel_not_cached_projections(fused_device, short_mel, monkeypatch):
    model = make_tiny_model().to(fused_device).fuse_denoiser(cpu_launch(fused_device, 2048))
    seen = []
    condition = model.network.condition
    monkeypatch.setattr(model.network, "condition",
                        lambda mel, cache_projections=True, **kw: seen.append(cache_projections)
                        or condition(mel, cache_projections, **kw))
    model.vocode(short_mel, seed=0, chunk_seconds=None, steps=None)
    assert seen == [False]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_fused_reduced_precision_stays_close_to_eager(fused_device, short_mel, precision):
    if fused_device == "cpu" and precision == "bf16":
        pytest.skip("Triton's interpreter computes bf16 wrongly; bf16 is checked on CUDA")
    model = make_tiny_model().to(fused_device)
    eager = model.vocode(short_mel, seed=3, precision=precision, chunk_seconds=None)
    fused = model.fuse_denoiser(cpu_launch(fused_device, 2048)).vocode(short_mel, seed=3, precision=precision,
                                                                        chunk_seconds=None)
    assert fused.dtype == torch.float32
    # both round activations to 16 bits, at different places (the kernel keeps the gate in fp32)
    assert (fused - eager).abs().max().item() < 0.05 * eager.abs().max().item()


def test_fused_conditioning_memory_is_the_upsampled_mel_only(fused_device):
    model = make_tiny_model().to(fused_device)
    hop, blocks = model.hop_length, model.config.denoiser.residual_layers
    assert model.conditioning_bytes_per_frame("fp32") == 2 * 32 * blocks * hop * 4  # 2C x blocks, float32
    assert model.conditioning_bytes_per_frame("bf16") == 2 * 32 * blocks * hop * 2
    model.fuse_denoiser()
    assert model.conditioning_bytes_per_frame("bf16") == 80 * hop * 2
    with pytest.raises(ValueError, match="int8"):
        model.conditioning_bytes_per_frame("int8")


@pytest.mark.slow
def test_fused_chunked_vocoding_matches_one_piece(fused_device):
    model = make_tiny_model().to(fused_device).fuse_denoiser(cpu_launch(fused_device, 4096))
    mel = -6 + torch.rand(1, 80, 12, generator=torch.Generator().manual_seed(0))
    whole = model.vocode(mel, seed=1, chunk_seconds=None, sampler="ddim", steps=2)
    chunked = model.vocode(mel, seed=1, chunk_seconds=0.05, sampler="ddim", steps=2)  # 5 frames a chunk
    assert (whole - chunked).abs().max().item() < 1e-3 * whole.abs().max().item()


@pytest.mark.slow
def test_fused_generation_with_guidance_gives_the_eager_clips(fused_device):
    model = make_tiny_generator().to(fused_device)
    eager = model.generate(2, 1000, labels=["door", "rain"], guidance=2.0, seed=5)
    fused = model.fuse_denoiser(cpu_launch(fused_device, 1024)).generate(2, 1000, labels=["door", "rain"],
                                                                          guidance=2.0, seed=5)
    tolerance = 1e-4 if fused_device == "cpu" else 3e-2
    assert (fused - eager).abs().max().item() < tolerance * eager.abs().max().item()


def test_fused_refuses_what_it_cannot_run(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="run on CUDA.*cpu"):
        make_tiny_model().fuse_denoiser()
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    fused = make_tiny_model().fuse_denoiser()
    monkeypatch.delenv("TRITON_INTERPRET")  # as if the model had been moved off the GPU after fusing
    with pytest.raises(RuntimeError, match="run on CUDA"):
        fused.vocode(torch.zeros(1, 80, 2) - 6)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="power-of-two residual_channels >= 16, this model has 48"):
        FusedDenoiser(DiffWave(denoiser_config("tiny", residual_channels=48)))


def test_group_plan_packs_blocks_while_their_dilations_fit_the_halo():
    base = tuple(2 ** (i % 10) for i in range(30))
    # 1 2 4 8 | 16 | 32 | … | 256 | 512 1 2 4 8 | 16 | …: the first block of a group reads GPU memory,
    # so 512 heads the next cycle's group; 19 kernels for 30 blocks
    assert group_plan(base, 16)[:8] == [(0, 4), (4, 1), (5, 1), (6, 1), (7, 1), (8, 1), (9, 5), (14, 1)]
    assert len(group_plan(base, 16)) == 19 and sum(n for _, n in group_plan(base, 16)) == 30
    assert group_plan(base, 0) == [(i, 1) for i in range(30)]
    assert group_plan((1, 2, 4, 8, 16, 32, 1, 2, 4, 8, 16, 32), 16) == [(0, 4), (4, 1), (5, 5), (10, 1), (11, 1)]
    assert group_plan((4, 1, 1), 2) == [(0, 3)]  # the first block's dilation reads GPU memory, not the tile
    assert group_plan((), 16) == []


def test_grouping_refuses_cached_projections_and_halos_longer_than_the_tile(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    network = random_network()
    weights = BlockWeights.of(network, torch.float32)
    x = torch.zeros(1, 32, 64)
    bias, row_bias = torch.zeros(2, 1, 32), torch.zeros(2, 1, 64)
    with pytest.raises(ValueError, match="cached projections"):
        residual_blocks(x, x.clone(), x.clone(), bias, row_bias, torch.zeros(1, 64, 64), COND_CACHED, weights, 0, 2)
    with pytest.raises(ValueError, match="halo of 32 samples a side, more than a tile of 64"):  # dilations 16, 32
        residual_blocks(x, x.clone(), x.clone(), bias, row_bias, None, 0, weights, 4, 2, Launch(64))


def test_launch_text_round_trips_and_bad_launches_are_value_errors():
    assert Launch.parse("128x8") == Launch(128, 8)
    assert Launch.parse("128x4g16") == Launch(128, 4, group_halo=16) and str(Launch(128, 4, None, 1, 24)) == "128x4s1g24"
    assert Launch.parse("128x4g16s1") == Launch.parse("128x4s1g16") == Launch(128, 4, None, 1, 16)
    with pytest.raises(ValueError, match="group_halo"):
        Launch.parse("32x4g16")
    with pytest.raises(ValueError, match="rounded up to a multiple of 16"):
        Launch.parse("32x4g8")  # a halo of 8 is read as 16 a side: nothing of 32 samples is kept
    assert Launch.parse("64x4g8").group_halo == 8
    with pytest.raises(ValueError, match="at most once"):
        Launch.parse("128x4s1s2")
    assert str(Launch.parse("64x4r168")) == "64x4r168" and Launch.parse("64x4r168").maxnreg == 168
    assert Launch.parse("128x4s1") == Launch(128, 4, None, 1) and str(Launch(128, 4, 168, 2)) == "128x4r168s2"
    assert Launch(64, 8, None, 1).options() == {"num_warps": 8, "num_stages": 1}
    with pytest.raises(ValueError, match="BLOCKxWARPS"):
        Launch.parse("fast")
    with pytest.raises(ValueError, match="power of two"):
        Launch(100)
    with pytest.raises(ValueError, match="num_warps"):
        Launch(64, 3)


def test_cli_fused_on_a_cpu_is_one_usage_error(tmp_path, tiny_model_file, capsys, monkeypatch):
    import numpy as np

    from audiodiff.cli import main

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    np.save(tmp_path / "m.npy", -6 + np.zeros((80, 4), dtype=np.float32))
    base = ["vocode", str(tmp_path / "m.npy"), "-m", str(tiny_model_file), "--device", "cpu",
            "--out", str(tmp_path / "out"), "-q"]
    assert main(base + ["--engine", "fused"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--engine fused: the fused kernels run on CUDA (the model is on cpu)" in lines[0]
    assert not (tmp_path / "out" / "m.wav").exists()
