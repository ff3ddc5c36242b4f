"""Seeded noise, one generator per batch row: the same seed gives the same noise on every device."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

#: An int (row ``k`` uses ``seed + k``), one seed per row, or ``None`` (unseeded).
Seed = int | Sequence[int] | None


def row_generators(seed: Seed, batch: int) -> list[torch.Generator] | None:
    """One CPU generator per batch row, or ``None`` for no seed.

    An int seeds row ``k`` with ``seed + k``; a sequence gives each row its own seed.
    """
    if seed is None:
        return None
    seeds = [seed + k for k in range(batch)] if isinstance(seed, int) else list(seed)
    if len(seeds) != batch:
        raise ValueError(f"{len(seeds)} seeds for a batch of {batch}")
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def randn_rows(shape: Sequence[int], generators: list[torch.Generator] | None, device: torch.device) -> Tensor:
    """Standard normal ``shape`` ``(B, ...)``; row ``k`` drawn from ``generators[k]`` on the CPU.

    Drawing on the CPU makes a seed give the same noise on every device.
    """
    if generators is None:
        return torch.randn(*shape, device=device)
    rows = [torch.randn(*shape[1:], generator=g) for g in generators]
    return torch.stack(rows).to(device)
