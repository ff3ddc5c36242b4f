"""The model-file API: a denoiser with its mel front end and noise schedule (AudioDiffusion), its config, and loading/saving."""
