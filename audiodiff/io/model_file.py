"""Model files on disk: bounded, checked reading of safetensors headers, metadata and tensors, and
atomic writing. Nothing here unpickles; a file that cannot be used is one :class:`ModelFileError`.

What the metadata means (the model's configuration) is :mod:`audiodiff.pipeline.config`'s business;
this module only knows the file format.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from audiodiff.io.files import unreadable_reason, write_atomically

#: safetensors refuses headers larger than this; a larger length means the file is something else.
MAX_HEADER_BYTES = 100_000_000

#: safetensors dtype names of the float dtypes a model file may store.
_STORED_FLOATS = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}


class ModelFileError(Exception):
    """A model file that cannot be used; ``str()`` names the file and the problem."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def first_line(error: BaseException, limit: int = 240) -> str:
    """The error's message folded onto one line and shortened to ``limit`` characters."""
    text = " ".join(str(error).split())
    if not text:
        return type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_model_file(path: Path) -> int:
    """The size of the model file ``path``; a :class:`ModelFileError` for a path that cannot be one."""
    reason = unreadable_reason(path, "a model file", missing="no such model file")
    if reason:
        raise ModelFileError(path, reason)
    return path.stat().st_size


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor entries and ``__metadata__``), checked
    against the file's size, so a truncated file is called truncated.

    Read with Python's ``open``, so names that are not UTF-8 work (safetensors refuses them).
    """
    size = check_model_file(path)
    not_safetensors = "not a safetensors model file"
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if size < 8 or length > MAX_HEADER_BYTES:
            raise ModelFileError(path, f"{not_safetensors} (no safetensors header)")
        if 8 + length > size:
            raise ModelFileError(path, f"truncated: {size} bytes, but its header alone takes {8 + length}; "
                                       "copy or download it again")
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            header = None
    if not isinstance(header, dict):
        raise ModelFileError(path, f"{not_safetensors} (its header is not a JSON object)")
    expected = 8 + length + _data_bytes(header)
    if expected > size:
        raise ModelFileError(path, f"truncated: {size} of {expected} bytes; copy or download it again")
    return header


def _data_bytes(header: dict[str, Any]) -> int:
    """Bytes of tensor data a safetensors header describes: the largest end offset."""
    ends = [entry.get("data_offsets") for key, entry in header.items() if key != "__metadata__" and isinstance(entry, dict)]
    return max((end[1] for end in ends if isinstance(end, list) and len(end) == 2 and isinstance(end[1], int)), default=0)


def read_metadata(path: str | os.PathLike, format_name: str, newest_version: int) -> dict[str, Any]:
    """The config dict stored in a model file whose metadata names ``format_name``, after checking
    that its format version is between 1 and ``newest_version`` (what this audiodiff reads)."""
    path = Path(path)
    metadata = read_safetensors_header(path).get("__metadata__") or {}
    if not isinstance(metadata, dict) or metadata.get("format") != format_name:
        raise ModelFileError(path, "a safetensors file, but not an audiodiff model (no audiodiff metadata)")
    try:
        version = int(metadata.get("format_version", "0"))
        config = json.loads(metadata["config"])
    except (KeyError, ValueError) as error:
        raise ModelFileError(path, f"damaged audiodiff metadata ({type(error).__name__}: {first_line(error)})") from None
    if version > newest_version:
        raise ModelFileError(
            path, f"format version {version} is newer than this audiodiff reads ({newest_version}); upgrade audiodiff"
        )
    if version < 1:
        raise ModelFileError(path, f"unknown format version {version}")
    return config


def stored_float_dtype(path: str | os.PathLike) -> torch.dtype | None:
    """The float dtype a ``.safetensors`` model file stores its weights in (``None`` for other
    files), so a rewritten copy keeps the original's size (the shipped models are float16)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    header = read_safetensors_header(path)
    dtypes = {entry.get("dtype") for key, entry in header.items() if key != "__metadata__" and isinstance(entry, dict)}
    floats = [_STORED_FLOATS[name] for name in dtypes if name in _STORED_FLOATS]
    return floats[0] if len(floats) == 1 else None


def read_tensors(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file (memory-mapped; read into memory when the file's name
    is not UTF-8, which safetensors cannot open)."""
    from safetensors.torch import load, load_file

    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return load(path.read_bytes())
    return load_file(str(path))


def write_model_file(path: str | os.PathLike, tensors: Mapping[str, Tensor], metadata: Mapping[str, str],
                     dtype: torch.dtype | None = None) -> Path:
    """Write ``tensors`` (on the CPU, float ones in ``dtype`` if given) and the string ``metadata``
    as one ``.safetensors`` file, atomically (a reader never sees half a file)."""
    from safetensors.torch import save_file

    stored = {k: v.detach().cpu().to(dtype if dtype is not None and v.is_floating_point() else v.dtype).contiguous()
              for k, v in tensors.items()}
    return write_atomically(Path(path), lambda tmp: save_file(stored, str(tmp), metadata=dict(metadata)))
