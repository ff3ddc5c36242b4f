"""Atomic file writes: a destination path never holds a partial file.

Every writer of the package (audio, models, mels, figures, JSON results) goes through
:func:`write_atomically`: the content is written to a temporary file in the destination's folder,
flushed to disk, and moved onto the destination with :func:`os.replace`. A crash or Ctrl-C leaves
either the old file or the new one, and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable

PathLike = str | os.PathLike


def write_atomically(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it onto ``path``.

    Parent folders are created. The temporary name ends in ``.tmp``, so ``write`` must name its
    format explicitly where a library would guess it from the suffix. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        # some writers (safetensors) create their file 0600; give it the mode open() would
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    """The process umask, read from ``/proc`` where Linux offers it (``os.umask`` changes it while reading)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: PathLike, data: Any, *, allow_nan: bool = False) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (NaN and infinity refused unless allowed)."""
    return write_text(path, json.dumps(data, indent=2, allow_nan=allow_nan) + "\n")


def unreadable_reason(path: Path, what: str, missing: str = "file not found") -> str | None:
    """Why ``path`` cannot be read as ``what`` before opening it, or ``None`` if it can be tried.

    Reasons: ``missing`` (or "broken symbolic link"), "is a directory, not <what>",
    "permission denied", "empty file (0 bytes)".
    """
    if not path.exists():
        return "broken symbolic link" if path.is_symlink() else missing
    if path.is_dir():
        return f"is a directory, not {what}"
    if not os.access(path, os.R_OK):
        return "permission denied"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    return None
