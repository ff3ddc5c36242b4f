"""Pairing the files of a reference folder and a generated folder by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from audiodiff.io.audio import PathLike
from audiodiff.io.audio_files import audio_files_by_name


@dataclass
class Pairing:
    """Files of two folders matched by name (relative path without suffix, ``/``-separated).

    ``pairs`` holds ``(name, reference path, generated path)`` sorted by name; ``missing_gen``
    the names of references without a generated file, ``missing_ref`` the reverse.
    """

    pairs: list[tuple[str, Path, Path]]
    missing_gen: list[str] = field(default_factory=list)
    missing_ref: list[str] = field(default_factory=list)


def pair_files(ref_dir: PathLike, gen_dir: PathLike) -> Pairing:
    """Pair the audio files of ``ref_dir`` and ``gen_dir`` by name (see :func:`audiodiff.io.audio_files.audio_files_by_name`).

    ``ref/a/x.flac`` pairs with ``gen/a/x.wav``. Raises ``FileNotFoundError`` for a missing
    folder and ``ValueError`` when no file pairs up.
    """
    refs, gens = audio_files_by_name(ref_dir), audio_files_by_name(gen_dir)
    names = sorted(set(refs) & set(gens))
    if not names:
        raise ValueError(
            f"no files pair up: {len(refs)} audio file(s) in {ref_dir}, {len(gens)} in {gen_dir}; files pair "
            "by their path relative to the folder without the suffix (ref/a/x.flac with gen/a/x.wav)"
        )
    return Pairing(
        pairs=[(name, refs[name], gens[name]) for name in names],
        missing_gen=sorted(set(refs) - set(gens)),
        missing_ref=sorted(set(gens) - set(refs)),
    )
