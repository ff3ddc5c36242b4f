"""Seeded noise that depends only on the seed, the draw and the sample position.

A sampler draws noise ``draws`` times (the start, then once per stochastic step). Drawn here, the
noise at sample ``t`` of draw ``d`` for seed ``s`` is the same number whichever span ``[start,
stop)`` is asked for: the time axis is cut into fixed blocks of :data:`NOISE_BLOCK` samples, and
block ``j`` of draw ``d`` comes from its own generator seeded with a hash of ``(s, d, j)``. That
is what lets a mel be vocoded in pieces (streaming, chunked windows) and give the same audio as in
one piece: no piece's noise depends on where the piece starts or how long the whole is.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

#: Samples per independently seeded noise block.
NOISE_BLOCK = 4096
_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    """One round of SplitMix64 (Steele et al. 2014): a well-mixed 64-bit function of ``value``."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def block_seed(seed: int, draw: int, block: int) -> int:
    """The generator seed of noise block ``block`` of draw ``draw`` for ``seed`` (63 bits)."""
    mixed = _splitmix64(int(seed) & _MASK64)
    mixed = _splitmix64(mixed ^ (int(draw) & _MASK64))
    mixed = _splitmix64(mixed ^ (int(block) & _MASK64))
    return mixed >> 1


def noise_block(seed: int, draw: int, block: int) -> Tensor:
    """Standard normal noise of block ``block``: ``(NOISE_BLOCK,)`` float32 on the CPU."""
    generator = torch.Generator().manual_seed(block_seed(seed, draw, block))
    return torch.randn(NOISE_BLOCK, generator=generator)


def positional_noise(seeds: Sequence[int], draw: int, start: int, stop: int,
                     device: torch.device | str = "cpu") -> Tensor:
    """Standard normal noise for samples ``[start, stop)`` of draw ``draw``: ``(len(seeds), stop - start)``.

    Row ``k`` uses ``seeds[k]``. Drawn on the CPU and moved to ``device``, so a seed gives the same
    noise on every device.
    """
    if start < 0 or stop < start:
        raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
    first, last = start // NOISE_BLOCK, max(start, stop - 1) // NOISE_BLOCK
    rows = []
    for seed in seeds:
        blocks = torch.cat([noise_block(seed, draw, j) for j in range(first, last + 1)])
        offset = start - first * NOISE_BLOCK
        rows.append(blocks[offset: offset + stop - start])
    return torch.stack(rows).to(device)


class PositionalNoise:
    """The noise of one sampler run over samples ``[start, stop)``: :meth:`initial` is draw 0 and
    each :meth:`fresh` call the next draw, as a sampler's ``noise_fn``.

    ``std`` ``(B, stop - start)`` scales every draw (a data-dependent prior); ``None`` is unit.
    :meth:`per_row` gives each row its own start (windows of one length at different places).
    """

    def __init__(self, seeds: Sequence[int], start: int, stop: int, device: torch.device | str,
                 std: Tensor | None = None) -> None:
        self.seeds, self.start, self.stop, self.device, self.std = list(seeds), start, stop, device, std
        self.starts = [start] * len(self.seeds)
        self.draws = 0

    @classmethod
    def per_row(cls, seeds: Sequence[int], starts: Sequence[int], length: int, device: torch.device | str,
                std: Tensor | None = None) -> "PositionalNoise":
        """Row ``k`` gets samples ``[starts[k], starts[k] + length)`` of seed ``seeds[k]``."""
        if len(starts) != len(seeds):
            raise ValueError(f"{len(starts)} starts for {len(seeds)} seeds")
        noise = cls(seeds, int(starts[0]) if starts else 0, (int(starts[0]) if starts else 0) + length, device, std)
        noise.starts = [int(s) for s in starts]
        return noise

    def _draw(self) -> Tensor:
        length = self.stop - self.start
        if len(set(self.starts)) <= 1:
            noise = positional_noise(self.seeds, self.draws, self.start, self.stop, self.device)
        else:
            noise = torch.cat([positional_noise([seed], self.draws, start, start + length)
                               for seed, start in zip(self.seeds, self.starts)]).to(self.device)
        self.draws += 1
        return noise if self.std is None else noise * self.std.to(noise.device, noise.dtype)

    def initial(self) -> Tensor:
        """Draw 0: the starting noise ``(B, stop - start)``."""
        if self.draws:
            raise RuntimeError("the initial noise is drawn once, before any fresh noise")
        return self._draw()

    def fresh(self, like: Tensor) -> Tensor:
        """The next draw, shaped like ``like`` ``(B, stop - start)`` (a sampler's ``noise_fn``)."""
        if tuple(like.shape) != (len(self.seeds), self.stop - self.start):
            raise ValueError(f"noise for shape {(len(self.seeds), self.stop - self.start)}, asked for {tuple(like.shape)}")
        if not self.draws:
            raise RuntimeError("draw the initial noise first")
        return self._draw()
