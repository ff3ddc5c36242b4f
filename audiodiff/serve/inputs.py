"""What a request may ask for, checked before anything is vocoded: the server's limits, the query
options, a ``.npy`` mel body and a stream of raw mel frames.

Every request comes from the network and is untrusted. A bad one raises :class:`RequestError`
(an HTTP status and one line saying what is wrong); nothing here unpickles, and the mel checks are
the library's own (:func:`audiodiff.io.mel_files.orient_mel`).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from audiodiff.io.audio import one_line
from audiodiff.io.mel_files import NPY_MAGIC, InputError, orient_mel

#: Output formats: ``pcm16`` (16-bit PCM; clipped to [-1, 1]) and ``f32`` (32-bit float, as vocoded).
FORMATS = ("pcm16", "f32")
#: Room for a .npy header on top of the mel's own bytes in the request byte limit.
NPY_HEADER_BYTES = 64 * 1024
#: Seeds are non-negative and leave room for ``seed + k`` in a 64-bit generator seed.
MAX_SEED = 2**62


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx) and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = one_line(message)
        super().__init__(self.message)


def default_max_batch(device: str | torch.device) -> int:
    """``--max-batch`` when not given: 8 on a GPU, 1 on a CPU.

    On a GPU one batched network call costs about what one row does, so batching concurrent work is
    what lets a server keep up with many clients. On a CPU a batch costs the sum of its rows: it
    brought no throughput in ``benchmarks/serve_streams.py`` (tiny and base, 4 clients on 2 cores:
    batched/alone 1.01-1.08, within the run-to-run noise) while every client of a batch waits for
    the whole batch (median first audio 13.2 s batched vs 8.2 s one at a time, base).
    """
    return 8 if torch.device(device).type == "cuda" else 1


@dataclass(frozen=True)
class Limits:
    """The server's limits (``audiodiff serve``'s options)."""

    max_seconds: float = 60.0  # longest mel (as audio) one request may vocode
    max_batch: int = 8  # rows (requests, stream windows) vocoded together; the CLI: default_max_batch
    batch_window_ms: float = 10.0  # how long the first request of a batch waits for others
    batch_seconds: float = 120.0  # padded audio one batch may hold (rows x longest); a longer request goes alone
    max_streams: int = 8  # streams open at once
    stream_idle_seconds: float = 30.0  # a stream whose client sends nothing for this long is closed

    def __post_init__(self) -> None:
        for name in ("max_seconds", "batch_seconds", "stream_idle_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("max_batch", "max_streams"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_window_ms < 0:
            raise ValueError(f"batch_window_ms must not be negative, got {self.batch_window_ms}")

    def max_frames(self, sample_rate: int, hop_length: int) -> int:
        """The most mel frames one request may hold."""
        return max(1, math.floor(self.max_seconds * sample_rate / hop_length))

    def batch_frames(self, sample_rate: int, hop_length: int) -> int:
        """The most padded frames (rows x longest) one batch may hold."""
        return max(1, math.floor(self.batch_seconds * sample_rate / hop_length))

    def max_body_bytes(self, sample_rate: int, hop_length: int, n_mels: int) -> int:
        """The largest ``.npy`` body accepted: the longest mel as float64, plus its header."""
        return self.max_frames(sample_rate, hop_length) * n_mels * 8 + NPY_HEADER_BYTES

    def to_dict(self) -> dict[str, Any]:
        return {"max_seconds": self.max_seconds, "max_batch": self.max_batch,
                "batch_window_ms": self.batch_window_ms, "batch_seconds": self.batch_seconds,
                "max_streams": self.max_streams, "stream_idle_seconds": self.stream_idle_seconds}


@dataclass(frozen=True)
class Options:
    """A request's query options: ``seed``, ``sampler``, ``steps`` and the output ``format``."""

    seed: int
    sampler: str
    steps: int | None
    format: str

    @property
    def batch_key(self) -> tuple[str, int | None]:
        """Requests with equal keys may share a batch (one sampler walks all its rows)."""
        return (self.sampler, self.steps)


def parse_options(query: Mapping[str, str], model, default_format: str) -> Options:
    """The query options of a request, checked against ``model`` (an unknown sampler, or a step
    count it cannot take, is a 400 with the sampler's own reason)."""
    unknown = sorted(set(query) - {"seed", "sampler", "steps", "format"})
    if unknown:
        raise RequestError(400, f"unknown query parameter {unknown[0]!r}; known: seed, sampler, steps, format")
    seed = _integer(query, "seed", 0)
    if not 0 <= seed < MAX_SEED:
        raise RequestError(400, f"seed must be in 0..{MAX_SEED - 1}, got {seed}")
    steps = _integer(query, "steps", None)
    sampler = query.get("sampler", "fast")
    try:
        model.sampling_schedule(sampler, steps)
    except ValueError as error:
        raise RequestError(400, f"sampler {sampler!r}: {error}") from None
    fmt = query.get("format", default_format)
    if fmt not in FORMATS:
        raise RequestError(400, f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return Options(seed=seed, sampler=sampler, steps=steps, format=fmt)


def _integer(query: Mapping[str, str], name: str, default: int | None) -> int | None:
    text = query.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise RequestError(400, f"{name} must be an integer, got {text[:40]!r}") from None


def check_content_length(length: int | None, limit: int,
                         why: str = "--max-seconds of mel as float64, plus the .npy header") -> None:
    """Refuse a body whose declared length is over ``limit`` before reading any of it."""
    if length is not None and length > limit:
        raise RequestError(413, f"request body is {length} bytes; this server takes at most {limit} ({why})")


def too_long(frames: int, max_frames: int, hop_length: int, sample_rate: int, max_seconds: float) -> RequestError:
    seconds = frames * hop_length / sample_rate
    return RequestError(413, f"mel has {frames} frames ({seconds:.2f} s of audio); this server vocodes at most "
                             f"{max_frames} frames ({max_seconds:g} s, --max-seconds)")


def read_npy_mel(body: bytes, n_mels: int) -> Tensor:
    """A ``.npy`` request body -> mel ``(1, n_mels, frames)`` float32, checked.

    Only ``np.load(..., allow_pickle=False)`` reads it; an object array (a pickle inside the
    ``.npy``) is refused from its header, before any of it is loaded.
    """
    if not body.startswith(NPY_MAGIC):
        raise RequestError(400, "body is not a .npy file (no NumPy header); send a mel written with numpy.save")
    try:
        stream = io.BytesIO(body)
        version = np.lib.format.read_magic(stream)
        header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                  np.lib.format.read_array_header_2_0)(stream)
        dtype = header[2]
    except Exception as error:  # noqa: BLE001 - numpy raises several types for a bad header
        raise RequestError(400, f"cannot read the .npy header ({one_line(error)})") from None
    if dtype.hasobject:
        raise RequestError(400, "refused: the .npy holds Python objects (a pickle), and loading it could run "
                                "code; send a float32 array")
    if dtype.kind not in "fiub":
        raise RequestError(400, f"mel has dtype {dtype}; expected float32 values")
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - a truncated or inconsistent file
        raise RequestError(400, f"cannot read the .npy ({one_line(error)})") from None
    mel = _checked(array, n_mels)
    if mel.shape[0] != 1:
        raise RequestError(400, f"mel has shape {tuple(array.shape)}: a batch of {mel.shape[0]}; send one mel "
                                "per request")
    return mel


def _checked(array: np.ndarray | Tensor, n_mels: int) -> Tensor:
    try:
        return orient_mel(array, n_mels, "mel")
    except InputError as error:
        raise RequestError(400, error.reason) from None


class FrameReader:
    """Raw little-endian float32 mel frames (frame-major, ``n_mels`` values each) arriving in
    pieces of any size -> checked mels ``(n_mels, k)``, at most ``max_frames`` in all."""

    def __init__(self, n_mels: int, max_frames: int) -> None:
        self.n_mels = n_mels
        self.max_frames = max_frames
        self.frame_bytes = 4 * n_mels
        self.frames = 0
        self._pending = b""

    def feed(self, data: bytes) -> Tensor | None:
        """The whole frames completed by ``data`` as ``(n_mels, k)``, or ``None`` if none were."""
        data = self._pending + data
        whole = len(data) // self.frame_bytes
        self._pending = data[whole * self.frame_bytes:]
        if whole == 0:
            return None
        if self.frames + whole > self.max_frames:
            raise RequestError(413, f"the stream is over {self.max_frames} frames (--max-seconds)")
        values = np.frombuffer(data[: whole * self.frame_bytes], dtype="<f4").reshape(whole, self.n_mels)
        if not np.isfinite(values).all():
            bad = self.frames + int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
            raise RequestError(400, f"mel frame {bad} contains NaN or Inf values")
        self.frames += whole
        return torch.from_numpy(values.T.copy())

    def finish(self) -> None:
        """The body ended: it must have held whole frames, and at least one."""
        if self._pending:
            raise RequestError(400, f"the body ended inside a frame ({len(self._pending)} of {self.frame_bytes} "
                                    f"bytes); a frame is {self.n_mels} little-endian float32 values")
        if self.frames == 0:
            raise RequestError(400, "the stream held no mel frames")


def encode_chunk(audio: Tensor | np.ndarray, fmt: str) -> bytes:
    """Audio samples as raw little-endian bytes: ``f32`` as is, ``pcm16`` clipped to [-1, 1] and
    converted by libsndfile, exactly as :func:`wav_bytes` writes 16-bit PCM."""
    if isinstance(audio, Tensor):
        audio = audio.detach().float().cpu().numpy()
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    if fmt == "f32":
        return samples.astype("<f4").tobytes()
    return pcm16(samples).tobytes()


def pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples -> little-endian int16, clipped to [-1, 1] and converted as ``soundfile`` writes
    16-bit PCM (libsndfile's own conversion, so a stream's samples equal a WAV's)."""
    import soundfile as sf

    samples = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    if samples.size == 0:
        return np.zeros(0, dtype="<i2")
    buffer = io.BytesIO()
    sf.write(buffer, samples, 8000, format="RAW", subtype="PCM_16", endian="LITTLE")
    return np.frombuffer(buffer.getvalue(), dtype="<i2")


def wav_bytes(audio: Tensor, sample_rate: int, fmt: str) -> bytes:
    """Mono ``audio`` ``(T,)`` as a WAV file in memory: 16-bit PCM (clipped) or 32-bit float."""
    import soundfile as sf

    samples = audio.detach().float().cpu().numpy().reshape(-1)
    if fmt == "pcm16":
        samples = np.clip(samples, -1.0, 1.0)
    buffer = io.BytesIO()
    sf.write(buffer, samples, int(sample_rate), format="WAV", subtype="PCM_16" if fmt == "pcm16" else "FLOAT")
    return buffer.getvalue()
