"""Smoke test of ``benchmarks/gla_sampler.py``: a tiny random model, one short clip, two levels, k = 1.

Checks the table and the JSON (every variant scored on the file, network calls per variant), that
the script's plain sampler is ``model.vocode`` with the same seed, and that the GLA-Grad wrapper
changes nothing at levels it does not project; never whether any variant sounds better.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_tiny_model, speech_like

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning")


def _load():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("bench_gla_sampler", BENCHMARKS / "gla_sampler.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_gla_sampler_scores_every_variant(tmp_path):
    import soundfile as sf

    model_file = make_tiny_model().save(tmp_path / "tiny.safetensors")
    (tmp_path / "held").mkdir()
    sf.write(tmp_path / "held" / "utt.wav", speech_like(0.5, 22050), 22050)
    script = _load()
    result = script.main(["--model", str(model_file), "--data", str(tmp_path / "held"), "--seconds", "0.3",
                          "--levels", "5", "3", "--k", "1", "--metrics", "mel", "mrstft", "--threads", "1",
                          "--json", str(tmp_path / "r.json")])
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["levels"] == [3, 5] and saved["k"] == [1]
    labels = ["griffin-lim", "plain", "from GL @ level 3", "from GL @ level 5", "GLA-Grad k=1"]
    assert list(saved["variants"]) == labels
    assert [saved["variants"][l]["network_calls"] for l in labels] == [0, 6, 3, 1, 6]
    for row in result["variants"].values():
        assert len(row["files"]) == 1 and row["means"]["mel_l1"] > 0 and row["means"]["mrstft"] > 0
    assert set(saved["beats_both"]) <= set(labels[2:])


@pytest.mark.slow
@torch.inference_mode()
def test_plain_equals_vocode_and_projection_only_where_asked():
    script = _load()
    model = make_tiny_model()
    x0 = torch.from_numpy(speech_like(0.3, 22050))[: 25 * 256]
    outputs = script.run_file(model, x0, 4, levels=[5], ks=[1], gl_iters=4, projection_iters=2)
    expected = model.vocode(model.mel(x0[None]), seed=4, chunk_seconds=None)[0]
    torch.testing.assert_close(outputs["plain"], expected)
    assert not torch.equal(outputs["GLA-Grad k=1"], outputs["plain"])
    eps_fn = lambda x, sigma: 0.5 * x  # noqa: E731
    wrapped = script.gla_eps_fn(eps_fn, lambda a: torch.zeros_like(a), {0.5})
    x = torch.randn(1, 512)
    torch.testing.assert_close(wrapped(x, 0.25), eps_fn(x, 0.25))
    torch.testing.assert_close(wrapped(x, 0.5), x / 0.5)  # projection to silence: all of x is noise
    # the projection keeps hifigan's half-hop frame alignment: Griffin-Lim's own output barely moves
    from audiodiff.eval import griffin_lim

    mel = model.mel(x0[None])[0]
    g = griffin_lim(mel, model.config.mel, 32, seed=0)[None]
    projected = script.mel_projection(mel, model.config.mel, 0)(g)
    assert projected.shape == g.shape
    assert float((projected - g).norm() / g.norm()) < 0.5
