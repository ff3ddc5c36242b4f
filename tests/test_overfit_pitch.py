"""Smoke test of ``benchmarks/overfit_pitch.py``: a 2-layer network, a few steps, one short clip.

Checks the printed table and the JSON (a curve per variant with the evaluated steps, the
metrics of every row, the Griffin-Lim floor), never whether the network learnt anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "overfit_pitch.py"
CLIP = REPO / "audiodiff" / "examples" / "cs-v-neboj1.ogg"

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning")


@pytest.mark.slow
def test_overfit_pitch_cli(tmp_path):
    pytest.importorskip("librosa")
    out = tmp_path / "overfit.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--audio", str(CLIP), "--offset", "0.5", "--seconds", "0.4",
         "--variants", "raw", "standardise", "--layers", "2", "--channels", "4", "--cycle", "2",
         "--steps", "3", "--eval-every", "2", "--batch", "2", "--crop-frames", "4", "--jobs", "2",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["torch_threads"] == 1
    (utterance,) = report["utterances"]
    assert utterance["source"] == CLIP.name and utterance["seconds"] == pytest.approx(34 * 256 / 22050)
    assert 0 <= report["griffin_lim"]["vuv_f1"] <= 1
    assert [run["variant"] for run in report["runs"]] == ["raw", "standardise"]
    for run in report["runs"]:
        assert [row["step"] for row in run["curve"]] == [0, 2, 3]  # start, every 2 steps, the end
        assert run["receptive_field"] == 1 + 2 * (1 + 2)
        for row in run["curve"]:
            assert set(row) >= {"train_s", "loss", "vuv_f1", "f0_rmse_cents", "mrstft", "mel_l1"}
            assert row["mrstft"] > 0 and row["mel_l1"] > 0 and len(row["per_clip"]) == 1
        assert run["curve"][0]["loss"] is None and run["curve"][-1]["loss"] > 0
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table[0].split("|")[1].strip() == "variant" and len(table) == 1 + 1 + 2 * 3  # header, GL, 2 x 3 rows
