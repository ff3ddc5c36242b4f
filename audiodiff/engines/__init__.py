"""Inference engines: the ways the denoiser can run (eager, folded, fused, compiled, chunked)."""
