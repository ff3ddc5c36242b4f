"""Where the training files come from: filelists, LJSpeech ``metadata.csv``, labelled CSVs, and
class labels taken from folder names.

Each reader returns the listed paths in file order without duplicates, relative entries joined
to the listing file's folder; nothing is opened or checked here (that is :mod:`audiodiff.data.scan`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from audiodiff.io.audio import AUDIO_SUFFIXES, PathLike


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


#: Where class labels can come from (``AudioDataModule(labels=...)``).
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
