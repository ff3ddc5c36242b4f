"""Mel files a user gives us: read ``.npy``/``.npz``/``.pt`` safely and bring any layout to
``(B, n_mels, frames)`` float32, with one :class:`InputError` line for a mel that cannot be used.

The one place a mel from outside is checked: :meth:`audiodiff.AudioDiffusion.vocode` and the
vocoding jobs both go through :func:`orient_mel`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from audiodiff.io.audio import AudioError, check_readable_file, display_path, one_line
from audiodiff.io.safe_load import describe_load_error, load_pickle_safely

MEL_SUFFIXES = (".npy", ".npz", ".pt", ".pth")


class InputError(ValueError):
    """One input that cannot be vocoded; ``str()`` is ``"<path>: <reason>"``, on one line."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = one_line(reason)
        super().__init__(f"{display_path(path)}: {self.reason}")


def orient_mel(array: np.ndarray | Tensor, n_mels: int, source: str | Path = "<mel>") -> Tensor:
    """Bring a mel in any accepted layout to ``(B, n_mels, frames)`` float32.

    Accepts ``(n_mels, T)``, ``(T, n_mels)``, and either with a leading batch axis. The
    orientation is chosen by which axis has ``n_mels`` entries; ``(n_mels, n_mels)`` is read
    as ``(n_mels, T)``.
    """
    mel = torch.as_tensor(np.asarray(array)) if not isinstance(array, Tensor) else array
    shape = tuple(mel.shape)
    if not mel.is_floating_point():
        raise InputError(source, f"mel has integer/bool dtype {mel.dtype}; expected floating point values "
                                 "(a mel is float32 log-magnitudes)")
    if mel.dim() not in (2, 3):
        raise InputError(
            source, f"mel has shape {shape}; expected ({n_mels}, frames) or (frames, {n_mels}), optionally batched"
        )
    if mel.dim() == 2:
        mel = mel.unsqueeze(0)
    if mel.shape[1] == n_mels:
        pass
    elif mel.shape[2] == n_mels:
        mel = mel.transpose(1, 2)
    else:
        raise InputError(source, f"mel has shape {shape} but the model expects {n_mels} mel bins")
    if mel.shape[-1] == 0 or mel.shape[0] == 0:
        raise InputError(source, f"mel has shape {shape}: no frames")
    mel = mel.float().contiguous()
    if not torch.isfinite(mel).all():
        raise InputError(source, "mel contains NaN or Inf values")
    return mel


#: How a .npy file begins (numpy.lib.format.MAGIC_PREFIX).
NPY_MAGIC = b"\x93NUMPY"


def _read_mel_array(path: Path) -> np.ndarray | Tensor:
    try:
        check_readable_file(path, "a mel file")
    except AudioError as error:
        raise InputError(path, error.reason) from None
    if path.suffix == ".npy":
        with open(path, "rb") as handle:
            if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise InputError(path, "not a .npy file (no NumPy header); write mels with numpy.save")
        return np.load(path, allow_pickle=False)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            key = "mel" if "mel" in keys else keys[0] if len(keys) == 1 else None
            if key is None:
                raise InputError(path, f"npz holds arrays {keys}; name the mel 'mel' or store only one")
            return archive[key]
    data = load_pickle_safely(path)
    if isinstance(data, dict):
        data = data.get("mel")
    if not isinstance(data, Tensor):
        raise InputError(path, "a .pt mel file must hold a tensor or a dict with a 'mel' tensor")
    return data


def read_mel_file(path: str | Path, n_mels: int) -> Tensor:
    """A mel file (``.npy``, ``.npz``, ``.pt``) as ``(B, n_mels, frames)``; :class:`InputError` if unusable."""
    path = Path(path)
    try:
        array = _read_mel_array(path)
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - numpy/torch raise many types on bad files
        raise InputError(path, f"cannot read mel file ({describe_load_error(error)})") from None
    return orient_mel(array, n_mels, path)
