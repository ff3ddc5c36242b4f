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

:class:`FusedDenoiser` runs :meth:`audiodiff.model.DiffWave.denoise` with one such kernel per
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

from audiodiff.model import Conditioning, DiffWave, ProjectedPerStep, WeightsByDtype, activation_dtype

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

    def __post_init__(self) -> None:
        if self.block_t < 16 or self.block_t & (self.block_t - 1):
            raise ValueError(f"block_t must be a power of two >= 16, got {self.block_t}")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"num_warps must be 1, 2, 4, 8 or 16, got {self.num_warps}")

    @classmethod
    def parse(cls, text: str) -> "Launch":
        """``"64x4"`` (block_t x num_warps), ``"128x8r168"`` (a register cap), ``"128x4s1"`` (stages)."""
        match = re.fullmatch(r"(\d+)x(\d+)(?:r(\d+))?(?:s(\d+))?", text)
        if match is None:
            raise ValueError(f"a launch is BLOCKxWARPS[rREGS][sSTAGES], e.g. 64x4, 128x8r168 or 128x4s1; got {text!r}")
        block_t, num_warps, maxnreg, num_stages = (None if g is None else int(g) for g in match.groups())
        return cls(block_t, num_warps, maxnreg, num_stages)

    def __str__(self) -> str:
        return (f"{self.block_t}x{self.num_warps}" + ("" if self.maxnreg is None else f"r{self.maxnreg}")
                + ("" if self.num_stages is None else f"s{self.num_stages}"))

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
    def residual_block_kernel(
        x_ptr, out_ptr, skip_ptr,  # (B, C, T) in the activation dtype; skip is updated in place
        step_bias_ptr,  # (B, C) float32: this block's diffusion projection, added to x before the conv
        row_bias_ptr,  # (B, 2C) float32: conv bias (+ class projection, + mel projection bias)
        cond_ptr,  # (B, 2C, T) cached projection, (B, n_mels, T) upsampled mel, or unused
        w_dilated_ptr,  # (3, 2C, C): tap, output channel, input channel
        w_cond_ptr,  # (2C, MEL_A + MEL_B): the mel projection, zero-padded to MEL_A + MEL_B inputs
        w_out_ptr,  # (2C, C); rows 0..C-1 make the residual, C..2C-1 the skip
        b_out_ptr,  # (2C,) float32
        T, dilation, n_mels,
        C: tl.constexpr, BLOCK_T: tl.constexpr, MEL_A: tl.constexpr, MEL_B: tl.constexpr,
        COND_MODE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ):
        row = tl.program_id(1).to(tl.int64)  # row * 2C * T passes 2**31 at large batches of long audio
        offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
        offs_c = tl.arange(0, C)
        in_range = offs_t < T
        dtype = x_ptr.dtype.element_ty
        x_row = x_ptr + row * C * T
        step_bias = tl.load(step_bias_ptr + row * C + offs_c)[:, None]
        gate = tl.full((C, BLOCK_T), 0.0, tl.float32)
        filt = tl.full((C, BLOCK_T), 0.0, tl.float32)
        for tap in range(3):  # a loop, not unrolled: one tap's weights live at a time
            t_tap = offs_t + (tap - 1) * dilation
            valid = ((t_tap >= 0) & (t_tap < T))[None, :]
            x_tap = tl.load(x_row + offs_c[:, None] * T + t_tap[None, :], mask=valid, other=0.0).to(tl.float32)
            # the conv zero-pads x + step bias, so the bias is added inside the signal only
            y_tap = tl.where(valid, x_tap + step_bias, 0.0).to(dtype)
            w_gate = tl.load(w_dilated_ptr + tap * 2 * C * C + offs_c[:, None] * C + offs_c[None, :])
            w_filt = tl.load(w_dilated_ptr + tap * 2 * C * C + (C + offs_c)[:, None] * C + offs_c[None, :])
            gate += tl.dot(w_gate, y_tap, input_precision=DOT_PRECISION)
            filt += tl.dot(w_filt, y_tap, input_precision=DOT_PRECISION)
        if COND_MODE == 1:
            cond_row = cond_ptr + row * 2 * C * T
            mask = in_range[None, :]
            gate += tl.load(cond_row + offs_c[:, None] * T + offs_t[None, :], mask=mask, other=0.0).to(tl.float32)
            filt += tl.load(cond_row + (C + offs_c)[:, None] * T + offs_t[None, :], mask=mask, other=0.0).to(tl.float32)
        if COND_MODE == 2:  # the mel's 1x1 projection, as a MEL_A-wide and a MEL_B-wide product
            mel_row = cond_ptr + row * n_mels * T
            offs_a = tl.arange(0, MEL_A)
            mel = tl.load(mel_row + offs_a[:, None] * T + offs_t[None, :],
                          mask=(offs_a[:, None] < n_mels) & in_range[None, :], other=0.0).to(dtype)
            w_gate = tl.load(w_cond_ptr + offs_c[:, None] * (MEL_A + MEL_B) + offs_a[None, :])
            w_filt = tl.load(w_cond_ptr + (C + offs_c)[:, None] * (MEL_A + MEL_B) + offs_a[None, :])
            gate += tl.dot(w_gate, mel, input_precision=DOT_PRECISION)
            filt += tl.dot(w_filt, mel, input_precision=DOT_PRECISION)
            if MEL_B > 0:
                offs_b = MEL_A + tl.arange(0, MEL_B)
                mel = tl.load(mel_row + offs_b[:, None] * T + offs_t[None, :],
                              mask=(offs_b[:, None] < n_mels) & in_range[None, :], other=0.0).to(dtype)
                w_gate = tl.load(w_cond_ptr + offs_c[:, None] * (MEL_A + MEL_B) + offs_b[None, :])
                w_filt = tl.load(w_cond_ptr + (C + offs_c)[:, None] * (MEL_A + MEL_B) + offs_b[None, :])
                gate += tl.dot(w_gate, mel, input_precision=DOT_PRECISION)
                filt += tl.dot(w_filt, mel, input_precision=DOT_PRECISION)
        gate += tl.load(row_bias_ptr + row * 2 * C + offs_c)[:, None]
        filt += tl.load(row_bias_ptr + row * 2 * C + C + offs_c)[:, None]
        # sigmoid(gate) * tanh(filt) from tl.exp (and tl.full, not tl.zeros, above): tl.sigmoid and
        # tl.zeros are jitted helpers, which Triton's interpreter cannot call when it was switched
        # on after triton was imported, as the tests do
        sigmoid_gate = 1.0 / (1.0 + tl.exp(-gate))
        tanh_filt = 2.0 / (1.0 + tl.exp(-2.0 * filt)) - 1.0
        hidden = (sigmoid_gate * tanh_filt).to(dtype)
        w_residual = tl.load(w_out_ptr + offs_c[:, None] * C + offs_c[None, :])
        w_skip = tl.load(w_out_ptr + (C + offs_c)[:, None] * C + offs_c[None, :])
        residual = tl.dot(w_residual, hidden, input_precision=DOT_PRECISION) + tl.load(b_out_ptr + offs_c)[:, None]
        skip = tl.dot(w_skip, hidden, input_precision=DOT_PRECISION) + tl.load(b_out_ptr + C + offs_c)[:, None]
        offsets = offs_c[:, None] * T + offs_t[None, :]
        mask = in_range[None, :]
        x_center = tl.load(x_row + offsets, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + row * C * T + offsets, ((x_center + residual) * 0.7071067811865476).to(dtype), mask=mask)
        skip_row = skip_ptr + row * C * T
        skip_sum = tl.load(skip_row + offsets, mask=mask, other=0.0).to(tl.float32) + skip
        tl.store(skip_row + offsets, skip_sum.to(skip_ptr.dtype.element_ty), mask=mask)

    return residual_block_kernel


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
            input_weight=network.input_projection.weight.detach().to(dtype),
            input_bias=network.input_projection.bias.detach().to(dtype),
            skip_weight=(network.skip_projection.weight.detach() / math.sqrt(len(blocks))).to(dtype),
            skip_bias=network.skip_projection.bias.detach().to(dtype),
            final_weight=network.output_projection.weight.detach().to(dtype),
            final_bias=network.output_projection.bias.detach().to(dtype),
        )


def residual_block(x: Tensor, out: Tensor, skip_sum: Tensor, step_bias: Tensor, row_bias: Tensor,
                   cond: Tensor | None, cond_mode: int, weights: BlockWeights, layer: int,
                   launch: Launch = Launch()) -> None:
    """One residual block in one kernel: writes ``out`` ``(B, C, T)`` and adds the skip into ``skip_sum``.

    ``x`` ``(B, C, T)`` contiguous; ``step_bias`` ``(B, C)`` and ``row_bias`` ``(B, 2C)`` float32;
    ``cond`` per ``cond_mode`` (``(B, 2C, T)``, ``(B, n_mels, T)`` or ``None``). Products of
    float32 activations use TF32 on a GPU (IEEE float32 in the interpreter). ``maxnreg`` caps the
    registers per thread (more programs per SM, some spilling).
    """
    batch, channels, length = x.shape
    n_mels = cond.shape[1] if cond_mode == COND_MEL else 0
    cond_weight = weights.cond_weight[layer] if cond_mode == COND_MEL else weights.out_weight[layer]
    mel_a, mel_b = mel_blocks(n_mels) if cond_mode == COND_MEL else (16, 0)
    grid = (math.ceil(length / launch.block_t), batch)
    _kernel(interpreting())[grid](
        x, out, skip_sum, step_bias, row_bias, x if cond is None else cond,
        weights.dilated[layer], cond_weight, weights.out_weight[layer], weights.out_bias[layer],
        length, weights.dilations[layer], n_mels,
        C=channels, BLOCK_T=launch.block_t, MEL_A=mel_a, MEL_B=mel_b, COND_MODE=cond_mode,
        DOT_PRECISION="ieee" if interpreting() else "tf32", **launch.options(),
    )


class FusedDenoiser:
    """``DiffWave.denoise`` with one fused kernel per residual block: ``(audio (B, T), step (B,),
    conditioning) -> eps (B, T)``.

    The activation dtype is the autocast dtype active at the call (float32 outside autocast). The
    weights are read from ``network`` once per dtype, at the first call: build a new one after
    changing the weights. ``launch`` sets samples, warps and registers per program; ``read_mel``
    is described at :attr:`prefers_mel`.
    """

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
        self.prefers_mel = read_mel
        #: ``weights(dtype)``: the blocks' weights in ``dtype`` on the network's current device.
        self.weights = WeightsByDtype(network, BlockWeights.of)

    @torch.inference_mode()
    def __call__(self, audio: Tensor, step: Tensor, conditioning: Conditioning) -> Tensor:
        reason = unsupported_reason(self.network, audio.device)
        if reason is not None:  # e.g. the model was moved to the CPU after fusing
            raise RuntimeError(reason)
        dtype = activation_dtype(audio.device)
        with torch.autocast(audio.device.type, enabled=False):
            return self._denoise(audio.float(), step, conditioning, dtype)

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
        for layer in range(len(weights.dilations)):
            residual_block(x, out, skip_sum, step_bias[layer].contiguous(), row_bias[layer].contiguous(),
                           cond[layer] if isinstance(cond, list) else cond, cond_mode, weights, layer,
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
