"""Training with Lightning: the LightningModule, callbacks, atomic checkpoints, `audiodiff train`."""

from audiodiff.training.module import DiffusionModule

__all__ = ["DiffusionModule"]
