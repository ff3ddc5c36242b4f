"""Training audio resident in memory, cropped on the device the model trains on.

The option ``data.resident: true`` of :class:`~audiodiff.data.AudioDataModule`. Instead of
decoding a crop from disk for every item in loader workers (the CPU cost that caps a GPU run),
every training file is decoded once, at ``setup``, into one flat tensor. The loader then yields
only crop *positions* (``{"file": (B,), "start": (B,)}``, drawn in the main process by the same
:class:`~audiodiff.data.datasets.CropSampler` and the same per-crop seeds as
:class:`~audiodiff.data.datasets.CropDataset`, so the crops are the same ones, hop-aligned, from the same
distribution). Lightning moves that small batch to the model's device and calls the data
module's ``on_after_batch_transfer``, which copies the flat tensor to that device once and
gathers the ``(B, crop_frames * hop_length)`` crops there in one indexing operation. The mel is
then computed from the crops by the model's own frontend, on the device, as before.

What stays the same as the disk path: the scan and its skipped-file report, the validation split
and validation clips (read from disk), labels, and DDP (Lightning gives every rank a different
share of the sampler's positions). A training file that fails to decode at ``setup`` is
reported in one line and left out; the others are used.

Memory: 4 bytes a sample in ``float32`` (70 minutes at 22.05 kHz: 370 MB), 2 in ``float16``
(``resident_dtype``; rounding error about 3e-4 of the sample's magnitude), on every rank.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import torch
from torch import Tensor

from audiodiff.data.datasets import AudioFile, CropDataset, seed_from
from audiodiff.io.audio import AudioError, display_path, load_audio

log = logging.getLogger(__name__)

RESIDENT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class ResidentAudio:
    """Decoded training files, one after the other in one flat tensor.

    ``files`` are the files that decoded (in the given order, others left out with a warning);
    file ``i`` occupies ``audio[offsets[i] : offsets[i] + spans[i]]``, where ``spans[i]`` is its
    length at ``sample_rate`` (the scan's, or the decoded one if longer), zero-padded to at least
    ``min_span`` samples, so that every crop :class:`~audiodiff.data.datasets.CropDataset` can draw lies
    inside it. :meth:`crops` gathers crops on whichever device the positions are on.
    """

    def __init__(self, files: Sequence[AudioFile], sample_rate: int, min_span: int,
                 dtype: torch.dtype = torch.float32, threads: int | None = None) -> None:
        self.sample_rate = sample_rate
        self.dtype = dtype
        decoded = self._decode_all(files, sample_rate, threads)
        self.files: list[AudioFile] = [f for f, audio in zip(files, decoded) if audio is not None]
        if not self.files:
            raise RuntimeError(f"none of the {len(files)} training files could be decoded (see the warnings)")
        spans = [max(f.length_at(sample_rate), audio.numel(), min_span)
                 for f, audio in zip(files, decoded) if audio is not None]
        self.spans = torch.tensor(spans, dtype=torch.int64)
        self.offsets = torch.cumsum(self.spans, 0) - self.spans
        flat = torch.zeros(int(self.spans.sum()), dtype=dtype)
        kept = (audio for audio in decoded if audio is not None)
        for offset, audio in zip(self.offsets.tolist(), kept):
            flat[offset: offset + audio.numel()] = audio
        self.audio = flat
        self._on_device: dict[torch.device, tuple[Tensor, Tensor]] = {}

    @staticmethod
    def _decode_all(files: Sequence[AudioFile], sample_rate: int, threads: int | None) -> list[Tensor | None]:
        """Each file at ``sample_rate`` (mono float32), or ``None`` (with a one-line warning) if it fails."""
        def decode(file: AudioFile) -> Tensor | None:
            try:
                return load_audio(file.path, sample_rate if file.sample_rate != sample_rate else None)[0]
            except AudioError as err:
                log.warning("cannot read %s (%s); training without it", display_path(err.path), err.reason)
                return None

        workers = threads or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(decode, files))

    @property
    def nbytes(self) -> int:
        return self.audio.numel() * self.audio.element_size()

    @property
    def seconds(self) -> float:
        return self.audio.numel() / self.sample_rate

    def on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(audio, offsets)`` on ``device``, copied there on first use."""
        device = torch.device(device)
        if device not in self._on_device:
            self._on_device[device] = (self.audio.to(device), self.offsets.to(device))
        return self._on_device[device]

    def crops(self, file: Tensor, start: Tensor, length: int) -> Tensor:
        """Crops ``(B, length)`` float32 of files ``file`` ``(B,)`` from samples ``start`` ``(B,)``,
        on the device of ``file``."""
        audio, offsets = self.on(file.device)
        first = offsets[file.long()] + start.long()
        index = first.unsqueeze(1) + torch.arange(length, device=file.device)
        return audio[index].float()


class CropPositions(CropDataset):
    """:class:`~audiodiff.data.datasets.CropDataset`'s crops as positions only: ``{"file": int, "start": int}``
    (plus ``"label"``). The same key gives the same start as ``CropDataset`` (same seed, same
    hop-aligned draw over the same slots); nothing is read."""

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, crop_seed = key if isinstance(key, tuple) else (key, seed_from(self.seed, key))
        file = self.files[index]
        start = self.crop_start(file, torch.Generator().manual_seed(crop_seed))
        item = {"file": index, "start": start}
        return item if file.label is None else {**item, "label": file.label}


def is_position_batch(batch: Any) -> bool:
    """Whether ``batch`` is a batch of :class:`CropPositions` (not yet audio)."""
    return isinstance(batch, dict) and "start" in batch and "file" in batch and "audio" not in batch


def crops_from_positions(batch: dict[str, Tensor], resident: ResidentAudio, crop_samples: int) -> dict[str, Tensor]:
    """``{"audio": (B, crop_samples)}`` (plus ``"label"``) for a batch of positions, on their device."""
    out = {"audio": resident.crops(batch["file"], batch["start"], crop_samples)}
    if "label" in batch:
        out["label"] = batch["label"]
    return out
