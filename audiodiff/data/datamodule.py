"""Waveform datasets and the :class:`AudioDataModule` that feeds training.

The data are waveforms only: mels are computed by the model's own frontend
(:class:`audiodiff.mel.MelSpectrogram`), so training and inference cannot disagree about them.

A data source is a folder (scanned recursively; an LJSpeech-style ``metadata.csv`` in it is used
when present) or a filelist. For class-conditional models the files carry labels: the name of
their class folder (``root/<class>/...``) or the second column of a ``path,label`` CSV. Before training, every file is checked once: unreadable, silent and
too-short files are skipped with a reason. The checks are cached per file (size, mtime), so a
restart only re-checks files that changed.

Training items are random crops ``(crop_frames * hop_length,)`` whose start is a multiple of the
hop (in samples at the target rate); validation items are the first ``val_seconds`` of a few
held-out files, chosen by a hash of their relative path so the split is stable across runs,
machines and ranks.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from audiodiff.io.audio import (
    AUDIO_SUFFIXES, CONVERTED_SAMPLE_FORMATS, AudioError, PathLike, audio_info, display_path, load_audio,
    peak_amplitude, samples_at_rate,
)
from audiodiff.io.audio_files import find_audio_files
from audiodiff.io.files import write_atomically

log = logging.getLogger("audiodiff.data.datamodule")

CACHE_VERSION = 2  # 2: FileCheck.subtype
#: Show a progress bar when more files than this need checking.
PROGRESS_MIN_FILES = 50
#: Native-rate frames read on each side of a crop that is resampled, per started multiple of the
#: target rate the native rate is: soxr's filter then sees real signal at the crop's edges
#: instead of zero padding (measured: 128 frames a multiple reach float32 rounding, from 8 to
#: 192 kHz; 160 leaves room).
RESAMPLE_MARGIN = 160

T = TypeVar("T")


# --------------------------------------------------------------------------- file lists


def read_filelist(path: PathLike) -> list[Path]:
    """Audio paths listed in a text file, one per line, in file order without duplicates.

    Relative paths are relative to the filelist's folder; ``~`` is expanded; anything after a
    ``|`` is ignored (LJSpeech / Tacotron filelists); blank lines and ``#`` comments are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"filelist {path} does not exist or is not a file")
    files: list[Path] = []
    with open(path, encoding="utf-8-sig") as handle:
        for line in handle:
            entry = line.split("|", 1)[0].strip()
            if not entry or entry.startswith("#"):
                continue
            file = Path(entry).expanduser()
            files.append(file if file.is_absolute() else path.parent / file)
    return list(dict.fromkeys(files))


def read_metadata_csv(root: PathLike) -> list[Path]:
    """The audio files of an LJSpeech-style ``root/metadata.csv`` (``id|text|...``): ``root/wavs/<id>.wav``.

    An id that already ends in an audio suffix is used as is (``wavs/`` is prepended unless it
    contains a folder).
    """
    root = Path(root)
    files: list[Path] = []
    with open(root / "metadata.csv", encoding="utf-8-sig") as handle:
        for line in handle:
            entry = line.split("|", 1)[0].strip()
            if not entry:
                continue
            if Path(entry).suffix.lower() not in AUDIO_SUFFIXES:
                entry += ".wav"
            files.append(root / entry if "/" in entry else root / "wavs" / entry)
    return list(dict.fromkeys(files))


LABEL_SOURCES = ("folder", "parent", "csv")


def read_labelled_csv(path: PathLike) -> dict[Path, str]:
    """``{audio path: label}`` from a CSV of ``path,label`` rows (a ``path,label`` header is optional).

    Relative paths are relative to the CSV's folder; the first label given for a path wins.
    A row without a label is an error that names the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label CSV {path} does not exist or is not a file")
    labels: dict[Path, str] = {}
    with open(path, encoding="utf-8-sig", newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle), start=1):
            if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
                continue
            if line_number == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                continue
            if len(row) < 2 or not row[1].strip():
                raise ValueError(f"{path}, line {line_number}: expected 'path,label', got {','.join(row)!r}")
            file = Path(row[0].strip()).expanduser()
            labels.setdefault(file if file.is_absolute() else path.parent / file, row[1].strip())
    return labels


def label_from_path(file: Path, root: Path, label_from: str) -> str | None:
    """The class of ``file`` under ``root``: its first folder below ``root`` (``folder``) or the
    folder that holds it (``parent``); ``None`` for a file directly in ``root``."""
    parts = Path(os.path.relpath(file, root)).parts
    if len(parts) < 2:
        return None
    return parts[0] if label_from == "folder" else parts[-2]


# --------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class FileCheck:
    """What the up-front scan learnt about one file (cached as JSON, keyed by size and mtime)."""

    size: int
    mtime_ns: int
    sample_rate: int = 0
    frames: int = 0
    channels: int = 0
    peak: float = 0.0
    error: str | None = None
    subtype: str = ""


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


@dataclass(frozen=True)
class SkippedFile:
    """A file the scan rejected: ``category`` is ``unreadable``, ``too short`` or ``silent``."""

    path: Path
    category: str
    reason: str


SKIP_CATEGORIES = ("unreadable", "silent", "too short")


@dataclass(frozen=True)
class ScanResult:
    """Outcome of :func:`scan_files`; ``report_path`` lists the skipped files, if any;
    ``conversions`` says in one line what reading the usable files converts (or is ``None``)."""

    source: str
    usable: tuple[AudioFile, ...]
    skipped: tuple[SkippedFile, ...]
    report_path: Path | None = None
    conversions: str | None = None

    def summary(self) -> str:
        counts = Counter(s.category for s in self.skipped)
        total = len(self.usable) + len(self.skipped)
        line = f"scanned {total} files: {len(self.usable)} usable, {len(self.skipped)} skipped"
        if self.skipped:
            line += " (" + ", ".join(f"{counts[c]} {c}" for c in SKIP_CATEGORIES) + ")"
            line += f"; see {self.report_path}" if self.report_path else "; see the warnings above"
        return line


def _probe_file(path: Path) -> FileCheck:
    """Check one file (header, decodability, peak); never raises for a bad file."""
    try:
        stat = path.stat()
        size, mtime_ns = stat.st_size, stat.st_mtime_ns
    except OSError:
        size, mtime_ns = -1, -1
    try:
        info = audio_info(path)
        peak, frames = peak_amplitude(path)
    except AudioError as err:
        return FileCheck(size=size, mtime_ns=mtime_ns, error=err.reason)
    return FileCheck(size=size, mtime_ns=mtime_ns, sample_rate=info.sample_rate, frames=frames,
                     channels=info.channels, peak=peak, subtype=info.subtype)


def classify(check: FileCheck, min_seconds: float, silence_threshold: float) -> tuple[str, str] | None:
    """``(category, reason)`` if the file must be skipped, else ``None``."""
    if check.error is not None:
        return "unreadable", check.error
    seconds = check.frames / check.sample_rate
    if seconds < min_seconds:
        return "too short", f"{seconds:.3f} s is shorter than min_seconds={min_seconds:g}"
    if check.peak < silence_threshold:
        return "silent", f"peak amplitude {check.peak:.3g} is below silence_threshold={silence_threshold:g}"
    return None


def describe_conversions(checks: Sequence[FileCheck], sample_rate: int) -> str | None:
    """One line on what reading the (usable) ``checks``' files at ``sample_rate`` converts, e.g.
    ``"3 files resampled from 44100 Hz to 22050 Hz, 1 file downmixed to mono"``; ``None`` if nothing."""
    rates = Counter(c.sample_rate for c in checks if c.sample_rate != sample_rate)
    formats = Counter(CONVERTED_SAMPLE_FORMATS[c.subtype] for c in checks if c.subtype in CONVERTED_SAMPLE_FORMATS)
    parts = [f"{_files(n)} resampled from {rate} Hz to {sample_rate} Hz" for rate, n in sorted(rates.items())]
    parts += [f"{_files(n)} of {kind} samples read as float32" for kind, n in sorted(formats.items())]
    if downmixed := sum(c.channels > 1 for c in checks):
        parts.append(f"{_files(downmixed)} downmixed to mono")
    if loud := sum(c.peak > 1.0 for c in checks):  # used as is: see audiodiff.io.audio.describe_conversion
        parts.append(f"{_files(loud)} with peaks beyond full scale (1.0) used as is")
    return ", ".join(parts) or None


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _read_cache(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None or not path.is_file():
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if data.get("version") != CACHE_VERSION:
            return {}
        return dict(data["files"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("ignoring unreadable scan cache %s: %s", path, err)
        return {}


def _write_atomic(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` via a temporary file and :func:`os.replace`; False on failure.

    UTF-8, except that file names that are not UTF-8 are written as their own bytes.
    """
    try:
        write_atomically(path, lambda tmp: tmp.write_bytes(text.encode("utf-8", "surrogateescape")))
        return True
    except OSError as err:
        log.warning("could not write %s (%s); the scan will not be cached", path, err)
        return False


def _is_fresh(entry: dict[str, Any] | None, path: Path) -> bool:
    if entry is None:
        return False
    try:
        stat = path.stat()
    except OSError:
        return False
    return entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns


def _check_all(paths: Sequence[Path], cache: dict[str, dict[str, Any]], progress: bool) -> tuple[list[FileCheck], bool]:
    """A :class:`FileCheck` per path, from the cache when fresh; and whether anything was re-checked."""
    checks: dict[Path, FileCheck] = {}
    stale: list[Path] = []
    for path in paths:
        entry = cache.get(str(path))
        if _is_fresh(entry, path):
            checks[path] = FileCheck(**entry)  # type: ignore[arg-type]
        else:
            stale.append(path)
    if stale:
        from tqdm import tqdm

        bar = tqdm(total=len(stale), desc="checking audio files", unit="file",
                   disable=not progress or len(stale) <= PROGRESS_MIN_FILES)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for path, check in zip(stale, pool.map(_probe_file, stale)):
                checks[path] = check
                bar.update()
        bar.close()
    return [checks[p] for p in paths], bool(stale)


def _relative_name(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive on Windows
        return path.as_posix()


def scan_files(
    paths: Sequence[Path],
    *,
    base: Path,
    source: str,
    cache_dir: Path | None,
    min_seconds: float,
    silence_threshold: float,
    progress: bool = True,
    sample_rate: int | None = None,
) -> ScanResult:
    """Check every file of ``paths`` (absolute) and sort them into usable and skipped.

    Results are cached in ``cache_dir/scan-<sha1(source)>.json`` with each file's size and
    mtime, so only new or changed files are decoded again. Thresholds are applied after the
    cache, so changing them needs no re-scan. Names are paths relative to ``base``. With
    ``sample_rate``, ``conversions`` says what reading the usable files at that rate converts.
    """
    key = hashlib.sha1(source.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    cache_path = cache_dir / f"scan-{key}.json" if cache_dir is not None else None
    cache = _read_cache(cache_path)
    checks, changed = _check_all(paths, cache, progress)
    if cache_path is not None and (changed or set(cache) != {str(p) for p in paths}):
        entries = {str(p): asdict(c) for p, c in zip(paths, checks) if c.size >= 0}
        _write_atomic(cache_path, json.dumps({"version": CACHE_VERSION, "source": source, "files": entries}))
    usable: list[AudioFile] = []
    skipped: list[SkippedFile] = []
    converted: list[FileCheck] = []
    for path, check in zip(paths, checks):
        verdict = classify(check, min_seconds, silence_threshold)
        if verdict is None:
            usable.append(AudioFile(path, _relative_name(path, base), check.sample_rate, check.frames))
            converted.append(check)
        else:
            skipped.append(SkippedFile(path, *verdict))
    conversions = describe_conversions(converted, sample_rate) if sample_rate is not None else None
    report = None
    if skipped and cache_path is not None:
        report = cache_path.with_suffix(".skipped.tsv")
        lines = "".join(f"{s.path}\t{s.category}\t{s.reason}\n" for s in skipped)
        report = report if _write_atomic(report, "path\tcategory\treason\n" + lines) else None
    return ScanResult(source=source, usable=tuple(usable), skipped=tuple(skipped), report_path=report,
                      conversions=conversions)


def split_validation(files: Sequence[AudioFile], val_files: int) -> tuple[list[AudioFile], list[AudioFile]]:
    """``(train, val)``: the ``val_files`` files with the smallest sha1 of their name are held out.

    The split depends only on the names, so it is the same on every run, rank and machine, and
    adding files moves a file into validation only if its hash is smaller. At least one file is
    kept for training; a single file is used for both.
    """
    if not files:
        return [], []
    if len(files) == 1:
        return list(files), (list(files) if val_files > 0 else [])
    n_val = max(0, min(val_files, len(files) - 1))
    ranked = sorted(files, key=lambda f: (hashlib.sha1(f.name.encode("utf-8", "surrogateescape")).hexdigest(), f.name))
    held_out = set(ranked[:n_val])
    return [f for f in files if f not in held_out], [f for f in files if f in held_out]


# --------------------------------------------------------------------------- reading crops


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


def _seed_from(*numbers: int) -> int:
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
        index, crop_seed = key if isinstance(key, tuple) else (key, _seed_from(self.seed, key))
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
        generator = torch.Generator().manual_seed(_seed_from(self.seed, self.epoch))
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.length, replacement=True, generator=generator).tolist()
        else:
            rounds = -(-self.length // self.size)
            order = torch.cat([torch.randperm(self.size, generator=generator) for _ in range(rounds)])
            order = order[: self.length].tolist()
        seeds = torch.randint(0, 2**62, (self.length,), generator=generator).tolist()
        self.epoch += 1
        return iter(list(zip(order, seeds)))


# --------------------------------------------------------------------------- data module


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/audiodiff``, or ``~/.cache/audiodiff``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "audiodiff"


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
        for name, value in dict(sample_rate=sample_rate, hop_length=hop_length,
                                crop_frames=crop_frames, batch_size=batch_size).items():
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if resident_dtype not in ("float32", "float16"):
            raise ValueError(f"resident_dtype must be float32 or float16, got {resident_dtype!r}")
        if num_workers < 0 or val_files < 0:
            raise ValueError("num_workers and val_files must be >= 0")
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
        from audiodiff.data.resident import RESIDENT_DTYPES, CropPositions, ResidentAudio

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
        from audiodiff.data.resident import crops_from_positions, is_position_batch

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
