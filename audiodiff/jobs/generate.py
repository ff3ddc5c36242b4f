"""Sound generation jobs for ``audiodiff generate``: which clips, their seeds and file names.

A job is a list of :class:`Clip` (class, index, seed); clip ``k`` of every class gets the seed
``seed + k``, so the same command gives the same sounds, and clip ``k`` of two classes starts
from the same noise (handy for comparing classes). Clips are generated in batches and saved one
file each: ``<class>-<index>-seed<seed>.wav`` (``sample-...`` for the unconditional mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from torch import Tensor

from audiodiff.pipeline.audio_diffusion import AudioDiffusion

UNCONDITIONAL_NAME = "sample"


@dataclass(frozen=True)
class Clip:
    """One clip to generate: its class name (``None``: the null class or an unconditional model),
    its index within the class and its seed."""

    label: str | None
    index: int
    seed: int

    @property
    def file_name(self) -> str:
        return f"{self.label or UNCONDITIONAL_NAME}-{self.index:03d}-seed{self.seed}.wav"


def plan_clips(labels: Sequence[str | None], n: int, seed: int) -> list[Clip]:
    """``n`` clips of each label (in the order given), clip ``k`` seeded ``seed + k``."""
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    return [Clip(label, k, seed + k) for label in labels for k in range(n)]


def resolve_labels(model: AudioDiffusion, requested: Sequence[str], all_classes: bool) -> list[str | None]:
    """The class names to generate: ``requested`` (checked against the model), every class with
    ``all_classes``, or ``[None]`` (the null class / unconditional) when nothing is asked for."""
    names = model.config.class_names
    if (requested or all_classes) and names is None:
        raise ValueError("this model has no classes; leave out --class / --all-classes")
    if all_classes:
        return list(names)
    for name in requested:
        model.config.class_id(name)  # one-line error listing the valid names
    return list(dict.fromkeys(requested)) or [None]


def batch_clips(clips: Sequence[Clip], batch_size: int) -> Iterator[list[Clip]]:
    """Consecutive clips of one label, at most ``batch_size`` at a time."""
    batch: list[Clip] = []
    for clip in clips:
        if batch and (len(batch) == batch_size or clip.label != batch[0].label):
            yield batch
            batch = []
        batch.append(clip)
    if batch:
        yield batch


def generate_clips(
    model: AudioDiffusion,
    clips: Sequence[Clip],
    num_samples: int,
    *,
    guidance: float = 1.0,
    sampler: str = "fast",
    steps: int | None = None,
    batch_size: int = 16,
    callback: Callable[[int, int], None] | None = None,
    precision: str = "fp32",
) -> Iterator[tuple[Clip, Tensor]]:
    """Yield ``(clip, audio (num_samples,))`` for every clip, generated ``batch_size`` at a time.

    ``callback(step, n_steps)`` is called after every sampling step of every batch.
    """
    for batch in batch_clips(clips, max(1, batch_size)):
        audio = model.generate(
            len(batch), num_samples, labels=batch[0].label, guidance=guidance,
            sampler=sampler, steps=steps, seed=[c.seed for c in batch], callback=callback,
            precision=precision,
        )
        yield from zip(batch, audio.cpu())


def save_contact_sheet(path: str | Path, clips: Sequence[tuple[Clip, Tensor]], sample_rate: int) -> Path:
    """A PNG grid of the clips' log-mel spectrograms (80 bins up to Nyquist, hop 256)."""
    import torch

    from audiodiff.io.figures import contact_sheet_figure, save_figure
    from audiodiff.mel import MelSpectrogram, mel_preset

    config = mel_preset("hifigan", sample_rate=sample_rate, f_max=None)
    frontend = MelSpectrogram(config)
    with torch.inference_mode():
        mels = [frontend(audio.float())[0].numpy() for _, audio in clips]
    titles = [clip.file_name.removesuffix(".wav") for clip, _ in clips]
    figure = contact_sheet_figure([np.asarray(m) for m in mels], titles, sample_rate, config.hop_length)
    return save_figure(path, figure)
