"""Streaming vocoding: mel frames in as a TTS model emits them, audio out long before the sentence
ends, and the audio equals vocoding the whole mel at once.

:func:`stream_vocode` (``AudioDiffusion.stream``) keeps the mel received so far. A frame's audio
depends on the mel up to ``L`` frames after it (the lookahead, :mod:`audiodiff.pipeline.spans`),
so once ``L`` frames past the last emitted one have arrived, the frames ``[emitted, received - L)``
are final: they are vocoded on the window ``[emitted - L, received)`` with the window's noise
offset and yielded. When the blocks end, the rest ``[emitted, received)`` is vocoded with the true
end. Each window edge is then the utterance's own start or end or ``L`` frames away, which is
what makes the pieces equal the whole (seeded noise depends only on position).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from audiodiff.io.mel_files import InputError, orient_mel


def default_min_block_frames(lookahead: int) -> int:
    """Frames an emission holds at least by default: the lookahead ``L`` (at least 1).

    An emission of ``m`` frames vocodes ``m + 2L`` (``L`` of context each side; the first one
    ``m + L``). With ``m = L`` the first audio waits for ``2L`` frames and costs twice the
    fewest frames it could (``L + 1``), and the stream vocodes at most 3x the frames of a
    whole-mel ``vocode`` (fewer when blocks arrive bigger than ``L``): a smaller ``m`` buys little
    latency for much compute (``m = L / 2``: 1.5L frames first, 5x in all), a bigger one the
    reverse (``m = 2L``: 3L frames first, 2x in all).
    """
    return max(1, lookahead)


def check_block(block: Tensor | np.ndarray, n_mels: int, index: int, batch: int | None) -> Tensor:
    """Block ``index`` of a stream as ``(B, n_mels, k)`` float32, or one :class:`InputError` line.

    Checked as :func:`~audiodiff.io.mel_files.orient_mel` checks a mel (float dtype, frames,
    finite values), but in one layout only: ``(n_mels, k)`` or ``(B, n_mels, k)``. A block of
    ``n_mels`` frames would make ``(k, n_mels)`` ambiguous, so the stream does not guess.
    """
    source = f"mel block {index}"
    shape = tuple(np.shape(block))
    if len(shape) in (2, 3) and shape[-2] != n_mels:
        hint = " (transpose it)" if shape[-1] == n_mels else ""
        raise InputError(source, f"has shape {shape} but the model expects {n_mels} mel bins; a stream takes "
                                 f"({n_mels}, frames) or (batch, {n_mels}, frames) blocks{hint}")
    mel = orient_mel(block, n_mels, source)
    if batch is not None and mel.shape[0] != batch:
        raise InputError(source, f"has {mel.shape[0]} rows; the stream's first block had {batch}")
    return mel


def stream_vocode(model: Any, blocks: Iterable[Tensor | np.ndarray], *, sampler: Any = "fast",
                  steps: int | None = None, seed: int | Sequence[int] = 0, precision: str = "auto",
                  min_block_frames: int | None = None, chunk_seconds: float | str | None = "auto",
                  ) -> Iterator[Tensor]:
    """Vocode ``blocks`` of mel frames with ``model`` (an ``AudioDiffusion`` vocoder) as they arrive.

    The arguments are checked here; the returned generator does the work. ``blocks``: ``(n_mels, k)`` or ``(B, n_mels, k)``, any ``k >= 1``, the same ``B`` throughout.
    Yields audio ``(B, k' * hop)`` on the model's device, ``k'`` frames at a time; concatenated,
    it is ``model.vocode(mel, seed=seed, ...)`` of the frames received (up to float rounding),
    whether the blocks end at the sentence's end or early. No blocks, no audio.

    A frame's audio is yielded once ``L = model.stream_lookahead(sampler, steps)`` frames after
    it have arrived and at least ``min_block_frames`` (default :func:`default_min_block_frames`)
    frames are ready; all ready frames go in one emission. The first audio comes when
    ``L + min_block_frames`` frames have arrived. The seed must be given (default 0, as
    ``vocode(seed=0)``): unseeded noise cannot be cut into pieces. A bad block raises
    :class:`~audiodiff.io.mel_files.InputError` (one line) when it arrives.
    """
    model._check_vocoder()
    if seed is None:
        raise ValueError("a stream needs a seed (an int, or one per row): unseeded noise cannot be cut into pieces")
    options = dict(sampler=sampler, steps=steps, precision=precision, chunk_seconds=chunk_seconds)
    lookahead = model.stream_lookahead(sampler, steps)
    min_block = default_min_block_frames(lookahead) if min_block_frames is None else int(min_block_frames)
    if min_block < 1:
        raise ValueError(f"min_block_frames must be at least 1, got {min_block_frames}")
    return _stream(model, blocks, seed, lookahead, min_block, options)


def _stream(model: Any, blocks: Iterable[Tensor | np.ndarray], seed: int | Sequence[int], lookahead: int,
            min_block: int, options: dict[str, Any]) -> Iterator[Tensor]:
    """The generator of :func:`stream_vocode`, its arguments checked."""
    n_mels, hop = model.config.denoiser.n_mels, model.hop_length
    kept: Tensor | None = None  # (B, n_mels, frames): mel frames [kept_start, received)
    kept_start = received = emitted = 0

    def emit(stop: int) -> Tensor:
        """The audio of frames ``[emitted, stop)``, from the window ``[emitted - L, received)``."""
        window_start = max(0, emitted - lookahead)
        window = kept[..., window_start - kept_start:]
        audio = model.vocode_span(window, window_start, seed=seed, **options)
        return audio[:, (emitted - window_start) * hop: (stop - window_start) * hop]

    for index, block in enumerate(blocks):
        mel = check_block(block, n_mels, index, None if kept is None else kept.shape[0]).to(model.device)
        kept = mel if kept is None else torch.cat([kept, mel], dim=-1)
        received += mel.shape[-1]
        ready = received - lookahead
        if ready - emitted >= min_block:
            yield emit(ready)
            emitted = ready
            keep_from = max(0, emitted - lookahead)  # the next window's first frame
            kept, kept_start = kept[..., keep_from - kept_start:], keep_from
    if received > emitted:
        yield emit(received)
