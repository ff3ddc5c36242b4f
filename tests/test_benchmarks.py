"""Smoke tests of the benchmark scripts: tiny model, minimal settings, one thread.

They check the printed table and the JSON (rows, ratios computed from the two measured numbers,
positive fields, memory reported, reference checks passed), never the timings themselves.
"""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffwave")
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning")

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(script: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                            capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _load(script: str):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{script[:-3]}", BENCHMARKS / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def _table_rows(stdout: str) -> list[list[str]]:
    """Cells of the markdown table's body rows."""
    lines = [l for l in stdout.splitlines() if l.startswith("|")]
    assert len(lines) >= 3 and set(lines[1]) <= set("|-")
    return [[c.strip() for c in l.strip("|").split("|")] for l in lines[2:]]


def _check_machine(report: dict, stdout: str) -> None:
    machine = report["machine"]
    for key in ("cpu", "cpu_cores", "torch_threads", "torch", "date", "commit"):
        assert machine[key], key
    assert stdout.startswith("machine: ") and machine["torch"] in stdout and machine["commit"] in stdout


def _check_timing(result: dict, audio_seconds: float, speed_key: str) -> None:
    assert result["median_s"] == pytest.approx(statistics.median(result["times_s"]))
    assert all(t > 0 for t in result["times_s"])
    assert result[speed_key] == pytest.approx(audio_seconds / result["median_s"], rel=1e-12)
    assert math.isfinite(result["peak_mb"]) and result["peak_mb"] > 0
    assert result["memory_method"]


@pytest.mark.slow
def test_vocode_speed_cli(tmp_path):
    out = tmp_path / "out" / "vocode.json"
    stdout = _run("vocode_speed.py", "--sizes", "tiny", "--steps", "6", "--batch", "1", "--seconds", "0.1",
                  "--repeats", "1", "--threads", "1", "--json", str(out))
    report = json.loads(out.read_text())
    assert sorted(p.name for p in out.parent.iterdir()) == ["vocode.json"]  # atomic write left nothing else
    _check_machine(report, stdout)
    assert report["isolated"] is True  # CPU: one fresh process per measurement

    (row,) = report["rows"]
    assert (row["size"], row["steps"], row["batch"], row["device"], row["precision"]) == ("tiny", 6, 1, "cpu", "fp32")
    assert row["audio_seconds"] == pytest.approx(row["frames"] * 256 / 22050) and row["frames"] == 9
    for impl in ("ours", "reference"):
        _check_timing(row[impl], row["audio_seconds"], "rtf")
        assert len(row[impl]["times_s"]) == 1 and row[impl]["load_s"] > 0
    assert "fast" in row["ours"]["sampler"] and "fast_sampling=True" in row["reference"]["sampler"]
    assert row["ratio"] == pytest.approx(row["ours"]["rtf"] / row["reference"]["rtf"], rel=1e-12)

    (check,) = report["checks"]
    assert check["ok"] and check["loop_vs_predict_max_abs"] == 0.0 and check["ours_vs_predict_max_abs"] < 1e-3

    vocode = _load("vocode_speed.py")
    (cells,) = _table_rows(stdout)
    assert cells[:5] == ["tiny", "6", "1", "cpu", "fp32"]
    assert cells[7] == vocode.fmt(row["ours"]["rtf"]) and cells[9] == vocode.fmt(row["reference"]["rtf"])
    assert cells[10] == vocode.fmt(row["ratio"])
    assert cells[11] == vocode.fmt(row["ours"]["peak_mb"]) and cells[12] == vocode.fmt(row["reference"]["peak_mb"])
    assert "reproduced loop vs diffwave.inference.predict max |diff| 0" in stdout


def test_vocode_speed_in_process_without_reference(capsys):
    """The in-process path (CUDA's default) and a step count the reference has no sampler for."""
    vocode = _load("vocode_speed.py")
    report = vocode.main(["--sizes", "tiny", "--steps", "2", "--batch", "2", "--seconds", "0.1",
                          "--repeats", "1", "--threads", "1", "--isolate", "no"])
    (row,) = report["rows"]
    assert report["isolated"] is False and report["checks"] == []
    assert row["batch"] == 2 and row["reference"] is None and row["ratio"] is None
    assert "ddpm" in row["ours"]["sampler"]
    _check_timing(row["ours"], row["audio_seconds"], "rtf")
    (cells,) = _table_rows(capsys.readouterr().out)
    assert cells[8:11] == ["-", "-", "-"]


@pytest.mark.slow
def test_train_throughput_cli(tmp_path):
    out = tmp_path / "train.json"
    stdout = _run("train_throughput.py", "--size", "tiny", "--batch", "1", "--frames", "4", "--steps", "1",
                  "--warmup", "1", "--threads", "1", "--json", str(out))
    report = json.loads(out.read_text())
    _check_machine(report, stdout)
    assert report["check"]["ok"]
    rows = {r["impl"]: r for r in report["rows"]}
    assert list(rows) == ["ours incl. mel", "ours excl. mel", "reference"]
    reference = rows["reference"]
    for impl, row in rows.items():
        assert (row["size"], row["batch"], row["samples"], row["device"]) == ("tiny", 1, 1024, "cpu")
        assert row["audio_seconds"] == pytest.approx(1024 / 22050)
        _check_timing(row, row["audio_seconds"], "audio_s_per_s")
        assert len(row["losses"]) == 2 and all(0 < l < 10 for l in row["losses"])
        if impl == "reference":
            assert row["ratio"] is None
        else:
            assert row["ratio"] == pytest.approx(row["audio_s_per_s"] / reference["audio_s_per_s"], rel=1e-12)

    train = _load("train_throughput.py")
    table = {cells[0]: cells for cells in _table_rows(stdout)}
    assert list(table) == list(rows)
    for impl, row in rows.items():
        assert table[impl][6] == train.fmt(row["audio_s_per_s"])
        assert table[impl][7] == train.fmt(row["ratio"])
        assert table[impl][8] == train.fmt(row["peak_mb"])


@pytest.mark.slow
def test_quality_vs_steps_table_json_and_plot(tmp_path):
    """One held-out clip, ddpm at 2 and 3 steps plus fast: a row per run, the Griffin-Lim floor, a PNG."""
    import numpy as np
    import soundfile as sf

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_tiny_model, speech_like

    model_file = make_tiny_model().save(tmp_path / "tiny.safetensors")
    (tmp_path / "held").mkdir()
    sf.write(tmp_path / "held" / "utt.wav", speech_like(0.5, 22050), 22050)
    quality = _load("quality_vs_steps.py")
    result = quality.main(["--model", str(model_file), "--data", str(tmp_path / "held"), "--out", str(tmp_path / "q"),
                           "--steps", "2", "3", "--metrics", "mrstft", "mel", "--json", str(tmp_path / "q.json"),
                           "--png", str(tmp_path / "q.png")])
    assert [(r["sampler"], r["steps"]) for r in result["rows"]] == [("ddpm", 2), ("ddpm", 3), ("fast", 6)]
    assert all(r["files"] == 1 and not r["errors"] for r in result["rows"])
    assert set(result["griffin_lim"]) == {"mrstft", "mel_l1"} and result["griffin_lim"]["mel_l1"] > 0
    assert json.loads((tmp_path / "q.json").read_text())["rows"][0]["means"].keys() == {"mrstft", "mel_l1"}
    assert (tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == ["ddpm-2", "ddpm-3", "fast-6"]
    assert np.isfinite([r["means"]["mrstft"] for r in result["rows"]]).all()


@pytest.mark.slow
def test_engine_speed_reports_ratios_to_the_reference_measured_in_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the fused engine on a CPU: Triton's interpreter
    out = tmp_path / "engine.json"
    table = _run("engine_speed.py", "--device", "cpu", "--size", "tiny", "--batch", "1", "--seconds", "0.05",
                 "--repeats", "1", "--engines", "fp32", "bf16", "fp32-fused", "--launches", "1024x4", "2048x4",
                 "--json", str(out))
    report = json.loads(out.read_text())
    rows = {row["engine"]: row for row in report["rows"]}
    engines = ["reference", "fp32", "bf16", "fp32-fused@1024x4", "fp32-fused@2048x4"]
    assert list(rows) == engines and all(r["steps"] == 6 for r in rows.values())
    for engine in engines[1:]:
        row = rows[engine]
        assert math.isclose(row["rtf"], row["audio_seconds"] / row["median_s"])
        assert math.isclose(row["x_reference"], row["rtf"] / rows["reference"]["rtf"])
        assert math.isclose(row["x_best_reference"], row["x_reference"])  # one batch: the same reference
    printed = [line.split("|")[3].strip() for line in table.splitlines() if line.startswith("| tiny")]
    assert printed == engines


@pytest.mark.slow
def test_engine_speed_times_each_engine_with_each_stored_schedule(tmp_path, tiny_model):
    from audiodiff.pipeline import SamplingSchedule

    model_file = tiny_model.with_schedule("two", SamplingSchedule("ancestral", (0.8, 0.2, 0.0))).save(
        tmp_path / "m.safetensors")
    out = tmp_path / "engine.json"
    table = _run("engine_speed.py", "--device", "cpu", "--size", "tiny", "--batch", "1", "--seconds", "0.05",
                 "--repeats", "1", "--engines", "fp32", "fp32-folded", "--schedule-from", str(model_file), "fast",
                 "two", "--reference-again", "--json", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [(r["engine"], r["schedule"], r["steps"]) for r in rows] == [
        ("reference", "fast", 6), ("fp32", "fast", 6), ("fp32", "two", 2), ("fp32-folded", "fast", 6),
        ("fp32-folded", "two", 2), ("reference again", "fast", 6)]
    faster_reference = max(rows[0]["rtf"], rows[-1]["rtf"])  # ratios against the reference's faster timing
    assert all(math.isclose(r["x_reference"], r["rtf"] / faster_reference) for r in rows[1:-1])
    printed = [[cell.strip() for cell in line.split("|")[3:6]] for line in table.splitlines() if line.startswith("| tiny")]
    assert printed[-2] == ["fp32-folded", "two", "2"]


@pytest.mark.slow
def test_precision_quality_compares_each_engine_with_the_same_precision_eager(tmp_path, monkeypatch,
                                                                             tiny_model_file):
    import soundfile as sf
    from conftest import speech_like

    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the fused kernels on a CPU: Triton's interpreter
    (tmp_path / "held").mkdir()
    sf.write(tmp_path / "held" / "a.wav", speech_like(0.2, 22050), 22050)
    quality = _load("precision_quality.py")
    report = quality.main(["--model", str(tiny_model_file), "--data", str(tmp_path / "held"), "--device", "cpu",
                           "--precisions", "fp32", "fp32-fused", "fp32-folded", "--launch", "8192x4"])
    rows = {row["precision"]: row for row in report["rows"]}
    assert list(rows) == ["fp32", "fp32-fused", "fp32-folded"] and report["files"] == ["a.wav"]
    assert rows["fp32"]["max_abs_vs_fp32"] == 0 and rows["fp32"]["max_abs_vs_eager"] is None
    # the interpreter multiplies in IEEE float32, the folded engine too: the same audio up to summation order
    for engine in ("fp32-fused", "fp32-folded"):
        assert 0 < rows[engine]["max_abs_vs_eager"] < 1e-4
        assert math.isclose(rows[engine]["mel_l1"], rows["fp32"]["mel_l1"], rel_tol=1e-3)


@pytest.mark.slow
def test_fused_kernel_checks_each_launch_against_float32_in_its_own_process(tmp_path, monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # Triton's interpreter on the CPU, in fp16 (it has no bf16)
    out = tmp_path / "kernel.json"
    table = _run("fused_kernel.py", "--device", "cpu", "--dtype", "fp16", "--size", "tiny", "--batch", "1",
                 "--seconds", "0.05", "--repeats", "1", "--launches", "2048x4", "1000x4", "--modes", "mel",
                 "--json", str(out))
    good, bad = json.loads(out.read_text())["rows"]
    assert "power of two" in bad["error"]  # a bad launch is its row's error, not the run's end
    assert good["launch"] == "2048x4" and good["block_us"] > 0 and good["gbs"] > 0
    # the kernel rounds to fp16 at fewer places than eager autocast does: no larger an error
    assert 0 < good["max_rel_error"] <= good["eager_max_rel_error"] < 1e-2
    assert good["worst_at"]["output"] in ("out", "skip") and 0 <= good["worst_at"]["t"] < good["worst_at"]["length"]
    assert "| 2048x4 | mel" in table


@pytest.mark.slow
def test_upsampler_speed_times_both_forms_and_checks_they_agree(tmp_path):
    out = tmp_path / "upsampler.json"
    table = _run("upsampler_speed.py", "--device", "cpu", "--batch", "1", "2", "--seconds", "0.1",
                 "--precisions", "fp32", "--repeats", "2", "--json", str(out))
    report = json.loads(out.read_text())
    _check_machine(report, table)
    assert [r["batch"] for r in report["rows"]] == [1, 2]
    for row in report["rows"]:
        assert row["transposed_s"] > 0 and row["subpixel_s"] > 0
        assert row["speedup"] == pytest.approx(row["transposed_s"] / row["subpixel_s"], rel=1e-12)
        assert row["max_rel_difference"] < 1e-5  # the same sums in float32
    assert len(_table_rows(table)) == 2


@pytest.mark.slow
def test_kernel_registers_compiles_each_kernel_of_a_launch_for_the_h100_without_one(tmp_path):
    """Triton's bundled ptxas reports registers and spills: a grouped launch has one row per kernel
    size it runs (tiny at g16: [1 2 4 8] [16] [32 1 2 4 8] [16] [32], so 3 single blocks, a 4 and a 5)."""
    pytest.importorskip("triton")
    script = _load("kernel_registers.py")
    if not script.ptxas_path().exists():
        pytest.skip("this Triton has no bundled ptxas")
    out = tmp_path / "registers.json"
    table = _run("kernel_registers.py", "--size", "tiny", "--launches", "64x4g16", "--seconds", "0.1",
                 "--json", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [(r["blocks"], r["halo"], r["kernels_per_pass"]) for r in rows] == [(1, 0, 3), (4, 16, 1), (5, 16, 1)]
    for row in rows:
        assert "error" not in row, row
        assert 0 < row["registers"] <= 255 and row["spill_stores"] >= 0 and row["shared"] > 0
    assert len(_table_rows(table)) == 3 and "sm_90a" in table


@pytest.mark.slow
def test_diagnose_vocoder_scores_one_step_x0_against_the_naive_estimate_at_each_level(tmp_path):
    """Two levels on one clip of a tiny model: a row per level, the naive SNR is the analytic one, the
    Griffin-Lim check, the mel statistics and the conditioner check are all there, the JSON matches."""
    import numpy as np
    import soundfile as sf
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_tiny_model, speech_like

    model_file = make_tiny_model().save(tmp_path / "tiny.safetensors")
    (tmp_path / "held").mkdir()
    clip = speech_like(0.5, 22050)
    sf.write(tmp_path / "held" / "utt.wav", clip, 22050)
    diagnose = _load("diagnose_vocoder.py")
    result = diagnose.main(["--model", str(model_file), "--data", str(tmp_path / "held"), "--levels", "49", "0",
                            "--griffin-lim-levels", "0", "--metrics", "mrstft", "mel", "--threads", "1",
                            "--mel-stats-data", str(tmp_path / "held"), "--json", str(tmp_path / "d.json")])
    assert json.loads((tmp_path / "d.json").read_text())["levels"] == [0, 49]
    rows = result["one_step"]["rows"]
    assert [r["step"] for r in rows] == [0, 49] and rows[0]["sigma"] < rows[1]["sigma"]
    x0 = torch.from_numpy(clip[: len(clip) // 256 * 256]).double()  # trimmed to whole frames, as the script does
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).double()
    for row in rows:
        naive_error = math.sqrt(1 / row["alpha_bar"] - 1) * eps  # x_t / sqrt(abar) - x0
        expected = 10 * math.log10(float(x0.pow(2).sum() / naive_error.pow(2).sum()))
        assert row["snr_db"]["naive"] == pytest.approx(expected, abs=1e-3)
        for kind in ("network", "naive"):
            assert set(row["means"][kind]) == {"mrstft", "mel_l1"} and len(row[kind]) == 1
            assert np.isfinite(row["means"][kind]["mel_l1"])
        assert 0 < row["eps_l1"] < 5 and 0 < row["eps_l1_flat_mel"] < 5 and row["flat_mel_l1"] > 0
    assert rows[1]["means"]["naive"]["mel_l1"] > rows[0]["means"]["naive"]["mel_l1"]  # more noise, further off
    gl = result["griffin_lim_one_step"]["means"]
    assert set(gl) == {"griffin-lim", "step 0: naive", "step 0: network"}
    stats = result["mel_stats"]
    assert stats["files"] == 1 and stats["min"] >= math.log(1e-5) - 1e-6 and stats["min"] < stats["mean"] < stats["max"]
    cases = result["conditioner"]["cases"]
    assert set(cases) == {"trained, raw mel", "fresh init, raw mel", "fresh init, mel in [0,1]"}
    assert cases["fresh init, mel in [0,1]"]["mel_mean"] == pytest.approx(
        (cases["fresh init, raw mel"]["mel_mean"] - math.log(1e-5)) / (2 - math.log(1e-5)), rel=1e-5)
    merged = diagnose.merge([result, result])  # two runs over parts of a folder: the files add up, means stay
    assert merged["files"] == 2 and merged["one_step"]["rows"][1]["snr_db"] == pytest.approx(rows[1]["snr_db"])
    assert merged["one_step"]["rows"][0]["means"]["network"] == pytest.approx(rows[0]["means"]["network"])
    assert len(merged["one_step"]["rows"][0]["network"]) == 2
    assert len(cases["trained, raw mel"]["blocks"]) == 12  # one entry per residual block of `tiny`
    assert 0 <= cases["trained, raw mel"]["mean_over_blocks"]["saturated"] <= 1


@pytest.mark.slow
def test_stream_latency_reports_first_audio_and_both_rtfs(tmp_path, capsys):
    """Columns and exactness, not times: a tiny model, a short utterance, one sampler."""
    latency = _load("stream_latency.py")
    report = latency.main(["--sizes", "tiny", "--samplers", "ddim", "--seconds", "0.5", "--block", "4",
                           "--threads", "1", "--json", str(tmp_path / "latency.json")])
    (row,) = report["rows"]
    assert row["lookahead_frames"] == 6 * 3 and row["steps"] == 6 and row["block"] == 4
    assert 0 < row["first_s"] <= row["stream_s"] and row["first_audio_s"] > 0
    assert row["stream_rtf"] > 0 and row["vocode_rtf"] > 0 and row["max_diff"] < 1e-4
    assert json.loads((tmp_path / "latency.json").read_text())["rows"][0]["sampler"] == "ddim"
    (cells,) = _table_rows(capsys.readouterr().out)
    assert cells[:3] == ["tiny", "ddim", "6"] and len(cells) == len(latency.HEADERS)


@pytest.mark.slow
def test_serve_streams_compares_batched_streams_with_one_at_a_time(tmp_path, capsys):
    """Columns, batching and exactness, not times: two tiny clients of half a second each."""
    pytest.importorskip("aiohttp")
    bench = _load("serve_streams.py")
    report = bench.main(["--sizes", "tiny", "--clients", "2", "--seconds", "0.5", "--block", "4", "--pace", "5",
                         "--batch-window-ms", "100", "--threads", "1", "--json", str(tmp_path / "serve.json")])
    batched, alone = report["rows"]
    assert (batched["batching"], batched["max_batch"], alone["max_batch"]) == ("batched", 2, 1)
    assert batched["rows_per_batch"] > 1 and alone["rows_per_batch"] == 1  # windows of both clients shared calls
    assert batched["windows"] >= 4 and alone["windows"] >= 4
    for row in (batched, alone):
        assert 0 < row["first_median_s"] <= row["first_max_s"] <= row["wall_s"] and row["max_diff"] < 1e-4
    assert batched["batched_over_alone"] == pytest.approx(batched["rtf"] / alone["rtf"])
    assert json.loads((tmp_path / "serve.json").read_text())["rows"][1]["batching"] == "one at a time"
    rows = _table_rows(capsys.readouterr().out)
    assert [r[:3] for r in rows] == [["tiny", "2", "batched"], ["tiny", "2", "one at a time"]]
