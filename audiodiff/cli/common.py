"""What the ``audiodiff`` commands share: :class:`CommandError` and the exit codes, device and model
loading, the sampler choice, the sampling and engine/precision arguments, and one-line input errors.

Like every module of :mod:`audiodiff.cli`, this one imports torch and the rest of the package only
inside functions, where a command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C

log = logging.getLogger("audiodiff")


class CommandError(Exception):
    """An error that ends a command with one line (and exit code ``code``)."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda was asked for, but no CUDA device is available", EXIT_USAGE)
    return name


def _load_model(path: str, device: str = "cpu"):
    from audiodiff.pipeline.loading import load_any

    return load_any(path, device, engine="eager")  # --engine is applied by _set_up_engine


def _choose_sampler(args: argparse.Namespace, model) -> int:
    """Set ``args.sampler`` to what the command samples with -- ``--schedule NAME`` (a schedule stored
    in the model), else ``--sampler`` (default ``fast``) -- and return its number of steps.

    A bad name or step count is a one-line usage error; an unknown schedule lists the stored ones.
    """
    if args.schedule is not None:
        if args.sampler is not None:
            raise CommandError("give --sampler or --schedule, not both (a stored schedule names its own sampler)",
                               EXIT_USAGE)
        if args.schedule not in model.config.schedules:
            stored = ", ".join(model.config.schedules)
            hint = (f"it stores: {stored}" if stored
                    else "it stores none (add one with 'audiodiff search-schedule')")
            raise CommandError(f"{args.model}: no schedule named {args.schedule!r}; {hint}", EXIT_USAGE)
    args.sampler = args.schedule or args.sampler or "fast"
    try:
        return len(model.sigmas(args.sampler, args.steps)) - 1
    except ValueError as error:
        raise CommandError(f"{args.model}: {error}", EXIT_USAGE) from None



def _report_input_error(path: Path, error: Exception) -> None:
    """Print one ``error: <path>: <reason>`` line (the traceback too, as a debug log, with --verbose)."""
    from audiodiff.io.audio import AudioError, one_line
    from audiodiff.io.mel_files import InputError

    line = str(error) if isinstance(error, (AudioError, InputError)) else f"{_shown(path)}: {one_line(error)}"
    print(f"error: {line}", file=sys.stderr)
    log.debug("traceback of the error above", exc_info=error)


def _shown(path) -> str:
    """``path`` as messages show it (see :func:`audiodiff.io.audio.display_path`)."""
    from audiodiff.io.audio import display_path

    return display_path(path)



def _add_sampling_args(parser: argparse.ArgumentParser) -> None:
    samplers = ["fast", "ddpm", "ddim", "ddim-karras", "ddim-log-snr", "dpmpp-2m", "dpmpp-2m-karras",
                "dpmpp-2m-log-snr"]  # audiodiff.diffusion.samplers.SAMPLERS, spelled out so --help needs no torch
    parser.add_argument("--sampler", default=None, choices=samplers,
                        help="fast: the model's 6-step schedule (default); ddpm: ancestral over training steps; "
                             "ddim, dpmpp-2m: deterministic DDIM / DPM-Solver++(2M) over evenly spaced training "
                             "steps, or with -karras / -log-snr over Karras / log-SNR-uniform noise levels")
    parser.add_argument("--schedule", default=None, metavar="NAME",
                        help="a noise schedule stored in the model file (e.g. searched-4 from "
                             "'audiodiff search-schedule'; 'audiodiff info' lists them): its sampler and levels, "
                             "instead of --sampler")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps for ddpm (default: all training steps) and for ddim/dpmpp-2m (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="item k uses seed+k (default 0)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def _add_engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="the network's arithmetic: auto = bf16 on a GPU (faster, audibly the same; see "
                             "benchmarks/RESULTS.md), fp32 on a CPU; the sampler itself is always fp32")
    parser.add_argument("--engine", default="auto", choices=["auto", *ENGINE_NAMES],
                        help="how the network runs: auto = folded on a CPU, eager elsewhere; folded = time-major "
                             "matrix products with folded weights (the fastest on a CPU, the same audio); compile = "
                             "torch.compile (tens of seconds per new input length, for many equal-length batches); "
                             "fused = one Triton kernel per residual block (CUDA only, the fastest there); see "
                             "benchmarks/RESULTS.md")


#: ``--engine`` choices besides ``auto``: the keys of :data:`audiodiff.engines.ENGINES`, spelled out
#: so that ``--help`` needs no torch (a test checks that they agree).
ENGINE_NAMES = ("eager", "folded", "compile", "fused")


def _set_up_engine(model, args: argparse.Namespace) -> None:
    """Apply ``--engine`` to ``model`` as the library resolves it (``auto``: folded on a CPU, eager
    elsewhere); an engine the device cannot run (``fused`` on a CPU) is a usage error."""
    from audiodiff.engines.policy import resolve_engine

    engine = resolve_engine(args.engine, model.device)
    try:
        model.use_engine(engine)
    except RuntimeError as error:
        raise CommandError(f"--engine {engine}: {error}", EXIT_USAGE) from None


def _precision(name: str, device: str) -> str:
    """``--precision`` for ``device`` as the library resolves it: ``auto`` is bf16 on CUDA and fp32 elsewhere."""
    from audiodiff.engines.policy import resolve_precision

    return resolve_precision(name, device)

