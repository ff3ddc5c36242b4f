"""Vocoding jobs: read mels or audio from files, batch them, synthesise, write wavs.

Used by ``audiodiff vocode``; each input either succeeds or yields one :class:`InputError`
line, and the others are still written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from audiodiff.audio import AudioError, check_readable_file, display_path, one_line
from audiodiff.mel import describe_range_mismatch
from audiodiff.pretrained import AudioDiffusion
from audiodiff.safe_load import describe_load_error

log = logging.getLogger("audiodiff.vocode")

MEL_SUFFIXES = (".npy", ".npz", ".pt", ".pth")


class InputError(ValueError):
    """One input that cannot be vocoded; ``str()`` is ``"<path>: <reason>"``, on one line."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = one_line(reason)
        super().__init__(f"{display_path(path)}: {self.reason}")


@dataclass
class VocodeItem:
    """One utterance to synthesise: ``mel`` is ``(n_mels, frames)`` float32."""

    name: str
    source: Path
    mel: Tensor


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
    data = torch.load(path, map_location="cpu", weights_only=True)
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


def load_inputs(paths: Sequence[str | Path], model: AudioDiffusion, on_error: Callable[[InputError], None]) -> list[VocodeItem]:
    """Mels from mel files, or computed from audio files (resynthesis). Bad inputs go to ``on_error``;
    a conversion of an audio file (stereo, another rate, ...) is mentioned in one log line."""
    from audiodiff.audio import load_audio

    items: list[VocodeItem] = []
    for raw in paths:
        path = Path(raw)
        try:
            if path.is_dir():
                raise InputError(path, "is a directory, not a mel or audio file")
            if path.suffix.lower() in MEL_SUFFIXES:
                mels = read_mel_file(path, model.config.denoiser.n_mels)
                _warn_convention(path, mels, model)
            else:
                audio, _ = load_audio(path, model.sample_rate, on_conversion=lambda note: _note(path, note))
                if audio.shape[-1] < model.hop_length * 2:
                    raise InputError(path, f"audio is too short ({audio.shape[-1]} samples at {model.sample_rate} Hz) "
                                           f"to compute a mel; it needs at least {model.hop_length * 2}")
                mels = model.mel(audio).cpu()
            for k, mel in enumerate(mels):
                name = path.stem if mels.shape[0] == 1 else f"{path.stem}_{k}"
                items.append(VocodeItem(name=name, source=path, mel=mel))
        except InputError as error:
            on_error(error)
        except AudioError as error:
            wrapped = InputError(error.path, error.reason)
            wrapped.__cause__ = error  # what --verbose shows
            on_error(wrapped)
    return items


def _note(path: Path, note: str) -> None:
    """Mention a conversion of an input (stereo -> mono, another rate, ...) once."""
    log.info("%s: %s", display_path(path), note)


def drop_name_collisions(items: Sequence[VocodeItem], on_error: Callable[[InputError], None]) -> list[VocodeItem]:
    """``items`` without those whose output name an earlier item already takes.

    ``a.npy`` and ``a.wav``, or ``x/a.npy`` and ``y/a.npy``, would both be written as ``a.wav``;
    the later one goes to ``on_error`` instead of silently replacing the first.
    """
    first_source: dict[str, Path] = {}
    kept = []
    for item in items:
        if item.name in first_source:
            on_error(InputError(item.source, f"its output {item.name}.wav is already taken by "
                                             f"{display_path(first_source[item.name])}; rename one of them "
                                             "or vocode it into another --out"))
            continue
        first_source[item.name] = item.source
        kept.append(item)
    return kept


def _warn_convention(path: Path, mel: Tensor, model: AudioDiffusion) -> None:
    mismatch = describe_range_mismatch(mel, model.config.mel)
    if mismatch:
        log.warning("%s: %s; the output will likely be noise", display_path(path), mismatch)


def batches(
    items: Sequence[VocodeItem], batch_size: int, max_frames: int | None = None
) -> Iterator[list[tuple[int, VocodeItem]]]:
    """Consecutive groups of ``(index, item)`` in input order.

    A group holds at most ``batch_size`` items and, when ``max_frames`` is given, at most
    ``max_frames`` padded frames in all (``len(group) * longest``); a longer item goes alone.
    """
    group: list[tuple[int, VocodeItem]] = []
    for index, item in enumerate(items):
        candidate = group + [(index, item)]
        longest = max(i.mel.shape[-1] for _, i in candidate)
        too_big = max_frames is not None and len(candidate) * longest > max_frames
        if group and (len(candidate) > batch_size or too_big):
            yield group
            candidate = [(index, item)]
        group = candidate
    if group:
        yield group


def pad_mels(mels: Sequence[Tensor]) -> Tensor:
    """Stack ``(n_mels, frames_i)`` mels into ``(B, n_mels, max frames)``, padding with each mel's minimum."""
    longest = max(m.shape[-1] for m in mels)
    padded = [torch.nn.functional.pad(m, (0, longest - m.shape[-1]), value=float(m.min())) for m in mels]
    return torch.stack(padded)


def vocode_batch(
    model: AudioDiffusion,
    group: Sequence[tuple[int, VocodeItem]],
    *,
    sampler: str,
    steps: int | None,
    seed: int,
    callback: Callable[[int, int], None] | None = None,
    chunk_seconds: float | str | None = "auto",
    precision: str = "fp32",
) -> list[Tensor]:
    """Synthesise a group; item ``i`` of the job uses seed ``seed + i`` (``chunk_seconds`` and
    ``precision`` as in :meth:`AudioDiffusion.vocode`). Returns ``(frames_i * hop,)`` each."""
    mel = pad_mels([item.mel for _, item in group])
    seeds = [seed + index for index, _ in group]
    audio = model.vocode(mel, sampler=sampler, steps=steps, seed=seeds, callback=callback,
                         chunk_seconds=chunk_seconds, precision=precision)
    return [audio[row, : item.mel.shape[-1] * model.hop_length].cpu() for row, (_, item) in enumerate(group)]
