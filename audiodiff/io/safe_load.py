"""Pickled files (``.ckpt``, ``.pt``) are read without running code, with one-line errors.

Everything the package unpickles goes through :func:`load_pickle_safely`
(``torch.load(weights_only=True)``), which rebuilds tensors and plain values (dicts, lists,
strings, numbers) and refuses any other import a pickle asks for. :func:`describe_load_error`
turns torch's long refusal into one line that says what was refused and why. torch's own text
suggests re-running with ``weights_only=False``, the one thing a user given an untrusted file must
not do; this line never does.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

#: How torch names the import it refused, across releases ("Unsupported global: GLOBAL x.y",
#: "Trying to load unsupported GLOBAL x.y whose module x is blocked").
_REFUSED_IMPORT = re.compile(r"GLOBAL ([\w.]+)")
_REFUSED_OTHER = re.compile(r"WeightsUnpickler error:\s*([^\n]+)")
_WEIGHTS_ONLY_FAILURE = "Weights only load failed"


def load_pickle_safely(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain values only, never code.

    torch's warning about a pickle protocol its safe unpickler was not written for is silenced:
    the refusal, if any, is the error :func:`describe_load_error` describes.
    """
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(path, map_location=map_location, weights_only=True)


def describe_load_error(error: BaseException, limit: int = 240) -> str:
    """Why ``torch.load(weights_only=True)`` failed, on one line of at most ``limit`` characters.

    A refused pickle is described as refused because loading it could run code; the line never
    suggests loading the file without that protection.
    """
    text = str(error)
    refused = _REFUSED_IMPORT.search(text)
    if refused:
        return (f"refused: unpickling it would import {refused.group(1)}, which could run code; "
                "only tensors and plain values are read")
    if _WEIGHTS_ONLY_FAILURE in text or _REFUSED_OTHER.search(text):
        other = _REFUSED_OTHER.search(text)
        detail = f" ({' '.join(other.group(1).split())})" if other else ""
        line = ("refused: it is a pickle that only tensors and plain values may be read from, and loading "
                f"the rest could run code{detail}")
    else:
        line = " ".join(text.split()) or type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
