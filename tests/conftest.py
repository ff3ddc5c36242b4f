"""Shared fixtures: tiny models and synthetic audio made in the tests themselves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from audiodiff.diffusion.schedule import SCHEDULES
from audiodiff.mel import mel_preset
from audiodiff.network.diffwave import DiffWave, denoiser_config
from audiodiff.pipeline import AudioDiffusion, ModelConfig

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture
def device() -> str:
    """The device under test: ``cpu`` unless ``AUDIODIFF_TEST_DEVICE`` says e.g. ``cuda``."""
    name = os.environ.get("AUDIODIFF_TEST_DEVICE", "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("AUDIODIFF_TEST_DEVICE asks for CUDA but none is available")
    return name


def make_tiny_model(preset: str = "hifigan", seed: int = 0, **mel_overrides) -> AudioDiffusion:
    """A ``tiny`` vocoder with random, non-trivial weights (the output projection is not zero)."""
    torch.manual_seed(seed)
    mel = mel_preset(preset, **mel_overrides)
    schedule = SCHEDULES["base"]
    denoiser = denoiser_config("tiny", n_mels=mel.n_mels, hop_length=mel.hop_length, max_steps=schedule.num_steps)
    model = AudioDiffusion(ModelConfig(denoiser=denoiser, mel=mel, schedule=schedule, sample_rate=mel.sample_rate))
    torch.nn.init.normal_(model.network.output_projection.weight, std=0.05)
    return model.eval()


def make_tiny_generator(class_names: tuple[str, ...] | None = ("door", "rain"), seed: int = 0,
                        sample_rate: int = 8000) -> AudioDiffusion:
    """A ``tiny`` class-conditional (or, with ``class_names=None``, unconditional) generator with
    random, non-trivial weights."""
    torch.manual_seed(seed)
    schedule = SCHEDULES["base"]
    denoiser = denoiser_config("tiny", n_mels=None, max_steps=schedule.num_steps, residual_layers=6,
                               num_classes=len(class_names) if class_names else None)
    config = ModelConfig(denoiser=denoiser, mel=None, schedule=schedule, sample_rate=sample_rate,
                         class_names=class_names)
    model = AudioDiffusion(config)
    torch.nn.init.normal_(model.network.output_projection.weight, std=0.05)
    return model.eval()


def random_network(**overrides) -> DiffWave:
    """A tiny network (hop 64) whose every weight and bias is random (the trained output layer is
    not zero); ``overrides`` replace fields of the ``tiny`` size."""
    torch.manual_seed(1)
    network = DiffWave(denoiser_config("tiny", hop_length=64, **overrides)).eval()
    for parameter in network.parameters():
        torch.nn.init.normal_(parameter, std=0.2 if parameter.dim() > 1 else 0.1)
    return network


@pytest.fixture
def tiny_model() -> AudioDiffusion:
    return make_tiny_model()


@pytest.fixture
def tiny_model_file(tmp_path: Path, tiny_model: AudioDiffusion) -> Path:
    return tiny_model.save(tmp_path / "tiny.safetensors")


def sine(seconds: float, sample_rate: int, freq: float = 220.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def speech_like(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a moving pitch and a noise burst: enough structure for mels."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    noise = rng.normal(0, 0.05, t.shape)
    return (0.25 * envelope * voiced + noise).astype(np.float32)


@pytest.fixture
def speech_dir(tmp_path: Path) -> Path:
    """Four short speech-like files: three 22.05 kHz wavs and one 44.1 kHz mp3 (another format and rate)."""
    import soundfile as sf

    root = tmp_path / "wavs"
    root.mkdir()
    for k in range(3):
        sf.write(root / f"utt{k}.wav", speech_like(0.8, 22050, seed=k), 22050)
    sf.write(root / "utt3.mp3", speech_like(0.8, 44100, seed=3), 44100)
    return root


@pytest.fixture
def torch_threads():
    """Restores torch's thread count, which ``--threads`` changes for the whole process."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def torchaudio_or_skip():
    """torchaudio, when the test environment has it (the dev install does, through diffwave).

    Skips when it is not installed; fails with one line when it is installed but does not load
    beside this torch (the broken-pair case), instead of a traceback from its extension.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("torchaudio")
    except PackageNotFoundError:
        pytest.skip("torchaudio is not installed (audiodiff does not need it; only this cross-check does)")
    try:
        import torchaudio.functional  # noqa: F401
        import torchaudio.transforms  # noqa: F401
    except (ImportError, OSError) as error:
        pytest.fail(f"torchaudio {installed} does not load with torch {torch.__version__}; reinstall with "
                    f"pip install -c requirements/constraints.txt -e '.[dev]' ({type(error).__name__})",
                    pytrace=False)
    import torchaudio

    return torchaudio
