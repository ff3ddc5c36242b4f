"""What an inference engine is: one explicit protocol, and the two engines that are the network's
own code (eager, and ``torch.compile``-d).

An engine computes the network's function, possibly in another form: it turns a mel (or class
labels) into conditioning once per utterance (:meth:`Engine.condition`) and predicts the noise at
each sampler step (:meth:`Engine.denoise`). ``AudioDiffusion`` holds one (``model.engine``); the
chunked path (:mod:`audiodiff.engines.chunking`) works over any of them. The others are
:class:`~audiodiff.engines.folded.FoldedDenoiser` (the CPU's fastest) and
:class:`~audiodiff.engines.fused.FusedDenoiser` (Triton kernels on CUDA); the registry is
:mod:`audiodiff.engines.registry`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from audiodiff.network.diffwave import Conditioning, DiffWave


@runtime_checkable
class Engine(Protocol):
    """How a network runs during sampling.

    ``name`` is the engine's registry name. ``reads_mel``: the engine reads the upsampled mel at
    every step and projects it itself, so caching per-block projections would only cost memory
    (``vocode`` then conditions with ``cache_projections=False``).
    """

    name: str
    reads_mel: bool

    def condition(self, mel: Tensor | None, cache_projections: bool = True, *,
                  labels: Tensor | None = None) -> Any:
        """Mel ``(B, n_mels, frames)`` (or ``None`` with class ids ``labels`` ``(B,)``, or neither)
        -> the conditioning :meth:`denoise` reads, in this engine's form."""
        ...

    def denoise(self, audio: Tensor, step: Tensor, conditioning: Any) -> Tensor:
        """Noisy ``audio`` ``(B, T)``, training steps ``step`` ``(B,)`` -> predicted noise ``(B, T)``."""
        ...


class EagerEngine:
    """The network's own ``condition`` and ``denoise``: the reference the other engines match."""

    name = "eager"
    reads_mel = False

    def __init__(self, network: DiffWave) -> None:
        self.network = network

    def condition(self, mel: Tensor | None, cache_projections: bool = True, *,
                  labels: Tensor | None = None) -> Conditioning:
        return self.network.condition(mel, cache_projections, labels=labels)

    def denoise(self, audio: Tensor, step: Tensor, conditioning: Conditioning) -> Tensor:
        return self.network.denoise(audio, step, conditioning)


class CompiledEngine(EagerEngine):
    """The network's ``denoise`` through ``torch.compile`` (its ``condition`` runs eagerly, once per utterance).

    ``mode`` and ``dynamic`` are ``torch.compile``'s (``"reduce-overhead"`` adds CUDA graphs). The
    first call for each new input shape compiles (tens of seconds); it pays off when many
    equal-length batches are vocoded, e.g. a server, not for one file.
    """

    name = "compile"

    def __init__(self, network: DiffWave, mode: str | None = None, dynamic: bool | None = None) -> None:
        super().__init__(network)
        self._compiled = torch.compile(network.denoise, mode=mode, dynamic=dynamic)

    def denoise(self, audio: Tensor, step: Tensor, conditioning: Conditioning) -> Tensor:
        return self._compiled(audio, step, conditioning)
