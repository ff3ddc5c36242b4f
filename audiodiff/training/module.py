"""The Lightning module that trains a DiffWave denoiser.

EMA weights come from :class:`audiodiff.training.callbacks.EMA`, a Lightning ``WeightAveraging``
callback (see the ``configs/``): it swaps the averaged weights in for validation and stores
them as the checkpoint's ``state_dict``, which is what ``audiodiff export`` writes.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from audiodiff.diffusion.loss import epsilon_loss, spectral_x0_loss
from audiodiff.diffusion.prior import EnergyPrior
from audiodiff.diffusion.schedule import SCHEDULES
from audiodiff.mel import mel_preset
from audiodiff.dsp.spectral import mel_l1_distance, multi_resolution_stft_distance
from audiodiff.network.diffwave import denoiser_config
from audiodiff.pipeline.config import CHECKPOINT_CONFIG_KEY, ModelConfig
from audiodiff.pipeline.audio_diffusion import AudioDiffusion
from audiodiff.io.model_file import ModelFileError
from audiodiff.pipeline.loading import load_any

#: Checkpoint key of the training steps the ``init_from`` model had before this run.
INITIAL_STEP_KEY = "audiodiff_initial_step"


def build_model_config(
    size: str,
    conditional: bool,
    mel_preset_name: str,
    mel_overrides: dict[str, Any] | None,
    schedule: str,
    denoiser_overrides: dict[str, Any] | None,
    sample_rate: int | None,
    class_names: list[str] | None = None,
    prior: dict[str, Any] | None = None,
) -> ModelConfig:
    """Assemble a :class:`ModelConfig` from the named pieces a recipe chooses (``prior``: the fields
    of an :class:`~audiodiff.diffusion.prior.EnergyPrior`, ``{}`` for its defaults; ``None``: no prior)."""
    if conditional and class_names:
        raise ValueError("a model is either a vocoder (conditional: true) or class-conditional "
                         "(class names from data.labels), not both; set model.conditional: false")
    mel = mel_preset(mel_preset_name, **(mel_overrides or {}))
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {sorted(SCHEDULES)}")
    schedule_config = SCHEDULES[schedule]
    denoiser = denoiser_config(
        size,
        n_mels=mel.n_mels if conditional else None,
        hop_length=mel.hop_length,
        max_steps=schedule_config.num_steps,
        num_classes=len(class_names) if class_names else None,
        **(denoiser_overrides or {}),
    )
    return ModelConfig(
        denoiser=denoiser,
        mel=mel if conditional else None,
        schedule=schedule_config,
        sample_rate=model_sample_rate(conditional, mel_preset_name, mel_overrides, sample_rate),
        class_names=tuple(class_names) if class_names else None,
        prior=None if prior is None else EnergyPrior.from_dict(prior),
    )


def model_sample_rate(conditional: bool, mel_preset_name: str, mel_overrides: dict[str, Any] | None,
                      sample_rate: int | None) -> int:
    """A vocoder works at its mel preset's rate; other models at ``sample_rate`` if given."""
    preset_rate = mel_preset(mel_preset_name, **(mel_overrides or {})).sample_rate
    return preset_rate if conditional or sample_rate is None else int(sample_rate)


def model_hop_length(mel_preset_name: str, mel_overrides: dict[str, Any] | None) -> int:
    """The hop of the model's mel preset (training crops start at multiples of it)."""
    return mel_preset(mel_preset_name, **(mel_overrides or {})).hop_length


class DiffusionModule(pl.LightningModule):
    """Trains :class:`~audiodiff.pipeline.AudioDiffusion` with the epsilon-prediction loss.

    Args:
        size: Network size: ``tiny``, ``base`` (DiffWave BASE, 2.6 M parameters) or ``large``.
        conditional: Condition on mel spectrograms (a vocoder); ``False`` for unconditional audio.
        mel_preset: Mel convention the vocoder is trained on (``hifigan`` or ``diffwave``).
        mel_overrides: Fields of the preset to change, e.g. ``{sample_rate: 16000}``.
        schedule: Training noise schedule: ``base`` (T=50) or ``large`` (T=200).
        denoiser_overrides: Fields of the network size to change, e.g. ``{residual_layers: 20}``.
        sample_rate: Sample rate of an unconditional or class-conditional model (a vocoder
            takes its mel preset's).
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        loss: ``l1`` (DiffWave's) or ``l2`` on the predicted noise.
        val_sampler: Sampler used to synthesise validation audio from the EMA weights.
        val_audio_clips: How many validation clips are logged as audio and mel figures.
        val_seed: Seed of the validation noise, so validation metrics are comparable across epochs.
        class_names: Classes of a class-conditional model (``conditional: false``); linked from
            the data module's ``labels`` by ``audiodiff train``, so not set by hand there.
        label_dropout: Probability that a training example's class is replaced by the null
            class, so one model samples both with and without a class (classifier-free guidance).
        init_from: Start from this model's weights (a ``.safetensors`` file, a ``.ckpt``, or a
            shipped model's name such as ``speech-22k``) instead of random ones, to keep improving
            it. Its configuration must equal the recipe's. Exported models count its training
            steps plus this run's (``training_step``). The optimiser and EMA start fresh; to
            continue an interrupted run use ``--ckpt_path`` instead.
        warmup_steps: Raise the learning rate linearly from ``learning_rate / warmup_steps`` to
            ``learning_rate`` over the first this many optimiser steps (0: constant, as before).
            For larger batches with a scaled rate.
        compile: ``torch.compile`` the denoiser for the training steps (validation and sampling
            stay eager). Compiles once, at the first step (a minute or more); worth it on a GPU.
        prior: PriorGrad's data-dependent prior, part of the model (its file says how to sample):
            the fields of :class:`~audiodiff.diffusion.prior.EnergyPrior` (``energy_min``,
            ``energy_max``, ``std_min``; ``{}`` for the defaults). ``None`` (default): standard
            normal noise, as before.
        x0_loss_weight: Weight of an auxiliary MR-STFT + log-mel L1 loss on the clean-audio
            estimate ``x0_hat``, each example weighted by its ``abar`` (so the noisiest steps pull
            least); FreGrad uses 0.1 for its MR-STFT term. 0 (default): the epsilon loss alone.
    """

    def __init__(
        self,
        size: str = "base",
        conditional: bool = True,
        mel_preset: str = "hifigan",
        mel_overrides: dict[str, Any] | None = None,
        schedule: str = "base",
        denoiser_overrides: dict[str, Any] | None = None,
        sample_rate: int | None = None,
        learning_rate: float = 2e-4,
        weight_decay: float = 0.0,
        loss: str = "l1",
        val_sampler: str = "fast",
        val_audio_clips: int = 2,
        val_seed: int = 0,
        class_names: list[str] | None = None,
        label_dropout: float = 0.15,
        init_from: str | None = None,
        warmup_steps: int = 0,
        compile: bool = False,
        prior: dict[str, Any] | None = None,
        x0_loss_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if x0_loss_weight < 0:
            raise ValueError(f"x0_loss_weight must be >= 0, got {x0_loss_weight}")
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.save_hyperparameters()
        self.model_config = build_model_config(
            size, conditional, mel_preset, mel_overrides, schedule, denoiser_overrides, sample_rate, class_names,
            prior,
        )
        self.model = AudioDiffusion(self.model_config)
        self.initial_step = self._load_initial_weights(init_from) if init_from else 0
        self.register_buffer(
            "alpha_bars", torch.from_numpy(self.model.schedule.alpha_bars).float(), persistent=False
        )
        self._compiled_denoise: Any = None

    def _load_initial_weights(self, path: str) -> int:
        """Copy the weights of the model at ``path`` into the network; returns its training steps.

        Raises :class:`~audiodiff.io.model_file.ModelFileError` when the file is unreadable or its
        configuration differs from the recipe's (naming the fields that differ).
        """
        source = load_any(path, engine="eager")  # only its weights and config are read
        differences = config_differences(source.config, self.model_config)
        if differences:
            raise ModelFileError(path, "cannot start from it: its configuration differs from the recipe's in "
                                 + "; ".join(differences))
        self.model.network.load_state_dict(source.network.state_dict())
        return source.config.training_step

    # Linked into the data module by the CLI, so the sample rate is written once.
    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def hop_length(self) -> int:
        return self.model.hop_length

    def on_fit_start(self) -> None:
        from pytorch_lightning.callbacks import WeightAveraging

        self._seed_noise_per_rank()
        if not any(isinstance(c, WeightAveraging) for c in self.trainer.callbacks):
            rank_zero_warn(
                "no EMA (WeightAveraging) callback: validation and export will use the raw weights "
                "(the recipes in configs/ add one)"
            )

    def _seed_noise_per_rank(self) -> None:
        """Give each DDP rank its own stream of diffusion steps and noise.

        ``seed_everything`` seeds every rank alike, and the training noise, steps and label dropout
        come from the global generator, so without this every rank would draw the same steps and
        noise for its own crops: ``N`` GPUs would train on one ``N``-th of the (step, noise) variety
        a batch of the same total size gets on one. Rank 0 keeps its seed, so one process trains
        as before. Runs after DDP has copied rank 0's initial weights to every rank.
        """
        if self.trainer.world_size > 1:
            torch.manual_seed((torch.initial_seed() + self.global_rank) % 2**63)

    def configure_model(self) -> None:
        if self.hparams.compile and self._compiled_denoise is None:
            self._compiled_denoise = torch.compile(self.model.network.denoise)

    def _denoiser(self) -> Any:
        """``network.denoise``, compiled for training steps when ``compile`` is set."""
        if self._compiled_denoise is not None and self.training and torch.is_grad_enabled():
            return self._compiled_denoise
        return self.model.network.denoise

    def _mel(self, audio: Tensor) -> Tensor | None:
        """Mel of ``audio`` ``(B, T)`` in float32, outside autocast; ``None`` if unconditional."""
        if self.model.mel_frontend is None:
            return None
        with torch.autocast(device_type=audio.device.type, enabled=False):
            return self.model.mel_frontend(audio.float())

    def _labels(self, batch: dict[str, Any], dropout: float = 0.0) -> Tensor | None:
        """The batch's class ids ``(B,)`` for a class-conditional model (``None`` otherwise),
        each replaced by the null class with probability ``dropout``."""
        network = self.model.network
        if not network.class_conditional:
            return None
        if "label" not in batch:
            raise RuntimeError("this model is class-conditional but the data have no labels; set data.labels")
        labels = batch["label"].long()
        if dropout > 0:
            dropped = torch.rand(labels.shape, device=labels.device) < dropout
            labels = labels.masked_fill(dropped, network.config.null_class)
        return labels

    def _loss(self, audio: Tensor, mel: Tensor | None, generator: torch.Generator | None = None,
              labels: Tensor | None = None) -> Tensor:
        """The epsilon loss of clean ``audio`` ``(B, T)`` with its ``mel`` or class ``labels`` (or neither)."""
        # each block's projection is used once per step in training: computing it when the block
        # runs (instead of all up front) lets autograd free it after that block (about 1 GB less
        # at the base recipe's batch, measured with benchmarks/train_throughput.py)
        conditioning = self.model.network.condition(mel, cache_projections=False, labels=labels)
        denoise = self._denoiser()
        weight = self.hparams.get("x0_loss_weight", 0.0)
        return epsilon_loss(
            lambda x, t: denoise(x, t, conditioning),
            audio, self.alpha_bars, kind=self.hparams.loss, generator=generator,
            noise_std=None if mel is None else self.model.noise_std(mel),
            x0_loss=spectral_x0_loss(self._mel) if weight > 0 else None, x0_weight=weight,
        )

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        audio = batch["audio"]
        labels = self._labels(batch, self.hparams.label_dropout)
        loss = self._loss(audio, self._mel(audio), labels=labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=audio.shape[0])
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # the total norm stays on the device: Lightning's grad_norm() reads every parameter's norm
        # to the host (a GPU sync per parameter, ~200 per step for the base network)
        grads = [p.grad for p in self.model.network.parameters() if p.grad is not None]
        if grads:
            # (torch.nn.utils.get_total_norm would do this, but only from torch 2.6; we admit 2.4)
            norms = torch.stack([torch.linalg.vector_norm(g.detach(), 2.0) for g in grads])
            self.log("train/grad_norm", torch.linalg.vector_norm(norms, 2.0))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        audio = batch["audio"]
        generator = torch.Generator().manual_seed(self.hparams.val_seed + batch_idx)
        mel = self._mel(audio)
        labels = self._labels(batch)
        self.log("val/loss", self._loss(audio, mel, generator, labels), batch_size=1, sync_dist=True)
        if mel is None:
            if batch_idx < self.hparams.val_audio_clips:
                self._log_generated(batch_idx, audio[0], None if labels is None else int(labels[0]))
            return
        generated = self.model.vocode(
            mel, sampler=self.hparams.val_sampler, seed=self.hparams.val_seed + batch_idx
        )
        generated_mel = self._mel(generated)
        self.log("val/mrstft", multi_resolution_stft_distance(generated, audio).mean(), batch_size=1, sync_dist=True)
        self.log("val/mel_l1", mel_l1_distance(generated_mel, mel).mean(), batch_size=1, sync_dist=True)
        if batch_idx < self.hparams.val_audio_clips:
            self._log_media(batch_idx, audio[0], generated[0], mel[0], generated_mel[0])

    def _log_media(self, index: int, real: Tensor, fake: Tensor, real_mel: Tensor, fake_mel: Tensor,
                   what: str = "") -> None:
        """Validation audio and a real-vs-generated mel figure, to TensorBoard (rank 0 only).
        ``what`` prefixes the generated panel's title (e.g. ``"class door, "``)."""
        experiment = getattr(self.logger, "experiment", None)
        if self.global_rank != 0 or not hasattr(experiment, "add_audio"):
            return
        from audiodiff.io.figures import mel_comparison_figure

        step = self.global_step
        if self.current_epoch == 0 or step == 0:
            experiment.add_audio(f"val/{index}/real", real.float().clamp(-1, 1).cpu().unsqueeze(0), step,
                                 self.sample_rate)
        experiment.add_audio(f"val/{index}/generated", fake.float().clamp(-1, 1).cpu().unsqueeze(0), step,
                             self.sample_rate)
        figure = mel_comparison_figure(
            [real_mel.float().cpu().numpy(), fake_mel.float().cpu().numpy()],
            ["real", f"generated ({what}{self.hparams.val_sampler}, step {step})"],
            self.sample_rate, self.hop_length,
        )
        experiment.add_figure(f"val/{index}/mel", figure, step)

    def _log_generated(self, index: int, real: Tensor, label: int | None) -> None:
        """A clip generated by an unconditional or class model (of ``real``'s class and length),
        with real-vs-generated spectrograms, to TensorBoard."""
        experiment = getattr(self.logger, "experiment", None)
        if self.global_rank != 0 or not hasattr(experiment, "add_audio"):
            return
        from audiodiff.mel import MelSpectrogram, mel_preset

        seed = self.hparams.val_seed + index
        fake = self.model.generate(1, real.shape[-1], labels=label, sampler=self.hparams.val_sampler, seed=seed)[0]
        frontend = MelSpectrogram(mel_preset(self.hparams.mel_preset, sample_rate=self.sample_rate)).to(real.device)
        with torch.autocast(device_type=real.device.type, enabled=False):
            mels = [frontend(x.float())[0] for x in (real, fake)]
        names = self.model_config.class_names
        self._log_media(index, real, fake, *mels, what="" if label is None else f"class {names[label]}, ")

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(
            self.model.network.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay
        )
        warmup = self.hparams.get("warmup_steps", 0)
        if not warmup:
            return optimizer
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    @property
    def total_steps(self) -> int:
        """Training steps of the weights: the ``init_from`` model's plus this run's."""
        return self.initial_step + int(self.global_step)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        config = self.model_config.to_dict()
        config["training_step"] = self.total_steps
        checkpoint[CHECKPOINT_CONFIG_KEY] = config
        checkpoint[INITIAL_STEP_KEY] = self.initial_step

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.initial_step = int(checkpoint.get(INITIAL_STEP_KEY, 0))


def config_differences(found: ModelConfig, wanted: ModelConfig) -> list[str]:
    """``"field: found vs wanted"`` for each field (nested with dots) in which two model configs differ,
    leaving out the training step and stored schedules (which do not change the network)."""
    def flat(data: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(data, dict):
            return {prefix: data}
        return {k: v for key, value in data.items() for k, v in flat(value, f"{prefix}{key}.").items()}

    ignored = ("training_step", "schedules")
    a, b = ({k.rstrip("."): v for k, v in flat(c.to_dict()).items() if not k.startswith(ignored)}
            for c in (found, wanted))
    return [f"{key}: {a.get(key)!r} vs {b.get(key)!r}" for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
