"""Seeds of a sampler run: one per batch row. The noise itself is
:mod:`audiodiff.diffusion.positional_noise`'s (seeded) or the device's global RNG (unseeded)."""

from __future__ import annotations

from typing import Sequence

#: An int (row ``k`` uses ``seed + k``), one seed per row, or ``None`` (unseeded).
Seed = int | Sequence[int] | None


def row_seeds(seed: int | Sequence[int], batch: int) -> list[int]:
    """One seed per batch row: an int gives row ``k`` the seed ``seed + k``; a sequence is one per row."""
    seeds = [seed + k for k in range(batch)] if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != batch:
        raise ValueError(f"{len(seeds)} seeds for a batch of {batch}")
    return seeds
