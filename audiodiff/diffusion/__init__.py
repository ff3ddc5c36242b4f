"""Diffusion math: schedules as data, samplers as pure functions."""

from audiodiff.diffusion.sampling import sample_ancestral
from audiodiff.diffusion.schedule import (
    SCHEDULES,
    NoiseSchedule,
    ScheduleConfig,
    sigmas_from_betas,
)

__all__ = ["SCHEDULES", "NoiseSchedule", "ScheduleConfig", "sample_ancestral", "sigmas_from_betas"]
