"""Fused Triton kernels for the residual blocks: the CUDA inference engine's fast path.

In eager PyTorch one residual block is about ten kernels (step bias, dilated convolution,
conditioner add, gate, output projection, residual and skip adds), and each reads and writes
``(B, 2C, T)`` activations in GPU memory: at batch 16 the profile is ~70 % elementwise kernels.
:func:`residual_block` does a whole block in one kernel. Each program takes one batch row and
``block_t`` samples, keeps every intermediate on chip, and touches GPU memory only to

* read ``x`` ``(C, block_t)`` (three dilation taps, two of them from the L2 cache) and the
  conditioning (the cached projection ``(2C, block_t)``, or the upsampled mel ``(n_mels,
  block_t)`` whose 1x1 projection it computes itself, which needs no per-block cache at all);
* write the block's output ``x'`` and add its skip into the running skip sum, in place.

A launch's ``gHALO`` (:class:`Launch`, e.g. ``"128x4g16"``) runs consecutive blocks with small
dilations in one kernel (:func:`group_plan`: base's 1, 2, 4, 8 of each cycle at ``g16``): a tile
recomputes the later blocks' dilations on each side, passes ``x`` and the skip sum between its
blocks through a scratch tile of its own and adds the skips into ``skip_sum`` once, so the group
moves the bytes of one block.
Grouping is experimental: checked here in the interpreter, not yet timed on a GPU.

:class:`FusedDenoiser` runs :meth:`audiodiff.network.diffwave.DiffWave.denoise` with one such kernel per
block and the same inputs, so every sampler, the chunked path and classifier-free guidance use it
unchanged (``AudioDiffusion.fuse_denoiser()``, CLI ``--engine fused``). It is for inference on CUDA in
bf16/fp16 (the activations are stored in that dtype, as under autocast; the gate and all sums are
float32 in registers) and also runs in float32. Triton's interpreter (``TRITON_INTERPRET=1``)
runs the same kernel on a CPU, which is how the CPU test suite checks it.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from audiodiff.engines.weights import WeightsByDtype, activation_dtype
from audiodiff.network.diffwave import Conditioning, DiffWave, ProjectedPerStep

#: ``cond_mode`` of the kernel: no per-sample conditioning (unconditional or class: a per-row
#: bias), a cached per-block projection ``(B, 2C, T)``, or the upsampled mel ``(B, n_mels, T)``.
COND_NONE, COND_CACHED, COND_MEL = 0, 1, 2



@dataclass(frozen=True)
class Launch:
    """How the kernel is launched: samples per program, warps per program, a register cap and a
    software-pipelining depth (``None``: Triton's defaults)."""

    block_t: int = 128  # the fastest on an H100 (benchmarks/RESULTS.md: 128x4 > 64x4 > 64x4r168 > 64x8)
    num_warps: int = 4
    maxnreg: int | None = None
    num_stages: int | None = None
    #: Blocks whose dilations after the first add up to at most ``group_halo`` run as one kernel
    #: (:func:`group_plan`); 0 runs one kernel per block. Not yet timed on a GPU.
    group_halo: int = 0

    def __post_init__(self) -> None:
        if self.block_t < 16 or self.block_t & (self.block_t - 1):
            raise ValueError(f"block_t must be a power of two >= 16, got {self.block_t}")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"num_warps must be 1, 2, 4, 8 or 16, got {self.num_warps}")
        if self.group_halo < 0 or 2 * tile_halo(self.group_halo) >= self.block_t:
            raise ValueError(f"group_halo must leave samples to keep: 2 x {self.group_halo} (rounded up to a "
                             f"multiple of 16) must be less than block_t {self.block_t}")

    @classmethod
    def parse(cls, text: str) -> "Launch":
        """``"64x4"`` (block_t x num_warps), ``"128x8r168"`` (a register cap), ``"128x4s1"`` (stages),
        ``"128x4g16"`` (blocks grouped up to a halo of 16 samples)."""
        match = re.fullmatch(r"(\d+)x(\d+)((?:[rsg]\d+)*)", text)
        options = dict(re.findall(r"([rsg])(\d+)", match.group(3))) if match else {}
        if match is None or len(options) < len(re.findall(r"[rsg]", match.group(3))):
            raise ValueError("a launch is BLOCKxWARPS[rREGS][sSTAGES][gHALO], each option at most once, e.g. 64x4, "
                             f"128x8r168, 128x4s1 or 128x4g16; got {text!r}")
        number = lambda key: None if key not in options else int(options[key])  # noqa: E731
        return cls(int(match.group(1)), int(match.group(2)), number("r"), number("s"), number("g") or 0)

    def __str__(self) -> str:
        return (f"{self.block_t}x{self.num_warps}" + ("" if self.maxnreg is None else f"r{self.maxnreg}")
                + ("" if self.num_stages is None else f"s{self.num_stages}")
                + (f"g{self.group_halo}" if self.group_halo else ""))

    def options(self) -> dict[str, int]:
        """The launch keywords of a Triton kernel call."""
        options = {"num_warps": self.num_warps}
        if self.maxnreg is not None:
            options["maxnreg"] = self.maxnreg
        if self.num_stages is not None:
            options["num_stages"] = self.num_stages
        return options


def triton_available() -> bool:
    """Whether Triton imports (it ships with the Linux CUDA builds of torch)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def unsupported_reason(network: DiffWave, device: torch.device) -> str | None:
    """Why :class:`FusedDenoiser` cannot run ``network`` on ``device``, or ``None``."""
    channels = network.config.residual_channels
    if not triton_available():
        return "the fused kernels need Triton, which is not installed (it ships with torch's CUDA builds on Linux)"
    if device.type != "cuda" and not interpreting():
        return (f"the fused kernels run on CUDA (the model is on {device}); "
                "TRITON_INTERPRET=1 runs them on a CPU, slowly")
    if channels < 16 or channels & (channels - 1):
        return f"the fused kernels need a power-of-two residual_channels >= 16, this model has {channels}"
    return None


@functools.cache
def _kernel(interpret: bool):
    """The Triton kernel, defined on first use so that importing this module never needs Triton.

    ``triton.jit`` picks compiled or interpreted at decoration time, hence one kernel per mode.
    """
    import triton
    import triton.language as tl

    @triton.jit
    def residual_blocks_kernel(
        x_ptr, out_ptr, skip_ptr,  # (B, C, T) in the activation dtype; skip is updated in place
        scratch_ptr,  # (programs, 2, C, BLOCK_T) activation dtype: x and the skip sum between a group's blocks
        step_bias_ptr,  # (LAYERS, B, C) float32: each block's diffusion projection, added to x before the conv
        row_bias_ptr,  # (LAYERS, B, 2C) float32: conv bias (+ class projection, + mel projection bias)
        cond_ptr,  # (B, 2C, T) cached projection (LAYERS == 1 only), (B, n_mels, T) upsampled mel, or unused
        w_dilated_ptr,  # (LAYERS, 3, 2C, C): block, tap, output channel, input channel
        w_cond_ptr,  # (LAYERS, 2C, MEL_A + MEL_B): the mel projection, zero-padded to MEL_A + MEL_B inputs
        w_out_ptr,  # (LAYERS, 2C, C); rows 0..C-1 make the residual, C..2C-1 the skip
        b_out_ptr,  # (LAYERS, 2C) float32
        dilations_ptr,  # (LAYERS,) int32
        batch, T, n_mels,
        halo, kept,  # a tile covers BLOCK_T samples from kept * tile - halo and writes the middle `kept`
        tiles_per_row,
        C: tl.constexpr, BLOCK_T: tl.constexpr, MEL_A: tl.constexpr, MEL_B: tl.constexpr,
        COND_MODE: tl.constexpr, DOT_PRECISION: tl.constexpr, LAYERS: tl.constexpr,
        TILES_PER_PROGRAM: tl.constexpr,  # 1 for single blocks; a group's program reuses its scratch tile
    ):
        program = tl.program_id(0)
        tasks = batch * tiles_per_row
        offs_c = tl.arange(0, C)
        local = tl.arange(0, BLOCK_T)
        dtype = x_ptr.dtype.element_ty
        scratch = scratch_ptr + program.to(tl.int64) * 2 * C * BLOCK_T + offs_c[:, None] * BLOCK_T  # (C, 1): x
        skip_scratch = scratch + C * BLOCK_T  # and the group's skip sum so far
        for i in range(TILES_PER_PROGRAM):  # a constant trip count: one tile folds away the loop
            task = program * TILES_PER_PROGRAM + i
            row = (tl.minimum(task, tasks - 1) // tiles_per_row).to(tl.int64)  # int64: row * 2C * T can pass 2**31
            offs_t = (task % tiles_per_row) * kept - halo + local
            in_signal = (offs_t >= 0) & (offs_t < T) & (task < tasks)  # a last program may run short
            x_row = x_ptr + row * C * T
            for layer in tl.static_range(LAYERS):  # unrolled
                # block `layer` reads x from GPU memory (the first) or from the scratch the one before wrote
                dilation = tl.load(dilations_ptr + layer)
                step_bias = tl.load(step_bias_ptr + (layer * batch + row) * C + offs_c)[:, None]
                gate = tl.full((C, BLOCK_T), 0.0, tl.float32)
                filt = tl.full((C, BLOCK_T), 0.0, tl.float32)
                for tap in range(3):  # a loop, not unrolled: one tap's weights live at a time
                    t_tap = offs_t + (tap - 1) * dilation
                    valid = (t_tap >= 0) & (t_tap < T)
                    if layer == 0:
                        x_tap = tl.load(x_row + offs_c[:, None] * T + t_tap[None, :], mask=valid[None, :], other=0.0)
                    else:  # taps outside the tile only feed the halo, which is not written
                        local_tap = local + (tap - 1) * dilation
                        valid = valid & (local_tap >= 0) & (local_tap < BLOCK_T)
                        x_tap = tl.load(scratch + local_tap[None, :], mask=valid[None, :], other=0.0)
                    # the conv zero-pads x + step bias, so the bias is added inside the signal only
                    y_tap = tl.where(valid[None, :], x_tap.to(tl.float32) + step_bias, 0.0).to(dtype)
                    w_tap = w_dilated_ptr + (layer * 3 + tap) * 2 * C * C
                    w_gate = tl.load(w_tap + offs_c[:, None] * C + offs_c[None, :])
                    w_filt = tl.load(w_tap + (C + offs_c)[:, None] * C + offs_c[None, :])
                    gate += tl.dot(w_gate, y_tap, input_precision=DOT_PRECISION)
                    filt += tl.dot(w_filt, y_tap, input_precision=DOT_PRECISION)
                if COND_MODE == 1:
                    cond_row = cond_ptr + row * 2 * C * T
                    mask = in_signal[None, :]
                    gate += tl.load(cond_row + offs_c[:, None] * T + offs_t[None, :], mask=mask, other=0.0).to(tl.float32)
                    filt += tl.load(cond_row + (C + offs_c)[:, None] * T + offs_t[None, :], mask=mask,
                                    other=0.0).to(tl.float32)
                if COND_MODE == 2:  # the mel's 1x1 projection, as a MEL_A-wide and a MEL_B-wide product
                    mel_row = cond_ptr + row * n_mels * T
                    w_cond = w_cond_ptr + layer * 2 * C * (MEL_A + MEL_B)
                    for part in tl.static_range(2 if MEL_B > 0 else 1):  # unrolled: the two widths differ
                        if part == 0:
                            offs_m = tl.arange(0, MEL_A)
                        else:
                            offs_m = MEL_A + tl.arange(0, MEL_B)
                        mel = tl.load(mel_row + offs_m[:, None] * T + offs_t[None, :],
                                      mask=(offs_m[:, None] < n_mels) & in_signal[None, :], other=0.0).to(dtype)
                        w_gate_mel = tl.load(w_cond + offs_c[:, None] * (MEL_A + MEL_B) + offs_m[None, :])
                        w_filt_mel = tl.load(w_cond + (C + offs_c)[:, None] * (MEL_A + MEL_B) + offs_m[None, :])
                        gate += tl.dot(w_gate_mel, mel, input_precision=DOT_PRECISION)
                        filt += tl.dot(w_filt_mel, mel, input_precision=DOT_PRECISION)
                gate += tl.load(row_bias_ptr + (layer * batch + row) * 2 * C + offs_c)[:, None]
                filt += tl.load(row_bias_ptr + (layer * batch + row) * 2 * C + C + offs_c)[:, None]
                # sigmoid(gate) * tanh(filt) from tl.exp (and tl.full, not tl.zeros, above): tl.sigmoid and
                # tl.zeros are jitted helpers, which Triton's interpreter cannot call when it was switched
                # on after triton was imported, as the tests do
                sigmoid_gate = 1.0 / (1.0 + tl.exp(-gate))
                tanh_filt = 2.0 / (1.0 + tl.exp(-2.0 * filt)) - 1.0
                hidden = (sigmoid_gate * tanh_filt).to(dtype)
                w_out = w_out_ptr + layer * 2 * C * C
                b_out = b_out_ptr + layer * 2 * C
                w_residual = tl.load(w_out + offs_c[:, None] * C + offs_c[None, :])
                w_skip = tl.load(w_out + (C + offs_c)[:, None] * C + offs_c[None, :])
                residual = tl.dot(w_residual, hidden, input_precision=DOT_PRECISION) + tl.load(b_out + offs_c)[:, None]
                layer_skip = tl.dot(w_skip, hidden, input_precision=DOT_PRECISION) + tl.load(b_out + C + offs_c)[:, None]
                if layer == 0:
                    skip = layer_skip
                else:  # the skip sum waits in the scratch, not in registers, while the next block runs
                    skip = tl.load(skip_scratch + local[None, :]).to(tl.float32) + layer_skip
                if layer == 0:
                    x_center = tl.load(x_row + offs_c[:, None] * T + offs_t[None, :], mask=in_signal[None, :], other=0.0)
                else:
                    x_center = tl.load(scratch + local[None, :])
                x_next = (x_center.to(tl.float32) + residual) * 0.7071067811865476
                if layer < LAYERS - 1:
                    tl.debug_barrier()  # every thread has read this tile's scratch ...
                    tl.store(scratch + local[None, :], x_next.to(dtype))
                    tl.store(skip_scratch + local[None, :], skip.to(dtype))  # rounded as skip_sum is
                    tl.debug_barrier()  # ... and the next block reads what all of them wrote
                else:
                    offsets = offs_c[:, None] * T + offs_t[None, :]
                    mask = ((local >= halo) & (local < halo + kept) & in_signal)[None, :]
                    tl.store(out_ptr + row * C * T + offsets, x_next.to(dtype), mask=mask)
                    skip_row = skip_ptr + row * C * T
                    skip_sum = tl.load(skip_row + offsets, mask=mask, other=0.0).to(tl.float32) + skip
                    tl.store(skip_row + offsets, skip_sum.to(skip_ptr.dtype.element_ty), mask=mask)

    return residual_blocks_kernel


def mel_blocks(n_mels: int) -> tuple[int, int]:
    """Two power-of-two widths (the second may be 0) that cover ``n_mels`` with little padding.

    Triton's products need power-of-two sizes of at least 16: 80 bins are 64 + 16 (no padding,
    instead of 128), 100 bins 128 + 0.
    """
    whole = max(16, 1 << (n_mels - 1).bit_length())
    first = max(16, 1 << (n_mels.bit_length() - 1))
    rest = n_mels - first
    second = 0 if rest <= 0 else max(16, 1 << (rest - 1).bit_length())
    return (whole, 0) if first + second >= whole else (first, second)


@dataclass(frozen=True)
class BlockWeights:
    """The weights of all residual blocks, stacked and laid out for the kernel, in one dtype.

    ``L`` blocks, ``C`` channels, ``H`` the step-embedding width, ``M`` mel bins padded to
    ``sum(mel_blocks(n_mels))``.
    """

    dilated: Tensor  # (L, 3, 2C, C) activation dtype
    dilated_bias: Tensor  # (L, 2C) float32
    step_weight: Tensor  # (L, C, H) float32
    step_bias: Tensor  # (L, C) float32
    cond_weight: Tensor | None  # (L, 2C, M) activation dtype, or None without a mel
    cond_bias: Tensor | None  # (L, 2C) float32
    out_weight: Tensor  # (L, 2C, C) activation dtype
    out_bias: Tensor  # (L, 2C) float32
    dilations: tuple[int, ...]
    dilation_table: Tensor  # (L,) int32: the dilations, for the kernel
    input_weight: Tensor  # (C, 1, 1) activation dtype: the input projection
    input_bias: Tensor  # (C,)
    skip_weight: Tensor  # (C, C, 1) activation dtype: the skip projection, times 1 / sqrt(L)
    skip_bias: Tensor  # (C,)
    final_weight: Tensor  # (1, C, 1) activation dtype: the output projection
    final_bias: Tensor  # (1,)

    @classmethod
    def of(cls, network: DiffWave, dtype: torch.dtype) -> "BlockWeights":
        blocks = list(network.residual_layers)
        stack = lambda tensors: torch.stack([t.detach() for t in tensors])  # noqa: E731
        cond_weight = cond_bias = None
        if network.conditional:
            n_mels = network.config.n_mels
            padded = sum(mel_blocks(n_mels))
            weight = stack(b.conditioner_projection.weight.squeeze(-1) for b in blocks)  # (L, 2C, n_mels)
            cond_weight = F.pad(weight, (0, padded - n_mels)).to(dtype).contiguous()
            cond_bias = stack(b.conditioner_projection.bias for b in blocks).float()
        return cls(
            dilated=stack(b.dilated_conv.weight.permute(2, 0, 1) for b in blocks).to(dtype).contiguous(),
            dilated_bias=stack(b.dilated_conv.bias for b in blocks).float(),
            step_weight=stack(b.diffusion_projection.weight for b in blocks).float(),
            step_bias=stack(b.diffusion_projection.bias for b in blocks).float(),
            cond_weight=cond_weight,
            cond_bias=cond_bias,
            out_weight=stack(b.output_projection.weight.squeeze(-1) for b in blocks).to(dtype).contiguous(),
            out_bias=stack(b.output_projection.bias for b in blocks).float().contiguous(),
            dilations=tuple(b.dilated_conv.dilation[0] for b in blocks),
            dilation_table=torch.tensor([b.dilated_conv.dilation[0] for b in blocks], dtype=torch.int32,
                                        device=blocks[0].dilated_conv.weight.device),
            input_weight=network.input_projection.weight.detach().to(dtype),
            input_bias=network.input_projection.bias.detach().to(dtype),
            skip_weight=(network.skip_projection.weight.detach() / math.sqrt(len(blocks))).to(dtype),
            skip_bias=network.skip_projection.bias.detach().to(dtype),
            final_weight=network.output_projection.weight.detach().to(dtype),
            final_bias=network.output_projection.bias.detach().to(dtype),
        )


def tile_halo(samples: int) -> int:
    """The samples a tile recomputes on each side for a group whose later dilations add up to
    ``samples``: rounded up to a multiple of 16, which keeps tiles aligned for vector loads."""
    return -(-samples // 16) * 16


def group_plan(dilations: tuple[int, ...], group_halo: int) -> list[tuple[int, int]]:
    """``(first block, number of blocks)`` for each kernel of a pass through the residual blocks.

    Consecutive blocks share a kernel while the dilations of all but the first add up to at most
    ``group_halo``: a tile then recomputes that many samples on each side (the halo), so that the
    blocks after the first find every tap in the tile. Base's cycle 1, 2, 4, … 512 at 16 gives
    [1, 2, 4, 8] (halo 14) and single blocks from 16 on; ``group_halo=0`` gives single blocks.
    """
    plan: list[tuple[int, int]] = []
    first, halo = 0, 0
    for layer in range(1, len(dilations) + 1):
        if layer < len(dilations) and halo + dilations[layer] <= group_halo:
            halo += dilations[layer]
            continue
        plan.append((first, layer - first))
        first, halo = layer, 0
    return plan


def tiles_per_program(layers: int, device: torch.device) -> int:
    """Tiles each program of a launch does: one for a single block; for a group, several in a
    row through one scratch tile, so that few scratch tiles are in use at a time (they stay in
    the L2 cache). The interpreter runs two, which checks the loop."""
    if layers == 1:
        return 1
    return 8 if device.type == "cuda" else 2


def residual_blocks(x: Tensor, out: Tensor, skip_sum: Tensor, step_bias: Tensor, row_bias: Tensor,
                    cond: Tensor | None, cond_mode: int, weights: BlockWeights, first: int, layers: int = 1,
                    launch: Launch = Launch()) -> None:
    """Blocks ``first .. first + layers - 1`` in one kernel: writes ``out`` ``(B, C, T)`` (the
    last block's output) and adds all their skips into ``skip_sum``.

    ``x`` ``(B, C, T)`` contiguous; ``step_bias`` ``(layers, B, C)`` and ``row_bias`` ``(layers, B,
    2C)`` float32; ``cond`` per ``cond_mode`` (``(B, 2C, T)`` with ``layers == 1``, ``(B, n_mels,
    T)`` or ``None``). Between the blocks of a group ``x`` and the skip sum so far go through a
    per-program scratch tile (in the L2 cache on a GPU), not through ``(B, C, T)`` buffers. Products of float32
    activations use TF32 on a GPU (IEEE float32 in the interpreter). ``maxnreg`` caps the
    registers per thread (more programs per SM, some spilling).
    """
    batch, channels, length = x.shape
    if cond_mode == COND_CACHED and layers > 1:
        raise ValueError("cached projections are one tensor per block: group blocks with the mel instead")
    dilations = weights.dilations[first:first + layers]
    halo = tile_halo(sum(dilations[1:]))
    kept = launch.block_t - 2 * halo
    if kept <= 0:
        raise ValueError(f"blocks {first}..{first + layers - 1} need a halo of {halo} samples a side, "
                         f"more than a tile of {launch.block_t} holds")
    tiles_per_row = math.ceil(length / kept)
    per_program = tiles_per_program(layers, x.device)
    programs = math.ceil(batch * tiles_per_row / per_program)
    scratch = x if layers == 1 else torch.empty(programs, 2, channels, launch.block_t, dtype=x.dtype, device=x.device)
    n_mels = cond.shape[1] if cond_mode == COND_MEL else 0
    blocks = slice(first, first + layers)
    cond_weight = weights.cond_weight[blocks] if cond_mode == COND_MEL else weights.out_weight[blocks]
    mel_a, mel_b = mel_blocks(n_mels) if cond_mode == COND_MEL else (16, 0)
    _kernel(interpreting())[(programs,)](
        x, out, skip_sum, scratch, step_bias.contiguous(), row_bias.contiguous(), x if cond is None else cond,
        weights.dilated[blocks], cond_weight, weights.out_weight[blocks], weights.out_bias[blocks],
        weights.dilation_table[blocks], batch, length, n_mels, halo, kept, tiles_per_row,
        C=channels, BLOCK_T=launch.block_t, MEL_A=mel_a, MEL_B=mel_b, COND_MODE=cond_mode,
        DOT_PRECISION="ieee" if interpreting() else "tf32", LAYERS=layers, TILES_PER_PROGRAM=per_program,
        **launch.options(),
    )


class FusedDenoiser:
    """``DiffWave.denoise`` with one fused kernel per residual block: ``(audio (B, T), step (B,),
    conditioning) -> eps (B, T)``.

    The activation dtype is the autocast dtype active at the call (float32 outside autocast). The
    weights are laid out from ``network`` once per dtype, at the first call, and again after any
    of them changes. ``launch`` sets samples, warps and registers per program; ``read_mel`` is
    described at :attr:`reads_mel`. An :class:`~audiodiff.engines.base.Engine`.
    """

    name = "fused"

    def __init__(self, network: DiffWave, launch: Launch = Launch(), read_mel: bool = True) -> None:
        device = next(network.parameters()).device
        reason = unsupported_reason(network, device)
        if reason is not None:
            raise RuntimeError(reason)
        self.network = network
        self.launch = launch
        #: ``vocode`` then conditions with the upsampled mel only (``cache_projections=False``): the
        #: kernel projects it itself, reading ``n_mels`` values per sample instead of ``2C`` cached
        #: ones, and no per-block cache is kept. ``False`` keeps ``vocode``'s cache when it fits.
        self.reads_mel = read_mel
        #: ``weights(dtype)``: the blocks' weights in ``dtype`` on the network's current device.
        self.weights = WeightsByDtype(network, BlockWeights.of)

    def condition(self, mel: Tensor | None, cache_projections: bool = True, *,
                  labels: Tensor | None = None) -> Conditioning:
        """The network's own conditioning (``DiffWave.condition``), which the kernels read."""
        return self.network.condition(mel, cache_projections, labels=labels)

    @torch.inference_mode()
    def denoise(self, audio: Tensor, step: Tensor, conditioning: Conditioning) -> Tensor:
        """Noisy ``audio`` ``(B, T)``, training steps ``step`` ``(B,)`` -> predicted noise ``(B, T)`` float32."""
        reason = unsupported_reason(self.network, audio.device)
        if reason is not None:  # e.g. the model was moved to the CPU after fusing
            raise RuntimeError(reason)
        dtype = activation_dtype(audio.device)
        with torch.autocast(audio.device.type, enabled=False):
            return self._denoise(audio.float(), step, conditioning, dtype)

    __call__ = denoise

    def _denoise(self, audio: Tensor, step: Tensor, conditioning: Conditioning, dtype: torch.dtype) -> Tensor:
        network = self.network
        weights = self.weights(dtype)
        step = torch.as_tensor(step, device=audio.device)
        if step.dim() == 0:
            step = step.expand(audio.shape[0])
        embedding = network.diffusion_embedding(step).float()  # (B, H)
        step_bias = torch.einsum("bh,lch->lbc", embedding, weights.step_weight) + weights.step_bias[:, None]
        cond_mode, cond, row_bias = self._conditioning(conditioning, weights, audio.shape[0], dtype)
        x = F.conv1d(audio.unsqueeze(1).to(dtype), weights.input_weight, weights.input_bias).relu_()  # (B, C, T)
        out = torch.empty_like(x)
        skip_sum = torch.zeros_like(x)
        group_halo = 0 if cond_mode == COND_CACHED else self.launch.group_halo
        for first, layers in group_plan(weights.dilations, group_halo):
            blocks = slice(first, first + layers)
            residual_blocks(x, out, skip_sum, step_bias[blocks], row_bias[blocks],
                            cond[first] if isinstance(cond, list) else cond, cond_mode, weights, first, layers,
                            self.launch)
            x, out = out, x
        x = F.conv1d(skip_sum, weights.skip_weight, weights.skip_bias).relu_()
        return F.conv1d(x, weights.final_weight, weights.final_bias).squeeze(1)

    def _conditioning(self, conditioning: Conditioning, weights: BlockWeights, batch: int,
                      dtype: torch.dtype) -> tuple[int, Any, Tensor]:
        """``(cond_mode, cond, row_bias (L, B, 2C))`` for the kernel from ``DiffWave.condition``'s result."""
        row_bias = weights.dilated_bias[:, None].expand(-1, batch, -1)
        if conditioning is None:
            return COND_NONE, None, row_bias
        if isinstance(conditioning, ProjectedPerStep):
            mel = conditioning.upsampled.to(dtype).contiguous()  # (B, n_mels, T)
            return COND_MEL, mel, row_bias + weights.cond_bias[:, None]
        projections = list(conditioning)
        if self.network.class_conditional:  # one (B, 2C, 1) vector per block
            return COND_NONE, None, row_bias + torch.stack([p.squeeze(-1).float() for p in projections])
        return COND_CACHED, [p.to(dtype).contiguous() for p in projections], row_bias
