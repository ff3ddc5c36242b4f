"""Held-out speech that ships with the package, for the demo, the notebook and quick checks.

    from audiodiff.examples import example_files
    example_files()   # [Path(".../cs-m-pravidla.ogg"), Path(".../cs-v-neboj1.ogg")]

See ``README.md`` in this folder for their origin and licence; the shipped vocoder never trained
on them.
"""

from __future__ import annotations

from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent


def example_files() -> list[Path]:
    """The example speech files (22.05 kHz mono Ogg Vorbis), sorted by name."""
    return sorted(EXAMPLES_DIR.glob("*.ogg"))
