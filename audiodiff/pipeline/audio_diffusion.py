"""The :class:`AudioDiffusion` facade: a denoiser with its mel front end and noise schedule, which
vocodes, generates and saves itself.

A released model is one ``.safetensors`` file whose metadata carries the full configuration
(:mod:`audiodiff.pipeline.config`), so loading (:mod:`audiodiff.pipeline.loading`) never falls back
to module defaults and never unpickles anything.

Python API::

    import audiodiff
    model = audiodiff.load_model()       # the shipped speech vocoder (SHIPPED_MODELS)
    model = audiodiff.load_model("my-vocoder.safetensors")
    audio = model.vocode(mel)            # (B, n_mels, frames) -> (B, frames * hop)
    mel = model.mel(audio)               # (B, T) -> (B, n_mels, T // hop)
    audio = model.vocode(mel, sampler="searched-4")   # a schedule stored by `audiodiff search-schedule`
    for block in model.stream(tts_frames, seed=0):    # (n_mels, k) blocks in, audio as soon as it is final
        play(block)

    sfx = audiodiff.load_model("sfx.safetensors")
    clips = sfx.generate(4, 22050, labels="door", guidance=3.0, seed=7)   # (4, 22050)
"""

from __future__ import annotations

import dataclasses
import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from audiodiff.diffusion.noise import Seed
from audiodiff.diffusion.sampling import EpsFn, classifier_free_guidance
from audiodiff.diffusion.samplers import (SamplingSchedule, StepTable, resolve_sampling_schedule,
                                          run_sampling_schedule)
from audiodiff.diffusion.schedule import NoiseSchedule
from audiodiff.engines.base import EagerEngine, Engine
from audiodiff.engines.chunking import StepFn, chunk_frames_for, chunked_eps_fn
from audiodiff.engines.policy import PRECISIONS, default_chunk_seconds, resolve_precision
from audiodiff.engines.registry import make_engine
from audiodiff.io.mel_files import orient_mel
from audiodiff.io.model_file import write_model_file
from audiodiff.mel import MelSpectrogram
from audiodiff.network.diffwave import Conditioning, DiffWave
from audiodiff.pipeline.config import FORMAT_NAME, ModelConfig, check_schedule_name
from audiodiff.pipeline.spans import lookahead_frames, vocode_padded_tails
from audiodiff.pipeline.streaming import stream_vocode

if TYPE_CHECKING:
    from audiodiff.engines.fused import Launch

#: Cached per-block conditioner projections may use this much memory; beyond it they are
#: recomputed at each step (the upsampled mel is still computed once).
DEFAULT_CONDITIONING_BUDGET = 2 * 2**30

Labels = int | str | Sequence[int | str] | None
#: A built-in sampler name, the name of a schedule stored in the model, or explicit levels.
Sampler = str | SamplingSchedule


def _element_size(precision: str) -> int:
    """Bytes per activation under ``precision`` (a key of :data:`PRECISIONS`)."""
    return 4 if PRECISIONS[precision] is None else 2


class AudioDiffusion(nn.Module):
    """A denoiser with its mel front end and noise schedule: what a model file holds.

    ``engine`` (:class:`~audiodiff.engines.base.Engine`) is how the network runs while sampling:
    eager until :meth:`use_engine` chooses another (``load_model`` chooses by device).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.network = DiffWave(config.denoiser)
        self.mel_frontend = MelSpectrogram(config.mel) if config.mel is not None else None
        self.schedule = NoiseSchedule(config.schedule)
        self.engine: Engine = EagerEngine(self.network)

    def use_engine(self, name: str, **options: Any) -> "AudioDiffusion":
        """Sample with the engine ``name`` from now on (returns ``self``).

        ``name`` and ``options`` are those of :data:`audiodiff.engines.registry.ENGINES`: ``eager``,
        ``folded``, ``compile`` (``mode``, ``dynamic``), ``fused`` (``launch``, ``read_mel``). An
        engine that cannot run this model here raises ``RuntimeError`` saying why. Engines that
        keep their own form of the weights rebuild it when the weights change.
        """
        self.engine = make_engine(name, self.network, **options)
        return self

    def compile_denoiser(self, mode: str | None = None, dynamic: bool | None = None) -> "AudioDiffusion":
        """Sample with a ``torch.compile``-d denoiser from now on (returns ``self``).

        ``mode`` and ``dynamic`` are ``torch.compile``'s (``"reduce-overhead"`` adds CUDA graphs).
        The first call for each new input shape compiles (tens of seconds); the speed-up and
        the compile cost are in ``benchmarks/RESULTS.md``. Pays off when many equal-length
        batches are vocoded, e.g. a server, not for one file.
        """
        return self.use_engine("compile", mode=mode, dynamic=dynamic)

    def fuse_denoiser(self, launch: Launch | str | None = None, read_mel: bool = True) -> "AudioDiffusion":
        """Sample with fused Triton kernels, one per residual block, from now on (returns ``self``).

        CUDA only (:mod:`audiodiff.engines.fused`); fastest with ``precision="bf16"``. A model that cannot
        use them (no CUDA, no Triton, channels not a power of two) raises ``RuntimeError`` saying
        why. ``launch`` (a :class:`audiodiff.engines.fused.Launch` or its text, e.g. ``"128x8"``)
        overrides the default. With ``read_mel`` (default) the kernels project the upsampled mel
        themselves at every step instead of reading cached per-block projections: less memory,
        and faster (see ``benchmarks/RESULTS.md``).
        """
        return self.use_engine("fused", launch=launch, read_mel=read_mel)

    def fold_denoiser(self) -> "AudioDiffusion":
        """Sample with the folded engine from now on (returns ``self``): the fastest on a CPU.

        :class:`audiodiff.engines.folded.FoldedDenoiser` runs the residual blocks as time-major matrix
        products with scales and biases folded into the weights: the same function up to float
        rounding, in fewer and faster operations (speed and quality in ``benchmarks/RESULTS.md``).
        """
        return self.use_engine("folded")

    def condition(self, mel: Tensor, cache_projections: bool = True) -> Any:
        """The mel conditioning ``(B, n_mels, frames)`` in the form the engine in use reads.

        ``DiffWave.condition``'s per-block projections for the eager, compiled and fused engines,
        the folded engine's own time-major ones for it (:meth:`fold_denoiser`); without
        ``cache_projections``, the upsampled mel only. Pass it to :meth:`sample`.
        """
        return self.engine.condition(mel, cache_projections=cache_projections)

    def conditioning_bytes_per_frame(self, precision: str = "fp32") -> int:
        """Memory the mel conditioning of one frame holds while sampling, with this engine in ``precision``.

        The cached per-block projections (``2C x residual_layers`` values per sample), or, with
        an engine that reads the mel (the fused kernels), only the upsampled mel (``n_mels`` values per sample).
        """
        element_size = _element_size(resolve_precision(precision, self.device))
        if self.engine.reads_mel:
            return self.config.denoiser.n_mels * self.hop_length * element_size
        return self.network.conditioning_bytes(1, self.hop_length, element_size=element_size)

    def autocast(self, precision: str = "fp32"):
        """The autocast context of ``precision`` (a key of :data:`PRECISIONS`, or ``auto``) on the model's device."""
        dtype = PRECISIONS[resolve_precision(precision, self.device)]
        return nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    def _with_precision(self, eps_fn: EpsFn, precision: str) -> EpsFn:
        """``eps_fn`` with the network under ``precision`` (resolved, not ``auto``) and its result in float32."""
        if PRECISIONS[precision] is None:
            return eps_fn

        def predict(x: Tensor, sigma: float) -> Tensor:
            with self.autocast(precision):
                eps = eps_fn(x, sigma)
            return eps.float()

        return predict

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.denoiser.hop_length

    # ----------------------------------------------------------------- mel
    def mel(self, audio: Tensor) -> Tensor:
        """Audio ``(B, T)`` or ``(T,)`` at the model's rate -> mel ``(B, n_mels, T // hop)``."""
        if self.mel_frontend is None:
            raise ValueError("this model is unconditional and has no mel front end")
        return self.mel_frontend(audio.to(self.device))

    # ----------------------------------------------------------- sampling
    def sigmas(self, sampler: Sampler = "fast", steps: int | None = None) -> np.ndarray:
        """The noise levels (noisiest first, ending at 0) that ``sampler`` walks: ``(N + 1,)`` float64.

        ``fast``: the model's user-defined fast schedule (DiffWave's 6 steps), aligned to
        fractional training steps; ``steps`` must be omitted or equal its length.
        ``ddpm``: ancestral sampling over ``steps`` evenly spaced training steps (all by default).
        ``ddim``, ``dpmpp-2m``: deterministic samplers over ``steps`` evenly spaced training steps;
        ``-karras`` / ``-log-snr`` instead place ``steps`` levels in the trained range with
        :func:`~audiodiff.diffusion.schedule.karras_sigmas` /
        :func:`~audiodiff.diffusion.schedule.log_snr_sigmas`. Their default ``steps`` is the fast
        schedule's length (6 for DiffWave's), so they cost as many network calls as ``fast``.
        The name of a schedule stored in the model (``config.schedules``, e.g. ``searched-4``) or a
        :class:`SamplingSchedule` gives its own levels; ``steps`` must be omitted or equal their count.
        """
        return np.asarray(self.sampling_schedule(sampler, steps).sigmas, dtype=np.float64)

    def sampling_schedule(self, sampler: Sampler = "fast", steps: int | None = None) -> SamplingSchedule:
        """The solver and levels ``sampler`` stands for (see :meth:`sigmas`); a ``ValueError`` for an
        unknown name, a step count it cannot take, or levels outside the trained range."""
        return resolve_sampling_schedule(sampler, steps, self.schedule, self.config.schedule.fast_betas,
                                         self.config.schedules)

    def with_schedule(self, name: str, schedule: SamplingSchedule) -> "AudioDiffusion":
        """Store ``schedule`` under ``name`` in the config, replacing one of that name (returns ``self``)."""
        schedules = {**self.config.schedules, check_schedule_name(name): schedule}
        self.config = dataclasses.replace(self.config, schedules=schedules)
        return self

    def eps_fn(self, conditioning: Any, step_fn: StepFn | None = None) -> EpsFn:
        """A noise predictor ``(x (B, T), sigma) -> eps (B, T)`` for the samplers, with this engine.

        ``step_fn`` ``(x, sigma) -> steps (B,)`` maps a level to training steps: a
        :class:`~audiodiff.diffusion.samplers.StepTable` of the schedule being sampled, or by
        default :meth:`steps_for` (which interpolates the schedule at each call).
        """
        steps_of = self.steps_for if step_fn is None else step_fn

        def predict(x: Tensor, sigma: float) -> Tensor:
            return self.engine.denoise(x, steps_of(x, sigma), conditioning)

        return predict

    def steps_for(self, x: Tensor, sigma: float) -> Tensor:
        """The (fractional) training step of noise level ``sigma``, once per row of ``x``: ``(B,)``."""
        step = float(self.schedule.step_for_sigma([sigma])[0])
        return torch.full((x.shape[0],), step, device=x.device, dtype=torch.float32)

    @torch.inference_mode()
    def sample(
        self,
        conditioning: Conditioning,
        shape: tuple[int, int],
        *,
        sampler: Sampler = "fast",
        steps: int | None = None,
        seed: Seed = None,
        callback: Callable[[int, int], None] | None = None,
        guidance: float | None = None,
        precision: str = "auto",
        noise_std: Tensor | None = None,
    ) -> Tensor:
        """Run ``sampler`` from standard normal noise of ``shape`` ``(B, T)``; returns ``(B, T)``.

        ``conditioning`` is what :meth:`condition` (or the engine's ``condition``) returns.
        ``noise_std`` ``(B, T)`` scales the starting noise and every fresh draw (a data-dependent
        prior, :meth:`noise_std`; :meth:`vocode` passes it itself).

        With ``guidance``, ``conditioning`` is for ``2B`` rows (the classes, then the null
        class) and each step combines the two predictions (classifier-free guidance).
        ``precision`` (``fp32``, ``bf16``, ``fp16``; ``auto``: bf16 on CUDA, fp32 elsewhere) is the
        network's autocast dtype; the sampler's arithmetic and the returned audio are float32.
        """
        precision = resolve_precision(precision, self.device)
        chosen = self.sampling_schedule(sampler, steps)
        return self._sample(conditioning, shape, chosen, seed=seed, callback=callback, guidance=guidance,
                            precision=precision, noise_std=noise_std)

    @torch.inference_mode()
    def _sample(self, conditioning: Any, shape: tuple[int, int], chosen: SamplingSchedule, *, seed: Seed,
                callback: Callable[[int, int], None] | None, guidance: float | None, precision: str,
                noise_std: Tensor | None, offset: int | Sequence[int] = 0) -> Tensor:
        """:meth:`sample` with the schedule and the precision already resolved."""
        eps_fn = self._with_precision(self.eps_fn(conditioning, StepTable(self.schedule, chosen.sigmas)), precision)
        if guidance is not None:
            eps_fn = classifier_free_guidance(eps_fn, guidance)
        return run_sampling_schedule(eps_fn, chosen, shape, seed=seed, device=self.device, callback=callback,
                                     noise_std=noise_std, offset=offset)

    def noise_std(self, mel: Tensor) -> Tensor | None:
        """The prior's noise standard deviation for ``mel`` ``(B, n_mels, frames)``: ``(B, frames * hop)``,
        or ``None`` for a model without a prior (standard normal noise)."""
        if self.config.prior is None:
            return None
        return self.config.prior.sample_std(mel, self.hop_length)

    def _run_sampler(self, eps_fn: EpsFn, shape: tuple[int, int], *, sampler: Sampler, steps: int | None,
                     seed: Seed, callback: Callable[[int, int], None] | None,
                     noise_std: Tensor | None = None) -> Tensor:
        """``sampler`` from seeded noise of ``shape`` ``(B, T)`` with any ``eps_fn``; ``(B, T)``
        (:func:`~audiodiff.diffusion.samplers.run_sampling_schedule`)."""
        chosen = self.sampling_schedule(sampler, steps)
        return run_sampling_schedule(eps_fn, chosen, shape, seed=seed, device=self.device, callback=callback,
                                     noise_std=noise_std)

    def vocode(
        self,
        mel: Tensor,
        *,
        sampler: Sampler = "fast",
        steps: int | None = None,
        seed: Seed = None,
        callback: Callable[[int, int], None] | None = None,
        conditioning_budget: int = DEFAULT_CONDITIONING_BUDGET,
        chunk_seconds: float | str | None = "auto",
        precision: str = "auto",
    ) -> Tensor:
        """Mel ``(B, n_mels, frames)`` or ``(n_mels, frames)`` -> audio ``(B, frames * hop)``.

        A ``(frames, n_mels)`` mel (a TTS's layout) is transposed; one with another bin count, an
        integer dtype, no frames or NaN/Inf values is refused with a ``ValueError``.

        A mel up to ``chunk_seconds`` long is conditioned once; its per-block projections are
        cached while they fit ``conditioning_budget`` bytes (base: about 15 kB per output
        sample), else recomputed at each step. A longer one is synthesised in chunks of
        ``chunk_seconds`` with overlapping windows (:mod:`audiodiff.engines.chunking`): the same audio up
        to float rounding, in memory that grows by a few ``(B, T)`` float buffers rather than by
        kilobytes per sample. ``"auto"`` is 2 s on a CPU (faster than one piece there) and 30 s
        on a GPU; ``None`` never chunks. An int ``seed`` gives batch row ``k`` the seed
        ``seed + k`` (a list gives one seed per row): the same seed gives the same audio, on any device.
        ``sampler`` is a name of :meth:`sigmas` (built-in or stored, e.g. ``"searched-4"``) or a
        :class:`SamplingSchedule` with explicit levels. ``precision`` ``bf16`` or ``fp16`` runs the
        network (and the cached conditioning) in that autocast dtype, which is faster on a GPU;
        the sampler's arithmetic stays float32. ``auto`` (default) is bf16 on CUDA, fp32 elsewhere.
        """
        self._check_vocoder()
        resolve_precision(precision, self.device)  # an unknown precision fails before any work
        mel = orient_mel(mel, self.config.denoiser.n_mels, "mel")
        return self.vocode_checked(mel, sampler=sampler, steps=steps, seed=seed, callback=callback,
                                   conditioning_budget=conditioning_budget, chunk_seconds=chunk_seconds,
                                   precision=precision)

    def _check_vocoder(self) -> None:
        if self.mel_frontend is None:
            raise ValueError("this model is unconditional; use generate()")

    def vocode_checked(
        self,
        mel: Tensor,
        *,
        sampler: Sampler = "fast",
        steps: int | None = None,
        seed: Seed = None,
        callback: Callable[[int, int], None] | None = None,
        conditioning_budget: int = DEFAULT_CONDITIONING_BUDGET,
        chunk_seconds: float | str | None = "auto",
        precision: str = "auto",
        lengths: Sequence[int] | None = None,
    ) -> Tensor:
        """:meth:`vocode` for a mel already checked by :func:`~audiodiff.io.mel_files.orient_mel`:
        ``(B, n_mels, frames)`` float32, finite, on any device -> audio ``(B, frames * hop)``.

        Internal entry of the vocoding jobs, whose mels were checked when read
        (:func:`~audiodiff.io.mel_files.read_mel_file`) or computed by :meth:`mel`: the mel is not
        checked (or copied) again. Anything else should call :meth:`vocode`.

        ``lengths`` (one per row, with a ``seed``): the rows' true frame counts in a padded batch;
        every row equals its unbatched vocoding (:meth:`vocode_span`), and audio past a row's
        length is zero.
        """
        return self.vocode_span(mel, 0, sampler=sampler, steps=steps, seed=seed, callback=callback,
                                conditioning_budget=conditioning_budget, chunk_seconds=chunk_seconds,
                                precision=precision, lengths=lengths)

    def vocode_span(
        self,
        mel: Tensor,
        start_frame: int | Sequence[int] = 0,
        *,
        sampler: Sampler = "fast",
        steps: int | None = None,
        seed: Seed = None,
        callback: Callable[[int, int], None] | None = None,
        conditioning_budget: int = DEFAULT_CONDITIONING_BUDGET,
        chunk_seconds: float | str | None = "auto",
        precision: str = "auto",
        lengths: Sequence[int] | None = None,
    ) -> Tensor:
        """:meth:`vocode_checked` of a window of an utterance whose first frame is frame ``start_frame``
        of it (one int, or one per row): the window gets the seeded noise of samples
        ``[start_frame * hop, ...)``. Its audio equals the whole utterance's on frames at least
        :meth:`stream_lookahead` frames from each window edge that is not the utterance's own start
        or end (:mod:`audiodiff.pipeline.spans`). Internal entry of streaming and padded batches.

        ``lengths`` (one per row, with a ``seed``): in a padded batch, a row whose window ends at
        its utterance's end gives its true frame count, and its last :meth:`stream_lookahead`
        frames are recomputed with that end (:func:`~audiodiff.pipeline.spans.vocode_padded_tails`);
        a row given the full width is left as vocoded (a stream's window, whose right edge is
        already ``L`` frames past the frames it gives out).
        """
        options = dict(sampler=sampler, steps=steps, seed=seed, conditioning_budget=conditioning_budget,
                       chunk_seconds=chunk_seconds, precision=precision)
        audio = self._vocode_window(mel, start_frame, callback=callback, **options)
        if lengths is None:
            return audio
        return vocode_padded_tails(self, mel, audio, lengths, self.stream_lookahead(sampler, steps),
                                   starts=start_frame, **options)

    def _vocode_window(self, mel: Tensor, start_frame: int | Sequence[int], *, sampler: Sampler,
                       steps: int | None, seed: Seed, callback: Callable[[int, int], None] | None,
                       conditioning_budget: int, chunk_seconds: float | str | None, precision: str) -> Tensor:
        """:meth:`vocode_span` without ``lengths``: one pass of the sampler over the window."""
        self._check_vocoder()
        if seed is None and start_frame != 0:
            raise ValueError("a window of an utterance needs a seed: unseeded noise does not depend on position")
        precision = resolve_precision(precision, self.device)
        chosen = self.sampling_schedule(sampler, steps)
        mel = mel.to(self.device)
        shape = (mel.shape[0], mel.shape[-1] * self.hop_length)
        hop = self.hop_length
        offset = start_frame * hop if isinstance(start_frame, int) else [int(s) * hop for s in start_frame]
        noise_std = self.noise_std(mel)
        if chunk_seconds == "auto":
            chunk_seconds = default_chunk_seconds(self.device)
        chunk_frames = None if chunk_seconds is None else chunk_frames_for(chunk_seconds, self.sample_rate, hop)
        if chunk_frames is not None and mel.shape[-1] > chunk_frames:
            steps_of = StepTable(self.schedule, chosen.sigmas)
            eps_fn = chunked_eps_fn(self.network, mel, steps_of, chunk_frames, engine=self.engine)
            with torch.inference_mode():
                return run_sampling_schedule(self._with_precision(eps_fn, precision), chosen, shape, seed=seed,
                                             device=self.device, callback=callback, noise_std=noise_std,
                                             offset=offset)
        cache_bytes = self.network.conditioning_bytes(*shape, element_size=_element_size(precision))
        cache = cache_bytes <= conditioning_budget and not self.engine.reads_mel
        with torch.inference_mode(), self.autocast(precision):
            conditioning = self.condition(mel, cache_projections=cache)
        return self._sample(conditioning, shape, chosen, seed=seed, callback=callback, guidance=None,
                            precision=precision, noise_std=noise_std, offset=offset)

    def stream_lookahead(self, sampler: Sampler = "fast", steps: int | None = None) -> int:
        """Mel frames past a frame that its audio depends on with ``sampler``: ``L = N * halo``
        (``N`` network calls, :func:`~audiodiff.engines.chunking.halo_frames`). :meth:`stream`
        yields a frame's audio once ``L`` frames after it have arrived."""
        return lookahead_frames(self.config.denoiser, self.sampling_schedule(sampler, steps).steps)

    def stream(self, blocks: Iterable[Tensor | np.ndarray], *, sampler: Sampler = "fast", steps: int | None = None,
               seed: int | Sequence[int] = 0, precision: str = "auto", min_block_frames: int | None = None,
               chunk_seconds: float | str | None = "auto") -> Iterator[Tensor]:
        """Vocode mel frames as they arrive: blocks ``(n_mels, k)`` or ``(B, n_mels, k)`` in, audio
        ``(B, k' * hop)`` out. Concatenated, the audio equals :meth:`vocode` of the whole mel with
        the same ``seed`` (up to float rounding), also when the blocks stop early.
        See :func:`audiodiff.pipeline.streaming.stream_vocode` for ``min_block_frames`` and the latency.
        """
        return stream_vocode(self, blocks, sampler=sampler, steps=steps, seed=seed, precision=precision,
                             min_block_frames=min_block_frames, chunk_seconds=chunk_seconds)

    def generate(
        self,
        n: int,
        num_samples: int,
        *,
        labels: Labels = None,
        guidance: float = 1.0,
        sampler: Sampler = "fast",
        steps: int | None = None,
        seed: Seed = None,
        callback: Callable[[int, int], None] | None = None,
        precision: str = "auto",
    ) -> Tensor:
        """Generate ``n`` clips of ``num_samples`` samples: ``(n, num_samples)``.

        For a class-conditional model, ``labels`` is a class name or id for all clips or one per
        clip; ``None`` samples the null class (the model's unconditional mode). ``guidance`` is
        the classifier-free guidance weight ``w`` in ``eps_null + w * (eps_class - eps_null)``:
        1 is plain conditional sampling (one network call per step), 0 the null class, above 1
        stronger adherence to the class (two predictions per step, batched into one call).
        An unconditional model takes neither. Seeds and ``precision`` work as in :meth:`vocode`.
        """
        if self.network.conditional:
            raise ValueError("this model is mel-conditioned; use vocode()")
        if n < 1 or num_samples < 1:
            raise ValueError(f"n and num_samples must be positive, got {n} and {num_samples}")
        if not self.network.class_conditional:
            if labels is not None or guidance != 1.0:
                raise ValueError("this model is unconditional: it takes no class and no guidance")
            return self.sample(None, (n, num_samples), sampler=sampler, steps=steps, seed=seed, callback=callback,
                               precision=precision)
        ids = self.class_ids(labels, n)
        with torch.inference_mode(), self.autocast(precision):
            if guidance == 1.0 or bool((ids == self.config.denoiser.null_class).all()):
                return self.sample(self.engine.condition(None, labels=ids), (n, num_samples), sampler=sampler,
                                   steps=steps, seed=seed, callback=callback, precision=precision)
            null = torch.full_like(ids, self.config.denoiser.null_class)
            pairs = self.engine.condition(None, labels=torch.cat([ids, null]))
        return self.sample(pairs, (n, num_samples), sampler=sampler, steps=steps, seed=seed,
                           callback=callback, guidance=guidance, precision=precision)

    def class_ids(self, labels: Labels, n: int) -> Tensor:
        """Class ids ``(n,)`` on the model's device from names/ids; ``None`` is the null class."""
        null = self.config.denoiser.null_class
        if labels is None:
            values: list[int | str] = [null] * n
        elif isinstance(labels, (int, str)):
            values = [labels] * n
        else:
            values = list(labels)
            if len(values) != n:
                raise ValueError(f"{len(values)} labels for {n} clips")
        ids = [self.config.class_id(v) if isinstance(v, str) else int(v) for v in values]
        bad = [i for i in ids if not 0 <= i <= null]
        if bad:
            raise ValueError(f"class ids must be in 0..{null} ({null} is the null class), got {bad}")
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    # -------------------------------------------------------------- files
    def save(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write weights and config as one ``.safetensors`` file, atomically.

        ``dtype=torch.float16`` halves the file (the shipped models); loading converts back to float32.
        """
        metadata = {
            "format": FORMAT_NAME,
            "format_version": str(self.config.format_version),
            "config": json.dumps(self.config.to_dict()),
        }
        return write_model_file(path, self.network.state_dict(), metadata, dtype)

    def with_training_step(self, step: int) -> "AudioDiffusion":
        """Record the training step in the config (returns ``self``)."""
        self.config = dataclasses.replace(self.config, training_step=int(step))
        return self
