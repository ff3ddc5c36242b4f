"""Evaluating audio: pairing files, metrics, optional judges, reports, Griffin-Lim resynthesis."""
