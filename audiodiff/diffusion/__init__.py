"""Diffusion math: schedules as data, samplers as pure functions."""

from audiodiff.diffusion.sampling import SAMPLER_FUNCTIONS, sample_ancestral, sample_ddim, sample_dpmpp_2m
from audiodiff.diffusion.schedule import (
    SCHEDULES,
    NoiseSchedule,
    ScheduleConfig,
    karras_sigmas,
    log_snr_sigmas,
    sigmas_from_betas,
)

__all__ = ["SAMPLER_FUNCTIONS", "SCHEDULES", "NoiseSchedule", "ScheduleConfig", "karras_sigmas", "log_snr_sigmas",
           "sample_ancestral", "sample_ddim", "sample_dpmpp_2m", "sigmas_from_betas"]
