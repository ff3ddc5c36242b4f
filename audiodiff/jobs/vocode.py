"""Vocoding jobs: read mels or audio from files, batch them, synthesise, write wavs.

Used by ``audiodiff vocode``; each input either succeeds or yields one :class:`InputError`
line, and the others are still written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from audiodiff.io.audio import AudioError, display_path
from audiodiff.mel import describe_range_mismatch
from audiodiff.pipeline.audio_diffusion import AudioDiffusion
from audiodiff.io.mel_files import MEL_SUFFIXES, InputError, read_mel_file

log = logging.getLogger("audiodiff.vocode")

@dataclass
class VocodeItem:
    """One utterance to synthesise: ``mel`` is ``(n_mels, frames)`` float32."""

    name: str
    source: Path
    mel: Tensor


def load_inputs(paths: Sequence[str | Path], model: AudioDiffusion, on_error: Callable[[InputError], None]) -> list[VocodeItem]:
    """Mels from mel files, or computed from audio files (resynthesis). Bad inputs go to ``on_error``;
    a conversion of an audio file (stereo, another rate, ...) is mentioned in one log line."""
    from audiodiff.io.audio import load_audio

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
    ``precision`` as in :meth:`AudioDiffusion.vocode`). Returns ``(frames_i * hop,)`` each.

    The items' mels were checked when read (:func:`~audiodiff.io.mel_files.read_mel_file`) or
    computed by the model, so they are not checked again (:meth:`AudioDiffusion.vocode_checked`).
    Each item's audio equals its unbatched vocoding: ``lengths`` has the tails of the shorter ones
    recomputed with their true ends instead of the padding."""
    mel = pad_mels([item.mel for _, item in group])
    seeds = [seed + index for index, _ in group]
    lengths = [item.mel.shape[-1] for _, item in group]
    audio = model.vocode_checked(mel, sampler=sampler, steps=steps, seed=seeds, callback=callback,
                                 chunk_seconds=chunk_seconds, precision=precision, lengths=lengths)
    return [audio[row, : item.mel.shape[-1] * model.hop_length].cpu() for row, (_, item) in enumerate(group)]


@dataclass
class VocodeSummary:
    """What :func:`vocode_files` did: the wavs it wrote, in order, and one line per input that failed."""

    written: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class VocodeInterrupted(KeyboardInterrupt):
    """Ctrl-C while :func:`vocode_files` synthesised; ``summary`` holds the wavs finished by then."""

    def __init__(self, summary: VocodeSummary) -> None:
        super().__init__()
        self.summary = summary


def vocode_files(
    model: AudioDiffusion,
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    sampler: str,
    steps: int | None,
    seed: int,
    batch_size: int = 8,
    max_batch_gb: float = 2.0,
    chunk_seconds: float | str | None = "auto",
    precision: str = "fp32",
    progress: bool = True,
    on_error: Callable[[InputError], None] | None = None,
    on_written: Callable[[Path, float], None] | None = None,
) -> VocodeSummary:
    """Vocode mel or audio files into ``out_dir/<name>.wav``, in input order.

    The inputs are read (:func:`load_inputs`), those whose output name is taken are dropped
    (:func:`drop_name_collisions`), and the rest are synthesised in :func:`batches` of at most
    ``batch_size`` inputs and ``max_batch_gb`` GiB of mel conditioning; input ``k`` uses seed
    ``seed + k``. A bad input goes to ``on_error`` and ``summary.failed``, and the others are still
    written; each wav is reported to ``on_written(path, seconds)`` once saved. ``progress`` shows a
    tqdm bar of sampler steps. Ctrl-C raises :class:`VocodeInterrupted`, which says what was written.
    """
    from tqdm import tqdm

    from audiodiff.io.audio import save_audio

    summary = VocodeSummary()

    def failed(error: InputError) -> None:
        summary.failed.append(str(error))
        if on_error is not None:
            on_error(error)

    items = drop_name_collisions(load_inputs(paths, model, failed), failed)
    max_frames = max(1, int(max_batch_gb * 2**30 / model.conditioning_bytes_per_frame(precision)))
    n_steps = len(model.sigmas(sampler, steps)) - 1
    bar = tqdm(total=len(items) * n_steps, unit="step", desc="vocoding", disable=not progress or not items)
    try:
        for group in batches(items, batch_size, max_frames):
            waves = vocode_batch(model, group, sampler=sampler, steps=steps, seed=seed, chunk_seconds=chunk_seconds,
                                 precision=precision, callback=lambda i, n, g=len(group): bar.update(g))
            for (_, item), wave in zip(group, waves):
                target = Path(out_dir) / f"{item.name}.wav"
                save_audio(target, wave, model.sample_rate)
                summary.written.append(target)
                if on_written is not None:
                    on_written(target, wave.shape[-1] / model.sample_rate)
    except KeyboardInterrupt as interrupt:
        raise VocodeInterrupted(summary) from interrupt
    finally:
        bar.close()
    return summary
