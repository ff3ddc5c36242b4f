"""Training checkpoints that are never half-written and never unpickle code.

:class:`AtomicCheckpointIO` is the checkpoint writer of ``audiodiff train``: each checkpoint is
written to a temporary file beside its destination, flushed to disk and renamed onto it
(:func:`audiodiff.io.files.write_atomically`), so a crash, ``kill -9`` or power cut leaves the old
``last.ckpt`` or the new one, never a truncated file. (Lightning's own writer moves a temporary
file into place too, but does not flush it to disk first.) Temporaries left behind by a killed
run are removed by the next run that writes into the same folder.

Checkpoints are read with ``torch.load(weights_only=True)``: a ``--ckpt_path`` that would run
code when unpickled is refused with a one-line :class:`~audiodiff.io.model_file.ModelFileError`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.plugins.io.wrapper import _WrappingCheckpointIO

from audiodiff.io.files import write_atomically
from audiodiff.pipeline.loading import load_weights_only

#: What :func:`write_atomically` names the temporary of a checkpoint ``<name>.ckpt``.
STALE_TEMPORARIES = ".*.ckpt.*.tmp"


class AtomicCheckpointIO(TorchCheckpointIO):
    """A :class:`TorchCheckpointIO` that writes atomically (temporary file, fsync, rename) and
    reads with ``weights_only=True`` unless a caller explicitly asks for ``weights_only=False``.

    Remote paths (``s3://...``) go through Lightning's own writer and reader.
    """

    def __init__(self) -> None:
        super().__init__()
        self._swept: set[Path] = set()

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None or _is_remote(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        self._sweep_once(path.parent)
        write_atomically(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path: str | os.PathLike, map_location: Callable | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """The checkpoint at ``path``, read onto the CPU (Lightning moves the states to the device).

        A missing file, or a pickle that would import anything besides tensors and plain types,
        raises a one-line :class:`~audiodiff.io.model_file.ModelFileError` naming the file.
        """
        if weights_only is False or _is_remote(path):
            return super().load_checkpoint(path, weights_only=weights_only is not False)
        return load_weights_only(path)

    def _sweep_once(self, folder: Path) -> None:
        """Delete checkpoint temporaries in ``folder`` left by a killed run (once per folder)."""
        if folder in self._swept:
            return
        self._swept.add(folder)
        for stale in folder.glob(STALE_TEMPORARIES):
            with contextlib.suppress(OSError):
                stale.unlink()


def _is_remote(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def use_atomic_checkpoints(trainer: Trainer) -> None:
    """Make :class:`AtomicCheckpointIO` the trainer's checkpoint writer.

    Replaces only Lightning's default :class:`TorchCheckpointIO` (also inside a wrapper such as
    ``AsyncCheckpointIO``); a different ``CheckpointIO`` given in ``--trainer.plugins`` is kept.
    """
    strategy = trainer.strategy
    chosen = strategy._checkpoint_io  # None: Lightning would create a TorchCheckpointIO on first use
    if chosen is None or type(chosen) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
    elif isinstance(chosen, _WrappingCheckpointIO) and chosen.checkpoint_io is None:
        chosen.checkpoint_io = AtomicCheckpointIO()
