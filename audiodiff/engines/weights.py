"""What every inference engine needs beside the network: its own form of the weights, built once
per (device, dtype) and rebuilt whenever a parameter changes, and the dtype the activations run
in under autocast."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn


class WeightsByDtype:
    """An inference engine's form of a network's weights, built by ``build(network, dtype)`` once
    per (device the network is on, dtype) at first use; call it with the dtype.

    Never stale: every call compares each parameter's version counter (bumped by every in-place
    change: an optimizer step, ``load_state_dict``, ``add_`` under ``no_grad``) and storage
    (replaced by ``.to()``, ``.data =``) with those the built forms were made from, and rebuilds
    after any change.
    """

    def __init__(self, network: nn.Module, build: Callable[[nn.Module, torch.dtype], Any]) -> None:
        self.network, self.build = network, build
        self._built: dict[tuple[torch.device, torch.dtype], Any] = {}
        self._built_from: tuple[tuple[int, int], ...] = ()

    def _parameters_state(self) -> tuple[tuple[int, int], ...]:
        """Each parameter's ``(version counter, data pointer)``: changes when its values may have."""
        return tuple((p._version, p.data_ptr()) for p in self.network.parameters())

    def __call__(self, dtype: torch.dtype) -> Any:
        state = self._parameters_state()
        if state != self._built_from:
            self._built.clear()
            self._built_from = state
        key = (next(self.network.parameters()).device, dtype)
        if key not in self._built:
            self._built[key] = self.build(self.network, dtype)
        return self._built[key]


def activation_dtype(device: torch.device) -> torch.dtype:
    """The dtype of the active autocast on ``device`` (bf16/fp16), float32 outside autocast."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32
