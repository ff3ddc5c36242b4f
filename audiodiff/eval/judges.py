"""Optional judges: learned or perceptual quality models that score the generated clip at 16 kHz.

``distillmos`` (DistillMOS naturalness of ``gen``, 1..5), ``dnsmos`` (DNSMOS P.835 ``sig``,
``bak``, ``ovrl`` and P.808 ``p808`` of ``gen`` via ``speechmos``), ``visqol`` (ViSQOL v3
speech mode MOS-LQO of ``gen`` against ``ref``, via ``visqol-python``; with
``ai-edge-litert`` installed it uses the C++ version's lattice mapper, else a polynomial
mapping and a note), all at 16 kHz. The judges score whatever ``gen`` is; only ViSQOL
needs a non-silent reference.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
from typing import Any, Iterable

import numpy as np
import torch

from audiodiff.eval.metrics import SPEECH_RATE, MetricUnavailable, is_silent
from audiodiff.eval.registry import MetricInfo

#: Optional judges: name -> (module to import, pip package, result keys).
JUDGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "distillmos": ("distillmos", "distillmos", ("distillmos",)),
    "dnsmos": ("speechmos.dnsmos", "speechmos onnxruntime", ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")),
    "visqol": ("visqol", "visqol-python", ("visqol",)),
}

JUDGE_METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("distillmos", "DistillMOS", True, 3, "DistillMOS naturalness of the generated clip, 1..5"),
    MetricInfo("dnsmos_ovrl", "DNSMOS-ovrl", True, 3, "DNSMOS P.835 overall quality of the generated clip"),
    MetricInfo("dnsmos_sig", "DNSMOS-sig", True, 3, "DNSMOS P.835 speech signal quality"),
    MetricInfo("dnsmos_bak", "DNSMOS-bak", True, 3, "DNSMOS P.835 background noise quality"),
    MetricInfo("dnsmos_p808", "DNSMOS-p808", True, 3, "DNSMOS P.808 overall quality"),
    MetricInfo("visqol", "ViSQOL", True, 3, "ViSQOL v3 speech-mode MOS-LQO against the reference"),
)


def available_judges() -> list[str]:
    """The optional judges (of :data:`JUDGES`) whose packages import on this machine."""
    return [name for name in JUDGES if _judge_missing(name) is None]


def _judge_missing(name: str) -> str | None:
    """``None`` when judge ``name`` can run, else a one-line reason."""
    module, package, _ = JUDGES[name]
    try:
        importlib.import_module(module)
        if name == "dnsmos":
            importlib.import_module("onnxruntime")
    except Exception as error:  # noqa: BLE001 - a broken install is as unusable as a missing one
        return f"judge {name!r} needs `pip install {package}` ({type(error).__name__}: {error})"
    return None


def check_judges(judges: Iterable[str]) -> tuple[str, ...]:
    """Validate judge names; raises ``ValueError`` naming an unknown or not installed judge."""
    judges = tuple(judges)
    for name in judges:
        if name not in JUDGES:
            raise ValueError(f"unknown judge {name!r}; choose from {sorted(JUDGES)}")
        missing = _judge_missing(name)
        if missing:
            raise ValueError(missing)
    return judges


@functools.lru_cache(maxsize=1)
def _distillmos_model() -> torch.nn.Module:
    import distillmos

    with contextlib.redirect_stdout(io.StringIO()):  # it prints where it loaded its weights from
        return distillmos.ConvTransformerSQAModel().eval()


def _visqol_has_lattice() -> bool:
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
    api.create(mode="speech", use_lattice_model=_visqol_has_lattice())
    return api


def _run_judge(name: str, reference16: np.ndarray, generated16: np.ndarray) -> dict[str, float]:
    """Scores of judge ``name`` (keys of :data:`JUDGES`) for 16 kHz clips ``(T,)``."""
    if len(generated16) == 0:
        raise MetricUnavailable("empty clip")
    if name == "visqol" and is_silent(reference16):
        raise MetricUnavailable("ViSQOL needs a non-silent reference")
    if name == "distillmos":
        with torch.inference_mode():
            mos = _distillmos_model()(torch.from_numpy(generated16).float().unsqueeze(0))
        return {"distillmos": float(mos.reshape(-1)[0])}
    if name == "dnsmos":
        from speechmos import dnsmos

        result = dnsmos.run(np.clip(generated16, -1.0, 1.0).astype(np.float32), SPEECH_RATE)
        return {f"dnsmos_{k}": float(result[f"{k}_mos"]) for k in ("ovrl", "sig", "bak", "p808")}
    if name == "visqol":
        result = _visqol_api().measure_from_arrays(reference16, generated16, SPEECH_RATE)
        return {"visqol": float(result.moslqo)}
    raise ValueError(f"unknown judge {name!r}")
