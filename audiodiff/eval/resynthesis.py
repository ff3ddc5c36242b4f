"""The no-vocoder floor and the folders to score a vocoder on: Griffin-Lim from a log-mel
(:func:`griffin_lim`) and :func:`resynthesise_folder`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import Tensor

from audiodiff.io.audio import AudioError, PathLike, display_path, load_audio, one_line, save_audio
from audiodiff.io.audio_files import audio_files_by_name
from audiodiff.mel import MelConfig, MelSpectrogram

if TYPE_CHECKING:
    from audiodiff.pipeline.audio_diffusion import AudioDiffusion


def mel_to_linear(mel: Tensor, mel_config: MelConfig) -> Tensor:
    """Undo a preset's log compression and filterbank: ``(..., n_mels, frames)`` -> ``(..., n_fft//2+1, frames)``.

    ``hifigan``: ``exp(mel)``; ``diffwave``: ``10 ** (5 * mel - 4)`` times the Hann window's L2
    norm (the inverse of ``(20 log10(m) - 20 + 100) / 100`` and the window normalisation). The
    linear magnitude is the pseudo-inverse of the module's filterbank applied to the mel
    magnitude, clamped to >= 0 (bins outside ``f_min..f_max`` come back as 0).
    """
    frontend = MelSpectrogram(mel_config)
    mel = mel.float().cpu()
    if mel_config.style == "hifigan":
        magnitude = mel.exp()
    else:
        magnitude = torch.pow(10.0, 5.0 * mel - 4.0) * frontend.window.pow(2).sum().sqrt()
    inverse = torch.linalg.pinv(frontend.mel_basis.double()).float()
    return (inverse @ magnitude).clamp(min=0.0)


def griffin_lim(mel: Tensor | np.ndarray, mel_config: MelConfig, n_iter: int = 64, *, seed: int = 0) -> Tensor:
    """Audio from a log-mel of ``mel_config``'s convention by Griffin-Lim: the no-vocoder floor.

    ``mel`` ``(n_mels, frames)`` or ``(B, n_mels, frames)`` -> float32 CPU audio ``(frames * hop,)``
    or ``(B, frames * hop)``. The linear magnitude comes from :func:`mel_to_linear`, the phase from
    :func:`audiodiff.dsp.griffin_lim.fast_griffin_lim` (momentum 0.99, Hann window, the preset's
    n_fft / hop / win, random initial phase drawn from ``seed``). ``hifigan`` frames are
    centred on ``(i + 1/2) * hop`` (reflect padding of ``(n_fft - hop) / 2``, ``center=False``),
    Griffin-Lim's on ``i * hop``, so its output is shifted by half a hop.
    """
    from audiodiff.dsp.griffin_lim import fast_griffin_lim

    mel = torch.as_tensor(mel)
    frames, hop = mel.shape[-1], mel_config.hop_length
    linear = mel_to_linear(mel, mel_config)
    linear = torch.cat([linear, linear[..., -1:]], dim=-1)  # a centred STFT of frames*hop samples has frames+1
    audio = fast_griffin_lim(
        linear, n_fft=mel_config.n_fft, hop_length=hop, win_length=mel_config.win_length,
        n_iter=n_iter, length=frames * hop, generator=torch.Generator().manual_seed(seed),
    )
    if mel_config.style == "hifigan":
        audio = torch.nn.functional.pad(audio, (hop // 2, 0))[..., : frames * hop]
    return audio


# ---------------------------------------------------------------- resynthesis
@dataclass
class ResynthesisReport:
    """What :func:`resynthesise_folder` did; ``errors`` holds one ``"<path>: <reason>"`` line per bad
    file, ``notes`` one ``"<path>: <conversion>"`` line per file that reading converted."""

    out_dir: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def reference_dir(self) -> Path:
        return self.out_dir / "reference"

    @property
    def model_dir(self) -> Path:
        return self.out_dir / "model"

    @property
    def griffin_lim_dir(self) -> Path:
        return self.out_dir / "griffin-lim"


def resynthesise_folder(
    model: "AudioDiffusion",
    data_dir: PathLike,
    out_dir: PathLike,
    *,
    sampler: str = "fast",
    steps: int | None = None,
    seed: int = 0,
    include_griffin_lim: bool = True,
    griffin_lim_iters: int = 64,
    progress: bool = True,
    on_error: Callable[[str], None] | None = None,
) -> ResynthesisReport:
    """Resynthesise every audio file of ``data_dir`` with ``model`` for scoring.

    Each file (named as in :func:`audiodiff.io.audio_files.audio_files_by_name`; ``out_dir`` is skipped if it lies inside
    ``data_dir``) is loaded at the model's rate, turned into ``model.mel`` ``(1, n_mels, frames)``
    and written as 16-bit wavs of ``frames * hop`` samples: ``out_dir/reference/<name>.wav``
    (the input trimmed), ``out_dir/model/<name>.wav`` (``model.vocode`` with ``sampler``,
    ``steps`` and seed ``seed + k`` for the k-th file in name order) and, with
    ``include_griffin_lim``, ``out_dir/griffin-lim/<name>.wav`` (:func:`griffin_lim`). Outputs
    that exist are kept (writes are atomic, so a stopped run resumes where it ended). A file
    that cannot be read or is too short becomes one error line (also passed to ``on_error``).
    Score afterwards with ``pair_files(report.reference_dir, report.model_dir)``.
    """
    from tqdm import tqdm

    if model.mel_frontend is None:
        raise ValueError("an unconditional model cannot resynthesise audio; it has no mel front end")
    model.sigmas(sampler, steps)  # a bad sampler or step count is a usage error, not one per file
    out_dir = Path(out_dir)
    report = ResynthesisReport(out_dir=out_dir)
    files = audio_files_by_name(data_dir, exclude=out_dir)
    bar = tqdm(sorted(files.items()), desc="resynthesising", unit="file", disable=not progress)
    for k, (name, path) in enumerate(bar):
        targets = {"reference": report.reference_dir, "model": report.model_dir}
        if include_griffin_lim:
            targets["griffin-lim"] = report.griffin_lim_dir
        todo = {kind: folder / f"{name}.wav" for kind, folder in targets.items()}
        todo = {kind: target for kind, target in todo.items() if not target.is_file()}
        if not todo:
            report.skipped.append(name)
            continue
        try:
            _resynthesise_one(model, path, todo, sampler=sampler, steps=steps, seed=seed + k, iters=griffin_lim_iters,
                              on_conversion=lambda note, path=path: report.notes.append(f"{display_path(path)}: {note}"))
        except AudioError as error:
            report.errors.append(str(error))
        except ValueError as error:
            report.errors.append(f"{display_path(path)}: {one_line(error)}")
        else:
            report.written.append(name)
            continue
        if on_error is not None:
            on_error(report.errors[-1])
    return report


def _resynthesise_one(
    model: "AudioDiffusion", path: Path, todo: dict[str, Path], *,
    sampler: str, steps: int | None, seed: int, iters: int, on_conversion: Callable[[str], None] | None = None,
) -> None:
    """Write the outputs in ``todo`` (kind -> path) for the audio file ``path``."""
    config = model.config.mel
    assert config is not None
    audio, _ = load_audio(path, model.sample_rate, on_conversion=on_conversion)
    if audio.shape[-1] < (needed := max(2 * model.hop_length, config.n_fft)):
        raise ValueError(f"audio is too short ({audio.shape[-1]} samples at {model.sample_rate} Hz) to compute a mel; "
                         f"it needs at least {needed}")
    with torch.inference_mode():
        mel = model.mel(audio).cpu()
    frames = mel.shape[-1]
    outputs: dict[str, Callable[[], Tensor]] = {
        "reference": lambda: audio[: frames * model.hop_length],
        "model": lambda: model.vocode(mel, sampler=sampler, steps=steps, seed=seed)[0].cpu(),
        "griffin-lim": lambda: griffin_lim(mel[0], config, iters, seed=seed),
    }
    for kind, target in todo.items():
        save_audio(target, outputs[kind](), model.sample_rate)
