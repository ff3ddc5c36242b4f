"""Chunked synthesis: long mels vocoded in bounded memory, with the same audio as one piece.

A DiffWave network is local in time: an output sample depends on the input samples within half
its receptive field, and on the mel frames around it through the upsampler. So at every sampler
step, the noise prediction for a long utterance can be computed window by window: each window is
its chunk plus a *halo* of frames on both sides, wide enough for the receptive field and the
upsampler, and only the chunk's own part of each window's prediction is kept. Because the halo
covers everything a kept sample depends on, the stitched prediction equals the one-piece
prediction (up to float rounding of convolutions over other lengths): there is no seam to hide
and no cross-fade to tune, for every sampler, stochastic or not.

What grows with the utterance are a few ``(B, T)`` buffers (the sample, the prediction, the
noise: 4 bytes per sample each); the network's activations and the upsampled mel exist for one
window at a time. The price is that the mel conditioning of a window is recomputed at every step
instead of once per utterance (a few percent of a step for the recipes' sizes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from audiodiff.engines.base import EagerEngine, Engine
from audiodiff.network.diffwave import DenoiserConfig, DiffWave

#: Mel frames on each side of a window that the upsampler's transposed convolutions need
#: (each of its two stages of stride ``s`` has a kernel of ``2 s``: one frame per side each).
UPSAMPLER_MARGIN_FRAMES = 2

StepFn = Callable[[Tensor, float], Tensor]
"""``(x (B, T), sigma) -> steps (B,)``: the (fractional) diffusion step for a noise level."""


@dataclass(frozen=True)
class Chunk:
    """Frames ``[start, stop)`` are predicted from the window of frames ``[window_start, window_stop)``."""

    start: int
    stop: int
    window_start: int
    window_stop: int

    @property
    def offset(self) -> int:
        """Frames of the window before the chunk (the left halo, shorter at the start)."""
        return self.start - self.window_start


def halo_frames(config: DenoiserConfig) -> int:
    """Mel frames each side of a chunk so that its samples see exactly what they see in one piece.

    Half the receptive field of the dilated convolutions, rounded up to whole frames, plus the
    upsampler's margin: ``ceil((receptive_field - 1) / 2 / hop) + 2`` (tiny: 3, base: 14).
    """
    return math.ceil((config.receptive_field - 1) / 2 / config.hop_length) + UPSAMPLER_MARGIN_FRAMES


def plan_chunks(frames: int, chunk_frames: int, halo: int) -> list[Chunk]:
    """Split ``frames`` into consecutive chunks of ``chunk_frames`` (the last may be shorter).

    Each window adds ``halo`` frames on both sides, clipped to ``[0, frames)``. The chunks
    cover every frame exactly once.
    """
    if frames < 1 or chunk_frames < 1 or halo < 0:
        raise ValueError(f"need frames >= 1, chunk_frames >= 1 and halo >= 0, got {frames}, {chunk_frames}, {halo}")
    return [
        Chunk(start, min(start + chunk_frames, frames), max(0, start - halo), min(frames, start + chunk_frames + halo))
        for start in range(0, frames, chunk_frames)
    ]


def chunk_frames_for(seconds: float, sample_rate: int, hop_length: int) -> int:
    """Whole mel frames in ``seconds`` (at least one)."""
    if seconds <= 0:
        raise ValueError(f"chunk length must be positive, got {seconds:g} s")
    return max(1, int(seconds * sample_rate / hop_length))


def chunked_eps_fn(network: DiffWave, mel: Tensor, step_fn: StepFn, chunk_frames: int,
                   halo: int | None = None, engine: Engine | None = None,
                   ) -> Callable[[Tensor, float], Tensor]:
    """A noise predictor ``(x (B, frames * hop), sigma) -> eps (B, frames * hop)`` for a long ``mel``.

    ``mel`` is ``(B, n_mels, frames)``. Each call runs ``engine`` (default: ``network``'s own
    code) once per chunk on the chunk's window of ``x`` and of the mel (conditioning computed
    for the window only, without cached projections) and writes the chunk's part of the
    prediction. ``step_fn`` maps a level to training steps (a
    :class:`~audiodiff.diffusion.samplers.StepTable`). ``halo`` defaults to :func:`halo_frames`
    (smaller halos are for tests that show why it is needed).
    """
    engine = EagerEngine(network) if engine is None else engine
    hop = network.config.hop_length
    chunks = plan_chunks(mel.shape[-1], chunk_frames, halo_frames(network.config) if halo is None else halo)

    def predict(x: Tensor, sigma: float) -> Tensor:
        steps = step_fn(x, sigma)
        eps = torch.empty_like(x)
        for chunk in chunks:
            window = x[:, chunk.window_start * hop: chunk.window_stop * hop]
            conditioning = engine.condition(mel[..., chunk.window_start: chunk.window_stop], cache_projections=False)
            prediction = engine.denoise(window, steps, conditioning)
            keep = slice(chunk.offset * hop, (chunk.offset + chunk.stop - chunk.start) * hop)
            eps[:, chunk.start * hop: chunk.stop * hop] = prediction[:, keep]
        return eps

    return predict
