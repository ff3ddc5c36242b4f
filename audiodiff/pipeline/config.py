"""A model's configuration: everything needed to rebuild it from its weights, and how a model
file names its format and version."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from audiodiff.diffusion.prior import EnergyPrior
from audiodiff.diffusion.samplers import SAMPLERS, SamplingSchedule
from audiodiff.diffusion.schedule import NoiseSchedule, ScheduleConfig
from audiodiff.io.model_file import ModelFileError, first_line
from audiodiff.mel import MelConfig
from audiodiff.network.diffwave import DenoiserConfig

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
#: A stored schedule's name: letters, digits, ``.``, ``_``, ``-`` (and not a built-in sampler's name).
SCHEDULE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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
            data["schedules"] = schedules_to_dict(self.schedules)
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
            schedules=schedules_from_dict(data.get("schedules")),
            prior=EnergyPrior.from_dict(data["prior"]) if data.get("prior") is not None else None,
        )


def schedules_to_dict(schedules: Mapping[str, SamplingSchedule]) -> dict[str, dict[str, Any]]:
    """The ``schedules`` entry of a config dict: each stored schedule as ``{sampler, sigmas, ...}``."""
    return {name: stored.to_dict() for name, stored in schedules.items()}


def schedules_from_dict(data: Any) -> dict[str, SamplingSchedule]:
    """The ``schedules`` entry of a config dict (absent: none)."""
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise TypeError("'schedules' must map names to {sampler, sigmas, ...} objects")
    return {str(name): SamplingSchedule.from_dict(stored) for name, stored in data.items()}


def config_from_dict(path: str | os.PathLike, data: Any) -> ModelConfig:
    """The :class:`ModelConfig` stored in the file ``path``; a :class:`ModelFileError` naming the file otherwise."""
    try:
        return ModelConfig.from_dict(data)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(path, f"invalid model config ({type(error).__name__}: {first_line(error)})") from None
