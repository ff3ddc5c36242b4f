"""Reading and writing audio files: the only audio I/O of the package.

:func:`load_audio` reads any format soundfile (libsndfile) reads, downmixes to mono, converts to
float32 and resamples on request; it can read a slice of a file without decoding the rest.
:func:`save_audio` writes atomically (temporary file + :func:`os.replace`). Every problem with a
file surfaces as one exception type, :class:`AudioError`, whose message names the file and says
what is wrong with it in one line.

``soundfile`` and ``librosa`` are imported inside the functions that need them, so importing
this module (and the package) stays fast and works on machines that lack them. Resampling is
soxr's (through :func:`librosa.resample`): the package needs no compiled extension of torchaudio,
so it works with any torch release its metadata admits.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Union

import numpy as np
import torch
from torch import Tensor

from audiodiff.io.files import unreadable_reason, write_atomically

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

#: Sample formats (libsndfile subtypes) that reading converts to float32, in words. 16-bit PCM
#: and 32-bit float are the formats this package works in, and compressed formats are decoded
#: by their codecs; neither is worth a note.
CONVERTED_SAMPLE_FORMATS: dict[str, str] = {
    "PCM_S8": "8-bit", "PCM_U8": "8-bit", "PCM_24": "24-bit", "PCM_32": "32-bit", "DOUBLE": "64-bit float",
}


def display_path(path: PathLike) -> str:
    """``path`` for messages: a name that is not valid UTF-8 shows its bytes as ``\\xNN``.

    Python keeps such bytes as lone surrogates (``caf\\udce9.wav``), which cannot be printed
    to a UTF-8 stream; ``b"caf\\xe9.wav"`` shows as ``caf\\xe9.wav``, the bytes as Python writes them.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def one_line(text: object) -> str:
    """``str(text)`` with every run of whitespace (newlines included) folded into one space."""
    return " ".join(str(text).split())


class AudioError(Exception):
    """A file that cannot be used as audio. ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = one_line(reason)
        super().__init__(f"{display_path(self.path)}: {self.reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across DataLoader workers
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says: native ``sample_rate``, ``frames`` per channel."""

    path: Path
    sample_rate: int
    frames: int
    channels: int
    subtype: str = ""  # libsndfile's sample format, e.g. PCM_16, PCM_24, FLOAT

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def check_readable_file(path: Path, what: str = "an audio file") -> None:
    """Raise :class:`AudioError` for a path that cannot be ``what`` before opening it: missing,
    a directory, unreadable or empty."""
    reason = unreadable_reason(path, what)
    if reason:
        raise AudioError(path, reason)


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
        kind = _format_by_magic(path)
        what = f"damaged or truncated {kind} file" if kind else "not an audio file soundfile can read"
        raise AudioError(path, f"{what}: {detail}") from err


#: How audio files begin, to tell a damaged audio file from a file that is not audio at all.
FORMAT_MAGIC: dict[bytes, str] = {
    b"RIFF": "WAV", b"RIFX": "WAV", b"RF64": "WAV", b"fLaC": "FLAC", b"OggS": "Ogg", b"FORM": "AIFF",
    b"caff": "CAF", b".snd": "AU", b"ID3": "MP3",
}


def _format_by_magic(path: Path) -> str | None:
    """The format whose magic bytes ``path`` starts with, or ``None``."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return None
    return next((name for magic, name in FORMAT_MAGIC.items() if head.startswith(magic)), None)


@contextlib.contextmanager
def _open(path: Path) -> Iterator["soundfile.SoundFile"]:
    """Open ``path`` for reading; any failure is an :class:`AudioError`."""
    import soundfile as sf

    check_readable_file(path)
    with _translate_errors(path):
        handle = sf.SoundFile(os.fsencode(path))  # bytes: names that are not UTF-8 open too
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
                         channels=int(f.channels), subtype=str(f.subtype))
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


#: The resampler: soxr's high-quality preset (a linear-phase low-pass that keeps 95 % of the
#: band), as :func:`librosa.resample` names it.
RESAMPLE_TYPE = "soxr_hq"


def resample(audio: Tensor, orig_sr: int, new_sr: int) -> Tensor:
    """Resample ``(..., T)`` from ``orig_sr`` to ``new_sr`` with soxr (:data:`RESAMPLE_TYPE`).

    The output has ``ceil(T * new_sr / orig_sr)`` samples, the dtype and device of ``audio``;
    equal rates return ``audio`` itself. The work is done on the CPU, in ``audio``'s float
    precision (float64 stays float64).
    """
    if orig_sr == new_sr:
        return audio
    import librosa

    source = audio.detach().cpu().numpy()
    if source.dtype not in (np.float32, np.float64):
        source = source.astype(np.float32)
    resampled = librosa.resample(source, orig_sr=int(orig_sr), target_sr=int(new_sr),
                                 res_type=RESAMPLE_TYPE, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(resampled)).to(device=audio.device, dtype=audio.dtype)


def describe_conversion(info: AudioInfo, sample_rate: int | None, peak: float = 0.0) -> str | None:
    """What reading ``info``'s file at ``sample_rate`` changes, in words; ``None`` if nothing.

    E.g. ``"24-bit stereo 48000 Hz -> float32 mono 22050 Hz"``; a ``peak`` (of the mono
    downmix) beyond full scale adds ``"; peak 3.00 beyond full scale (1.0): used as is"``.
    """
    source, target = [], []
    if info.subtype in CONVERTED_SAMPLE_FORMATS:
        source.append(CONVERTED_SAMPLE_FORMATS[info.subtype])
        target.append("float32")
    if info.channels != 1:
        source.append("stereo" if info.channels == 2 else f"{info.channels} channels")
        target.append("mono")
    if sample_rate is not None and sample_rate != info.sample_rate:
        source.append(f"{info.sample_rate} Hz")
        target.append(f"{sample_rate} Hz")
    parts = [f"{' '.join(source)} -> {' '.join(target)}"] if source else []
    if peak > 1.0:
        # Used as is, neither clipped nor scaled: float formats hold such values on purpose
        # (headroom), clipping would distort the signal and scaling would change the level the
        # file was made at; the mel front end takes any amplitude (a louder input only shifts
        # the log-mel), and only writing 16-bit PCM clips, as it must.
        parts.append(f"peak {peak:.2f} beyond full scale (1.0): used as is")
    return "; ".join(parts) or None


def load_audio(
    path: PathLike,
    sample_rate: int | None = None,
    *,
    start_seconds: float | None = None,
    duration_seconds: float | None = None,
    on_conversion: Callable[[str], None] | None = None,
) -> tuple[Tensor, int]:
    """Read ``path`` as mono float32 audio ``(T,)``, resampled to ``sample_rate`` if given.

    Returns ``(audio, sr)`` where ``sr`` is ``sample_rate`` or the file's own rate. Channels are
    averaged. ``start_seconds`` / ``duration_seconds`` (in seconds of the file, converted to
    ``round(seconds * file_rate)`` frames) select a slice that is read by seeking, so a crop of a
    long file decodes only the crop; like a Python slice, a range past the end is cut short.
    Resampling happens after the slice is read, so its first sample is the slice's first sample.
    ``on_conversion`` is called once with :func:`describe_conversion`'s words when reading
    changed the file's channels, rate or sample format, or found a float peak beyond 1.

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
        info = AudioInfo(path, int(f.samplerate), int(f.frames), int(f.channels), str(f.subtype))
        if start > 0:
            f.seek(start)
        data = f.read(count, dtype="float32", always_2d=True)
    if not np.isfinite(data).all():
        raise AudioError(path, "contains NaN or infinite samples")
    audio = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1, dtype=np.float32)))
    if on_conversion is not None:
        note = describe_conversion(info, sample_rate, float(audio.abs().max()) if audio.numel() else 0.0)
        if note:
            on_conversion(note)
    if sample_rate is None or audio.numel() == 0:
        return audio, sample_rate or info.sample_rate
    return resample(audio, info.sample_rate, sample_rate).contiguous(), sample_rate


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
    return write_atomically(  # a bytes name, so that names that are not UTF-8 work too
        path, lambda tmp: sf.write(os.fsencode(tmp), data, int(sample_rate), subtype=subtype, format=fmt)
    )


def samples_at_rate(frames: int, orig_sr: int, new_sr: int) -> int:
    """Length of ``frames`` samples at ``orig_sr`` after resampling to ``new_sr`` (as :func:`resample`)."""
    return frames if orig_sr == new_sr else math.ceil(frames * new_sr / orig_sr)
