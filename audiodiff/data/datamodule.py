"""The :class:`AudioDataModule` that feeds training: a data source in, crops and clips out.

The data are waveforms only: mels are computed by the model's own frontend
(:class:`audiodiff.mel.MelSpectrogram`), so training and inference cannot disagree about them.

A data source is a folder (scanned recursively; an LJSpeech-style ``metadata.csv`` in it is used
when present) or a filelist (:mod:`audiodiff.data.filelists`). For class-conditional models the
files carry labels: the name of their class folder (``root/<class>/...``) or the second column of
a ``path,label`` CSV. Before training every file is checked once (:mod:`audiodiff.data.scan`);
the usable ones become training crops and validation clips (:mod:`audiodiff.data.datasets`), or,
with ``resident``, are decoded into memory and cropped on the device (:mod:`audiodiff.data.resident`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence, TypeVar

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from audiodiff.data.datasets import AudioFile, ClipDataset, CropDataset, CropSampler
from audiodiff.data.filelists import (
    LABEL_SOURCES, label_from_path, read_filelist, read_labelled_csv, read_metadata_csv,
)
from audiodiff.data.resident import (
    RESIDENT_DTYPES, CropPositions, ResidentAudio, crops_from_positions, is_position_batch,
)
from audiodiff.data.scan import ScanResult, default_cache_dir, scan_files, split_validation
from audiodiff.io.audio import AUDIO_SUFFIXES, display_path
from audiodiff.io.audio_files import find_audio_files

log = logging.getLogger(__name__)

T = TypeVar("T")


def _check_source(root: str | None, filelist: str | None, labels: str | None, balance_classes: bool) -> None:
    """``ValueError`` unless exactly one data source is given and ``labels`` can be read from it."""
    if (root is None) == (filelist is None):
        given = "both" if root is not None else "neither"
        raise ValueError(f"give exactly one data source, root=<folder> or filelist=<text file> (got {given})")
    if labels is not None and labels not in LABEL_SOURCES:
        raise ValueError(f"labels must be one of {list(LABEL_SOURCES)} or null, got {labels!r}")
    if labels == "csv" and filelist is None:
        raise ValueError("labels=csv reads the labels from filelist=<path,label CSV>; give a filelist")
    if labels in ("folder", "parent") and root is None:
        raise ValueError(f"labels={labels} reads class folders under root=<folder>; give a root")
    if balance_classes and labels is None:
        raise ValueError("balance_classes needs labelled data (set labels)")


def _check_sizes(positive: dict[str, int], num_workers: int, val_files: int, resident_dtype: str) -> None:
    """``ValueError`` for a value of ``positive`` below 1, a negative count, or an unknown dtype."""
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if resident_dtype not in ("float32", "float16"):
        raise ValueError(f"resident_dtype must be float32 or float16, got {resident_dtype!r}")
    if num_workers < 0 or val_files < 0:
        raise ValueError("num_workers and val_files must be >= 0")


class AudioDataModule(pl.LightningDataModule):
    """Waveform crops for training and fixed clips for validation, from a folder or a filelist.

    Args:
        root: Folder of audio, scanned recursively for audio files (.wav, .flac, .ogg, .mp3,
            .aiff, .opus, ...). If it holds an LJSpeech-style ``metadata.csv`` (``id|text|...``),
            the files listed there (``root/wavs/<id>.wav``) are used instead.
        filelist: Text file with one audio path per line, relative to the filelist's folder;
            anything after ``|`` is ignored. Give exactly one of ``root`` and ``filelist``.
        sample_rate: Sample rate the model works at; files are resampled to it.
        hop_length: Mel hop length of the model; crops start at multiples of it.
        crop_frames: Training crop length in mel frames (``crop_frames * hop_length`` samples).
        batch_size: Training batch size (validation uses 1: clips differ in length).
        crops_per_epoch: Training crops per epoch (default: one per file). Raise it for a
            small data set, so batches are full and an epoch is more than a step.
        num_workers: DataLoader worker processes (0 loads in the main process).
        val_files: Number of files held out for validation, chosen by a hash of their path.
        val_seconds: Validation uses the first ``val_seconds`` of each held-out file
            (0 for the whole file).
        min_seconds: Files shorter than this are skipped.
        silence_threshold: Files whose peak amplitude is below this are skipped as silent.
        cache_dir: Where the scan results are cached (default ``$XDG_CACHE_HOME/audiodiff``
            or ``~/.cache/audiodiff``).
        seed: Seed of the training order and crop positions.
        labels: Where class labels come from, for class-conditional models: ``folder`` (the
            first folder below ``root``: ``root/<class>/**``), ``parent`` (the folder that holds
            each file: ``sfx/sonic-pi/bd/x.flac`` is ``bd``, ``sfx/opensfx/y.wav`` is ``opensfx``)
            or ``csv`` (``filelist`` is a CSV of ``path,label``). ``None``: unlabelled audio.
            The class names (sorted) are linked into the model by ``audiodiff train``.
        balance_classes: Draw training crops so that every class comes up equally often (each
            file with probability 1 / (classes x files in its class)), instead of every file
            equally often. For labelled data whose classes differ much in size.
        resident: Decode the training files once at setup and keep them in memory; crops are
            then cut on the model's device (the GPU) from positions drawn as for ``resident:
            false``: the same crops, without loader workers or disk reads per step (see
            :mod:`audiodiff.data.resident`). Needs the training audio to fit in device memory
            (70 minutes at 22.05 kHz: 370 MB in float32). Validation clips are read as before.
        resident_dtype: ``float32`` or ``float16`` (half the memory, rounding error about 3e-4
            of each sample's magnitude) for the resident audio.
    """

    def __init__(
        self,
        root: str | None = None,
        filelist: str | None = None,
        sample_rate: int = 22050,
        hop_length: int = 256,
        crop_frames: int = 62,
        batch_size: int = 16,
        crops_per_epoch: int | None = None,
        num_workers: int = 2,
        val_files: int = 4,
        val_seconds: float = 2.0,
        min_seconds: float = 0.1,
        silence_threshold: float = 1e-4,
        cache_dir: str | None = None,
        seed: int = 1234,
        labels: str | None = None,
        balance_classes: bool = False,
        resident: bool = False,
        resident_dtype: str = "float32",
    ) -> None:
        super().__init__()
        _check_source(root, filelist, labels, balance_classes)
        _check_sizes(dict(sample_rate=sample_rate, hop_length=hop_length, crop_frames=crop_frames,
                          batch_size=batch_size), num_workers, val_files, resident_dtype)
        self.save_hyperparameters(ignore=["sample_rate", "hop_length"])  # linked from the model
        self.root = Path(root).expanduser().absolute() if root is not None else None
        self.filelist = Path(filelist).expanduser().absolute() if filelist is not None else None
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.crop_frames = crop_frames
        self.batch_size = batch_size
        self.crops_per_epoch = crops_per_epoch
        self.num_workers = num_workers
        self.val_files = val_files
        self.val_seconds = val_seconds
        self.min_seconds = min_seconds
        self.silence_threshold = silence_threshold
        self.cache_dir = Path(cache_dir).expanduser().absolute() if cache_dir is not None else default_cache_dir()
        self.seed = seed
        self.labels = labels
        self.balance_classes = balance_classes
        self.resident = resident
        self.resident_dtype = resident_dtype
        self.resident_audio: Any = None  # audiodiff.data.resident.ResidentAudio when resident
        self._listing: tuple[list[Path], Path, dict[Path, str] | None] | None = None
        self.scan_result: ScanResult | None = None
        self.train_set: CropDataset | None = None
        self.val_set: ClipDataset | None = None

    @property
    def source(self) -> str:
        """The data source in words, e.g. ``folder /data/LJSpeech-1.1``; also the cache key."""
        return f"folder {self.root}" if self.root is not None else f"filelist {self.filelist}"

    @property
    def crop_samples(self) -> int:
        return self.crop_frames * self.hop_length

    def _is_global_zero(self) -> bool:
        return self.trainer is None or self.trainer.is_global_zero

    def _list_files(self) -> tuple[list[Path], Path, dict[Path, str] | None]:
        """Absolute paths of the source's files, the folder their names are relative to, and
        each file's class name (``None`` for unlabelled data). Listed once per instance."""
        if self._listing is None:
            self._listing = self._list_source()
        return self._listing

    def _list_source(self) -> tuple[list[Path], Path, dict[Path, str] | None]:
        labels: dict[Path, str] | None = None
        if self.labels == "csv":
            labels = {Path(os.path.abspath(f)): c for f, c in read_labelled_csv(self.filelist).items()}
            files, base = list(labels), self.filelist.parent
        elif self.filelist is not None:
            files, base = read_filelist(self.filelist), self.filelist.parent
        elif (self.root / "metadata.csv").is_file():
            files, base = read_metadata_csv(self.root), self.root
            log.info("using the file list of %s (%d entries)", self.root / "metadata.csv", len(files))
        else:
            files, base = find_audio_files(self.root), self.root
        if not files:
            suffixes = ", ".join(sorted(AUDIO_SUFFIXES))
            raise RuntimeError(f"no audio files ({suffixes}) found in {self.source}")
        files = [Path(os.path.abspath(f)) for f in files]
        if self.labels in ("folder", "parent"):
            labels = self._folder_labels(files)
            files = [f for f in files if f in labels]
        return files, base, labels

    def _folder_labels(self, files: Sequence[Path]) -> dict[Path, str]:
        """Class names from folders; files directly in ``root`` have none and are left out."""
        labels = {f: label_from_path(f, self.root, self.labels) for f in files}
        unlabelled = [f for f, label in labels.items() if label is None]
        if unlabelled and self._is_global_zero():
            log.warning("%d file(s) directly in %s have no class folder and are left out (e.g. %s)",
                        len(unlabelled), self.root, unlabelled[0].name)
        if len(unlabelled) == len(files):
            raise RuntimeError(f"labels={self.labels}: no file of {self.source} is in a class folder "
                               f"(expected {self.root}/<class>/<file>)")
        return {f: label for f, label in labels.items() if label is not None}

    @property
    def class_names(self) -> list[str] | None:
        """Sorted class names of the listed files, or ``None`` for unlabelled data (lists the
        source, but decodes nothing)."""
        labels = self._list_files()[2]
        return None if labels is None else sorted(set(labels.values()))

    def scan(self) -> ScanResult:
        """Check every file of the source (once per instance; cached on disk), report, and return."""
        if self.scan_result is not None:
            return self.scan_result
        files, base, labels = self._list_files()
        verbose = self._is_global_zero()
        result = scan_files(files, base=base, source=self.source, cache_dir=self.cache_dir,
                            min_seconds=self.min_seconds, silence_threshold=self.silence_threshold,
                            progress=verbose, sample_rate=self.sample_rate)
        if labels is not None:
            result = self._attach_labels(result, labels, verbose)
        if verbose:
            for skipped in result.skipped:
                log.warning("skipping %s: %s (%s)", display_path(skipped.path), skipped.category, skipped.reason)
            log.info(result.summary())
            print(result.summary(), flush=True)
            if result.conversions:
                print(f"converted on reading: {result.conversions}", flush=True)
        if not result.usable:
            raise RuntimeError(f"no usable audio in {self.source}: {result.summary()}")
        self.scan_result = result
        return result

    def _attach_labels(self, result: ScanResult, labels: dict[Path, str], verbose: bool) -> ScanResult:
        """``result`` with each usable file's class id; warns about classes left without files."""
        ids = {name: i for i, name in enumerate(self.class_names or [])}
        usable = tuple(dataclasses.replace(f, label=ids[labels[f.path]]) for f in result.usable)
        counts = Counter(f.label for f in usable)
        if verbose:
            empty = [name for name, i in ids.items() if counts[i] == 0]
            if empty:
                log.warning("class(es) without a usable file: %s", ", ".join(empty))
            print(f"{len(ids)} classes (usable files): "
                  + ", ".join(f"{name} ({counts[i]})" for name, i in ids.items()), flush=True)
        return dataclasses.replace(result, usable=usable)

    def prepare_data(self) -> None:
        # Runs once per node before setup(): decodes the files and fills the cache, so the
        # other ranks' scans in setup() only compare sizes and mtimes.
        self.scan()

    def _broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank, so all ranks train on the same files."""
        if self.trainer is None or self.trainer.world_size <= 1:
            return obj
        return self.trainer.strategy.broadcast(obj, src=0)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        usable = self._broadcast(list(self.scan().usable))
        train, val = split_validation(usable, self.val_files)
        if len(usable) == 1 and val and self._is_global_zero():
            log.warning("only one usable file (%s): validating on the training file", usable[0].path)
        if self.resident:
            self.train_set = self._resident_positions(train)
        else:
            self.train_set = CropDataset(train, self.sample_rate, self.hop_length, self.crop_frames, self.seed)
        self.val_set = ClipDataset(val, self.sample_rate, self.hop_length, self.val_seconds) if val else None

    def _resident_positions(self, train: Sequence[AudioFile]) -> CropDataset:
        """Decode ``train`` into memory (:class:`~audiodiff.data.resident.ResidentAudio`); its crop positions."""
        self.resident_audio = ResidentAudio(train, self.sample_rate, self.crop_samples,
                                            RESIDENT_DTYPES[self.resident_dtype])
        if self._is_global_zero():
            audio = self.resident_audio
            print(f"resident training audio: {len(audio.files)} files, {audio.seconds / 60:.1f} min, "
                  f"{audio.nbytes / 2**20:.0f} MB ({self.resident_dtype}), cropped on the model's device", flush=True)
        return CropPositions(self.resident_audio.files, self.sample_rate, self.hop_length, self.crop_frames, self.seed)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With ``resident``, a training batch of crop positions becomes ``{"audio": (B, crop)}``
        (plus ``"label"``), cut on the device the batch was moved to."""
        if self.resident_audio is not None and is_position_batch(batch):
            return crops_from_positions(batch, self.resident_audio, self.crop_samples)
        return batch

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        return DataLoader(dataset, num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available(), **kwargs)

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            raise RuntimeError("call setup() before train_dataloader()")
        sampler = CropSampler(len(self.train_set), self.seed, self.crops_per_epoch, self._file_weights())
        if self.resident:  # positions only: drawn in the main process, no workers to feed
            return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, num_workers=0,
                              drop_last=len(sampler) >= self.batch_size)
        return self._loader(self.train_set, batch_size=self.batch_size, sampler=sampler,
                            drop_last=len(sampler) >= self.batch_size)

    def _file_weights(self) -> list[float] | None:
        """Per training file, 1 / (files of its class), when balancing classes; else ``None``."""
        if not self.balance_classes:
            return None
        counts = Counter(f.label for f in self.train_set.files)
        return [1.0 / counts[f.label] for f in self.train_set.files]

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Batches of one clip, ``{"audio": (1, T), "name": [str]}``; ``[]`` when ``val_files=0``."""
        if self.train_set is None:
            raise RuntimeError("call setup() before val_dataloader()")
        if self.val_set is None:
            return []
        return self._loader(self.val_set, batch_size=1, shuffle=False)
