"""Training callbacks built on Lightning's own."""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.callbacks import WeightAveraging
from torch import Tensor


def warmup_ema_decay(decay: float, num_averaged: int, warmup: bool = True) -> float:
    """The EMA decay for the ``num_averaged``-th update: ``min(decay, (1 + n) / (10 + n))`` with warm-up.

    The warm-up (as in TensorFlow's ExponentialMovingAverage with ``num_updates``) lets the
    average follow the weights early in training, so validation of a short run (a few hundred
    steps) measures trained weights rather than the initialisation.
    """
    if not warmup:
        return decay
    return min(decay, (1.0 + num_averaged) / (10.0 + num_averaged))


class EMA(WeightAveraging):
    """Exponential moving average of the weights, with an optional warm-up of the decay.

    A :class:`~pytorch_lightning.callbacks.WeightAveraging` (Lightning swaps the average in for
    validation, stores it as the checkpoint's ``state_dict`` and restores it on resume); it
    differs from Lightning's ``EMAWeightAveraging`` only in the warm-up.

    Args:
        decay: Decay once warmed up (e.g. 0.9999 for long runs, 0.99 for minutes on a CPU).
        warmup: Ramp the decay as ``(1 + n) / (10 + n)`` until it reaches ``decay``.
        update_every_n_steps: Update the average every this many optimiser steps.
    """

    def __init__(self, decay: float = 0.9999, warmup: bool = True, update_every_n_steps: int = 1,
                 **kwargs: Any) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")

        def average(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
            """One in-place update of all parameters (one host sync per step, not per tensor)."""
            weight = 1.0 - warmup_ema_decay(decay, int(num_averaged), warmup)
            floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
            if floats:
                torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)

        super().__init__(multi_avg_fn=average, use_buffers=True, **kwargs)
        self.decay = decay
        self.warmup = warmup
        self.update_every_n_steps = update_every_n_steps

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and self.update_every_n_steps > 0 and step_idx % self.update_every_n_steps == 0
