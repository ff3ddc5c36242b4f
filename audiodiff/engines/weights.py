"""What every inference engine needs beside the network: its own form of the weights, built once
per (device, dtype), and the dtype the activations run in under autocast."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn


class WeightsByDtype:
    """An inference engine's form of a network's weights, built by ``build(network, dtype)`` once
    per (device the network is on, dtype) at first use; call it with the dtype."""

    def __init__(self, network: nn.Module, build: Callable[[nn.Module, torch.dtype], Any]) -> None:
        self.network, self.build = network, build
        self._built: dict[tuple[torch.device, torch.dtype], Any] = {}

    def __call__(self, dtype: torch.dtype) -> Any:
        key = (next(self.network.parameters()).device, dtype)
        if key not in self._built:
            self._built[key] = self.build(self.network, dtype)
        return self._built[key]


def activation_dtype(device: torch.device) -> torch.dtype:
    """The dtype of the active autocast on ``device`` (bf16/fp16), float32 outside autocast."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32
