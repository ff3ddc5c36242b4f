"""The denoiser network (DiffWave: gated residual blocks, dilated convolutions, step embedding, mel upsampler)."""

from audiodiff.network.diffwave import SIZES, DenoiserConfig, DiffWave, count_parameters, denoiser_config

__all__ = ["SIZES", "DenoiserConfig", "DiffWave", "count_parameters", "denoiser_config"]
