"""Figures: mel spectrograms side by side (for TensorBoard and the CLI) and contact sheets."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def mel_comparison_figure(mels: Sequence[np.ndarray], titles: Sequence[str], sample_rate: int, hop_length: int):
    """A matplotlib figure with one row per mel ``(n_mels, frames)``, sharing the colour scale."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    low = min(float(np.min(m)) for m in mels)
    high = max(float(np.max(m)) for m in mels)
    fig, axes = plt.subplots(len(mels), 1, figsize=(10, 2.6 * len(mels)), squeeze=False)
    for ax, mel, title in zip(axes[:, 0], mels, titles):
        seconds = mel.shape[-1] * hop_length / sample_rate
        image = ax.imshow(mel, origin="lower", aspect="auto", vmin=low, vmax=high,
                          extent=(0.0, seconds, 0, mel.shape[0]), cmap="magma")
        ax.set_title(title)
        ax.set_ylabel("mel bin")
        fig.colorbar(image, ax=ax, pad=0.01)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    return fig


def contact_sheet_figure(mels: Sequence[np.ndarray], titles: Sequence[str], sample_rate: int,
                         hop_length: int, columns: int = 4):
    """A grid of small log-mel spectrograms ``(n_mels, frames)``, one per clip, sharing a colour scale."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    columns = max(1, min(columns, len(mels)))
    rows = -(-len(mels) // columns)
    low = min(float(np.min(m)) for m in mels)
    high = max(float(np.max(m)) for m in mels)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat[len(mels):]:
        ax.axis("off")
    for ax, mel, title in zip(axes.flat, mels, titles):
        seconds = mel.shape[-1] * hop_length / sample_rate
        ax.imshow(mel, origin="lower", aspect="auto", vmin=low, vmax=high,
                  extent=(0.0, seconds, 0, mel.shape[0]), cmap="magma")
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.supxlabel("seconds", fontsize=8)
    fig.supylabel("mel bin", fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(path: str | Path, fig) -> Path:
    """Write a matplotlib figure as a PNG atomically (temporary file, then rename); closes it."""
    import matplotlib.pyplot as plt

    from audiodiff.io.files import write_atomically

    try:
        return write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)


def save_mel_comparison(path: str | Path, mels: Sequence[np.ndarray], titles: Sequence[str],
                        sample_rate: int, hop_length: int) -> Path:
    """Write :func:`mel_comparison_figure` as a PNG and return its path."""
    return save_figure(path, mel_comparison_figure(mels, titles, sample_rate, hop_length))
