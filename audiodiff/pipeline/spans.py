"""Vocoding part of an utterance exactly: how far a frame's audio looks, and padded batches whose
rows equal their unbatched vocoding.

One network call's prediction at a frame depends on ``x`` and the mel within
:func:`~audiodiff.engines.chunking.halo_frames` frames of it (what makes chunked synthesis exact).
The samplers combine the predictions sample by sample, and the seeded noise of a sample depends
only on its position (:mod:`audiodiff.diffusion.positional_noise`), so after ``N`` network calls
the audio of frames ``[a, b)`` depends only on the mel within ``L = N * halo`` frames of them: the
*lookahead* (:func:`lookahead_frames`). Vocoded on a window of the mel with the window's noise
offset (``AudioDiffusion.vocode_span``), a frame gets the whole utterance's audio when each edge
of the window is either the utterance's own start or end, or at least ``L`` frames away from it.

In a padded batch a shorter row's edge is not its true end: its last ``L`` frames hear the
padding. :func:`vocode_padded_tails` recomputes each such row's window ``[len - 2L, len)`` with
its true end and puts its last ``L`` frames in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from audiodiff.diffusion.noise import Seed, row_seeds
from audiodiff.engines.chunking import halo_frames
from audiodiff.network.diffwave import DenoiserConfig


def lookahead_frames(config: DenoiserConfig, calls: int) -> int:
    """Frames each side of a frame that its audio depends on after ``calls`` network calls."""
    return calls * halo_frames(config)


@dataclass(frozen=True)
class TailWindow:
    """Row ``row`` is vocoded again on frames ``[start, stop)`` (``stop`` its true length); its
    frames ``[keep, stop)`` replace those of the padded batch."""

    row: int
    start: int
    keep: int
    stop: int


def plan_tail_windows(lengths: Sequence[int], frames: int, lookahead: int) -> list[TailWindow]:
    """The windows that make every row of a ``frames``-wide padded batch exact (rows of full length need none)."""
    if any(not 1 <= n <= frames for n in lengths):
        raise ValueError(f"lengths must be in 1..{frames} (the padded frames), got {list(lengths)}")
    return [TailWindow(row, max(0, n - 2 * lookahead), max(0, n - lookahead), n)
            for row, n in enumerate(lengths) if n < frames]


@torch.inference_mode()
def vocode_padded_tails(model: Any, mel: Tensor, audio: Tensor, lengths: Sequence[int], lookahead: int, *,
                        seed: Seed, starts: int | Sequence[int] = 0, **options: Any) -> Tensor:
    """``audio`` ``(B, frames * hop)``, the vocoding of the padded ``mel`` ``(B, n_mels, frames)``
    by ``model`` (an ``AudioDiffusion``), with each row exact for its true length: the tails
    recomputed (windows of one width in one batch) and the audio past each length zeroed.
    ``starts``: each row's first frame in its utterance (rows that are windows of a stream; one
    int for all). ``options`` are ``vocode_span``'s (sampler, steps, precision, ...)."""
    if seed is None:
        raise ValueError("exact padded rows (lengths=) need a seed: unseeded noise does not depend on position")
    if len(lengths) != mel.shape[0]:
        raise ValueError(f"{len(lengths)} lengths for a batch of {mel.shape[0]}")
    hop = audio.shape[-1] // mel.shape[-1]
    seeds = row_seeds(seed, mel.shape[0])
    starts = [int(starts)] * mel.shape[0] if isinstance(starts, int) else [int(s) for s in starts]
    windows = plan_tail_windows([int(n) for n in lengths], mel.shape[-1], lookahead)
    audio = audio.clone()
    for width in sorted({w.stop - w.start for w in windows}):
        group = [w for w in windows if w.stop - w.start == width]
        rows = torch.stack([mel[w.row, :, w.start: w.stop] for w in group])
        tails = model.vocode_span(rows, [starts[w.row] + w.start for w in group], seed=[seeds[w.row] for w in group], **options)
        for k, w in enumerate(group):
            audio[w.row, w.keep * hop: w.stop * hop] = tails[k, (w.keep - w.start) * hop:].to(audio.device)
    for row, n in enumerate(lengths):
        audio[row, int(n) * hop:] = 0.0
    return audio
