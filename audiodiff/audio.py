"""Reading and writing audio files: the only audio I/O of the package.

:func:`load_audio` reads any format soundfile (libsndfile) reads, downmixes to mono, converts to
float32 and resamples on request; it can read a slice of a file without decoding the rest.
:func:`save_audio` writes atomically (temporary file + :func:`os.replace`). Every problem with a
file surfaces as one exception type, :class:`AudioError`, whose message names the file and says
what is wrong with it in one line.

``soundfile`` and ``torchaudio`` are imported inside the functions that need them, so importing
this module (and the package) works on machines that lack them.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Union

import numpy as np
import torch
from torch import Tensor

from audiodiff.files import write_atomically

if TYPE_CHECKING:
    import soundfile

PathLike = Union[str, os.PathLike]

#: File suffixes treated as audio (lower case). All are formats libsndfile >= 1.1 reads.
AUDIO_SUFFIXES: frozenset[str] = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc",
     ".au", ".caf", ".w64", ".rf64"}
)

#: Output formats of :func:`save_audio`, by suffix.
SAVE_FORMATS: dict[str, str] = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


class AudioError(Exception):
    """A file that cannot be used as audio. ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across DataLoader workers
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says: native ``sample_rate``, ``frames`` per channel."""

    path: Path
    sample_rate: int
    frames: int
    channels: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def _check_path(path: Path) -> None:
    """Raise :class:`AudioError` for a path that cannot be an audio file before opening it."""
    if not path.exists():
        reason = "broken symbolic link" if path.is_symlink() else "file not found"
        raise AudioError(path, reason)
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if not os.access(path, os.R_OK):
        raise AudioError(path, "permission denied")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")


@contextlib.contextmanager
def _translate_errors(path: Path) -> Iterator[None]:
    """Turn soundfile's and the OS's exceptions into :class:`AudioError`."""
    import soundfile as sf

    try:
        yield
    except AudioError:
        raise
    except PermissionError:
        raise AudioError(path, "permission denied") from None
    except FileNotFoundError:
        raise AudioError(path, "file not found") from None
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError) as err:
        detail = getattr(err, "error_string", None) or str(err)  # libsndfile's words, without the path
        raise AudioError(path, f"not an audio file soundfile can read: {detail}") from err


@contextlib.contextmanager
def _open(path: Path) -> Iterator["soundfile.SoundFile"]:
    """Open ``path`` for reading; any failure is an :class:`AudioError`."""
    import soundfile as sf

    _check_path(path)
    with _translate_errors(path):
        handle = sf.SoundFile(str(path))
    try:
        with _translate_errors(path):
            yield handle
    finally:
        handle.close()


def audio_info(path: PathLike) -> AudioInfo:
    """Read the header of ``path``; raises :class:`AudioError` (also for a file with 0 frames)."""
    path = Path(path)
    with _open(path) as f:
        info = AudioInfo(path=path, sample_rate=int(f.samplerate), frames=int(f.frames),
                         channels=int(f.channels))
    if info.frames <= 0:
        raise AudioError(path, "contains no audio frames")
    return info


def peak_amplitude(path: PathLike, block_frames: int = 1 << 16) -> tuple[float, int]:
    """``(peak |sample| of the mono downmix, frames decoded)``, reading blocks of ``block_frames``.

    Memory stays bounded by one block however long the file is. The frame count is what could
    actually be decoded, which is less than the header's for a truncated file. Raises
    :class:`AudioError` like :func:`load_audio` (including for NaN/Inf samples).
    """
    path = Path(path)
    peak, frames = 0.0, 0
    with _open(path) as f:
        for block in f.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
            mono = block.mean(axis=1, dtype=np.float32)
            if not np.isfinite(mono).all():
                raise AudioError(path, "contains NaN or infinite samples")
            if mono.size:
                peak = max(peak, float(np.abs(mono).max()))
            frames += len(mono)
    if frames == 0:
        raise AudioError(path, "contains no audio frames")
    return peak, frames


def _frame_range(
    f: "soundfile.SoundFile", path: Path, start_seconds: float | None, duration_seconds: float | None
) -> tuple[int, int]:
    """``(first frame, number of frames)`` to read, clipped to the file like a slice."""
    total = int(f.frames)
    if total <= 0:
        raise AudioError(path, "contains no audio frames")
    start = min(round((start_seconds or 0.0) * f.samplerate), total)
    count = total - start
    if duration_seconds is not None:
        count = min(count, round(duration_seconds * f.samplerate))
    return start, count


def resample(audio: Tensor, orig_sr: int, new_sr: int) -> Tensor:
    """Resample ``(..., T)`` from ``orig_sr`` to ``new_sr`` (torchaudio's windowed sinc).

    The output has ``ceil(T * new_sr / orig_sr)`` samples; equal rates return ``audio`` itself.
    """
    if orig_sr == new_sr:
        return audio
    import torchaudio.functional as AF

    return AF.resample(audio, int(orig_sr), int(new_sr))


def load_audio(
    path: PathLike,
    sample_rate: int | None = None,
    *,
    start_seconds: float | None = None,
    duration_seconds: float | None = None,
) -> tuple[Tensor, int]:
    """Read ``path`` as mono float32 audio ``(T,)``, resampled to ``sample_rate`` if given.

    Returns ``(audio, sr)`` where ``sr`` is ``sample_rate`` or the file's own rate. Channels are
    averaged. ``start_seconds`` / ``duration_seconds`` (in seconds of the file, converted to
    ``round(seconds * file_rate)`` frames) select a slice that is read by seeking, so a crop of a
    long file decodes only the crop; like a Python slice, a range past the end is cut short.
    Resampling happens after the slice is read, so its first sample is the slice's first sample.

    Raises :class:`AudioError` for a missing, unreadable, empty or corrupt file, a file without
    frames, or one with NaN/Inf samples.
    """
    if sample_rate is not None and sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if start_seconds is not None and start_seconds < 0:
        raise ValueError(f"start_seconds must be >= 0, got {start_seconds}")
    if duration_seconds is not None and duration_seconds < 0:
        raise ValueError(f"duration_seconds must be >= 0, got {duration_seconds}")
    path = Path(path)
    with _open(path) as f:
        start, count = _frame_range(f, path, start_seconds, duration_seconds)
        native_sr = int(f.samplerate)
        if start > 0:
            f.seek(start)
        data = f.read(count, dtype="float32", always_2d=True)
    if not np.isfinite(data).all():
        raise AudioError(path, "contains NaN or infinite samples")
    audio = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1, dtype=np.float32)))
    if sample_rate is None or audio.numel() == 0:
        return audio, sample_rate or native_sr
    return resample(audio, native_sr, sample_rate).contiguous(), sample_rate


def as_mono_array(audio: Tensor | np.ndarray, dtype: type = np.float32, what: str = "audio") -> np.ndarray:
    """``(T,)`` or ``(1, T)`` tensor/array -> finite numpy ``(T,)`` of ``dtype``.

    A ``ValueError`` naming ``what`` for any other shape or for NaN/infinite samples.
    """
    if isinstance(audio, Tensor):
        audio = audio.detach().cpu().numpy()
    array = np.asarray(audio, dtype=dtype)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1:
        raise ValueError(f"{what} must be mono: 1-D (T,) or (1, T), got shape {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contains NaN or infinite samples")
    return array


def _output_format(path: Path, subtype: str) -> tuple[str, str]:
    """``(format, subtype)`` for ``path``'s suffix; Ogg always gets Vorbis."""
    import soundfile as sf

    fmt = SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot write {path.suffix or 'files without a suffix'!r}; use one of {sorted(SAVE_FORMATS)}")
    if fmt == "OGG":
        subtype = "VORBIS"
    if not sf.check_format(fmt, subtype):
        raise ValueError(f"subtype {subtype!r} is not valid for {fmt}; try one of {sorted(sf.available_subtypes(fmt))}")
    return fmt, subtype


def save_audio(path: PathLike, audio: Tensor | np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Write mono ``audio`` ``(T,)`` or ``(1, T)`` to ``path`` (.wav, .flac or .ogg) atomically.

    The file is written to a temporary name in the same directory and moved into place with
    :func:`os.replace`, so ``path`` never holds a partial file; parent directories are created.
    Samples are clipped to [-1, 1] unless ``subtype`` is floating point. Returns ``path``.
    """
    import soundfile as sf

    path = Path(path)
    fmt, subtype = _output_format(path, subtype)
    data = as_mono_array(audio, what=f"audio for {path}")
    if subtype not in ("FLOAT", "DOUBLE"):
        data = np.clip(data, -1.0, 1.0)
    return write_atomically(
        path, lambda tmp: sf.write(str(tmp), data, int(sample_rate), subtype=subtype, format=fmt)
    )


def samples_at_rate(frames: int, orig_sr: int, new_sr: int) -> int:
    """Length of ``frames`` samples at ``orig_sr`` after resampling to ``new_sr`` (as :func:`resample`)."""
    return frames if orig_sr == new_sr else math.ceil(frames * new_sr / orig_sr)
