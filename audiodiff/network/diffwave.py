"""The DiffWave denoiser: gated residual blocks with dilated 1-D convolutions.

The network predicts the noise ``eps`` in ``x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps``
given ``x_t``, a (possibly fractional) diffusion step ``t`` and, in conditional mode, a mel
spectrogram. Layer for layer it is the network of the reference implementation (Kong et al.,
2021; PyPI ``diffwave``), so reference checkpoints convert without loss
(:func:`audiodiff.pipeline.reference.import_diffwave`), but:

* the mel upsampler's strides are derived from any hop length, not fixed at 16 x 16;
* the mel conditioning (upsampling and the 1x1 projection into every block) is computed once
  per utterance by :meth:`DiffWave.condition` and reused at every sampling step;
* ``n_mels=None`` builds a network without mel conditioning: unconditional, or
  class-conditional with ``num_classes`` (DiffWave's label conditioning: a class embedding
  projected into every residual block, plus a learned *null class* used for unconditional
  sampling and classifier-free guidance).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

EMBEDDING_DIM = 128
EMBEDDING_HIDDEN = 512
CLASS_EMBEDDING_DIM = 128


@dataclass(frozen=True)
class DenoiserConfig:
    """Size and wiring of the network.

    ``n_mels=None`` makes a model without mel conditioning; ``num_classes`` (only then) makes
    it class-conditional, with class ids ``0 .. num_classes - 1`` and the null class
    ``num_classes``. ``max_steps`` is the number of training diffusion steps (the size of the
    step-embedding table).

    ``mel_shift`` and ``mel_scale`` standardise the mel where it enters the network: the
    upsampler sees ``(mel - mel_shift) / mel_scale``. The defaults (0, 1) are DiffWave's raw
    input, and every model file without these fields; a ``hifigan`` mel (natural log, about
    -11.5 to 2, 99 % of its values negative) otherwise reaches the upsampler's leaky ReLUs on
    their 0.4 slope, which passes only about 2 % of its variation over time to the blocks
    (benchmarks/RESULTS.md, "Diagnosis of speech-22k"). ``mel_shift=-4, mel_scale=2`` (the
    mean and standard deviation of the training speech's ``hifigan`` mel) centres it.
    """

    residual_channels: int = 64
    residual_layers: int = 30
    dilation_cycle: int = 10
    n_mels: int | None = 80
    hop_length: int = 256
    max_steps: int = 50
    num_classes: int | None = None
    mel_shift: float = 0.0
    mel_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.mel_scale > 0:
            raise ValueError(f"mel_scale must be positive, got {self.mel_scale}")
        if self.residual_layers < 1 or self.residual_channels < 1 or self.dilation_cycle < 1:
            raise ValueError("residual_layers, residual_channels and dilation_cycle must be >= 1")
        if self.max_steps < 2:
            raise ValueError("max_steps must be at least 2")
        if self.num_classes is not None:
            if self.num_classes < 1:
                raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
            if self.n_mels is not None:
                raise ValueError("a model is either mel-conditioned (n_mels) or class-conditional (num_classes)")

    @property
    def receptive_field(self) -> int:
        """Samples seen by one output sample through the dilated convolutions."""
        dilations = [2 ** (i % self.dilation_cycle) for i in range(self.residual_layers)]
        return 1 + 2 * sum(dilations)

    @property
    def null_class(self) -> int | None:
        """The class id of the learned null class (``num_classes``), or ``None``."""
        return self.num_classes

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict; ``num_classes`` only when set and the mel standardisation only
        when not the identity, so files of models without them stay as before."""
        data = dataclasses.asdict(self)
        if self.num_classes is None:
            del data["num_classes"]
        if self.mel_shift == 0.0 and self.mel_scale == 1.0:
            del data["mel_shift"], data["mel_scale"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DenoiserConfig":
        return cls(**data)


#: Named sizes. ``base`` and ``large`` are the DiffWave paper's; ``tiny`` is for CPU tests/demos.
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(residual_channels=32, residual_layers=12, dilation_cycle=6),
    "base": dict(residual_channels=64, residual_layers=30, dilation_cycle=10),
    "large": dict(residual_channels=128, residual_layers=30, dilation_cycle=10),
}


def denoiser_config(size: str, **overrides: Any) -> DenoiserConfig:
    """The named size (``tiny``, ``base``, ``large``) with fields replaced by ``overrides``."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(SIZES)}")
    return DenoiserConfig(**{**SIZES[size], **overrides})


def upsample_strides(hop_length: int) -> tuple[int, ...]:
    """Split ``hop_length`` into two transposed-conv strides whose product is the hop.

    Picks the factor pair closest to the square root (256 -> (16, 16), 300 -> (15, 20)),
    which keeps both kernels small; a prime hop gets a single stage.
    """
    if hop_length < 1:
        raise ValueError(f"hop_length must be positive, got {hop_length}")
    best = max(a for a in range(1, math.isqrt(hop_length) + 1) if hop_length % a == 0)
    if best == 1:
        return (hop_length,)
    return (best, hop_length // best)


def _kaiming_conv1d(*args: Any, **kwargs: Any) -> nn.Conv1d:
    layer = nn.Conv1d(*args, **kwargs)
    nn.init.kaiming_normal_(layer.weight)
    return layer


class DiffusionEmbedding(nn.Module):
    """Fractional step ``(B,)`` -> embedding ``(B, 512)`` (sinusoidal table, lerped, then MLP)."""

    def __init__(self, max_steps: int) -> None:
        super().__init__()
        self.register_buffer("table", self._build_table(max_steps), persistent=False)
        self.projection1 = nn.Linear(EMBEDDING_DIM, EMBEDDING_HIDDEN)
        self.projection2 = nn.Linear(EMBEDDING_HIDDEN, EMBEDDING_HIDDEN)

    @staticmethod
    def _build_table(max_steps: int) -> Tensor:
        steps = torch.arange(max_steps).unsqueeze(1)
        dims = torch.arange(EMBEDDING_DIM // 2).unsqueeze(0)
        table = steps * 10.0 ** (dims * 4.0 / (EMBEDDING_DIM // 2 - 1))
        return torch.cat([torch.sin(table), torch.cos(table)], dim=1)

    def forward(self, step: Tensor) -> Tensor:
        step = step.float()
        low = torch.floor(step).long().clamp(0, self.table.shape[0] - 1)
        high = torch.ceil(step).long().clamp(0, self.table.shape[0] - 1)
        frac = (step - low).unsqueeze(-1)
        x = self.table[low] + (self.table[high] - self.table[low]) * frac
        x = F.silu(self.projection1(x))
        return F.silu(self.projection2(x))


class MelUpsampler(nn.Module):
    """Mel ``(B, n_mels, frames)`` -> ``(B, n_mels, frames * hop_length)``.

    A stack of 2-D transposed convolutions over (mel bin, time) with leaky ReLU, one per stride
    of :func:`upsample_strides`, as in DiffWave (which hard-codes two stages of 16).
    """

    def __init__(self, hop_length: int) -> None:
        super().__init__()
        self.hop_length = hop_length
        self.stages = nn.ModuleList(
            nn.ConvTranspose2d(1, 1, (3, 2 * s), stride=(1, s), padding=(1, s // 2))
            for s in upsample_strides(hop_length)
        )

    def forward(self, mel: Tensor) -> Tensor:
        frames = mel.shape[-1]
        x = mel.unsqueeze(1)
        for stage in self.stages:
            x = F.leaky_relu(subpixel_transposed_conv(x, stage), 0.4)
        return x.squeeze(1)[..., : frames * self.hop_length]


def subpixel_kernel(weight: Tensor, stride: int, padding: int) -> Tensor:
    """The ``(s, 1, 3, 3)`` convolution kernel whose output channel ``j`` is phase ``j`` of a
    transposed convolution with ``weight`` ``(1, 1, 3, 2s)``, stride ``(1, s)``, padding ``(1, p)``.

    Output sample ``o = q s + j`` of the transposed convolution is ``sum_g in[g] w[o + p - g s]``
    over the input samples ``g`` where the index is in ``[0, 2s)``: with ``j + p = a s + r``
    those are ``g = q + a`` (tap ``r``) and ``g = q + a - 1`` (tap ``s + r``), so every phase is
    a 3-tap correlation over ``g - q`` in ``{-1, 0, 1}``, with the other tap zero. Over mel bins
    a transposed convolution is a correlation with the flipped kernel. Differentiable in ``weight``.
    """
    phase = torch.arange(stride, device=weight.device)
    above, tap = torch.div(phase + padding, stride, rounding_mode="floor"), (phase + padding) % stride
    half = above[:, None] + 1 - torch.arange(3, device=weight.device)  # (s, 3): which half of the kernel
    used = (half >= 0) & (half <= 1)
    index = (half.clamp(0, 1) * stride + tap[:, None])  # (s, 3) into the kernel's 2s time taps
    flipped = weight[0, 0].flip(0)  # (3, 2s)
    kernel = flipped[:, index] * used  # (3, s, 3): mel offset, phase, time offset
    return kernel.permute(1, 0, 2).unsqueeze(1)


def subpixel_transposed_conv(x: Tensor, stage: nn.ConvTranspose2d) -> Tensor:
    """``stage(x)`` for ``x`` ``(B, 1, n_mels, L)``, as one ordinary convolution with one output
    channel per phase and a reshape (sub-pixel convolution): ``(B, 1, n_mels, (L + 1) s - 2p)``.

    It computes the same sums as the transposed convolution, which for one channel is slow on
    CUDA (7 % of the fused engine's time in benchmarks/RESULTS.md); the 3 x 3 convolution with
    ``s`` output channels is a well-trodden cuDNN/oneDNN path.
    """
    (_, stride), (_, padding) = stage.stride, stage.padding
    if stage.kernel_size != (3, 2 * stride) or stage.padding[0] != 1:
        raise ValueError(f"expected a (3, 2s) kernel with mel padding 1, got {stage}")
    length = x.shape[-1]
    kernel = subpixel_kernel(stage.weight, stride, padding).to(x.dtype)
    bias = None if stage.bias is None else stage.bias.to(x.dtype).expand(stride)
    # time padding (1, 2): phase row q reads input samples q - 1 .. q + 1 for q in 0 .. L
    phases = F.conv2d(F.pad(x, (1, 2, 1, 1)), kernel, bias)  # (B, s, n_mels, L + 1)
    interleaved = rearrange(phases, "b phase mel row -> b 1 mel (row phase)")  # output t = row * s + phase
    return interleaved[..., : (length + 1) * stride - 2 * padding]


class ResidualBlock(nn.Module):
    """One gated residual block: ``(B, C, T)`` -> residual ``(B, C, T)``, skip ``(B, C, T)``."""

    def __init__(self, channels: int, dilation: int, n_mels: int | None, class_conditional: bool = False) -> None:
        super().__init__()
        self.dilated_conv = _kaiming_conv1d(channels, 2 * channels, 3, padding=dilation, dilation=dilation)
        self.diffusion_projection = nn.Linear(EMBEDDING_HIDDEN, channels)
        self.conditioner_projection = (
            _kaiming_conv1d(n_mels, 2 * channels, 1) if n_mels is not None else None
        )
        self.label_projection = nn.Linear(CLASS_EMBEDDING_DIM, 2 * channels) if class_conditional else None
        self.output_projection = _kaiming_conv1d(channels, 2 * channels, 1)

    def forward(self, x: Tensor, step_embedding: Tensor, conditioner: Tensor | None) -> tuple[Tensor, Tensor]:
        """``conditioner`` is this block's precomputed projection, ``(B, 2C, T)`` for a mel or
        ``(B, 2C, 1)`` for a class (broadcast over time), or ``None``."""
        y = x + self.diffusion_projection(step_embedding).unsqueeze(-1)
        y = self.dilated_conv(y)
        if conditioner is not None:
            y = y + conditioner
        gate, filt = torch.chunk(y, 2, dim=1)
        y = torch.sigmoid(gate) * torch.tanh(filt)
        residual, skip = torch.chunk(self.output_projection(y), 2, dim=1)
        return (x + residual) / math.sqrt(2.0), skip


class ProjectedPerStep(Sequence[Tensor]):
    """Per-block conditioner projections computed on access from the cached upsampled mel.

    The memory-saving form of :data:`Conditioning`: the upsampling is still done once per
    utterance, but each block's 1x1 projection is recomputed at every step.
    """

    def __init__(self, upsampled: Tensor, layers: Sequence["ResidualBlock"]) -> None:
        self.upsampled = upsampled
        self.layers = layers

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index):  # type: ignore[override]
        return self.layers[index].conditioner_projection(self.upsampled)


Conditioning = Sequence[Tensor] | None
"""Per-block conditioner projections, each ``(B, 2C, T)`` (mel) or ``(B, 2C, 1)`` (class);
``None`` for unconditional models."""


class DiffWave(nn.Module):
    """The denoiser. ``forward(audio (B, T), step (B,), mel (B, n_mels, T // hop) | None) -> eps (B, T)``."""

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        self.config = config
        channels = config.residual_channels
        self.input_projection = _kaiming_conv1d(1, channels, 1)
        self.diffusion_embedding = DiffusionEmbedding(config.max_steps)
        self.mel_upsampler = MelUpsampler(config.hop_length) if config.n_mels is not None else None
        class_conditional = config.num_classes is not None
        # one extra row: the learned null class, used for label dropout and guidance
        self.class_embedding = nn.Embedding(config.num_classes + 1, CLASS_EMBEDDING_DIM) if class_conditional else None
        self.residual_layers = nn.ModuleList(
            ResidualBlock(channels, 2 ** (i % config.dilation_cycle), config.n_mels, class_conditional)
            for i in range(config.residual_layers)
        )
        self.skip_projection = _kaiming_conv1d(channels, channels, 1)
        self.output_projection = _kaiming_conv1d(channels, 1, 1)
        nn.init.zeros_(self.output_projection.weight)

    @property
    def conditional(self) -> bool:
        """Mel-conditioned (a vocoder)."""
        return self.config.n_mels is not None

    @property
    def class_conditional(self) -> bool:
        return self.config.num_classes is not None

    def conditioning_bytes(self, batch: int, samples: int, element_size: int = 4) -> int:
        """Memory that cached per-block projections of ``batch`` x ``samples`` would take."""
        channels = 2 * self.config.residual_channels
        return batch * samples * channels * self.config.residual_layers * element_size

    def condition(self, mel: Tensor | None, cache_projections: bool = True, *,
                  labels: Tensor | None = None) -> Conditioning:
        """Everything that depends on the mel (or class) alone, computed once per utterance.

        ``mel`` is ``(B, n_mels, frames)``; returns one ``(B, 2C, frames * hop)`` tensor per block.
        With ``cache_projections=False`` only the upsampled mel is kept and the per-block 1x1
        projections are recomputed when used (:class:`ProjectedPerStep`): the same values for
        ``1 / residual_layers`` of the memory.

        A class-conditional model takes ``labels`` ``(B,)`` (class ids, ``num_classes`` for the
        null class) instead and returns one ``(B, 2C, 1)`` tensor per block. An unconditional
        model takes neither and returns ``None``.
        """
        if self.class_conditional:
            if mel is not None:
                raise ValueError("this model is class-conditional; pass labels, not a mel")
            return self._condition_on_labels(labels)
        if labels is not None:
            raise ValueError("this model is not class-conditional; do not pass labels")
        if not self.conditional:
            if mel is not None:
                raise ValueError("this model is unconditional; do not pass a mel")
            return None
        if mel is None:
            raise ValueError("this model is mel-conditioned; a mel is required")
        if mel.dim() != 3 or mel.shape[1] != self.config.n_mels:
            raise ValueError(f"expected mel (B, {self.config.n_mels}, frames), got {tuple(mel.shape)}")
        if self.config.mel_shift != 0.0 or self.config.mel_scale != 1.0:
            mel = (mel - self.config.mel_shift) / self.config.mel_scale
        upsampled = self.mel_upsampler(mel)
        if not cache_projections:
            return ProjectedPerStep(upsampled, self.residual_layers)
        return [layer.conditioner_projection(upsampled) for layer in self.residual_layers]

    def _condition_on_labels(self, labels: Tensor | None) -> list[Tensor]:
        """Class ids ``(B,)`` -> one ``(B, 2C, 1)`` projection of the class embedding per block."""
        if labels is None:
            raise ValueError("this model is class-conditional; labels (B,) are required "
                             f"(use {self.config.null_class} for the null class)")
        labels = torch.as_tensor(labels, device=self.class_embedding.weight.device)
        if labels.dim() != 1 or labels.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"labels must be a 1-D integer tensor, got {tuple(labels.shape)} {labels.dtype}")
        if labels.numel() and (labels.min() < 0 or labels.max() > self.config.null_class):
            raise ValueError(f"class ids must be in 0..{self.config.null_class}, got {labels.tolist()}")
        embedding = self.class_embedding(labels)
        return [layer.label_projection(embedding).unsqueeze(-1) for layer in self.residual_layers]

    def denoise(self, audio: Tensor, step: Tensor, conditioning: Conditioning) -> Tensor:
        """Predict the noise. ``audio`` ``(B, T)``, ``step`` ``(B,)`` or scalar, fractional allowed."""
        step = torch.as_tensor(step, device=audio.device)
        if step.dim() == 0:
            step = step.expand(audio.shape[0])
        x = F.relu(self.input_projection(audio.unsqueeze(1)))
        embedding = self.diffusion_embedding(step)
        skip_sum = torch.zeros_like(x)
        for i, layer in enumerate(self.residual_layers):
            x, skip = layer(x, embedding, None if conditioning is None else conditioning[i])
            skip_sum = skip_sum + skip
        x = skip_sum / math.sqrt(len(self.residual_layers))
        x = F.relu(self.skip_projection(x))
        return self.output_projection(x).squeeze(1)

    def forward(self, audio: Tensor, step: Tensor, mel: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        return self.denoise(audio, step, self.condition(mel, labels=labels))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
