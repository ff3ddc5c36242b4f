"""Finding audio files in a folder: the one walker that training data, evaluation and schedule
search all use, so a file counts as audio by the same rules everywhere."""

from __future__ import annotations

import os
from pathlib import Path

from audiodiff.io.audio import AUDIO_SUFFIXES

PathLike = str | os.PathLike


def find_audio_files(root: PathLike, exclude: PathLike | None = None) -> list[Path]:
    """All files under ``root`` (recursively, following symlinks once) with a suffix in
    :data:`~audiodiff.io.audio.AUDIO_SUFFIXES`, sorted.

    Hidden files and folders (names starting with ``.``, e.g. macOS ``._x.wav`` resource forks)
    are skipped, as is everything under ``exclude`` (an output folder inside the input, say).
    A missing ``root`` is a ``FileNotFoundError``, a file given as ``root`` a ``ValueError``.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: folder not found")
    if not root.is_dir():
        raise ValueError(f"{root}: is a file, not a folder")
    skip = os.path.realpath(exclude) if exclude is not None else None
    found: list[Path] = []
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited or (skip is not None and _is_within(real, skip)):  # a symlink loop, or excluded
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(
            Path(dirpath) / name for name in filenames
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_SUFFIXES
            and os.path.isfile(os.path.join(dirpath, name))
        )
    return sorted(found)


def audio_files_by_name(root: PathLike, exclude: PathLike | None = None) -> dict[str, Path]:
    """:func:`find_audio_files` keyed by name: the relative path without its suffix (``a/x`` for
    ``a/x.wav``), which is how evaluation pairs a reference with a generated file.

    Two files that differ only in suffix (``a/x.wav`` and ``a/x.flac``) are a ``ValueError``.
    """
    root = Path(root)
    named: dict[str, Path] = {}
    for path in find_audio_files(root, exclude):
        name = path.relative_to(root).with_suffix("").as_posix()
        if name in named:
            raise ValueError(f"{named[name]} and {path} have the same name {name!r}; keep one of them")
        named[name] = path
    return named


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
