"""audiodiff: diffusion-based audio synthesis (a DiffWave-style vocoder and sound generator).

Python API::

    import audiodiff
    model = audiodiff.load_model()                         # the shipped speech-22k vocoder
    model = audiodiff.load_model("my-vocoder.safetensors")
    audio = model.vocode(mel)     # (B, n_mels, frames) -> (B, frames * hop)
    sfx = audiodiff.load_model("sfx-22k")                  # the shipped sound-effects generator
    mel = model.mel(audio)        # (B, T) -> (B, n_mels, T // hop)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audiodiff.mel import MelConfig, MelSpectrogram, mel_preset
    from audiodiff.pipeline import AudioDiffusion, ModelConfig, import_diffwave, load_model

__version__ = "0.1.0"

#: The public names and the module each comes from. They are imported on first use (PEP 562), so
#: ``import audiodiff.cli`` and ``audiodiff --help`` do not load torch.
_EXPORTS = {
    "AudioDiffusion": "audiodiff.pipeline", "ModelConfig": "audiodiff.pipeline",
    "import_diffwave": "audiodiff.pipeline", "load_model": "audiodiff.pipeline",
    "MelConfig": "audiodiff.mel", "MelSpectrogram": "audiodiff.mel", "mel_preset": "audiodiff.mel",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'audiodiff' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

__all__ = [
    "AudioDiffusion", "MelConfig", "MelSpectrogram", "ModelConfig",
    "import_diffwave", "load_model", "mel_preset", "__version__",
]
