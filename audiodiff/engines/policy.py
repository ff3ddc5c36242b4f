"""Defaults decided in the library, so the Python API and the CLI choose alike: which engine and
which precision ``"auto"`` means on a device, and how long a chunk of a long mel is."""

from __future__ import annotations

import torch

from audiodiff.engines.registry import ENGINES

#: ``precision`` of the network during sampling: autocast dtype (``None``: plain float32). The
#: sampler's own arithmetic stays in float32 (or float64) whatever the precision.
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

#: Default chunk length in seconds by device type: inputs longer than this are vocoded in chunks.
#: On a CPU, 2 s windows stay in cache and are faster than one piece (tiny, 30 s of audio, 1 step:
#: 4.2 s in 1-2 s chunks, 8.7 s in 10 s chunks, 22.7 s in one piece; base, 20 s: 54 s in 2 s
#: chunks, 65 s in one piece, on the 2-core development machine); a GPU wants long windows.
DEFAULT_CHUNK_SECONDS = {"cpu": 2.0, "cuda": 30.0}


def _device_type(device: torch.device | str) -> str:
    return torch.device(device).type


def resolve_engine(name: str, device: torch.device | str) -> str:
    """The engine ``name`` stands for on ``device``: ``auto`` is ``folded`` on a CPU (the fastest
    there, the same audio) and ``eager`` elsewhere; another name must be a key of :data:`ENGINES`."""
    if name == "auto":
        return "folded" if _device_type(device) == "cpu" else "eager"
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose auto or one of {list(ENGINES)}")
    return name


def resolve_precision(name: str, device: torch.device | str) -> str:
    """The precision ``name`` stands for on ``device``: ``auto`` is ``bf16`` on CUDA (faster,
    audibly the same) and ``fp32`` elsewhere; another name must be a key of :data:`PRECISIONS`."""
    if name == "auto":
        return "bf16" if _device_type(device) == "cuda" else "fp32"
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; choose one of {list(PRECISIONS)}")
    return name


def default_chunk_seconds(device: torch.device | str) -> float:
    """The default chunk length for ``device`` (30 s for any device other than a CPU)."""
    return DEFAULT_CHUNK_SECONDS.get(_device_type(device), DEFAULT_CHUNK_SECONDS["cuda"])
