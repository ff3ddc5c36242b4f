"""``audiodiff train``: Lightning's CLI over :class:`DiffusionModule` and :class:`AudioDataModule`.

The sample rate and hop length are written once, in the model's mel preset, and linked into
the data module. ``--ckpt_path`` resumes a run (step count, optimiser, EMA and all).
Callbacks (EMA weights, checkpoints) are part of each recipe in ``configs/``; a run without
an EMA callback is warned that export will write the raw weights.
"""

from __future__ import annotations

import warnings
from typing import Sequence

from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from audiodiff.data import AudioDataModule
from audiodiff.training import DiffusionModule


class AudioDiffCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.sample_rate", "data.sample_rate", apply_on="instantiate")
        parser.link_arguments("model.hop_length", "data.hop_length", apply_on="instantiate")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="resume from this checkpoint (e.g. runs/<run>/checkpoints/last.ckpt)")


def run_training(argv: Sequence[str]) -> AudioDiffCLI:
    """Parse ``argv`` like ``audiodiff train`` does, then fit. Returns the CLI (trainer, model, data)."""
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    cli = AudioDiffCLI(
        DiffusionModule,
        AudioDataModule,
        args=list(argv),
        run=False,
        trainer_defaults={
            "default_root_dir": "runs",
            "logger": {"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": "runs", "name": "audiodiff"}},
        },
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "audiodiff train"},
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))
    return cli
