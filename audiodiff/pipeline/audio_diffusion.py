"""Self-describing models: load, save, vocode, generate.

A released model is one ``.safetensors`` file whose metadata carries the full configuration
(network, mel preset, noise schedule, sample rate, training step) and a format version, so
loading never falls back to module defaults and never unpickles anything.

Python API::

    import audiodiff
    model = audiodiff.load_model()       # the shipped speech vocoder (SHIPPED_MODELS)
    model = audiodiff.load_model("my-vocoder.safetensors")
    audio = model.vocode(mel)            # (B, n_mels, frames) -> (B, frames * hop)
    mel = model.mel(audio)               # (B, T) -> (B, n_mels, T // hop)
    audio = model.vocode(mel, sampler="searched-4")   # a schedule stored by `audiodiff search-schedule`

    sfx = audiodiff.load_model("sfx.safetensors")
    clips = sfx.generate(4, 22050, labels="door", guidance=3.0, seed=7)   # (4, 22050)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from audiodiff.engines.chunking import chunk_frames_for, chunked_eps_fn, default_chunk_seconds
from audiodiff.io.files import unreadable_reason, write_atomically
from audiodiff.diffusion.prior import EnergyPrior
from audiodiff.diffusion.sampling import SAMPLER_FUNCTIONS, EpsFn, classifier_free_guidance
from audiodiff.diffusion.schedule import (NoiseSchedule, ScheduleConfig, karras_sigmas, log_snr_sigmas,
                                         sigmas_from_betas)
from audiodiff.mel import MelConfig, MelSpectrogram, mel_preset
from audiodiff.network.diffwave import Conditioning, DenoiserConfig, DiffWave

if TYPE_CHECKING:
    from audiodiff.engines.fused import Launch

FORMAT_NAME = "audiodiff"
CHECKPOINT_CONFIG_KEY = "audiodiff_config"
#: Version 2 added class-conditional models (``class_names``, ``denoiser.num_classes``); version 3
#: stored noise schedules (``schedules``, from ``audiodiff search-schedule``). Each file is written
#: with the oldest version that describes it (a vocoder without stored schedules is version 1), so
#: older audiodiff still reads every file that does not use a newer feature. Version 4 added
#: PriorGrad's data-dependent prior (``prior``) and the network's mel standardisation
#: (``denoiser.mel_shift`` / ``mel_scale``): sampling such a model from standard normal noise, or
#: feeding it the raw mel, would be wrong, so older audiodiff must refuse it rather than ignore it.
FORMAT_VERSION = 4
#: Sampler names: ``fast`` and ``ddpm`` (ancestral), then the deterministic ODE samplers ``ddim``
#: and ``dpmpp-2m`` on evenly spaced training levels or, with a suffix, on Karras / log-SNR levels.
SAMPLERS = ("fast", "ddpm", "ddim", "ddim-karras", "ddim-log-snr", "dpmpp-2m", "dpmpp-2m-karras", "dpmpp-2m-log-snr")
#: A stored schedule's name: letters, digits, ``.``, ``_``, ``-`` (and not a built-in sampler's name).
SCHEDULE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Cached per-block conditioner projections may use this much memory; beyond it they are
#: recomputed at each step (the upsampled mel is still computed once).
DEFAULT_CONDITIONING_BUDGET = 2 * 2**30
#: The models inside the package (``audiodiff/models/<name>.safetensors``), by name: wherever a
#: model path is taken, one of these names works too. See the README's model card.
SHIPPED_MODELS = {
    "speech-22k": "a 22.05 kHz speech vocoder, hifigan mel convention (80 bins, hop 256, fmax 8 kHz)",
    "sfx-22k": "a 22.05 kHz sound-effects generator with classes (classifier-free guidance)",
}
#: What ``vocode`` and ``generate`` (CLI and API) use when no model is given.
DEFAULT_VOCODER = "speech-22k"
DEFAULT_GENERATOR = "sfx-22k"
#: ``precision`` of the network during sampling: autocast dtype (``None``: plain float32). The
#: sampler's own arithmetic stays in float32 (or float64) whatever the precision.
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class ModelFileError(Exception):
    """A model file that cannot be used; ``str()`` names the file and the problem."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class SamplingSchedule:
    """A solver and the explicit noise levels it walks: what a stored schedule holds.

    ``sampler`` is a key of :data:`~audiodiff.diffusion.sampling.SAMPLER_FUNCTIONS`
    (``ancestral``, ``ddim``, ``dpmpp-2m``); ``sigmas`` ``(N + 1,)`` decreases strictly and ends
    at ``0.0`` (``N`` network calls). ``metric``, ``score`` and ``data`` record how a searched
    schedule was chosen (the metric's name, its mean over the clips, the data folder's name);
    they do not change the audio. Pass one as ``sampler=`` to :meth:`AudioDiffusion.vocode` to
    sample with explicit levels.
    """

    sampler: str
    sigmas: tuple[float, ...]
    metric: str | None = None
    score: float | None = None
    data: str | None = None

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLER_FUNCTIONS:
            raise ValueError(f"schedule sampler {self.sampler!r} is not one of {list(SAMPLER_FUNCTIONS)}")
        levels = tuple(float(s) for s in self.sigmas)
        if (len(levels) < 2 or levels[-1] != 0.0 or levels[0] >= 1.0
                or any(b >= a for a, b in zip(levels, levels[1:]))):
            raise ValueError(f"schedule sigmas must decrease strictly from below 1 to 0.0, got {list(levels)}")
        object.__setattr__(self, "sigmas", levels)
        if self.score is not None:
            object.__setattr__(self, "score", float(self.score))

    @property
    def steps(self) -> int:
        """Network calls per sample: the number of nonzero levels."""
        return len(self.sigmas) - 1

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"sampler": self.sampler, "sigmas": list(self.sigmas)}
        extras = {"metric": self.metric, "score": self.score, "data": self.data}
        data.update({k: v for k, v in extras.items() if v is not None})
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SamplingSchedule":
        score = data.get("score")
        if score is not None and not math.isfinite(float(score)):
            raise ValueError(f"schedule score must be finite, got {score}")
        return cls(sampler=str(data["sampler"]), sigmas=tuple(data["sigmas"]), metric=data.get("metric"),
                   score=score, data=data.get("data"))


def check_schedule_name(name: str) -> str:
    """``name`` if it can name a stored schedule; a ``ValueError`` saying why not otherwise."""
    if not isinstance(name, str) or not SCHEDULE_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"schedule name {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    if name in SAMPLERS:
        raise ValueError(f"schedule name {name!r} is a built-in sampler's name; choose another (e.g. searched-6)")
    return name


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model from its weights."""

    denoiser: DenoiserConfig
    mel: MelConfig | None
    schedule: ScheduleConfig
    sample_rate: int
    training_step: int = 0
    class_names: tuple[str, ...] | None = None
    #: Named noise schedules stored with the model (``audiodiff search-schedule``), by name.
    schedules: Mapping[str, SamplingSchedule] = field(default_factory=dict, hash=False)
    #: PriorGrad's data-dependent prior (:mod:`audiodiff.diffusion.prior`); ``None``: standard normal noise.
    prior: EnergyPrior | None = None

    def __post_init__(self) -> None:
        if self.prior is not None and self.mel is None:
            raise ValueError("a data-dependent prior needs a mel (a vocoder)")
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        classes = None if self.class_names is None else len(self.class_names)
        if classes != self.denoiser.num_classes:
            raise ValueError(f"{classes} class names for a denoiser with num_classes={self.denoiser.num_classes}")
        if self.class_names is not None and len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class names must be unique, got {list(self.class_names)}")
        if self.mel is not None and self.mel.sample_rate != self.sample_rate:
            raise ValueError(f"sample_rate {self.sample_rate} differs from the mel's {self.mel.sample_rate}")
        if (self.mel is None) != (self.denoiser.n_mels is None):
            raise ValueError("a conditional denoiser needs a mel config, an unconditional one none")
        if self.mel is not None:
            if self.mel.n_mels != self.denoiser.n_mels or self.mel.hop_length != self.denoiser.hop_length:
                raise ValueError("the denoiser's n_mels/hop_length must match the mel config's")
        if self.denoiser.max_steps != self.schedule.num_steps:
            raise ValueError("the denoiser's max_steps must equal the schedule's num_steps")
        object.__setattr__(self, "schedules", dict(self.schedules))
        self._check_schedules()

    def _check_schedules(self) -> None:
        """Names valid, levels inside the trained range (so sampling never leaves it)."""
        training = NoiseSchedule(self.schedule)
        for name, stored in self.schedules.items():
            check_schedule_name(name)
            if not isinstance(stored, SamplingSchedule):
                raise ValueError(f"schedule {name!r} is a {type(stored).__name__}, not a SamplingSchedule")
            training.step_for_sigma(stored.sigmas[:-1])

    @property
    def format_version(self) -> int:
        """The oldest model-file format that can describe this config."""
        if self.prior is not None or (self.denoiser.mel_shift, self.denoiser.mel_scale) != (0.0, 1.0):
            return 4
        if self.schedules:
            return 3
        return 2 if self.class_names is not None else 1

    def class_id(self, name: str) -> int:
        """The id of class ``name``; a ``ValueError`` listing the valid names otherwise."""
        if self.class_names is None:
            raise ValueError(f"this model has no classes; it cannot generate class {name!r}")
        if name not in self.class_names:
            raise ValueError(f"unknown class {name!r}; this model knows: {', '.join(self.class_names)}")
        return self.class_names.index(name)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "denoiser": self.denoiser.to_dict(),
            "mel": self.mel.to_dict() if self.mel is not None else None,
            "schedule": self.schedule.to_dict(),
            "sample_rate": self.sample_rate,
            "training_step": self.training_step,
        }
        if self.class_names is not None:
            data["class_names"] = list(self.class_names)
        if self.schedules:
            data["schedules"] = {name: stored.to_dict() for name, stored in self.schedules.items()}
        if self.prior is not None:
            data["prior"] = self.prior.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return cls(
            denoiser=DenoiserConfig.from_dict(data["denoiser"]),
            mel=MelConfig.from_dict(data["mel"]) if data.get("mel") is not None else None,
            schedule=ScheduleConfig.from_dict(data["schedule"]),
            sample_rate=int(data["sample_rate"]),
            training_step=int(data.get("training_step", 0)),
            class_names=tuple(data["class_names"]) if data.get("class_names") is not None else None,
            schedules=_schedules_from_dict(data.get("schedules")),
            prior=EnergyPrior.from_dict(data["prior"]) if data.get("prior") is not None else None,
        )


def _schedules_from_dict(data: Any) -> dict[str, SamplingSchedule]:
    """The ``schedules`` entry of a config dict (absent: none)."""
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise TypeError("'schedules' must map names to {sampler, sigmas, ...} objects")
    return {str(name): SamplingSchedule.from_dict(stored) for name, stored in data.items()}


Seed = int | Sequence[int] | None
Labels = int | str | Sequence[int | str] | None
#: A built-in sampler name, the name of a schedule stored in the model, or explicit levels.
Sampler = str | SamplingSchedule


def _element_size(precision: str) -> int:
    """Bytes per activation under ``precision`` (a key of :data:`PRECISIONS`; another is a ValueError)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    return 4 if PRECISIONS[precision] is None else 2


def _solver_name(sampler: str) -> str:
    """The :data:`SAMPLER_FUNCTIONS` key of a built-in sampler name (``fast``/``ddpm``: ancestral)."""
    if sampler in ("fast", "ddpm"):
        return "ancestral"
    return sampler.removesuffix("-karras").removesuffix("-log-snr")


def _row_generators(seed: Seed, batch: int) -> list[torch.Generator] | None:
    """One CPU generator per batch row, or ``None`` for no seed.

    An int seeds row ``k`` with ``seed + k``; a sequence gives each row its own seed.
    """
    if seed is None:
        return None
    seeds = [seed + k for k in range(batch)] if isinstance(seed, int) else list(seed)
    if len(seeds) != batch:
        raise ValueError(f"{len(seeds)} seeds for a batch of {batch}")
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def _randn_rows(shape: Sequence[int], generators: list[torch.Generator] | None, device: torch.device) -> Tensor:
    """Standard normal ``shape``; row ``k`` drawn from ``generators[k]`` on the CPU.

    Drawing on the CPU makes a seed give the same noise on every device.
    """
    if generators is None:
        return torch.randn(*shape, device=device)
    rows = [torch.randn(*shape[1:], generator=g) for g in generators]
    return torch.stack(rows).to(device)


class AudioDiffusion(nn.Module):
    """A denoiser with its mel front end and noise schedule: what a model file holds."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.network = DiffWave(config.denoiser)
        self.mel_frontend = MelSpectrogram(config.mel) if config.mel is not None else None
        self.schedule = NoiseSchedule(config.schedule)
        self._denoise: Callable[..., Tensor] = self.network.denoise

    def compile_denoiser(self, mode: str | None = None, dynamic: bool | None = None) -> "AudioDiffusion":
        """Sample with a ``torch.compile``-d denoiser from now on (returns ``self``).

        ``mode`` and ``dynamic`` are ``torch.compile``'s (``"reduce-overhead"`` adds CUDA graphs).
        The first call for each new input shape compiles (tens of seconds); the speed-up and
        the compile cost are in ``benchmarks/RESULTS.md``. Pays off when many equal-length
        batches are vocoded, e.g. a server, not for one file.
        """
        self._denoise = torch.compile(self.network.denoise, mode=mode, dynamic=dynamic)
        return self

    def fuse_denoiser(self, launch: Launch | str | None = None, read_mel: bool = True) -> "AudioDiffusion":
        """Sample with fused Triton kernels, one per residual block, from now on (returns ``self``).

        CUDA only (:mod:`audiodiff.engines.fused`); fastest with ``precision="bf16"``. A model that cannot
        use them (no CUDA, no Triton, channels not a power of two) raises ``RuntimeError`` saying
        why. The weights are read at the first call: fuse again after changing them. ``launch``
        (a :class:`audiodiff.engines.fused.Launch` or its text, e.g. ``"128x8"``) overrides the default.
        With ``read_mel`` (default) the kernels project the upsampled mel themselves at every step
        instead of reading cached per-block projections: less memory, and faster (see
        ``benchmarks/RESULTS.md``).
        """
        from audiodiff.engines.fused import FusedDenoiser, Launch

        chosen = Launch.parse(launch) if isinstance(launch, str) else launch or Launch()
        self._denoise = FusedDenoiser(self.network, chosen, read_mel)
        return self

    def fold_denoiser(self) -> "AudioDiffusion":
        """Sample with the folded engine from now on (returns ``self``): the fastest on a CPU.

        :class:`audiodiff.engines.folded.FoldedDenoiser` runs the residual blocks as time-major matrix
        products with scales and biases folded into the weights: the same function up to float
        rounding, in fewer and faster operations (speed and quality in ``benchmarks/RESULTS.md``).
        The weights are read at the first call: fold again after changing them.
        """
        from audiodiff.engines.folded import FoldedDenoiser

        self._denoise = FoldedDenoiser(self.network)
        return self

    def condition(self, mel: Tensor, cache_projections: bool = True) -> Any:
        """The mel conditioning ``(B, n_mels, frames)`` in the form the engine in use reads.

        ``DiffWave.condition``'s per-block projections for the eager, compiled and fused engines,
        the folded engine's own time-major ones for it (:meth:`fold_denoiser`); without
        ``cache_projections``, the upsampled mel only. Pass it to :meth:`sample`.
        """
        condition = getattr(self._denoise, "condition", self.network.condition)
        return condition(mel, cache_projections=cache_projections)

    def conditioning_bytes_per_frame(self, precision: str = "fp32") -> int:
        """Memory the mel conditioning of one frame holds while sampling, with this engine in ``precision``.

        The cached per-block projections (``2C x residual_layers`` values per sample), or, with
        the fused kernels, only the upsampled mel (``n_mels`` values per sample).
        """
        element_size = _element_size(precision)
        if getattr(self._denoise, "prefers_mel", False):
            return self.config.denoiser.n_mels * self.hop_length * element_size
        return self.network.conditioning_bytes(1, self.hop_length, element_size=element_size)

    def autocast(self, precision: str = "fp32"):
        """The autocast context of ``precision`` (a key of :data:`PRECISIONS`) on the model's device."""
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
        dtype = PRECISIONS[precision]
        return nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    def _with_precision(self, eps_fn: EpsFn, precision: str) -> EpsFn:
        """``eps_fn`` with the network under ``precision`` and its result in float32."""
        if PRECISIONS.get(precision, "?") is None:
            return eps_fn

        def predict(x: Tensor, sigma: float) -> Tensor:
            with self.autocast(precision):
                eps = eps_fn(x, sigma)
            return eps.float()

        return predict

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.denoiser.hop_length

    # ----------------------------------------------------------------- mel
    def mel(self, audio: Tensor) -> Tensor:
        """Audio ``(B, T)`` or ``(T,)`` at the model's rate -> mel ``(B, n_mels, T // hop)``."""
        if self.mel_frontend is None:
            raise ValueError("this model is unconditional and has no mel front end")
        return self.mel_frontend(audio.to(self.device))

    # ----------------------------------------------------------- sampling
    def sigmas(self, sampler: Sampler = "fast", steps: int | None = None) -> np.ndarray:
        """The noise levels (noisiest first, ending at 0) that ``sampler`` walks: ``(N + 1,)`` float64.

        ``fast``: the model's user-defined fast schedule (DiffWave's 6 steps), aligned to
        fractional training steps; ``steps`` must be omitted or equal its length.
        ``ddpm``: ancestral sampling over ``steps`` evenly spaced training steps (all by default).
        ``ddim``, ``dpmpp-2m``: deterministic samplers over ``steps`` evenly spaced training steps;
        ``-karras`` / ``-log-snr`` instead place ``steps`` levels in the trained range with
        :func:`~audiodiff.diffusion.schedule.karras_sigmas` /
        :func:`~audiodiff.diffusion.schedule.log_snr_sigmas`. Their default ``steps`` is the fast
        schedule's length (6 for DiffWave's), so they cost as many network calls as ``fast``.
        The name of a schedule stored in the model (``config.schedules``, e.g. ``searched-4``) or a
        :class:`SamplingSchedule` gives its own levels; ``steps`` must be omitted or equal their count.
        """
        return np.asarray(self.sampling_schedule(sampler, steps).sigmas, dtype=np.float64)

    def sampling_schedule(self, sampler: Sampler = "fast", steps: int | None = None) -> SamplingSchedule:
        """The solver and levels ``sampler`` stands for (see :meth:`sigmas`); a ``ValueError`` for an
        unknown name, a step count it cannot take, or levels outside the trained range."""
        if isinstance(sampler, SamplingSchedule):
            self.schedule.step_for_sigma(sampler.sigmas[:-1])  # raises outside the trained range
            chosen = sampler
        elif sampler in self.config.schedules:
            chosen = self.config.schedules[sampler]
        else:
            return SamplingSchedule(_solver_name(sampler), tuple(self._builtin_sigmas(sampler, steps)))
        if steps is not None and steps != chosen.steps:
            what = f"schedule {sampler!r}" if isinstance(sampler, str) else "this schedule"
            raise ValueError(f"{what} has {chosen.steps} steps; leave out steps (or --steps) or pass {chosen.steps}")
        return chosen

    def _builtin_sigmas(self, sampler: str, steps: int | None) -> np.ndarray:
        """Levels of a built-in sampler name (see :meth:`sigmas`)."""
        if sampler == "fast":
            betas = self.config.schedule.fast_betas
            if steps is not None and steps != len(betas):
                raise ValueError(
                    f"the fast sampler uses this model's {len(betas)}-step schedule; "
                    f"use --sampler ddpm, ddim or dpmpp-2m for {steps} steps"
                )
            return sigmas_from_betas(betas)
        if sampler == "ddpm":
            return self.schedule.respaced_sigmas(steps or self.schedule.num_steps)
        if sampler not in SAMPLERS:
            stored = ", ".join(self.config.schedules) or "none"
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)} "
                             f"or a schedule stored in this model (stored: {stored})")
        n = len(self.config.schedule.fast_betas) if steps is None else steps
        if sampler.endswith("-karras"):
            return karras_sigmas(self.schedule, n)
        if sampler.endswith("-log-snr"):
            return log_snr_sigmas(self.schedule, n)
        return self.schedule.respaced_sigmas(n)

    def with_schedule(self, name: str, schedule: SamplingSchedule) -> "AudioDiffusion":
        """Store ``schedule`` under ``name`` in the config, replacing one of that name (returns ``self``)."""
        schedules = {**self.config.schedules, check_schedule_name(name): schedule}
        self.config = dataclasses.replace(self.config, schedules=schedules)
        return self

    def eps_fn(self, conditioning: Conditioning) -> EpsFn:
        """A noise predictor ``(x (B, T), sigma) -> eps (B, T)`` for the samplers."""

        def predict(x: Tensor, sigma: float) -> Tensor:
            return self._denoise(x, self.steps_for(x, sigma), conditioning)

        return predict

    def steps_for(self, x: Tensor, sigma: float) -> Tensor:
        """The (fractional) training step of noise level ``sigma``, once per row of ``x``: ``(B,)``."""
        step = float(self.schedule.step_for_sigma([sigma])[0])
        return torch.full((x.shape[0],), step, device=x.device, dtype=torch.float32)

    @torch.inference_mode()
    def sample(
        self,
        conditioning: Conditioning,
        shape: tuple[int, int],
        *,
        sampler: Sampler = "fast",
        steps: int | None = None,
        seed: Seed = None,
        callback: Callable[[int, int], None] | None = None,
        guidance: float | None = None,
        precision: str = "fp32",
        noise_std: Tensor | None = None,
    ) -> Tensor:
        """Run ``sampler`` from standard normal noise of ``shape`` ``(B, T)``; returns ``(B, T)``.

        ``noise_std`` ``(B, T)`` scales the starting noise and every fresh draw (a data-dependent
        prior, :meth:`noise_std`; :meth:`vocode` passes it itself).

        With ``guidance``, ``conditioning`` is for ``2B`` rows (the classes, then the null
        class) and each step combines the two predictions (classifier-free guidance).
        ``precision`` (``fp32``, ``bf16``, ``fp16``) is the network's autocast dtype; the
        sampler's arithmetic and the returned audio are float32.
        """
        eps_fn = self._with_precision(self.eps_fn(conditioning), precision)
        if guidance is not None:
            eps_fn = classifier_free_guidance(eps_fn, guidance)
        return self._run_sampler(eps_fn, shape, sampler=sampler, steps=steps, seed=seed, callback=callback,
                                 noise_std=noise_std)

    def noise_std(self, mel: Tensor) -> Tensor | None:
        """The prior's noise standard deviation for ``mel`` ``(B, n_mels, frames)``: ``(B, frames * hop)``,
        or ``None`` for a model without a prior (standard normal noise)."""
        if self.config.prior is None:
            return None
        return self.config.prior.sample_std(mel, self.hop_length)

    def _run_sampler(self, eps_fn: EpsFn, shape: tuple[int, int], *, sampler: Sampler, steps: int | None,
                     seed: Seed, callback: Callable[[int, int], None] | None,
                     noise_std: Tensor | None = None) -> Tensor:
        """``sampler`` from seeded noise of ``shape`` ``(B, T)`` with ``eps_fn``; ``(B, T)``.

        The ancestral sampler starts from standard normal noise, as DiffWave does; the
        deterministic ones from noise of the first level's standard deviation ``sigmas[0]``.
        """
        chosen = self.sampling_schedule(sampler, steps)  # validates the name
        sigmas = np.asarray(chosen.sigmas, dtype=np.float64)
        solve = SAMPLER_FUNCTIONS[chosen.sampler]
        generators = _row_generators(seed, shape[0])
        noise = _randn_rows(shape, generators, self.device)
        if chosen.sampler != "ancestral":
            # A deterministic solver starts from x's own distribution at the first level,
            # alpha * x0 + sigma * z; alpha^2 Var[x0] is neglected (under 0.02 for speech at the
            # base schedule's first level, sigma = 0.85). DiffWave's ancestral sampler starts from
            # N(0, 1) and its fresh noise corrects the excess; an ODE solver would carry it to
            # the end (measured: DDIM, log-SNR levels, 6 steps, log-mel L1 1.70 -> 1.14).
            noise = noise * float(sigmas[0])
        if noise_std is not None:  # PriorGrad: every draw from N(0, Sigma)
            noise = noise * noise_std.to(noise.device, noise.dtype)

        def fresh_noise(like: Tensor) -> Tensor:
            fresh = _randn_rows(like.shape, generators, like.device)
            return fresh if noise_std is None else fresh * noise_std.to(fresh.device, fresh.dtype)

        return solve(eps_fn, noise, sigmas, noise_fn=fresh_noise, callback=callback)

    def vocode(
        self,
        mel: Tensor,
        *,
        sampler: Sampler = "fast",
        steps: int | None = None,
        seed: Seed = None,
        callback: Callable[[int, int], None] | None = None,
        conditioning_budget: int = DEFAULT_CONDITIONING_BUDGET,
        chunk_seconds: float | str | None = "auto",
        precision: str = "fp32",
    ) -> Tensor:
        """Mel ``(B, n_mels, frames)`` or ``(n_mels, frames)`` -> audio ``(B, frames * hop)``.

        A ``(frames, n_mels)`` mel (a TTS's layout) is transposed; one with another bin count, an
        integer dtype, no frames or NaN/Inf values is refused with a ``ValueError``.

        A mel up to ``chunk_seconds`` long is conditioned once; its per-block projections are
        cached while they fit ``conditioning_budget`` bytes (base: about 15 kB per output
        sample), else recomputed at each step. A longer one is synthesised in chunks of
        ``chunk_seconds`` with overlapping windows (:mod:`audiodiff.engines.chunking`): the same audio up
        to float rounding, in memory that grows by a few ``(B, T)`` float buffers rather than by
        kilobytes per sample. ``"auto"`` is 2 s on a CPU (faster than one piece there) and 30 s
        on a GPU; ``None`` never chunks. An int ``seed`` gives batch row ``k`` the seed
        ``seed + k`` (a list gives one seed per row): the same seed gives the same audio, on any device.
        ``sampler`` is a name of :meth:`sigmas` (built-in or stored, e.g. ``"searched-4"``) or a
        :class:`SamplingSchedule` with explicit levels. ``precision`` ``bf16`` or ``fp16`` runs the
        network (and the cached conditioning) in that autocast dtype, which is faster on a GPU;
        the sampler's arithmetic stays float32.
        """
        if self.mel_frontend is None:
            raise ValueError("this model is unconditional; use generate()")
        self.autocast(precision)  # an unknown precision fails before any work
        from audiodiff.io.mel_files import orient_mel

        mel = orient_mel(mel, self.config.denoiser.n_mels, "mel").to(self.device)
        shape = (mel.shape[0], mel.shape[-1] * self.hop_length)
        noise_std = self.noise_std(mel)
        if chunk_seconds == "auto":
            chunk_seconds = default_chunk_seconds(self.device)
        chunk_frames = None if chunk_seconds is None else chunk_frames_for(chunk_seconds, self.sample_rate,
                                                                           self.hop_length)
        if chunk_frames is not None and mel.shape[-1] > chunk_frames:
            eps_fn = chunked_eps_fn(self.network, mel, self.steps_for, chunk_frames, denoise=self._denoise)
            with torch.inference_mode():
                return self._run_sampler(self._with_precision(eps_fn, precision), shape, sampler=sampler,
                                         steps=steps, seed=seed, callback=callback, noise_std=noise_std)
        cache_bytes = self.network.conditioning_bytes(*shape, element_size=_element_size(precision))
        cache = cache_bytes <= conditioning_budget and not getattr(self._denoise, "prefers_mel", False)
        with torch.inference_mode(), self.autocast(precision):
            conditioning = self.condition(mel, cache_projections=cache)
        return self.sample(conditioning, shape, sampler=sampler, steps=steps, seed=seed, callback=callback,
                           precision=precision, noise_std=noise_std)

    def generate(
        self,
        n: int,
        num_samples: int,
        *,
        labels: Labels = None,
        guidance: float = 1.0,
        sampler: Sampler = "fast",
        steps: int | None = None,
        seed: Seed = None,
        callback: Callable[[int, int], None] | None = None,
        precision: str = "fp32",
    ) -> Tensor:
        """Generate ``n`` clips of ``num_samples`` samples: ``(n, num_samples)``.

        For a class-conditional model, ``labels`` is a class name or id for all clips or one per
        clip; ``None`` samples the null class (the model's unconditional mode). ``guidance`` is
        the classifier-free guidance weight ``w`` in ``eps_null + w * (eps_class - eps_null)``:
        1 is plain conditional sampling (one network call per step), 0 the null class, above 1
        stronger adherence to the class (two predictions per step, batched into one call).
        An unconditional model takes neither. Seeds and ``precision`` work as in :meth:`vocode`.
        """
        if self.network.conditional:
            raise ValueError("this model is mel-conditioned; use vocode()")
        if n < 1 or num_samples < 1:
            raise ValueError(f"n and num_samples must be positive, got {n} and {num_samples}")
        if not self.network.class_conditional:
            if labels is not None or guidance != 1.0:
                raise ValueError("this model is unconditional: it takes no class and no guidance")
            return self.sample(None, (n, num_samples), sampler=sampler, steps=steps, seed=seed, callback=callback,
                               precision=precision)
        ids = self.class_ids(labels, n)
        with torch.inference_mode(), self.autocast(precision):
            if guidance == 1.0 or bool((ids == self.config.denoiser.null_class).all()):
                return self.sample(self.network.condition(None, labels=ids), (n, num_samples), sampler=sampler,
                                   steps=steps, seed=seed, callback=callback, precision=precision)
            null = torch.full_like(ids, self.config.denoiser.null_class)
            pairs = self.network.condition(None, labels=torch.cat([ids, null]))
        return self.sample(pairs, (n, num_samples), sampler=sampler, steps=steps, seed=seed,
                           callback=callback, guidance=guidance, precision=precision)

    def class_ids(self, labels: Labels, n: int) -> Tensor:
        """Class ids ``(n,)`` on the model's device from names/ids; ``None`` is the null class."""
        null = self.config.denoiser.null_class
        if labels is None:
            values: list[int | str] = [null] * n
        elif isinstance(labels, (int, str)):
            values = [labels] * n
        else:
            values = list(labels)
            if len(values) != n:
                raise ValueError(f"{len(values)} labels for {n} clips")
        ids = [self.config.class_id(v) if isinstance(v, str) else int(v) for v in values]
        bad = [i for i in ids if not 0 <= i <= null]
        if bad:
            raise ValueError(f"class ids must be in 0..{null} ({null} is the null class), got {bad}")
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    # -------------------------------------------------------------- files
    def save(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write weights and config as one ``.safetensors`` file, atomically.

        ``dtype=torch.float16`` halves the file (the shipped models); loading converts back to float32.
        """
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {k: v.detach().cpu().to(dtype if dtype is not None and v.is_floating_point() else v.dtype).contiguous()
                   for k, v in self.network.state_dict().items()}
        metadata = {
            "format": FORMAT_NAME,
            "format_version": str(self.config.format_version),
            "config": json.dumps(self.config.to_dict()),
        }
        return write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    def with_training_step(self, step: int) -> "AudioDiffusion":
        """Record the training step in the config (returns ``self``)."""
        self.config = dataclasses.replace(self.config, training_step=int(step))
        return self


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The config dict stored in a model file, after checking its format and version."""
    path = Path(path)
    metadata = _read_safetensors_header(path).get("__metadata__") or {}
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise ModelFileError(path, "a safetensors file, but not an audiodiff model (no audiodiff metadata)")
    try:
        version = int(metadata.get("format_version", "0"))
        config = json.loads(metadata["config"])
    except (KeyError, ValueError) as error:
        raise ModelFileError(path, f"damaged audiodiff metadata ({type(error).__name__}: {_first_line(error)})") from None
    if version > FORMAT_VERSION:
        raise ModelFileError(
            path, f"format version {version} is newer than this audiodiff reads ({FORMAT_VERSION}); upgrade audiodiff"
        )
    if version < 1:
        raise ModelFileError(path, f"unknown format version {version}")
    return config


#: safetensors refuses headers larger than this; a larger length means the file is something else.
MAX_HEADER_BYTES = 100_000_000


def _check_model_file(path: Path) -> int:
    """The size of the model file ``path``; a :class:`ModelFileError` for a path that cannot be one."""
    reason = unreadable_reason(path, "a model file", missing="no such model file")
    if reason:
        raise ModelFileError(path, reason)
    return path.stat().st_size


def _read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor entries and ``__metadata__``), checked
    against the file's size, so a truncated file is called truncated.

    Read with Python's ``open``, so names that are not UTF-8 work (safetensors refuses them).
    """
    size = _check_model_file(path)
    not_safetensors = "not a safetensors model file"
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if size < 8 or length > MAX_HEADER_BYTES:
            raise ModelFileError(path, f"{not_safetensors} (no safetensors header)")
        if 8 + length > size:
            raise ModelFileError(path, f"truncated: {size} bytes, but its header alone takes {8 + length}; "
                                       "copy or download it again")
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            header = None
    if not isinstance(header, dict):
        raise ModelFileError(path, f"{not_safetensors} (its header is not a JSON object)")
    expected = 8 + length + _data_bytes(header)
    if expected > size:
        raise ModelFileError(path, f"truncated: {size} of {expected} bytes; copy or download it again")
    return header


#: safetensors dtype names of the float dtypes a model file may store.
_STORED_FLOATS = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}


def stored_float_dtype(path: str | os.PathLike) -> torch.dtype | None:
    """The float dtype a ``.safetensors`` model file stores its weights in (``None`` for other
    files), so a rewritten copy keeps the original's size (the shipped models are float16)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    header = _read_safetensors_header(path)
    dtypes = {entry.get("dtype") for key, entry in header.items() if key != "__metadata__" and isinstance(entry, dict)}
    floats = [_STORED_FLOATS[name] for name in dtypes if name in _STORED_FLOATS]
    return floats[0] if len(floats) == 1 else None


def _data_bytes(header: dict[str, Any]) -> int:
    """Bytes of tensor data a safetensors header describes: the largest end offset."""
    ends = [entry.get("data_offsets") for key, entry in header.items() if key != "__metadata__" and isinstance(entry, dict)]
    return max((end[1] for end in ends if isinstance(end, list) and len(end) == 2 and isinstance(end[1], int)), default=0)


def _read_tensors(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file (memory-mapped; read into memory when the file's name
    is not UTF-8, which safetensors cannot open)."""
    from safetensors.torch import load, load_file

    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return load(path.read_bytes())
    return load_file(str(path))


def shipped_model_path(name: str) -> Path:
    """The file of the shipped model ``name`` (a key of :data:`SHIPPED_MODELS`)."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"no shipped model {name!r}; shipped: {', '.join(SHIPPED_MODELS)}")
    return Path(__file__).resolve().parents[1] / "models" / f"{name}.safetensors"  # audiodiff/models/


def resolve_model_path(path_or_name: str | os.PathLike) -> Path:
    """A shipped model's name (``speech-22k``, ``sfx-22k``) -> its file; anything else -> itself.

    A file of that name in the working directory wins over the shipped model.
    """
    if isinstance(path_or_name, str) and path_or_name in SHIPPED_MODELS and not Path(path_or_name).exists():
        return shipped_model_path(path_or_name)
    return Path(path_or_name)


def load_model(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> AudioDiffusion:
    """Load a ``.safetensors`` model written by :meth:`AudioDiffusion.save` (no unpickling).

    ``path`` may also name a shipped model (:data:`SHIPPED_MODELS`); ``None`` loads the shipped
    speech vocoder (:data:`DEFAULT_VOCODER`). Half-precision weights are loaded as float32.
    """
    path = resolve_model_path(DEFAULT_VOCODER if path is None else path)
    config = _config_from_dict(path, read_metadata(path))
    model = AudioDiffusion(config)
    try:
        state = {k: v.float() if v.is_floating_point() else v for k, v in _read_tensors(Path(path)).items()}
        model.network.load_state_dict(state, strict=True)
    except Exception as error:  # noqa: BLE001 - safetensors/torch errors on damaged files
        raise ModelFileError(path, f"weights unreadable or do not match the stored config: {_first_line(error)}") from None
    return model.to(device).eval()


def _first_line(error: BaseException, limit: int = 240) -> str:
    """The error's message folded onto one line and shortened to ``limit`` characters."""
    text = " ".join(str(error).split())
    if not text:
        return type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _config_from_dict(path: str | os.PathLike, data: Any) -> ModelConfig:
    try:
        return ModelConfig.from_dict(data)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(path, f"invalid model config ({type(error).__name__}: {_first_line(error)})") from None


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> AudioDiffusion:
    """Rebuild the model from a Lightning training checkpoint (``.ckpt``).

    Takes the checkpoint's ``state_dict``, which holds the EMA weights when training used the
    ``audiodiff.training.callbacks.EMA`` callback (all shipped recipes do). Read with ``weights_only=True``.
    """
    checkpoint = load_weights_only(path)
    if not isinstance(checkpoint, dict) or CHECKPOINT_CONFIG_KEY not in checkpoint:
        raise ModelFileError(path, "not an audiodiff training checkpoint (no audiodiff config inside)")
    config = _config_from_dict(path, checkpoint[CHECKPOINT_CONFIG_KEY])
    prefix = "model.network."
    model = AudioDiffusion(config)
    try:
        state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        model.network.load_state_dict(state, strict=True)
    except (KeyError, AttributeError, RuntimeError) as error:
        raise ModelFileError(path, f"weights do not match the stored config: {_first_line(error)}") from None
    return model.to(device).eval()


def load_any(path: str | os.PathLike, device: str | torch.device = "cpu") -> AudioDiffusion:
    """A ``.safetensors`` model (or a shipped model's name) or, for convenience, a ``.ckpt`` training checkpoint."""
    path = resolve_model_path(path)
    if Path(path).suffix == ".ckpt":
        return load_checkpoint(path, device)
    return load_model(path, device)


def load_weights_only(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors: a pickle that would run code is refused."""
    import zipfile

    from audiodiff.io.safe_load import describe_load_error

    path = Path(path)
    _check_model_file(path)
    with open(path, "rb") as handle:
        pickled = handle.read(1) == b"\x80"  # the legacy format is a bare pickle (protocol >= 2)
    if not (pickled or zipfile.is_zipfile(path)):
        raise ModelFileError(path, "not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        with open(path, "rb") as handle:  # a file object: names that are not UTF-8 work too
            return torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for bad pickles
        reason = describe_load_error(error)
        reason = reason if reason.startswith("refused") else f"unreadable as a checkpoint: {reason}"
        raise ModelFileError(path, reason) from None


# ------------------------------------------------------ reference DiffWave
def _reference_key(key: str) -> str:
    """Map a reference ``diffwave`` state-dict key to ours."""
    key = key.removeprefix("module.")
    key = key.replace("spectrogram_upsampler.conv1.", "network.mel_upsampler.stages.0.")
    key = key.replace("spectrogram_upsampler.conv2.", "network.mel_upsampler.stages.1.")
    return key if key.startswith("network.") else f"network.{key}"


def config_from_reference(state: dict[str, Tensor], params: dict[str, Any] | None) -> ModelConfig:
    """Infer our config from a reference state dict and its (optional) ``params`` dict."""
    params = dict(params or {})
    layers = sorted({int(k.split(".")[1]) for k in state if k.startswith("residual_layers.")})
    channels = state["input_projection.weight"].shape[0]
    conditional = any(k.startswith("spectrogram_upsampler.") for k in state)
    n_mels = state["residual_layers.0.conditioner_projection.weight"].shape[1] if conditional else None
    noise_schedule = np.asarray(params.get("noise_schedule", np.linspace(1e-4, 0.05, 50)), dtype=np.float64)
    linear = np.linspace(noise_schedule[0], noise_schedule[-1], len(noise_schedule))
    if not np.allclose(noise_schedule, linear, rtol=1e-6, atol=1e-9):
        raise ValueError("the checkpoint's noise_schedule is not linear; audiodiff schedules are linear")
    dilation_cycle = int(params.get("dilation_cycle_length", 10))
    hop = int(params.get("hop_samples", 256))
    sample_rate = int(params.get("sample_rate", 22050))
    if conditional and hop != 256:
        raise ValueError(f"the reference upsampler is fixed at hop 256, params say {hop}")
    schedule = ScheduleConfig(
        num_steps=len(noise_schedule),
        beta_start=float(noise_schedule[0]),
        beta_end=float(noise_schedule[-1]),
        fast_betas=tuple(params.get("inference_noise_schedule", (1e-4, 1e-3, 1e-2, 5e-2, 2e-1, 5e-1))),
    )
    denoiser = DenoiserConfig(
        residual_channels=channels, residual_layers=len(layers), dilation_cycle=dilation_cycle,
        n_mels=n_mels, hop_length=hop, max_steps=schedule.num_steps,
    )
    mel = mel_preset("diffwave", sample_rate=sample_rate, n_mels=n_mels, hop_length=hop,
                     n_fft=int(params.get("n_fft", 1024)), win_length=4 * hop) if conditional else None
    return ModelConfig(denoiser=denoiser, mel=mel, schedule=schedule, sample_rate=sample_rate)


def import_diffwave(path: str | os.PathLike) -> AudioDiffusion:
    """Convert a reference DiffWave checkpoint (``{'model': state, 'params': ...}`` or a bare state dict).

    The file is read with ``torch.load(weights_only=True)``: a pickle that would run code is refused.
    """
    checkpoint = load_weights_only(path)
    if isinstance(checkpoint, dict) and "model" in checkpoint and isinstance(checkpoint["model"], dict):
        state, params = checkpoint["model"], checkpoint.get("params")
    elif isinstance(checkpoint, dict) and all(isinstance(v, Tensor) for v in checkpoint.values()):
        state, params = checkpoint, None
    else:
        raise ModelFileError(path, "neither {'model': state_dict, 'params': ...} nor a bare state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "input_projection.weight" not in state:
        raise ModelFileError(path, "no DiffWave weights found (missing input_projection.weight)")
    try:
        config = config_from_reference(state, params if isinstance(params, dict) else None)
        model = AudioDiffusion(config)
        converted = {_reference_key(k).removeprefix("network."): v for k, v in state.items()}
        model.network.load_state_dict(converted, strict=True)
    except (KeyError, IndexError, ValueError, RuntimeError) as error:
        raise ModelFileError(path, f"not a usable DiffWave checkpoint: {_first_line(error)}") from None
    return model.eval()
