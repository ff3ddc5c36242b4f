"""Training crops and validation clips: the files the scan found usable, read a piece at a time.

Training items are random crops ``(crop_frames * hop_length,)`` whose start is a multiple of the
hop (in samples at the target rate), drawn by :class:`CropSampler` with per-crop seeds from
:func:`seed_from`; validation items are the first ``seconds`` of each held-out file. Only the
part of a file an item needs is decoded (:func:`read_segment`).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from audiodiff.io.audio import AudioError, load_audio, samples_at_rate

log = logging.getLogger(__name__)

#: Native-rate frames read on each side of a crop that is resampled, per started multiple of the
#: target rate the native rate is: soxr's filter then sees real signal at the crop's edges
#: instead of zero padding (measured: 128 frames a multiple reach float32 rounding, from 8 to
#: 192 kHz; 160 leaves room).
RESAMPLE_MARGIN = 160

T = TypeVar("T")


@dataclass(frozen=True)
class AudioFile:
    """A usable file: its path, its ``name`` (path relative to the data source, POSIX style),
    its native ``sample_rate`` and ``frames``, and its class id (``None`` for unlabelled data)."""

    path: Path
    name: str
    sample_rate: int
    frames: int
    label: int | None = None

    def length_at(self, sample_rate: int) -> int:
        """Number of samples after resampling to ``sample_rate``."""
        return samples_at_rate(self.frames, self.sample_rate, sample_rate)


def read_segment(file: AudioFile, start: int, length: int, sample_rate: int) -> Tensor:
    """Samples ``[start, start + length)`` of ``file`` at ``sample_rate``, ``(<= length,)`` float32.

    Only that part of the file is decoded. When resampling, the read starts at a native frame
    whose position maps to a whole target sample (a multiple of ``native / gcd``) and extends
    ``RESAMPLE_MARGIN * ceil(native / sample_rate)`` frames beyond both ends, so the result
    matches the same samples of a resampled full read. Shorter than ``length`` only at the end of the file.
    """
    native = file.sample_rate
    if native == sample_rate:
        audio, _ = load_audio(file.path, start_seconds=start / native, duration_seconds=length / native)
        return audio[:length]
    g = math.gcd(native, sample_rate)
    period, step = native // g, sample_rate // g
    margin = RESAMPLE_MARGIN * -(-native // sample_rate)
    first = max(0, start * native // sample_rate - margin) // period * period
    last = -(-(start + length) * native // sample_rate) + margin
    audio, _ = load_audio(file.path, sample_rate, start_seconds=first / native,
                          duration_seconds=(last - first) / native)
    offset = start - first // period * step
    return audio[offset: offset + length]


def seed_from(*numbers: int) -> int:
    """A seed in ``[0, 2**63)`` that depends only on ``numbers`` (the sha1 of their decimal text),
    the same on every machine and in every worker process."""
    digest = hashlib.sha1(" ".join(map(str, numbers)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _item(file: AudioFile, **fields: Any) -> dict[str, Any]:
    """A dataset item: ``fields`` plus ``label`` (the class id) when the file has one."""
    return fields if file.label is None else {**fields, "label": file.label}


class _FileDataset(Dataset):
    """Common part of the datasets: a list of files and a fallback for files that fail to load."""

    def __init__(self, files: Sequence[AudioFile], sample_rate: int, hop_length: int) -> None:
        if not files:
            raise ValueError("a dataset needs at least one file")
        self.files = list(files)
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self._failed: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int, read: Callable[[AudioFile], T]) -> tuple[AudioFile, T]:
        """``read(files[index])``; if that file fails, the next readable file after it.

        A failing file is reported once (per worker process) and not tried again.
        """
        n = len(self.files)
        for k in range(n):
            j = (index + k) % n
            if j in self._failed:
                continue
            try:
                return self.files[j], read(self.files[j])
            except AudioError as err:
                self._failed.add(j)
                log.warning("cannot read %s (%s); using other files in its place", err.path, err.reason)
        raise RuntimeError(f"none of the {n} files of the dataset can be read any more (see the warnings)")


class CropDataset(_FileDataset):
    """Random training crops: ``{"audio": (crop_frames * hop_length,) float32}`` (plus
    ``"label"``, the class id, for labelled files).

    Crops start at a multiple of ``hop_length`` (samples at ``sample_rate``); a file shorter
    than a crop is zero-padded at the end. The key is an index or ``(index, crop_seed)`` (as
    yielded by :class:`CropSampler`); an index alone uses the seed ``(seed, index)``.
    """

    def __init__(self, files: Sequence[AudioFile], sample_rate: int, hop_length: int,
                 crop_frames: int, seed: int = 1234) -> None:
        super().__init__(files, sample_rate, hop_length)
        self.crop_samples = crop_frames * hop_length
        self.seed = seed

    def crop_start(self, file: AudioFile, generator: torch.Generator) -> int:
        """A random hop-aligned start such that the crop fits in the file (0 if it cannot)."""
        slots = max(0, file.length_at(self.sample_rate) - self.crop_samples) // self.hop_length + 1
        return self.hop_length * int(torch.randint(slots, (1,), generator=generator))

    def _crop(self, file: AudioFile, generator: torch.Generator) -> Tensor:
        start = self.crop_start(file, generator)
        audio = read_segment(file, start, self.crop_samples, self.sample_rate)
        return torch.nn.functional.pad(audio, (0, self.crop_samples - audio.numel()))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        index, crop_seed = key if isinstance(key, tuple) else (key, seed_from(self.seed, key))
        generator = torch.Generator().manual_seed(crop_seed)
        file, audio = self._load(index, lambda file: self._crop(file, generator))
        return _item(file, audio=audio)


class ClipDataset(_FileDataset):
    """Validation clips: ``{"audio": (T,), "name": str}`` (plus ``"label"`` for labelled files),
    the first ``seconds`` of each file.

    ``T`` is trimmed to a multiple of ``hop_length`` (at least one hop, zero-padded if needed);
    ``seconds <= 0`` means the whole file. Deterministic.
    """

    def __init__(self, files: Sequence[AudioFile], sample_rate: int, hop_length: int, seconds: float) -> None:
        super().__init__(files, sample_rate, hop_length)
        self.seconds = seconds

    def _clip(self, file: AudioFile) -> Tensor:
        length = file.length_at(self.sample_rate)
        if self.seconds > 0:
            length = min(length, int(self.seconds * self.sample_rate))
        audio = read_segment(file, 0, length, self.sample_rate)
        keep = max(self.hop_length, audio.numel() // self.hop_length * self.hop_length)
        return torch.nn.functional.pad(audio, (0, max(0, keep - audio.numel())))[:keep]

    def __getitem__(self, index: int) -> dict[str, Any]:
        file, audio = self._load(index, self._clip)
        return _item(file, audio=audio, name=file.name)


class CropSampler(Sampler):
    """Yields ``(index, crop_seed)`` in a fresh random order with fresh crop seeds every epoch.

    ``length`` items per epoch (default: one per file); with more, the file order is a
    concatenation of random permutations, so every file comes up equally often. With
    ``weights`` (one per file), files are drawn with replacement in proportion to them instead.
    Runs in the main process, so crops change across epochs even with persistent workers, and
    depend only on ``(seed, epoch)``, not on the number of workers. Lightning calls
    :meth:`set_epoch` (so a resumed run continues the sequence); without it, every new
    iteration moves on by one epoch.
    """

    def __init__(self, size: int, seed: int, length: int | None = None,
                 weights: Sequence[float] | None = None) -> None:
        if weights is not None and len(weights) != size:
            raise ValueError(f"{len(weights)} weights for {size} files")
        self.size = size
        self.seed = seed
        self.length = length or size
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(seed_from(self.seed, self.epoch))
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.length, replacement=True, generator=generator).tolist()
        else:
            rounds = -(-self.length // self.size)
            order = torch.cat([torch.randperm(self.size, generator=generator) for _ in range(rounds)])
            order = order[: self.length].tolist()
        seeds = torch.randint(0, 2**62, (self.length,), generator=generator).tolist()
        self.epoch += 1
        return iter(list(zip(order, seeds)))
