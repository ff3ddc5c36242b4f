"""The training relay's decisions (benchmarks/gpu_train.sh): when a candidate lands, and that the
shipped model's stored schedules survive into it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from audiodiff.pipeline import load_model, SamplingSchedule, stored_float_dtype

from conftest import make_tiny_model, speech_like

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
FILES = ["a", "b", "c"]


def _load(script: str):
    spec = importlib.util.spec_from_file_location(f"bench_{script[:-3]}", BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


compare_heldout = _load("compare_heldout.py")
heldout_schedules = _load("heldout_schedules.py")


def _eval_json(path: Path, *, mel_l1=0.95, pesq_wb=1.11, vuv_f1=0.0, mrstft=2.23, files=FILES, seed=0,
               sampler="fast", steps=6) -> Path:
    """An ``audiodiff eval --model --json`` file with these means (the layout of audiodiff.cli.eval._eval_model)."""
    means = {"pesq_wb": pesq_wb, "stoi": 0.5, "mrstft": mrstft, "mel_l1": mel_l1, "vuv_f1": vuv_f1}
    data = {"data": "heldout8", "sampler": sampler, "steps": steps, "seed": seed, "resynthesis_errors": [],
            "model": {"means": {k: {"mean": v, "count": 0 if v is None else len(files)} for k, v in means.items()},
                      "files": [{"name": n, "error": None} for n in files], "errors": []}}
    path.write_text(json.dumps(data))
    return path


def _run(tmp_path, shipped: dict, candidate: dict, *extra: str) -> tuple[int, str]:
    import contextlib
    import io

    a = _eval_json(tmp_path / "shipped.json", **shipped)
    b = _eval_json(tmp_path / "candidate.json", **candidate)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = compare_heldout.main([str(a), str(b), *extra])
    return code, out.getvalue()


def test_a_lower_mel_l1_with_pesq_and_pitch_kept_lands(tmp_path):
    code, out = _run(tmp_path, {}, {"mel_l1": 0.90, "pesq_wb": 1.10, "vuv_f1": 0.0, "mrstft": 2.5})
    assert code == 0 and "verdict: improved" in out
    assert "ok: log-mel L1 0.950 -> 0.900" in out and "(not judged) MR-STFT 2.230 -> 2.500" in out


@pytest.mark.parametrize("candidate, failed", [
    ({"mel_l1": 0.9495}, "FAILED: log-mel L1"),                  # within the third digit: no gain
    ({"mel_l1": 0.97}, "FAILED: log-mel L1"),
    ({"mel_l1": 0.90, "pesq_wb": 1.08}, "FAILED: PESQ"),          # PESQ fell by more than 0.02
    ({"mel_l1": 0.90, "vuv_f1": 0.285}, "FAILED: V/UV F1"),       # pitch got worse (shipped 0.3 below)
])
def test_a_candidate_that_loses_on_any_judged_metric_does_not_land(tmp_path, candidate, failed):
    shipped = {"vuv_f1": 0.3} if "vuv_f1" in candidate else {}
    code, out = _run(tmp_path, shipped, candidate)
    assert code == 1 and "verdict: not improved" in out and failed in out


@pytest.mark.parametrize("candidate, why", [
    ({"mel_l1": 0.5, "pesq_wb": None}, "no mean pesq_wb"),       # pesq not installed where the eval ran
    ({"mel_l1": 0.5, "seed": 1}, "different seed"),
    ({"mel_l1": 0.5, "sampler": "ddpm"}, "different sampler"),
    ({"mel_l1": 0.5, "files": ["a", "b"]}, "different files scored"),
])
def test_scores_that_cannot_be_compared_never_land(tmp_path, candidate, why):
    code, out = _run(tmp_path, {}, candidate)
    assert code == 2 and "verdict: not comparable" in out and why in out


def test_an_unreadable_json_is_not_comparable(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    assert compare_heldout.main([str(tmp_path / "x.json"), str(tmp_path / "x.json")]) == 2


def test_the_training_log_row_has_the_card_columns(tmp_path):
    code, _ = _run(tmp_path, {}, {"mel_l1": 0.9, "pesq_wb": 1.2, "vuv_f1": 0.25, "mrstft": 2.1},
                   "--row", str(tmp_path / "row.md"), "--gpu", "NVIDIA H200", "--minutes", "7", "--date",
                   "2026-12-01", "--steps-before", "3468", "--steps-after", "8468")
    assert code == 0
    row = (tmp_path / "row.md").read_text().strip()
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:8] == ["2026-12-01", "3468 → 8468 (+5000)", "NVIDIA H200", "7", "1.200", "0.250", "2.100", "0.900"]
    assert cells[8].startswith("landed; scored on cuda, fast 6 steps, seed 0")


def _stored(model, name: str, sigmas) -> None:
    model.with_schedule(name, SamplingSchedule("ancestral", tuple(sigmas), metric="mel", score=0.9, data="x"))


def test_carry_copies_the_shipped_schedules_and_keeps_float16(tmp_path):
    shipped = make_tiny_model()
    _stored(shipped, "searched-2", (0.5, 0.05, 0.0))
    shipped_path = shipped.save(tmp_path / "shipped.safetensors", dtype=torch.float16)
    candidate_path = make_tiny_model(seed=1).with_training_step(7).save(tmp_path / "cand.safetensors",
                                                                        dtype=torch.float16)
    assert heldout_schedules.carry(str(candidate_path), str(shipped_path)) == ["searched-2"]
    carried = load_model(candidate_path)
    assert carried.config.schedules == load_model(shipped_path).config.schedules
    assert carried.config.training_step == 7 and stored_float_dtype(candidate_path) == torch.float16
    assert torch.equal(carried.network.input_projection.weight,
                       make_tiny_model(seed=1).network.input_projection.weight.half().float())
    assert heldout_schedules.carry(str(candidate_path), str(shipped_path)) == []  # nothing missing: untouched


@pytest.mark.slow
def test_check_scores_fast_and_each_stored_schedule_on_both_models(tmp_path, capsys):
    data = tmp_path / "heldout"
    data.mkdir()
    for k in range(2):
        sf.write(data / f"u{k}.wav", speech_like(0.3, 22050, seed=k), 22050)
    first = make_tiny_model()
    _stored(first, "searched-2", (0.5, 0.05, 0.0))
    first_path = first.save(tmp_path / "first.safetensors")
    second_path = make_tiny_model(seed=1).save(tmp_path / "second.safetensors")
    assert heldout_schedules.main(["check", str(first_path), str(second_path), "--data", str(data),
                                   "--json", str(tmp_path / "s.json")]) == 0
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["files"] == 2 and set(result["scores"]["first"]) == {"fast", "searched-2"}
    verdict = result["verdicts"]["searched-2"]
    for key, which in (("ratio_first", "first"), ("ratio_second", "second")):
        scores = result["scores"][which]
        assert verdict[key] == pytest.approx(scores["searched-2"]["mel_l1"] / scores["fast"]["mel_l1"])
    assert verdict["holds"] == (verdict["ratio_second"] <= verdict["ratio_first"] + 0.01)
    out = capsys.readouterr().out
    assert "schedule searched-2: L1 / fast's L1" in out
    assert ("still holds" in out) == verdict["holds"]
    assert ("search-schedule MODEL --data HELDOUT_SEARCH --steps 2 --name searched-2" in out) == (not verdict["holds"])
