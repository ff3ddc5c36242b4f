"""Streaming vocoding: mel frames in as a TTS model emits them, audio out long before the sentence
ends, and the audio equals vocoding the whole mel at once.

:func:`stream_vocode` (``AudioDiffusion.stream``) keeps the mel received so far. A frame's audio
depends on the mel up to ``L`` frames after it (the lookahead, :mod:`audiodiff.pipeline.spans`),
so once ``L`` frames past the last emitted one have arrived, the frames ``[emitted, received - L)``
are final: they are vocoded on the window ``[emitted - L, received)`` with the window's noise
offset and yielded. When the blocks end, the rest ``[emitted, received)`` is vocoded with the true
end. Each window edge is then the utterance's own start or end or ``L`` frames away, which is
what makes the pieces equal the whole (seeded noise depends only on position).

:class:`StreamCursor` is that bookkeeping without a model: it turns blocks into
:class:`Emission` windows, which :func:`stream_vocode` vocodes one by one and ``audiodiff serve``
batches with other clients' windows (``AudioDiffusion.vocode_span`` with ``lengths``).
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Emission:
    """One piece of a stream's audio to compute: vocode ``window`` (mel frames ``[start, start + w)``
    of the utterance, ``(B, n_mels, w)``) with the noise of that position, and give out the audio
    of frames ``[first, stop)``. ``final``: the window ends at the utterance's end (its audio
    there needs the true end; any other window's right edge is ``L`` frames past ``stop``)."""

    window: Tensor
    start: int
    first: int
    stop: int
    final: bool

    @property
    def frames(self) -> int:
        return int(self.window.shape[-1])

    def cut(self, audio: Tensor, hop: int) -> Tensor:
        """The window's audio ``(B, >= w * hop)`` -> the emitted frames' ``(B, (stop - first) * hop)``."""
        return audio[:, (self.first - self.start) * hop: (self.stop - self.start) * hop]


class StreamCursor:
    """Which mel frames of a stream are final, and the window each emission vocodes.

    :meth:`push` takes a block as it arrives and returns an :class:`Emission` once at least
    ``min_block`` frames have ``lookahead`` frames after them (all ready frames in one emission);
    :meth:`finish` returns the rest, with the true end. Holds only the frames a later window needs
    (the last ``lookahead`` emitted ones and those not emitted yet). No model here: the caller
    vocodes the emissions, one at a time (:func:`stream_vocode`) or batched with other streams'
    (``audiodiff serve``).
    """

    def __init__(self, n_mels: int, lookahead: int, min_block: int) -> None:
        if min_block < 1:
            raise ValueError(f"min_block_frames must be at least 1, got {min_block}")
        self.n_mels, self.lookahead, self.min_block = n_mels, lookahead, min_block
        self.kept: Tensor | None = None  # (B, n_mels, frames): mel frames [kept_start, received)
        self.kept_start = self.received = self.emitted = self.blocks = 0

    def push(self, block: Tensor | np.ndarray) -> Emission | None:
        """Add a block (``(n_mels, k)`` or ``(B, n_mels, k)``, checked by :func:`check_block`)."""
        rows = None if self.kept is None else self.kept.shape[0]
        mel = check_block(block, self.n_mels, self.blocks, rows)
        self.blocks += 1
        self.kept = mel if self.kept is None else torch.cat([self.kept, mel.to(self.kept.device)], dim=-1)
        self.received += mel.shape[-1]
        ready = self.received - self.lookahead
        return self._emit(ready, final=False) if ready - self.emitted >= self.min_block else None

    def finish(self) -> Emission | None:
        """The blocks ended: the frames not emitted yet, vocoded with the true end (``None`` if none)."""
        return self._emit(self.received, final=True) if self.received > self.emitted else None

    def _emit(self, stop: int, final: bool) -> Emission:
        """Frames ``[emitted, stop)``, from the window ``[emitted - L, received)``."""
        start = max(0, self.emitted - self.lookahead)
        emission = Emission(self.kept[..., start - self.kept_start:], start, self.emitted, stop, final)
        self.emitted = stop
        keep_from = max(0, stop - self.lookahead)  # the next window's first frame
        self.kept, self.kept_start = self.kept[..., keep_from - self.kept_start:], keep_from
        return emission


def _stream(model: Any, blocks: Iterable[Tensor | np.ndarray], seed: int | Sequence[int], lookahead: int,
            min_block: int, options: dict[str, Any]) -> Iterator[Tensor]:
    """The generator of :func:`stream_vocode`, its arguments checked: each emission vocoded alone."""
    cursor = StreamCursor(model.config.denoiser.n_mels, lookahead, min_block)

    def vocoded(emission: Emission) -> Tensor:
        audio = model.vocode_span(emission.window, emission.start, seed=seed, **options)
        return emission.cut(audio, model.hop_length)

    for block in blocks:
        emission = cursor.push(block)
        if emission is not None:
            yield vocoded(emission)
    emission = cursor.finish()
    if emission is not None:
        yield vocoded(emission)
