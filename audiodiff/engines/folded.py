"""The folded engine: DiffWave's residual blocks as time-major matrix products, for the CPU.

Eager DiffWave on a CPU spends its step in oneDNN's convolutions over ``(B, C, T)`` (68 % of a
bf16 step on the development machine) and in ten elementwise passes per block (tanh alone 11 %).
:class:`FoldedDenoiser` computes the same function (up to float rounding) with fewer and faster
operations:

* **Time-major activations** ``(T, C)``, one batch row at a time. A dilation tap is then a row
  offset into a zero-padded copy of the block input, so the dilated convolution is three matrix
  products ``(T, C) @ (C, 2C)`` accumulating into one output, at the speed of a plain GEMM.
* **Scales and biases folded into the weights** once per dtype (in float64):

  - the ``1 / sqrt(2)`` of every residual add: the engine keeps ``u_k = s_k x_k`` with
    ``s_k = sqrt(2)^k``, so the residual update is ``u += (s_k W_res) g`` (the GEMM accumulates it
    in place) and block ``k`` reads ``u`` through taps divided by ``s_k``. Every 8 blocks ``u`` is
    multiplied by ``1/16`` (exact in any binary float), which keeps it within 16x of ``x`` (fp16-safe);
  - the residual biases are carried forward into the next blocks' step biases, the skip biases
    and ``1 / sqrt(L)`` into the skip projection, the dilated convolution's bias into the
    conditioning's;
  - the gate ``sigmoid(g) * tanh(f)`` becomes one sigmoid over both halves and one ``addcmul``:
    ``tanh(f) = 1 - 2 sigmoid(-2 f)``, with the ``-2`` folded into the filter half's weights
    (bf16 ``tanh`` alone costs 3x a ``sigmoid`` on this CPU).

* **Conditioning once per utterance**, in the engine's own layout: :meth:`FoldedDenoiser.condition`
  projects the upsampled mel into every block as ``(B, T, 2C)`` (biases and gate scale included),
  which ``AudioDiffusion.vocode`` caches when it fits its budget; otherwise, and in the chunked
  path, the engine projects the upsampled mel itself at every step.

The activation dtype is the autocast dtype active at the call (float32 outside autocast), as for
the other engines; products accumulate in float32 inside the GEMMs. Measurements are in
``benchmarks/RESULTS.md`` ("The folded engine on this CPU").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from audiodiff.engines.weights import WeightsByDtype, activation_dtype
from audiodiff.network.diffwave import Conditioning, DiffWave, ProjectedPerStep

#: ``u`` is multiplied by ``1 / 16`` after every 8th block (``sqrt(2)^8 = 16``, a power of two).
RESCALE_EVERY = 8


@dataclass(frozen=True)
class FoldedProjections:
    """The engine's cached mel conditioning: one ``(B, T, 2C)`` tensor per block, biases and gate
    scale included. Not a sequence on purpose: only :class:`FoldedDenoiser` can read it."""

    per_block: list[Tensor]


@dataclass(frozen=True)
class FoldedWeights:
    """A network's weights in the folded engine's form, in the activation ``dtype`` (biases that
    enter float32 arithmetic stay float32). Shapes are ``(in, out)`` for ``x @ W``."""

    taps: Tensor  # (L, 3, C, 2C): the dilated convolution's taps (x[t-d], x[t], x[t+d]) / s_k, gate-scaled
    conv_bias: Tensor  # (L, 2C): the dilated convolution's bias, gate-scaled
    cond_weight: Tensor | None  # (L, n_mels, 2C): the mel projections, gate-scaled
    cond_bias: Tensor | None  # (L, 2C): conv_bias plus the mel projections' bias, gate-scaled
    gate_scale: Tensor  # (2C,) float32: 1 for the gate half, -2 for the filter half
    step_weight: Tensor  # (L, H, C) float32: the step projections times s_k
    step_bias: Tensor  # (L, C) float32: their biases times s_k, plus the earlier residual biases
    residual: Tensor  # (L, C, C): the residual half of the output projection, times s_k
    skip: Tensor  # (L, C, C): the skip half of the output projection
    rescale_after: tuple[bool, ...]  # multiply u by 1/16 after block k
    dilations: tuple[int, ...]
    input_weight: Tensor  # (C,) float32
    input_bias: Tensor  # (C,) float32
    skip_projection: Tensor  # (C, C): times 1 / sqrt(L)
    skip_projection_bias: Tensor  # (C,): plus the projected sum of the skip biases
    final_weight: Tensor  # (C, 1)
    final_bias: Tensor  # (1,)

    @classmethod
    def of(cls, network: DiffWave, dtype: torch.dtype) -> "FoldedWeights":
        blocks = list(network.residual_layers)
        channels = network.config.residual_channels
        f64 = lambda t: t.detach().double()  # noqa: E731
        gate_scale = torch.ones(2 * channels, dtype=torch.float64, device=blocks[0].dilated_conv.weight.device)
        gate_scale[channels:] = -2.0
        scales, offsets, rescale_after = _residual_scales(
            [f64(b.output_projection.bias[:channels]) for b in blocks])
        taps = torch.stack([f64(b.dilated_conv.weight).permute(2, 1, 0) / s for b, s in zip(blocks, scales)])
        conv_bias = torch.stack([f64(b.dilated_conv.bias) for b in blocks]) * gate_scale
        cond_weight = cond_bias = None
        if network.conditional:
            cond_weight = torch.stack([f64(b.conditioner_projection.weight[:, :, 0]).t() for b in blocks]) * gate_scale
            cond_bias = conv_bias + torch.stack([f64(b.conditioner_projection.bias) for b in blocks]) * gate_scale
        out_weight = torch.stack([f64(b.output_projection.weight[:, :, 0]).t() for b in blocks])  # (L, C, 2C)
        scale = torch.tensor(scales, dtype=torch.float64, device=gate_scale.device)
        skip_sum_bias = sum(f64(b.output_projection.bias[channels:]) for b in blocks)
        skip_projection = f64(network.skip_projection.weight[:, :, 0]).t() / math.sqrt(len(blocks))
        return cls(
            taps=(taps * gate_scale).to(dtype).contiguous(),
            conv_bias=conv_bias.to(dtype),
            cond_weight=None if cond_weight is None else cond_weight.to(dtype).contiguous(),
            cond_bias=None if cond_bias is None else cond_bias.to(dtype),
            gate_scale=gate_scale.float(),
            step_weight=(torch.stack([f64(b.diffusion_projection.weight).t() for b in blocks])
                         * scale[:, None, None]).float(),
            step_bias=(torch.stack([f64(b.diffusion_projection.bias) for b in blocks]) * scale[:, None]
                       + torch.stack(offsets)).float(),
            residual=(out_weight[:, :, :channels] * scale[:, None, None]).to(dtype).contiguous(),
            skip=out_weight[:, :, channels:].to(dtype).contiguous(),
            rescale_after=tuple(rescale_after),
            dilations=tuple(b.dilated_conv.dilation[0] for b in blocks),
            input_weight=f64(network.input_projection.weight[:, 0, 0]).float(),
            input_bias=f64(network.input_projection.bias).float(),
            skip_projection=skip_projection.to(dtype).contiguous(),
            skip_projection_bias=(f64(network.skip_projection.bias) + skip_sum_bias @ skip_projection).to(dtype),
            final_weight=f64(network.output_projection.weight[:, :, 0]).t().to(dtype).contiguous(),
            final_bias=f64(network.output_projection.bias).to(dtype),
        )


def _residual_scales(residual_biases: Sequence[Tensor]) -> tuple[list[float], list[Tensor], list[bool]]:
    """The scale ``s_k`` of ``u`` entering block ``k``, the bias offset ``beta_k`` it lacks, and where ``u`` is rescaled.

    ``u_k = s_k x_k - beta_k``: each block adds ``s_k (W_res g + b_res)`` without the bias
    (``beta`` grows by ``s_k b_res`` instead), the scale grows by ``sqrt(2)`` per block, and after
    every :data:`RESCALE_EVERY` blocks ``u``, ``s`` and ``beta`` are divided by 16.
    """
    scale, offset = 1.0, torch.zeros_like(residual_biases[0])
    scales, offsets, rescale_after = [], [], []
    for k, bias in enumerate(residual_biases):
        scales.append(scale)
        offsets.append(offset)
        offset = offset + scale * bias
        scale = scale * math.sqrt(2.0)
        rescale = (k + 1) % RESCALE_EVERY == 0
        if rescale:
            scale, offset = scale / 16.0, offset / 16.0
        rescale_after.append(rescale)
    return scales, offsets, rescale_after


def _project_mel(weights: FoldedWeights, mel_rows: Tensor) -> list[Tensor]:
    """Upsampled mel ``(N, n_mels)`` -> each block's folded conditioning ``(N, 2C)``, biases included."""
    mel_rows = mel_rows.to(weights.taps.dtype)
    return [torch.addmm(weights.cond_bias[k], mel_rows, weights.cond_weight[k]) for k in range(len(weights.dilations))]


class FoldedDenoiser:
    """``DiffWave.denoise`` as time-major matrix products: ``(audio (B, T), step (B,),
    conditioning) -> eps (B, T)``.

    ``conditioning`` is what :meth:`condition` or ``DiffWave.condition`` returns (any mode:
    mel, cached projections, class vectors, ``None``). The weights are folded from ``network``
    once per device and dtype, at the first call, and again after any of them changes. An
    :class:`~audiodiff.engines.base.Engine`.
    """

    name = "folded"
    #: ``vocode`` may cache this engine's conditioning (see :meth:`condition`).
    reads_mel = False

    def __init__(self, network: DiffWave) -> None:
        self.network = network
        #: ``weights(dtype)``: the folded weights in ``dtype`` on the network's current device.
        self.weights = WeightsByDtype(network, FoldedWeights.of)

    @torch.inference_mode()
    def condition(self, mel: Tensor | None, cache_projections: bool = True, *,
                  labels: Tensor | None = None) -> FoldedProjections | Conditioning:
        """``DiffWave.condition`` for this engine: mel ``(B, n_mels, frames)`` -> the per-block
        projections ``(B, T, 2C)`` in the autocast dtype (or, without ``cache_projections``, the
        upsampled mel, projected at every step). Without a mel (class ``labels`` ``(B,)`` or
        nothing), the network's own conditioning, which :meth:`denoise` reads as well."""
        if mel is None:
            return self.network.condition(None, cache_projections, labels=labels)
        upsampled = self.network.condition(mel, cache_projections=False)
        if not cache_projections:
            return upsampled
        dtype = activation_dtype(mel.device)
        weights = self.weights(dtype)
        with torch.autocast(mel.device.type, enabled=False):
            mel_rows = upsampled.upsampled.transpose(1, 2).flatten(0, 1)  # (B * T, n_mels)
            return FoldedProjections([p.unflatten(0, (mel.shape[0], -1)) for p in _project_mel(weights, mel_rows)])

    @torch.inference_mode()
    def denoise(self, audio: Tensor, step: Tensor, conditioning: Conditioning | FoldedProjections) -> Tensor:
        """Noisy ``audio`` ``(B, T)``, training steps ``step`` ``(B,)`` -> predicted noise ``(B, T)`` float32."""
        dtype = activation_dtype(audio.device)
        with torch.autocast(audio.device.type, enabled=False):
            weights = self.weights(dtype)
            step = torch.as_tensor(step, device=audio.device)
            if step.dim() == 0:
                step = step.expand(audio.shape[0])
            embedding = self.network.diffusion_embedding(step).float()  # (B, H)
            step_bias = (torch.einsum("bh,lhc->blc", embedding, weights.step_weight)
                         + weights.step_bias).to(dtype)  # (B, L, C)
            rows = [self._denoise_row(weights, audio[row].float(), step_bias[row], self._starts(conditioning, row, weights))
                    for row in range(audio.shape[0])]
            return torch.stack(rows).float()

    __call__ = denoise

    def _starts(self, conditioning: Any, row: int, weights: FoldedWeights) -> list[Tensor]:
        """What each block's pre-activation starts from before the taps are added, for batch ``row``:
        ``(T, 2C)`` for mel conditioning, ``(2C,)`` for class vectors or none."""
        if conditioning is None:
            return list(weights.conv_bias)
        if isinstance(conditioning, FoldedProjections):
            return [p[row] for p in conditioning.per_block]
        if isinstance(conditioning, ProjectedPerStep):
            return _project_mel(weights, conditioning.upsampled[row].t())
        gate_scale, dtype = weights.gate_scale, weights.taps.dtype
        if self.network.class_conditional:  # one (B, 2C, 1) vector per block
            return [(p[row, :, 0].float() * gate_scale).to(dtype) + weights.conv_bias[k]
                    for k, p in enumerate(conditioning)]
        # DiffWave's own cached projections (B, 2C, T), biases included
        return [torch.addcmul(weights.conv_bias[k].float(), p[row].t().float(), gate_scale).to(dtype)
                for k, p in enumerate(conditioning)]

    @staticmethod
    def _denoise_row(weights: FoldedWeights, audio: Tensor, step_bias: Tensor, starts: list[Tensor]) -> Tensor:
        """One batch row: ``audio`` ``(T,)`` float32, ``step_bias`` ``(L, C)`` -> eps ``(T,)``."""
        dtype = weights.taps.dtype
        length, channels = audio.shape[0], weights.input_bias.shape[0]
        margin = max(weights.dilations)
        padded = torch.zeros(length + 2 * margin, channels, dtype=dtype, device=audio.device)
        inner = padded[margin: margin + length]  # the block input; the margins stay zero
        u = torch.addcmul(weights.input_bias, audio[:, None], weights.input_weight).relu_().to(dtype)  # (T, C)
        skip = torch.zeros_like(u)
        for k, dilation in enumerate(weights.dilations):
            torch.add(u, step_bias[k], out=inner)
            taps = weights.taps[k]
            y = torch.addmm(starts[k], padded[margin - dilation: margin - dilation + length], taps[0])
            y.addmm_(inner, taps[1])
            y.addmm_(padded[margin + dilation: margin + dilation + length], taps[2])
            y.sigmoid_()  # (T, 2C): sigmoid(g) and sigmoid(-2 f)
            gated = torch.addcmul(y[:, :channels], y[:, :channels], y[:, channels:], value=-2.0)  # sigmoid(g) tanh(f)
            u.addmm_(gated, weights.residual[k])
            skip.addmm_(gated, weights.skip[k])
            if weights.rescale_after[k]:
                u.mul_(1.0 / 16.0)
        hidden = torch.addmm(weights.skip_projection_bias, skip, weights.skip_projection).relu_()
        return torch.addmm(weights.final_bias, hidden, weights.final_weight)[:, 0]
