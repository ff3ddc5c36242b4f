"""The up-front check of every training file, and the hold-out split.

Before training, every file is checked once: unreadable, silent and too-short files are skipped
with a reason (:class:`SkippedFile`), the others become :class:`~audiodiff.data.datasets.AudioFile`
objects. What a check learns (:class:`FileCheck`) is cached per file, keyed by size and mtime, so
a restart only re-checks files that changed; the thresholds are applied after the cache.
Validation files are chosen by a hash of their relative path (:func:`split_validation`), so the
split is stable across runs, machines and ranks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from audiodiff.data.datasets import AudioFile
from audiodiff.io.audio import CONVERTED_SAMPLE_FORMATS, AudioError, audio_info, peak_amplitude
from audiodiff.io.files import write_atomically

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: FileCheck.subtype
#: Show a progress bar when more files than this need checking.
PROGRESS_MIN_FILES = 50


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


def _write_or_warn(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` with :func:`~audiodiff.io.files.write_atomically`; on an
    ``OSError`` warn and return False instead of raising (the cache and the report are optional).

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
    cache_path = _cache_path(cache_dir, source)
    checks = _cached_checks(paths, cache_path, source, progress)
    usable, skipped, converted = _sort_files(paths, checks, base, min_seconds, silence_threshold)
    conversions = describe_conversions(converted, sample_rate) if sample_rate is not None else None
    report = _write_report(cache_path, skipped) if skipped and cache_path is not None else None
    return ScanResult(source=source, usable=tuple(usable), skipped=tuple(skipped), report_path=report,
                      conversions=conversions)


def _cache_path(cache_dir: Path | None, source: str) -> Path | None:
    """``cache_dir/scan-<sha1(source)>.json`` (16 hex digits), or ``None`` without a cache folder."""
    if cache_dir is None:
        return None
    key = hashlib.sha1(source.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return cache_dir / f"scan-{key}.json"


def _cached_checks(paths: Sequence[Path], cache_path: Path | None, source: str, progress: bool) -> list[FileCheck]:
    """A :class:`FileCheck` per path; the cache file is rewritten when a file was re-checked or
    the set of files changed (files that could not even be stat'ed are not cached)."""
    cache = _read_cache(cache_path)
    checks, changed = _check_all(paths, cache, progress)
    if cache_path is not None and (changed or set(cache) != {str(p) for p in paths}):
        entries = {str(p): asdict(c) for p, c in zip(paths, checks) if c.size >= 0}
        _write_or_warn(cache_path, json.dumps({"version": CACHE_VERSION, "source": source, "files": entries}))
    return checks


def _sort_files(paths: Sequence[Path], checks: Sequence[FileCheck], base: Path, min_seconds: float,
                silence_threshold: float) -> tuple[list[AudioFile], list[SkippedFile], list[FileCheck]]:
    """The usable files (named relative to ``base``), the skipped ones with their reasons, and the
    usable files' checks, each in the order of ``paths``."""
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
    return usable, skipped, converted


def _write_report(cache_path: Path, skipped: Sequence[SkippedFile]) -> Path | None:
    """The skipped files as a TSV (path, category, reason) beside the cache: ``scan-<key>.skipped.tsv``;
    ``None`` if it cannot be written."""
    report = cache_path.with_suffix(".skipped.tsv")
    lines = "".join(f"{s.path}\t{s.category}\t{s.reason}\n" for s in skipped)
    return report if _write_or_warn(report, "path\tcategory\treason\n" + lines) else None


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


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/audiodiff``, or ``~/.cache/audiodiff``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "audiodiff"
