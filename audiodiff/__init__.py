"""audiodiff: diffusion-based audio synthesis (a DiffWave-style vocoder and sound generator).

Python API::

    import audiodiff
    model = audiodiff.load_model()                         # the shipped speech-22k vocoder
    model = audiodiff.load_model("my-vocoder.safetensors")
    audio = model.vocode(mel)     # (B, n_mels, frames) -> (B, frames * hop)
    sfx = audiodiff.load_model("sfx-22k")                  # the shipped sound-effects generator
    mel = model.mel(audio)        # (B, T) -> (B, n_mels, T // hop)
"""

from audiodiff.mel import MelConfig, MelSpectrogram, mel_preset
from audiodiff.pipeline import AudioDiffusion, ModelConfig, import_diffwave, load_model

__version__ = "0.1.0"

__all__ = [
    "AudioDiffusion", "MelConfig", "MelSpectrogram", "ModelConfig",
    "import_diffwave", "load_model", "mel_preset", "__version__",
]
