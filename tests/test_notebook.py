"""notebooks/quickstart.ipynb runs top to bottom on the CPU and shows what it says it shows."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat (pip install -e '.[dev]')")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient (pip install -e '.[dev]')")
pytest.importorskip("ipykernel", reason="the notebook test needs ipykernel (pip install -e '.[dev]')")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
SAMPLERS = {"fast": 6, "ddim-log-snr": 3, "dpmpp-2m-log-snr": 4, "dpmpp-2m-karras": 6}


@pytest.fixture
def python3_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ``python3`` kernelspec that runs this interpreter, found before any user or system one."""
    from ipykernel.kernelspec import write_kernel_spec

    kernels = tmp_path / "jupyter" / "kernels"
    kernels.mkdir(parents=True)
    write_kernel_spec(kernels / "python3")  # argv: [sys.executable, "-m", "ipykernel_launcher", ...]
    assert json.loads((kernels / "python3" / "kernel.json").read_text())["argv"][0] == sys.executable
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))  # searched first
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the notebook is for CPUs
    return "python3"


def _text(output) -> str:
    if output.output_type == "stream":
        return output.text
    data = output.get("data", {})
    return data.get("text/markdown", "") + data.get("text/plain", "")


@pytest.mark.slow
def test_quickstart_notebook_runs_and_shows_audio_figures_and_sampler_table(tmp_path: Path, python3_kernel: str):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # stored without outputs, so the repository stays small
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code_cells and all(not c.outputs and c.execution_count is None for c in code_cells)

    workdir = tmp_path / "run"
    workdir.mkdir()
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name=python3_kernel,
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(_text(o) for o in outputs)
    assert "Traceback" not in text

    # the kernel ran this interpreter's audiodiff
    assert re.search(r"audiodiff \d+\.\d+", text)
    assert "sample rate:   22050 Hz (hop 256 samples, 80 mel bins)" in text

    # audio players (IPython's Audio is an HTML <audio> element with the wav inline) and figures
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    players = [h for h in html if "<audio" in h and "data:audio/wav;base64," in h]
    assert len(players) >= 2 + len(SAMPLERS) + 2  # original + vocoded, each sampler, two sound effects
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # vocoding and sound-effect figures

    # the sampler table: one row per sampler, with its step count and finite, positive measurements
    table = next(o["data"]["text/markdown"] for o in outputs
                 if "text/markdown" in o.get("data", {}) and "real-time factor" in o["data"]["text/markdown"])
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    assert set(rows) == set(SAMPLERS)
    for sampler, steps in SAMPLERS.items():
        assert int(rows[sampler][0]) == steps
        values = [float(v) for v in rows[sampler][1:]]
        assert len(values) == 4 and all(0 < v < float("inf") for v in values), (sampler, values)

    # the TTS-layout mel survives the .npy round trip and vocodes to the same audio
    assert "read back (1, 80," in text and "same values: True" in text
    assert "same audio as the (1, n_mels, frames) input: True" in text
    # the sound-effects generator made one clip per class
    assert "(2, 22050)" in text
