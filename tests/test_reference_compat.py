"""Compatibility with the reference implementation (PyPI ``diffwave`` 0.1.7), and safe model files.

A reference checkpoint converted by :func:`audiodiff.pipeline.reference.import_diffwave` must give the
same network output and, from the same global RNG state (``torch.manual_seed`` and ``seed=None``: the
noise drawn as the reference draws it), the same sampled audio as ``diffwave.inference``.
"""

from __future__ import annotations

import json
import pathlib
from pathlib import Path

import pytest
import soundfile as sf
import torch

from audiodiff.mel import mel_preset
from audiodiff.pipeline import FORMAT_VERSION, import_diffwave, load_model, ModelFileError

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning")

SPEECH_22K = Path(__file__).parent / "data" / "speech-cs-22k.ogg"
FRAMES = 8


def _randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A base-size reference model with random non-trivial weights, saved as ``weights.pt``."""
    from diffwave.model import DiffWave as ReferenceDiffWave
    from diffwave.params import AttrDict, params

    model = ReferenceDiffWave(AttrDict(params)).eval()
    _randomize(model, seed=1234)
    model_dir = tmp_path_factory.mktemp("reference")
    torch.save({"model": model.state_dict(), "params": dict(params)}, model_dir / "weights.pt")
    torch.save(model.state_dict(), model_dir / "bare.pt")
    return model, model_dir


@pytest.fixture(scope="module")
def imported(reference):
    return import_diffwave(reference[1] / "weights.pt")


SMALL = dict(residual_layers=10, residual_channels=16, dilation_cycle_length=5)


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory):
    """A smaller reference model (non-default params, which the checkpoint must carry), for long samplers."""
    from diffwave.model import DiffWave as ReferenceDiffWave
    from diffwave.params import AttrDict, params

    small_params = AttrDict({**params, **SMALL})
    model = ReferenceDiffWave(small_params).eval()
    _randomize(model, seed=99)
    model_dir = tmp_path_factory.mktemp("reference-small")
    torch.save({"model": model.state_dict(), "params": dict(small_params)}, model_dir / "weights.pt")
    return model, model_dir


@pytest.fixture(scope="module")
def small_imported(small_reference):
    return import_diffwave(small_reference[1] / "weights.pt")


@pytest.fixture(scope="module")
def speech_mel(imported):
    """A real ``diffwave``-convention mel of speech, ``(1, 80, FRAMES)``."""
    audio, rate = sf.read(str(SPEECH_22K), dtype="float32")
    assert rate == 22050
    mel = imported.mel(torch.from_numpy(audio))
    # a loud stretch of the clip
    return mel[..., 100 : 100 + FRAMES].contiguous()


# ------------------------------------------------------------------ import
def test_imported_config(imported):
    config = imported.config
    assert config.mel == mel_preset("diffwave")
    assert config.sample_rate == 22050 and config.mel.sample_rate == 22050
    assert config.denoiser.residual_layers == 30 and config.denoiser.residual_channels == 64
    assert config.denoiser.n_mels == 80 and config.denoiser.hop_length == 256
    assert config.schedule.num_steps == 50
    assert config.schedule.fast_betas == (1e-4, 1e-3, 1e-2, 5e-2, 2e-1, 5e-1)


def test_bare_state_dict_imports_identically(reference, imported):
    bare = import_diffwave(reference[1] / "bare.pt")
    assert bare.config == imported.config
    ours, theirs = bare.network.state_dict(), imported.network.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("step", [0, 7, 49, 4.087, 22.992])
def test_network_output_equals_reference(reference, imported, speech_mel, step):
    ref_model = reference[0]
    g = torch.Generator().manual_seed(5)
    audio = torch.randn(2, FRAMES * 256, generator=g).clamp(-1, 1)
    mel = torch.cat([speech_mel, torch.rand(1, 80, FRAMES, generator=g)])
    # int64: the reference's table lookup; float: its lerp (which only broadcasts a (1,) step)
    ref_step = torch.tensor([step])
    with torch.no_grad():
        expected = ref_model(audio, mel, ref_step).squeeze(1)
        ours = imported.network(audio, torch.tensor([step, step]), mel)
    assert expected.abs().mean() > 1e-2  # weights are not trivial
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ sampler
def _predictor(model_dir: str):
    from diffwave import inference

    def predict(mel: torch.Tensor, seed: int, fast: bool) -> torch.Tensor:
        torch.manual_seed(seed)
        audio, rate = inference.predict(mel, model_dir=model_dir, device=torch.device("cpu"), fast_sampling=fast)
        assert rate == 22050
        return audio

    return predict


@pytest.fixture(scope="module")
def reference_predict(reference):
    """``diffwave.inference.predict`` with the base model loaded from weights.pt by ``predict`` itself."""
    from diffwave import inference

    model_dir = str(reference[1])
    inference.models.pop(model_dir, None)
    # the first call loads the model (building it consumes the global RNG), so seed only after it
    inference.predict(torch.rand(80, 2), model_dir=model_dir, device=torch.device("cpu"), fast_sampling=True)
    assert model_dir in inference.models
    yield _predictor(model_dir)
    inference.models.pop(model_dir, None)


@pytest.fixture(scope="module")
def small_reference_predict(small_reference):
    """``diffwave.inference.predict`` with the small model preloaded (``predict`` would build a base one)."""
    from diffwave import inference

    model_dir = str(small_reference[1])
    inference.models[model_dir] = small_reference[0]
    yield _predictor(model_dir)
    inference.models.pop(model_dir, None)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 123])
def test_fast_sampler_equals_reference(reference_predict, imported, speech_mel, seed):
    expected = reference_predict(speech_mel, seed, fast=True)
    torch.manual_seed(seed)  # unseeded, ours draws from the global RNG as the reference does
    ours = imported.vocode(speech_mel, seed=None, sampler="fast")
    assert ours.shape == expected.shape == (1, FRAMES * 256)
    assert expected.abs().mean() > 1e-2
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)
    # a different seed gives different audio
    torch.manual_seed(seed + 1)
    assert not torch.allclose(ours, imported.vocode(speech_mel, seed=None, sampler="fast"), atol=1e-2)


def test_small_model_config_is_read_from_params(small_imported):
    denoiser = small_imported.config.denoiser
    assert (denoiser.residual_layers, denoiser.residual_channels, denoiser.dilation_cycle) == (10, 16, 5)


@pytest.mark.parametrize("fast", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["fast", "ddpm"])
def test_small_model_samplers_equal_reference(small_reference_predict, small_imported, speech_mel, fast):
    expected = small_reference_predict(speech_mel, 7, fast=fast)
    torch.manual_seed(7)  # unseeded, ours draws from the global RNG as the reference does
    ours = small_imported.vocode(speech_mel, seed=None, sampler="fast" if fast else "ddpm")
    assert expected.abs().mean() > 1e-2
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def test_vocode_accepts_unbatched_mel(small_imported, speech_mel):
    assert torch.equal(small_imported.vocode(speech_mel[0], seed=2), small_imported.vocode(speech_mel, seed=2))


# -------------------------------------------------------------- round-trip
@pytest.mark.parametrize("which", [pytest.param("base", marks=pytest.mark.slow), "small"])
def test_save_then_load_gives_identical_audio(which, imported, small_imported, speech_mel, tmp_path):
    model = imported if which == "base" else small_imported
    path = model.save(tmp_path / "converted.safetensors")
    loaded = load_model(path, engine="eager")  # the same engine as the saved model: bit for bit
    assert loaded.config == model.config
    assert torch.equal(loaded.vocode(speech_mel, seed=3), model.vocode(speech_mel, seed=3))
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


# ------------------------------------------------------------- safe files
class _TouchOnLoad:
    """Unpickling this object creates a file: a stand-in for a malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_code_executing_pickle_is_refused(tmp_path, reference):
    state = reference[0].state_dict()
    # the payload really does run code under an unrestricted load
    probe_marker, probe = tmp_path / "probe-ran", tmp_path / "probe.pt"
    torch.save({"model": state, "params": {}, "x": _TouchOnLoad(probe_marker)}, probe)
    torch.load(probe, weights_only=False)
    assert probe_marker.exists()

    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"model": state, "params": {}, "x": _TouchOnLoad(marker)}, path)
    with pytest.raises(ModelFileError) as info:
        import_diffwave(path)
    assert not marker.exists()
    assert str(path) in str(info.value)


def test_non_checkpoint_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(ModelFileError):
        import_diffwave(path)
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(ModelFileError, match="input_projection"):
        import_diffwave(path)
    with pytest.raises(ModelFileError, match="no such"):
        import_diffwave(tmp_path / "missing.pt")


@pytest.mark.parametrize("damage", ["missing_skip_projection", "only_input_projection"])
def test_incomplete_reference_state_dict_is_refused(tmp_path, reference, damage):
    state = reference[0].state_dict()
    if damage == "missing_skip_projection":
        state = {k: v for k, v in state.items() if not k.startswith("skip_projection.")}
    else:
        state = {"input_projection.weight": state["input_projection.weight"]}
    path = tmp_path / f"{damage}.pt"
    torch.save({"model": state, "params": {}}, path)
    with pytest.raises(ModelFileError) as info:
        import_diffwave(path)
    assert str(path) in str(info.value)


def test_truncated_reference_checkpoint_is_refused(tmp_path, reference):
    data = (reference[1] / "weights.pt").read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError):
        import_diffwave(path)


def test_safetensors_without_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"input_projection.weight": torch.zeros(64, 1, 1)}, str(path))
    with pytest.raises(ModelFileError, match="not an audiodiff model") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_truncated_model_file_is_refused(tmp_path, imported):
    data = imported.save(tmp_path / "model.safetensors").read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 100):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFileError) as info:
            load_model(path)
        assert str(path) in str(info.value)


def test_future_format_version_is_refused(tmp_path, imported):
    from safetensors.torch import save_file

    path = tmp_path / "future.safetensors"
    tensors = {k: v.contiguous() for k, v in imported.network.state_dict().items()}
    metadata = {"format": "audiodiff", "format_version": "99", "config": json.dumps(imported.config.to_dict())}
    save_file(tensors, str(path), metadata=metadata)
    assert FORMAT_VERSION < 99
    with pytest.raises(ModelFileError, match="99") as info:
        load_model(path)
    assert "upgrade" in str(info.value)


def test_missing_model_file_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="no such"):
        load_model(tmp_path / "nothing.safetensors")


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, imported):
    from safetensors.torch import save_file

    path = tmp_path / "mismatch.safetensors"
    tensors = {k: v.contiguous() for k, v in imported.network.state_dict().items() if "residual_layers.29." not in k}
    metadata = {"format": "audiodiff", "format_version": "1", "config": json.dumps(imported.config.to_dict())}
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ModelFileError, match="do not match"):
        load_model(path)
