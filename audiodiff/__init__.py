"""audiodiff: diffusion-based audio synthesis (a DiffWave-style vocoder and sound generator)."""

__version__ = "0.1.0"
