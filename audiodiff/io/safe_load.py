"""Pickled files (``.ckpt``, ``.pt``) are read without running code, with one-line errors.

Everything the package unpickles goes through ``torch.load(weights_only=True)``, which rebuilds
tensors and plain values (dicts, lists, strings, numbers) and refuses any other import a pickle
asks for. :func:`describe_load_error` turns torch's long refusal, which suggests loading the file
unsafely, into one line that says what was refused.
"""

from __future__ import annotations

import re

_REFUSED_IMPORT = re.compile(r"Unsupported global: GLOBAL (\S+)")
_REFUSED_OTHER = re.compile(r"WeightsUnpickler error: ([^\n]+)")


def describe_load_error(error: BaseException, limit: int = 240) -> str:
    """Why ``torch.load(weights_only=True)`` failed, on one line of at most ``limit`` characters."""
    text = str(error)
    refused = _REFUSED_IMPORT.search(text)
    if refused:
        return (f"refused: unpickling it would import {refused.group(1)}, which could run code; "
                "only tensors and plain values are read")
    other = _REFUSED_OTHER.search(text)
    if other:
        text = f"refused by the weights-only unpickler: {other.group(1)}"
    text = " ".join(text.split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
