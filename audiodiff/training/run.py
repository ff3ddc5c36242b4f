"""``audiodiff train``: Lightning's CLI over :class:`DiffusionModule` and :class:`AudioDataModule`.

The sample rate and hop length are written once, in the model's mel preset (or the model's
``sample_rate``), and linked into the data module; the class names of labelled data
(``data.labels``) are linked from the data module into the model. ``--init-from MODEL`` starts
from a model's weights (``model.init_from``) and keeps counting its training steps. ``--ckpt_path`` resumes a run (step count, optimiser, EMA and all).
Callbacks (EMA weights, checkpoints) are part of each recipe in ``configs/``; a run without
an EMA callback is warned that export will write the raw weights.

Checkpoints are written atomically (temporary file, fsync, rename) by
:class:`~audiodiff.training.checkpoint_io.AtomicCheckpointIO`, which replaces Lightning's default writer
whatever the recipe; ``--trainer.plugins`` still takes precision plugins and the like, and a
``CheckpointIO`` given there is used instead. ``--ckpt_path`` is read with
``torch.load(weights_only=True)``: a checkpoint that would run code is refused with one line.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from audiodiff.training.checkpoint_io import use_atomic_checkpoints
from audiodiff.data import AudioDataModule
from audiodiff.io.model_file import ModelFileError
from audiodiff.training.module import DiffusionModule, model_hop_length, model_sample_rate


class AudioDiffCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # parse-time links (pure functions of the model's arguments), so that the data module,
        # instantiated first, can hand its class names to the model
        parser.link_arguments(
            ("model.conditional", "model.mel_preset", "model.mel_overrides", "model.sample_rate"),
            "data.sample_rate", compute_fn=model_sample_rate, apply_on="parse",
        )
        parser.link_arguments(("model.mel_preset", "model.mel_overrides"), "data.hop_length",
                              compute_fn=model_hop_length, apply_on="parse")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.add_argument("--init_from", "--init-from", type=str | None, default=None,
                            help="start from this model's weights (a .safetensors, a .ckpt or a shipped model's "
                                 "name, e.g. speech-22k) and count its training steps; see model.init_from")
        parser.link_arguments("init_from", "model.init_from", apply_on="parse")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="resume from this checkpoint (e.g. runs/<run>/checkpoints/last.ckpt)")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer)
        return trainer


def run_training(argv: Sequence[str]) -> AudioDiffCLI:
    """Parse ``argv`` like ``audiodiff train`` does, then fit. Returns the CLI (trainer, model, data).

    Like the argument parser, exits (:class:`SystemExit`, status 1) with one line on stderr when
    the ``--ckpt_path`` checkpoint is missing or refused.
    """
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    try:
        cli = _build_cli(argv)
    except ModelFileError as error:  # --model.init_from unreadable or of another configuration
        raise SystemExit(f"error: {error}") from None
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"),
                        weights_only=True)
    except ModelFileError as error:
        raise SystemExit(f"error: {error}") from None
    save_final_checkpoint(cli.trainer)
    return cli


def save_final_checkpoint(trainer: Trainer) -> Path | None:
    """Write ``last.ckpt`` once more when fit ends, so it holds the final step.

    The recipes save ``last.ckpt`` every N steps; a run that stops in between (``max_time``,
    ``max_steps`` off the interval, Ctrl-C) would otherwise lose up to N - 1 steps. Uses the
    directory of the ``ModelCheckpoint`` whose ``filename`` is ``last``; returns the path, or
    ``None`` when there is no such callback or it already holds this step.
    """
    from pytorch_lightning.callbacks import ModelCheckpoint

    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.filename == "last" and callback.dirpath:
            path = Path(callback.dirpath) / "last.ckpt"
            if getattr(callback, "_last_global_step_saved", None) == trainer.global_step and path.exists():
                return None
            trainer.save_checkpoint(path, weights_only=False)
            return path
    return None


def _build_cli(argv: Sequence[str]) -> AudioDiffCLI:
    return AudioDiffCLI(
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
