"""Training data: finding and checking audio files, crops, the Lightning data module."""

from audiodiff.data.datamodule import AudioDataModule

__all__ = ["AudioDataModule"]
