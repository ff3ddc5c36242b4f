"""``audiodiff mel``: audio files -> mel spectrograms ``(n_mels, frames)`` float32 ``.npy``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audiodiff.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandError, _report_input_error, _shown, log


def add_parser(subparsers, parents: list) -> None:
    p = subparsers.add_parser(
        "mel", parents=parents,
        help="audio files -> mel spectrograms (n_mels, frames) float32 .npy")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--preset", default="hifigan", help="mel convention: hifigan or diffwave")
    p.add_argument("-o", "--output", help="output .npy (one input)")
    p.add_argument("--out", default=".", help="output folder for several inputs (default: .)")
    for name, kind in [("sample-rate", int), ("n-fft", int), ("hop-length", int), ("win-length", int),
                       ("n-mels", int), ("f-min", float), ("f-max", float)]:
        p.add_argument(f"--{name}", type=kind, default=None, help=f"override the preset's {name.replace('-', '_')}")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from audiodiff.io.audio import AudioError
    from audiodiff.mel import MelSpectrogram, mel_preset

    overrides = {k: v for k, v in {
        "sample_rate": args.sample_rate, "n_fft": args.n_fft, "hop_length": args.hop_length,
        "win_length": args.win_length, "n_mels": args.n_mels, "f_min": args.f_min, "f_max": args.f_max,
    }.items() if v is not None}
    try:
        config = mel_preset(args.preset, **overrides)
    except ValueError as error:
        raise CommandError(str(error), EXIT_USAGE) from None
    if args.output and len(args.inputs) > 1:
        raise CommandError("-o/--output takes one input; use --out DIR for several", EXIT_USAGE)
    frontend = MelSpectrogram(config)
    failures = 0
    for raw in args.inputs:
        path = Path(raw)
        target = Path(args.output) if args.output else Path(args.out) / f"{path.stem}.npy"
        try:
            mel = _mel_of_file(path, frontend)
        except (AudioError, ValueError) as error:
            _report_input_error(path, error)
            failures += 1
            continue
        _save_npy_atomic(target, mel)
        if not args.quiet:
            print(f"wrote {_shown(target)} {mel.shape} ({config.preset} preset)")
    if failures:
        print(f"{failures} input(s) failed, {len(args.inputs) - failures} written", file=sys.stderr)
    return EXIT_FAILED if failures else EXIT_OK


def _mel_of_file(path: Path, frontend):
    """The mel ``(n_mels, frames)`` float32 numpy array of the audio file ``path``.

    The audio is read at the front end's rate (a conversion is mentioned in one log line);
    an :class:`~audiodiff.io.audio.AudioError` for a bad or too short file.
    """
    import numpy as np

    from audiodiff.io.audio import AudioError, load_audio

    config = frontend.config
    audio, _ = load_audio(path, config.sample_rate, on_conversion=lambda note: log.info("%s: %s", _shown(path), note))
    if audio.shape[-1] < config.n_fft:
        raise AudioError(path, f"too short ({audio.shape[-1]} samples at {config.sample_rate} Hz) for one "
                               f"{config.n_fft}-sample STFT window")
    return frontend(audio)[0].numpy().astype(np.float32)


def _save_npy_atomic(path: Path, array) -> None:
    import numpy as np

    from audiodiff.io.files import write_atomically

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array)

    write_atomically(path, write)
