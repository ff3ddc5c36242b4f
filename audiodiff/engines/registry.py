"""The engines by name: ``make_engine("folded", network)`` builds one for a network."""

from __future__ import annotations

from typing import Any, Callable

from audiodiff.engines.base import CompiledEngine, EagerEngine, Engine
from audiodiff.network.diffwave import DiffWave


def _folded(network: DiffWave) -> Engine:
    from audiodiff.engines.folded import FoldedDenoiser

    return FoldedDenoiser(network)


def _fused(network: DiffWave, launch: Any = None, read_mel: bool = True) -> Engine:
    """``launch``: a :class:`~audiodiff.engines.fused.Launch`, its text (``"128x8"``) or ``None`` (the default)."""
    from audiodiff.engines.fused import FusedDenoiser, Launch

    chosen = Launch.parse(launch) if isinstance(launch, str) else launch or Launch()
    return FusedDenoiser(network, chosen, read_mel)


#: Engine factories by name: ``factory(network, **options) -> Engine``. ``compile`` takes
#: ``torch.compile``'s ``mode`` and ``dynamic``; ``fused`` takes ``launch`` and ``read_mel``.
ENGINES: dict[str, Callable[..., Engine]] = {
    "eager": EagerEngine,
    "folded": _folded,
    "compile": CompiledEngine,
    "fused": _fused,
}


def make_engine(name: str, network: DiffWave, **options: Any) -> Engine:
    """The engine ``name`` (a key of :data:`ENGINES`) for ``network``; a ``ValueError`` for an
    unknown name, a ``RuntimeError`` for one the network or its device cannot run (e.g. ``fused``
    on a CPU)."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {list(ENGINES)}")
    return ENGINES[name](network, **options)
