"""The metric registry, and the optional judges' whole code path with fake judge packages.

The real judges (distillmos, speechmos + onnxruntime, visqol-python) are usually not installed, so
``test_evaluation.py``'s judge test skips; here each judge's module is replaced by a fake one in
``sys.modules`` that returns known values and records what it was given.
"""

from __future__ import annotations

import argparse
import json
import sys
import types

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.eval import (
    JUDGE_METRICS, JUDGES, METRIC_GROUPS, METRIC_INFO, METRICS, REGISTRY, PairScore, available_judges, check_judges,
    evaluate_pairs, pair_files, register, result_keys, score_pair, write_json,
)
from audiodiff.eval import judges as judge_functions
from audiodiff.eval.registry import MetricGroup, MetricInfo
from conftest import speech_like

SR = 22050
ALL_JUDGES = ("distillmos", "dnsmos", "visqol")
DNSMOS = {"ovrl_mos": 3.1, "sig_mos": 3.5, "bak_mos": 4.0, "p808_mos": 3.8}


# ------------------------------------------------------------------ the registry
def test_every_registered_metric_has_a_unique_key_a_group_and_a_direction():
    keys = [m.key for g in REGISTRY.values() for m in g.metrics]
    assert len(keys) == len(set(keys)) and set(keys) == set(METRIC_INFO)
    for group in REGISTRY.values():
        assert group.metrics and callable(group.compute) and group.kind in ("delay", "reference", "judge")
        for info in group.metrics:
            assert info.higher_is_better in (True, False) or (info.higher_is_better is None and group.kind == "delay")
            assert info.header and info.description and info.digits >= 0
        if group.kind == "judge":
            assert group.requires and group.package


def test_the_published_tables_are_views_of_the_registry():
    assert set(METRIC_GROUPS) <= set(REGISTRY) and set(JUDGES) <= set(REGISTRY)
    assert not set(METRIC_GROUPS) & set(JUDGES)
    for name, keys in METRIC_GROUPS.items():
        assert REGISTRY[name].keys == keys and REGISTRY[name].kind != "judge"
    assert [m.key for m in METRICS] == [k for keys in METRIC_GROUPS.values() for k in keys]
    assert [m.key for m in JUDGE_METRICS] == [k for _, _, keys in JUDGES.values() for k in keys]
    # every metric is a field of PairScore; the judges' keys go to PairScore.judges
    assert list(PairScore().values()) == [m.key for m in METRICS]
    assert result_keys() == [m.key for m in METRICS]
    assert result_keys(["f0", "pesq"], ["visqol"]) == ["pesq_wb", "f0_rmse_cents", "f0_rmse_hz", "vuv_f1", "visqol"]


def test_the_table_keeps_its_order_and_the_judges_their_install_hints():
    assert list(METRIC_GROUPS) == ["pesq", "stoi", "mrstft", "mel", "mcd", "f0", "delay"]
    assert JUDGES == {
        "distillmos": ("distillmos", "distillmos", ("distillmos",)),
        "dnsmos": ("speechmos.dnsmos", "speechmos onnxruntime",
                   ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")),
        "visqol": ("visqol", "visqol-python", ("visqol",)),
    }


def test_register_refuses_a_taken_name_or_key():
    info = MetricInfo("x_new", "X", True, 3, "a metric")
    with pytest.raises(ValueError, match="already registered"):
        register(MetricGroup("pesq", (info,), lambda clips: 1.0))
    with pytest.raises(ValueError, match="already registered"):
        register(MetricGroup("new", (MetricInfo("mel_l1", "X", True, 3, "a metric"),), lambda clips: 1.0))
    with pytest.raises(ValueError, match="needs the modules"):
        register(MetricGroup("new", (info,), lambda clips: 1.0, kind="judge"))
    assert "new" not in REGISTRY


def test_the_cli_offers_the_registered_groups_and_judges():
    from audiodiff.cli import build_parser

    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = {a.dest: a for a in subcommands.choices["eval"]._actions}
    assert list(options["metrics"].choices) == list(METRIC_GROUPS)
    assert list(options["judges"].choices) == list(JUDGES)


# ------------------------------------------------------------------ fake judges
class _Calls(list):
    """What the fake judges were called with: ``(judge, sample rate, reference, generated)``."""


@pytest.fixture
def fake_judges(monkeypatch):
    """Installs importable fake ``distillmos``, ``speechmos.dnsmos`` + ``onnxruntime`` and ``visqol``.

    DistillMOS says 3.25, DNSMOS :data:`DNSMOS`, ViSQOL 4.5 minus the generated clip's RMS
    difference; DNSMOS raises for a generated clip whose peak is below 0.05.
    """
    calls = _Calls()

    class ConvTransformerSQAModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            print("loading fake DistillMOS weights")  # the real one prints; eval keeps stdout clean

        def forward(self, x):
            calls.append(("distillmos", None, None, x))
            return torch.full((x.shape[0], 1), 3.25)

    def run(audio, sample_rate):
        calls.append(("dnsmos", sample_rate, None, audio))
        if np.abs(audio).max() < 0.05:
            raise RuntimeError("fake DNSMOS\nfailed")
        return dict(DNSMOS)

    class VisqolApi:
        def create(self, mode, use_lattice_model):
            self.mode, self.lattice = mode, use_lattice_model

        def measure_from_arrays(self, reference, generated, sample_rate):
            calls.append(("visqol", sample_rate, reference, generated))
            assert self.mode == "speech"
            return types.SimpleNamespace(moslqo=4.5 - float(np.sqrt(np.mean((reference - generated) ** 2))))

    dnsmos = types.ModuleType("speechmos.dnsmos")
    dnsmos.run = run
    speechmos = types.ModuleType("speechmos")
    speechmos.dnsmos = dnsmos
    modules = {
        "distillmos": types.SimpleNamespace(ConvTransformerSQAModel=ConvTransformerSQAModel),
        "speechmos": speechmos, "speechmos.dnsmos": dnsmos, "onnxruntime": types.ModuleType("onnxruntime"),
        "visqol": types.SimpleNamespace(VisqolApi=VisqolApi),
        "ai_edge_litert": None, "ai_edge_litert.interpreter": None,  # no lattice mapper
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    judge_functions._distillmos_model.cache_clear()
    judge_functions._visqol_api.cache_clear()
    yield calls
    judge_functions._distillmos_model.cache_clear()
    judge_functions._visqol_api.cache_clear()


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """1 s of speech-like audio at 22.05 kHz, float64 (T,)."""
    return np.asarray(speech_like(1.0, SR), dtype=np.float64)


def test_fake_judges_are_accepted(fake_judges):
    assert available_judges() == list(ALL_JUDGES)
    assert check_judges(["visqol", "distillmos", "dnsmos"]) == ("visqol", "distillmos", "dnsmos")


def test_a_judge_without_all_its_packages_is_refused(fake_judges, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert available_judges() == ["distillmos", "visqol"]
    with pytest.raises(ValueError, match=r"judge 'dnsmos' needs `pip install speechmos onnxruntime`"):
        check_judges(["dnsmos"])


def test_score_pair_runs_the_judges_on_16_khz_audio(fake_judges, clip, capsys):
    gen = 0.9 * clip
    score = score_pair(clip, gen, SR, metrics=(), judges=ALL_JUDGES)

    expected_visqol = 4.5 - float(np.sqrt(np.mean((0.1 * _at_16k(clip)) ** 2)))
    assert score.judges == pytest.approx({"distillmos": 3.25, "dnsmos_ovrl": 3.1, "dnsmos_sig": 3.5,
                                          "dnsmos_bak": 4.0, "dnsmos_p808": 3.8, "visqol": expected_visqol})
    assert all(isinstance(v, float) for v in score.judges.values())
    assert [c[0] for c in fake_judges] == ["distillmos", "dnsmos", "visqol"]
    (_, _, _, mos_input), (_, dns_rate, _, dns_input), (_, visqol_rate, visqol_ref, visqol_gen) = fake_judges
    assert mos_input.shape == (1, 16000) and mos_input.dtype == torch.float32
    assert dns_rate == 16000 and dns_input.shape == (16000,) and dns_input.dtype == np.float32
    assert visqol_rate == 16000 and visqol_ref.shape == visqol_gen.shape == (16000,)
    np.testing.assert_allclose(visqol_ref, _at_16k(clip))
    assert score.notes == ["visqol: polynomial MOS mapping (install ai-edge-litert for the lattice mapper of the "
                           "C++ ViSQOL); it can read 1-2 points higher"]
    assert "fake DistillMOS" not in capsys.readouterr().out


def test_judges_score_against_a_silent_reference_except_visqol(fake_judges, clip):
    score = score_pair(np.zeros_like(clip), clip, SR, metrics=("mel",), judges=ALL_JUDGES)
    assert score.mel_l1 is None and score.judges["distillmos"] == 3.25 and score.judges["dnsmos_ovrl"] == 3.1
    assert score.judges["visqol"] is None
    assert "visqol: ViSQOL needs a non-silent reference" in score.notes


def test_the_lattice_mapper_is_used_when_it_imports(fake_judges, clip, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", types.ModuleType("ai_edge_litert"))
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", types.ModuleType("ai_edge_litert.interpreter"))
    score = score_pair(clip, clip, SR, metrics=(), judges=("visqol",))
    assert score.judges["visqol"] == pytest.approx(4.5) and score.notes == []


def test_judge_values_reach_the_table_and_json_and_a_failing_judge_stays_in_its_file(fake_judges, clip, tmp_path):
    for name, gen in {"loud": 0.9 * clip, "quiet": 0.01 * clip / np.abs(clip).max()}.items():
        for folder, audio in (("ref", clip), ("gen", gen)):
            (tmp_path / folder).mkdir(exist_ok=True)
            sf.write(str(tmp_path / folder / f"{name}.wav"), audio.astype(np.float32), SR)
    errors: list[str] = []
    result = evaluate_pairs(pair_files(tmp_path / "ref", tmp_path / "gen"), SR, metrics=("mel",), judges=ALL_JUDGES,
                            progress=False, on_error=errors.append)

    dns_keys = ["dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"]
    assert result.keys == ["mel_l1", "distillmos", *dns_keys, "visqol"]
    assert errors == [] and result.errors == []
    loud, quiet = (f.score for f in result.files)  # name order: loud, quiet
    assert loud.judges["distillmos"] == quiet.judges["distillmos"] == 3.25
    assert [loud.judges[k] for k in dns_keys] == [3.1, 3.5, 4.0, 3.8]
    assert all(quiet.judges[k] is None for k in dns_keys)  # DNSMOS failed on this file only...
    assert quiet.judges["visqol"] is not None and quiet.mel_l1 is not None  # ...and the others still ran
    failure = ("dnsmos_ovrl/dnsmos_sig/dnsmos_bak/dnsmos_p808: failed (RuntimeError: fake DNSMOS failed)")
    assert failure in quiet.notes and failure not in loud.notes

    lines = result.table().splitlines()
    assert lines[0].split() == ["file", "mel-L1", "DistillMOS", "DNSMOS-ovrl", "DNSMOS-sig", "DNSMOS-bak",
                                "DNSMOS-p808", "ViSQOL"]
    assert lines[1].split()[:7] == ["loud", f"{loud.mel_l1:.3f}", "3.250", "3.100", "3.500", "4.000", "3.800"]
    assert lines[2].split()[2:7] == ["3.250", "-", "-", "-", "-"]
    assert lines[4].split() == ["n", "2", "2", "1", "1", "1", "1", "2"]
    assert ("higher is better: DistillMOS, DNSMOS-ovrl, DNSMOS-sig, DNSMOS-bak, DNSMOS-p808, ViSQOL; "
            "lower is better: mel-L1;") in lines[5]
    assert f"note: quiet: {failure}" in lines

    data = json.loads(write_json(tmp_path / "scores.json", result.to_json()).read_text())
    assert data["metrics"]["distillmos"] == {"description": "DistillMOS naturalness of the generated clip, 1..5",
                                             "higher_is_better": True}
    assert data["means"]["dnsmos_sig"] == {"mean": 3.5, "count": 1}
    assert data["means"]["distillmos"] == {"mean": 3.25, "count": 2}
    assert data["files"][0]["metrics"]["visqol"] == pytest.approx(loud.judges["visqol"])
    assert data["files"][1]["metrics"]["dnsmos_ovrl"] is None and failure in data["files"][1]["notes"]
    assert data["errors"] == []


def _at_16k(audio: np.ndarray) -> np.ndarray:
    from audiodiff.eval.metrics import to_rate

    return to_rate(audio, SR, 16000)
