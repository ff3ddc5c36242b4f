"""What each metric is: its key, table header, direction, digits and description, and its group."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    """How one metric is named, printed and read."""

    key: str
    header: str
    higher_is_better: bool | None
    digits: int
    description: str


METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("pesq_wb", "PESQ", True, 3, "wideband PESQ (P.862.2) at 16 kHz, MOS-LQO 1.04..4.64"),
    MetricInfo("stoi", "STOI", True, 3, "short-time objective intelligibility, 0..1"),
    MetricInfo("estoi", "ESTOI", True, 3, "extended STOI, 0..1"),
    MetricInfo("mrstft", "MR-STFT", False, 3, "multi-resolution STFT distance (convergence + log-magnitude L1)"),
    MetricInfo("mel_l1", "mel-L1", False, 3, "mean |log-mel difference| in the preset's log units"),
    MetricInfo("mcd_db", "MCD", False, 2, "mel-cepstral distortion (c1..c13, frame-aligned), dB"),
    MetricInfo("f0_rmse_cents", "F0-cents", False, 1, "F0 RMSE over frames voiced in both (pyin), cents"),
    MetricInfo("f0_rmse_hz", "F0-Hz", False, 2, "F0 RMSE over frames voiced in both (pyin), Hz"),
    MetricInfo("vuv_f1", "V/UV-F1", True, 3, "voiced/unvoiced F1 with the reference's voicing as truth"),
    MetricInfo("delay_ms", "delay-ms", None, 2, "lag of generated behind reference by cross-correlation, ms"),
)

#: Metric groups that :func:`score_pair` can compute, and the fields each fills.
METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "pesq": ("pesq_wb",),
    "stoi": ("stoi", "estoi"),
    "mrstft": ("mrstft",),
    "mel": ("mel_l1",),
    "mcd": ("mcd_db",),
    "f0": ("f0_rmse_cents", "f0_rmse_hz", "vuv_f1"),
    "delay": ("delay_ms",),
}
