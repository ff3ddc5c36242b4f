"""Inference engines: how the network runs while sampling (:mod:`.base`'s protocol; eager, compiled,
folded, fused; :mod:`.registry` by name), chunked synthesis over any of them, and the defaults
:mod:`.policy` decides (engine, precision, chunk length per device)."""

from audiodiff.engines.base import CompiledEngine, EagerEngine, Engine
from audiodiff.engines.policy import (DEFAULT_CHUNK_SECONDS, PRECISIONS, default_chunk_seconds, resolve_engine,
                                      resolve_precision)
from audiodiff.engines.registry import ENGINES, make_engine

__all__ = ["CompiledEngine", "DEFAULT_CHUNK_SECONDS", "ENGINES", "EagerEngine", "Engine", "PRECISIONS",
           "default_chunk_seconds", "make_engine", "resolve_engine", "resolve_precision"]
