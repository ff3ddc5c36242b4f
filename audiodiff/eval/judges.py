"""Optional judges: learned or perceptual quality models that score the generated clip at 16 kHz.

``distillmos`` (DistillMOS naturalness of ``gen``, 1..5), ``dnsmos`` (DNSMOS P.835 ``sig``,
``bak``, ``ovrl`` and P.808 ``p808`` of ``gen`` via ``speechmos``), ``visqol`` (ViSQOL v3
speech mode MOS-LQO of ``gen`` against ``ref``, via ``visqol-python``; with
``ai-edge-litert`` installed it uses the C++ version's lattice mapper, else a polynomial
mapping and a note), all at 16 kHz. The judges score whatever ``gen`` is; only ViSQOL
needs a non-silent reference.

Each judge is a function ``(reference16, generated16) -> {key: score}`` of two 16 kHz clips
``(T,)``, registered in :mod:`audiodiff.eval.registry` with the packages it needs; the models
load once, on first use.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
from typing import Any

import numpy as np
import torch

from audiodiff.eval.metrics import SPEECH_RATE, MetricUnavailable, is_silent


def _check_generated(generated16: np.ndarray) -> None:
    if len(generated16) == 0:
        raise MetricUnavailable("empty clip")


@functools.lru_cache(maxsize=1)
def _distillmos_model() -> torch.nn.Module:
    import distillmos

    with contextlib.redirect_stdout(io.StringIO()):  # it prints where it loaded its weights from
        return distillmos.ConvTransformerSQAModel().eval()


def distillmos_scores(reference16: np.ndarray, generated16: np.ndarray) -> dict[str, float]:
    """``{"distillmos": MOS}`` of the generated 16 kHz clip ``(T,)`` (the reference is not used)."""
    _check_generated(generated16)
    with torch.inference_mode():
        mos = _distillmos_model()(torch.from_numpy(generated16).float().unsqueeze(0))
    return {"distillmos": float(mos.reshape(-1)[0])}


def dnsmos_scores(reference16: np.ndarray, generated16: np.ndarray) -> dict[str, float]:
    """DNSMOS ``dnsmos_ovrl``, ``_sig``, ``_bak``, ``_p808`` of the generated 16 kHz clip ``(T,)``."""
    _check_generated(generated16)
    from speechmos import dnsmos

    result = dnsmos.run(np.clip(generated16, -1.0, 1.0).astype(np.float32), SPEECH_RATE)
    return {f"dnsmos_{k}": float(result[f"{k}_mos"]) for k in ("ovrl", "sig", "bak", "p808")}


def visqol_has_lattice() -> bool:
    """Whether ViSQOL can use its deep-lattice MOS mapper (the C++ default; needs ai-edge-litert)."""
    try:
        importlib.import_module("ai_edge_litert.interpreter")
    except Exception:  # noqa: BLE001
        return False
    return True


@functools.lru_cache(maxsize=1)
def _visqol_api() -> Any:
    from visqol import VisqolApi

    api = VisqolApi()
    api.create(mode="speech", use_lattice_model=visqol_has_lattice())
    return api


def visqol_scores(reference16: np.ndarray, generated16: np.ndarray) -> dict[str, float]:
    """``{"visqol": MOS-LQO}`` of the generated 16 kHz clip ``(T,)`` against the reference."""
    _check_generated(generated16)
    if is_silent(reference16):
        raise MetricUnavailable("ViSQOL needs a non-silent reference")
    result = _visqol_api().measure_from_arrays(reference16, generated16, SPEECH_RATE)
    return {"visqol": float(result.moslqo)}
