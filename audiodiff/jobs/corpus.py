"""Corpus vocoding: a manifest of mel or audio files -> one wav each, on every device of one or
several machines, through Lightning's prediction loop; resumable after a crash.

Used by ``audiodiff vocode --manifest``. Every rank reads the manifest; each probes a slice of it
(a mel file's header, an audio file's length, whether its output is already there) and the
probes are gathered, so every rank holds the same plan: entries whose wavs exist are skipped,
entries whose output name an earlier one takes fail, and the rest are sorted by length (longest
first) and dealt out, rank ``r`` taking entries ``r, r + world, ...`` of that order
(:func:`shard`), in tight length-ordered batches (:func:`plan_batches`). Entry ``i`` of the
manifest uses seed ``seed + i`` (row ``k`` of a file holding a batch of ``B > 1`` mels:
``seed + i + k * len(manifest)``), so its audio does not depend on the sharding or on what a
rerun skips. Wavs are written atomically as each batch ends; a bad input costs one line. At the
end each rank records what it did in a file of its own, and global rank 0 gathers them into
``vocode-summary.json`` in the output folder.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from audiodiff.io.audio import audio_info, display_path, samples_at_rate, save_audio
from audiodiff.io.files import write_json
from audiodiff.io.mel_files import MEL_SUFFIXES, InputError
from audiodiff.io.safe_load import load_pickle_safely
from audiodiff.jobs.vocode import VocodeItem, batches, drop_name_collisions, load_inputs, vocode_batch
from audiodiff.pipeline.audio_diffusion import AudioDiffusion

SUMMARY_NAME = "vocode-summary.json"
RANKS_DIR = ".vocode-ranks"  # each rank's record, inside the output folder, removed once gathered
_TEMPORARY = re.compile(r"^\..+\.wav\.[0-9a-f]{8}\.tmp$")  # what write_atomically leaves if killed


# ------------------------------------------------------------------ manifest
@dataclass(frozen=True)
class ManifestEntry:
    """One input of a manifest: ``index`` counts entries from 0 (its seed is ``seed + index``)."""

    index: int
    path: Path
    line: int


def read_manifest(path: str | Path, on_error: Callable[[InputError], None]) -> list[ManifestEntry]:
    """The input files a manifest lists, one per line, in order.

    Blank lines and lines starting with ``#`` are skipped, surrounding whitespace is dropped, and
    a relative path is relative to the manifest's folder. A line that cannot name a file (a NUL
    byte) goes to ``on_error`` as ``<manifest>:<line>: ...`` and takes no index. A missing or
    empty manifest is an :class:`InputError`.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="surrogateescape")  # any file name works
    except FileNotFoundError:
        raise InputError(path, "manifest not found") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a manifest (a text file of input paths)") from None
    except OSError as error:
        raise InputError(path, f"cannot read the manifest ({error.strerror or error})") from None
    entries: list[ManifestEntry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "\0" in line:
            on_error(InputError(f"{path}:{number}", "a file name cannot hold a NUL byte"))
            continue
        entries.append(ManifestEntry(len(entries), path.parent / line, number))
    if not entries:
        raise InputError(path, "the manifest lists no input files (one path per line; # starts a comment)")
    return entries


def output_names(stem: str, rows: int) -> list[str]:
    """Output names of a file holding ``rows`` mels, as :func:`audiodiff.jobs.vocode.load_inputs` names them."""
    return [stem] if rows == 1 else [f"{stem}_{k}" for k in range(rows)]


def seed_offset(entry_index: int, row: int, entries: int) -> int:
    """Row ``row`` of manifest entry ``entry_index`` samples with seed ``seed + seed_offset``."""
    return entry_index + row * entries


# ------------------------------------------------------------------- probing
@dataclass(frozen=True)
class Probe:
    """What planning needs of an entry: ``frames`` per row (an estimate, 0 when unknown: the full
    read then says what is wrong), ``rows`` (mels in the file) and whether its wavs all exist."""

    frames: int
    rows: int
    done: bool


def probe_entry(path: Path, out_dir: Path, model: AudioDiffusion) -> Probe:
    """Probe one input cheaply: a finished one by its output alone, a ``.npy`` by its header, an
    audio file by its length; never raises."""
    if (out_dir / f"{path.stem}.wav").exists():
        return Probe(0, 1, True)
    try:
        frames, rows = _probe_file(path, model)
    except Exception:  # noqa: BLE001 - the full read in the prediction loop reports it properly
        return Probe(0, 1, False)
    done = rows > 1 and all((out_dir / f"{name}.wav").exists() for name in output_names(path.stem, rows))
    return Probe(frames, rows, done)


def _probe_file(path: Path, model: AudioDiffusion) -> tuple[int, int]:
    if path.suffix.lower() not in MEL_SUFFIXES:
        info = audio_info(path)
        return samples_at_rate(info.frames, info.sample_rate, model.sample_rate) // model.hop_length, 1
    if path.suffix == ".npy":
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            shape = archive["mel" if "mel" in keys else keys[0]].shape
    else:
        data = load_pickle_safely(path)
        shape = tuple((data.get("mel") if isinstance(data, dict) else data).shape)
    n_mels = model.config.denoiser.n_mels
    rows = shape[0] if len(shape) == 3 else 1
    frames = shape[-1] if shape[-2] == n_mels else shape[-2] if shape[-1] == n_mels else 0
    return int(frames), int(rows)


# ------------------------------------------------------------------ planning
@dataclass
class CorpusPlan:
    """What every rank agrees on: entries to vocode (with their probes), finished ones, failures."""

    pending: list[tuple[ManifestEntry, Probe]] = field(default_factory=list)
    skipped: list[ManifestEntry] = field(default_factory=list)


def make_plan(entries: Sequence[ManifestEntry], probes: Sequence[Probe],
              on_error: Callable[[InputError], None]) -> CorpusPlan:
    """Drop entries whose output name an earlier entry takes (one ``on_error`` line each, the
    message of :func:`drop_name_collisions`), then split the rest into finished and pending."""
    plan = CorpusPlan()
    named = [VocodeItem(name, entry.path, None) for entry, probe in zip(entries, probes)  # type: ignore[arg-type]
             for name in output_names(entry.path.stem, probe.rows)]
    colliding = {id(item) for item in named} - {id(item) for item in drop_name_collisions(named, on_error)}
    position = 0
    for entry, probe in zip(entries, probes):
        mine = named[position:position + probe.rows]
        position += probe.rows
        if any(id(item) in colliding for item in mine):
            continue
        (plan.skipped.append(entry) if probe.done else plan.pending.append((entry, probe)))
    return plan


def shard(pending: Sequence[tuple[ManifestEntry, Probe]], rank: int, world: int) -> list[tuple[ManifestEntry, Probe]]:
    """Rank ``rank``'s share: the entries sorted by length (longest first, then manifest order), every
    ``world``-th from the ``rank``-th. The shares are disjoint, cover everything and are balanced."""
    ordered = sorted(pending, key=lambda pair: (-pair[1].frames, pair[0].index))
    return ordered[rank::world]


def plan_batches(share: Sequence[tuple[ManifestEntry, Probe]], batch_size: int,
                 max_frames: int | None = None) -> list[list[tuple[ManifestEntry, Probe]]]:
    """Consecutive groups of a length-sorted share, of at most ``batch_size`` mels and ``max_frames``
    padded frames (mels x longest) each; an entry bigger than that goes alone."""
    groups: list[list[tuple[ManifestEntry, Probe]]] = []
    group: list[tuple[ManifestEntry, Probe]] = []
    for pair in share:
        candidate = group + [pair]
        rows = sum(p.rows for _, p in candidate)
        too_big = max_frames is not None and rows * max(p.frames for _, p in candidate) > max_frames
        if group and (rows > batch_size or too_big):
            groups.append(group)
            candidate = [pair]
        group = candidate
    if group:
        groups.append(group)
    return groups


def remove_stale_temporaries(out_dir: Path) -> int:
    """Delete the temporary wavs a killed run left in ``out_dir``; returns how many."""
    removed = 0
    if out_dir.is_dir():
        for path in out_dir.iterdir():
            if _TEMPORARY.match(path.name):
                path.unlink(missing_ok=True)
                removed += 1
    return removed


# -------------------------------------------------------------- the Lightning side
@dataclass
class RankRecord:
    """What one rank did: wavs written (and their seconds of audio), inputs skipped, failure lines."""

    written: int = 0
    audio_seconds: float = 0.0
    skipped: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)


def _keep(batch: Any) -> Any:
    return batch


class CorpusVocoder(pl.LightningModule):
    """The loaded model in Lightning's prediction loop: :meth:`predict_dataloader` plans this rank's
    batches, :meth:`predict_step` reads and vocodes one and returns ``(wav path, audio)`` pairs for
    :class:`WavWriter`."""

    def __init__(self, model: AudioDiffusion, entries: Sequence[ManifestEntry], out_dir: Path, *,
                 sampler: str, steps: int | None, seed: int, batch_size: int, max_batch_gb: float,
                 chunk_seconds: float | str | None, precision: str,
                 prepare: Callable[[AudioDiffusion], None] | None = None,
                 on_error: Callable[[InputError], None] | None = None,
                 manifest_errors: Sequence[InputError] = ()) -> None:
        super().__init__()
        self.model = model
        self.entries, self.out_dir = list(entries), Path(out_dir)
        self.sampling = {"sampler": sampler, "steps": steps, "seed": seed, "chunk_seconds": chunk_seconds,
                         "precision": precision}
        self.batch_size, self.max_batch_gb = batch_size, max_batch_gb
        self.prepare, self.report = prepare, on_error
        self.manifest_errors = list(manifest_errors)
        self.record = RankRecord()
        self.plan: CorpusPlan | None = None
        self.max_frames = 1

    def failed(self, error: InputError) -> None:
        self.record.failed.append({"file": display_path(error.path), "error": str(error)})
        if self.report is not None:
            self.report(error)

    def predict_dataloader(self) -> torch.utils.data.DataLoader:
        if self.prepare is not None:  # the engine, now that the model is on its device
            self.prepare(self.model)
        precision = self.sampling["precision"]
        self.max_frames = max(1, int(self.max_batch_gb * 2**30 / self.model.conditioning_bytes_per_frame(precision)))
        rank, world = self.trainer.global_rank, self.trainer.world_size
        if rank == 0:
            remove_stale_temporaries(self.out_dir)  # before the gather below: no rank writes yet
            for error in self.manifest_errors:  # bad manifest lines, reported once
                self.failed(error)
        probes: list[Probe | None] = [None] * len(self.entries)
        for i in range(rank, len(self.entries), world):
            probes[i] = probe_entry(self.entries[i].path, self.out_dir, self.model)
        if world > 1:
            gathered: list[Any] = [None] * world
            torch.distributed.all_gather_object(gathered, probes)
            probes = [gathered[i % world][i] for i in range(len(self.entries))]  # rank i % world probed entry i
        # every rank makes the same plan; rank 0 alone reports its failures and skips
        self.plan = make_plan(self.entries, probes, self.failed if rank == 0 else lambda error: None)
        if rank == 0:
            self.record.skipped = len(self.plan.skipped)
        groups = plan_batches(shard(self.plan.pending, rank, world), self.batch_size, self.max_frames)
        return torch.utils.data.DataLoader(groups, batch_size=None, collate_fn=_keep)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch  # file names; predict_step reads them

    def predict_step(self, batch: list[tuple[ManifestEntry, Probe]], batch_idx: int = 0) -> list[tuple[Path, torch.Tensor]]:
        offsets, items = [], []
        for entry, _ in batch:
            for row, item in enumerate(load_inputs([entry.path], self.model, self.failed)):
                if not (self.out_dir / f"{item.name}.wav").exists():  # a batched file cut short by a crash
                    offsets.append(seed_offset(entry.index, row, len(self.entries)))
                    items.append(item)
        outputs = []
        for group in batches(items, self.batch_size, self.max_frames):
            seeded = [(offsets[k], item) for k, item in group]
            waves = vocode_batch(self.model, seeded, callback=None, **self.sampling)
            outputs += [(self.out_dir / f"{item.name}.wav", wave) for (_, item), wave in zip(seeded, waves)]
        return outputs


class WavWriter(BasePredictionWriter):
    """Writes each batch's wavs atomically as soon as the batch is done."""

    def __init__(self) -> None:
        super().__init__(write_interval="batch")

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: CorpusVocoder, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        sample_rate = pl_module.model.sample_rate
        for target, wave in prediction:
            save_audio(target, wave, sample_rate)
            pl_module.record.written += 1
            pl_module.record.audio_seconds += wave.shape[-1] / sample_rate


# ------------------------------------------------------------------- the job
class CorpusInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the corpus job; ``written`` wavs (of this rank) are finished and kept, and a
    rerun of the same command skips them."""

    def __init__(self, written: int) -> None:
        super().__init__(f"interrupted after {written} file(s)")
        self.written = written


@dataclass
class CorpusSummary:
    """The whole run, as global rank 0 gathered it (every rank returns the same)."""

    inputs: int
    written: int
    skipped: int
    failures: list[dict[str, str]]
    audio_seconds: float
    seconds: float
    world_size: int
    missing_ranks: list[int] = field(default_factory=list)
    ranks: list[dict[str, Any]] = field(default_factory=list)  # per rank: written, skipped, failed, audio_seconds

    @property
    def failed(self) -> int:
        return len(self.failures)


def vocode_corpus(
    model: AudioDiffusion,
    manifest: str | Path,
    out_dir: str | Path,
    *,
    sampler: str,
    steps: int | None,
    seed: int,
    batch_size: int = 8,
    max_batch_gb: float = 2.0,
    chunk_seconds: float | str | None = "auto",
    precision: str = "fp32",
    accelerator: str = "cpu",
    devices: int = 1,
    num_nodes: int = 1,
    prepare: Callable[[AudioDiffusion], None] | None = None,
    progress: bool = True,
    on_error: Callable[[InputError], None] | None = None,
) -> CorpusSummary:
    """Vocode every input ``manifest`` lists into ``out_dir/<name>.wav`` on ``devices`` devices of
    each of ``num_nodes`` machines (DDP when more than one), skipping inputs whose wavs exist.

    Sampling options are those of :func:`audiodiff.jobs.vocode.vocode_files`; ``prepare(model)``
    runs on each rank once the model is on its device (the engine). A bad input goes to
    ``on_error`` on the rank that met it. Returns the summary that is also written to
    ``out_dir/vocode-summary.json`` (by global rank 0).
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    manifest_errors: list[InputError] = []
    entries = read_manifest(manifest, manifest_errors.append)
    module = CorpusVocoder(model, entries, out_dir, sampler=sampler, steps=steps, seed=seed, batch_size=batch_size,
                           max_batch_gb=max_batch_gb, chunk_seconds=chunk_seconds, precision=precision,
                           prepare=prepare, on_error=on_error, manifest_errors=manifest_errors)
    world = devices * num_nodes
    with _quiet_lightning():  # its start-up notes (GPU available, tips) say nothing about this job
        trainer = pl.Trainer(accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                             strategy="ddp" if world > 1 else "auto", logger=False, enable_checkpointing=False,
                             use_distributed_sampler=False, callbacks=[WavWriter()], enable_progress_bar=progress,
                             enable_model_summary=False)
    with warnings.catch_warnings(), _quiet_lightning():
        for noise in (".*does not have many workers.*", ".*infer the batch indices.*", ".*treespec.*"):
            warnings.filterwarnings("ignore", message=noise)
        _predict(trainer, module)
    rank = trainer.global_rank
    records = out_dir / RANKS_DIR
    write_json(records / f"rank-{rank}.json", vars(module.record))
    trainer.strategy.barrier()
    summary = None
    if rank == 0:
        summary = _gather(records, trainer.world_size, len(entries), time.perf_counter() - started)
        write_json(out_dir / SUMMARY_NAME, {**vars(summary), "failed": summary.failed})
    summary = trainer.strategy.broadcast(summary)
    trainer.strategy.barrier()  # every rank has it before any exits (and closes its connections)
    return summary


def _predict(trainer: pl.Trainer, module: CorpusVocoder) -> None:
    """``trainer.predict``, with Ctrl-C as :class:`CorpusInterrupted`.

    On Ctrl-C Lightning stops the loop, kills the other local ranks, ignores further Ctrl-C and
    calls ``sys.exit(1)``; the caller gets the interrupt instead (exit status 130 in the CLI), and
    Ctrl-C works again afterwards.
    """
    on_interrupt = signal.getsignal(signal.SIGINT)
    try:
        trainer.predict(module, return_predictions=False)
    except SystemExit:
        if not trainer.interrupted:
            raise
        raise CorpusInterrupted(module.record.written) from None
    finally:
        if on_interrupt is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, on_interrupt)


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's info lines at WARNING level only, for the block."""
    lightning_log = logging.getLogger("pytorch_lightning")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        lightning_log.setLevel(level)


def _gather(records: Path, world: int, inputs: int, seconds: float) -> CorpusSummary:
    """Sum the ranks' records (removing them); a rank without one is listed in ``missing_ranks``."""
    import json

    summary = CorpusSummary(inputs=inputs, written=0, skipped=0, failures=[], audio_seconds=0.0, seconds=seconds,
                            world_size=world)
    for rank in range(world):
        path = records / f"rank-{rank}.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            summary.missing_ranks.append(rank)
            continue
        summary.written += record["written"]
        summary.skipped += record["skipped"]
        summary.audio_seconds += record["audio_seconds"]
        summary.failures += record["failed"]
        summary.ranks.append({"rank": rank, "written": record["written"], "skipped": record["skipped"],
                              "failed": len(record["failed"]), "audio_seconds": record["audio_seconds"]})
        path.unlink()
    summary.failures.sort(key=lambda failure: (failure["file"], failure["error"]))
    try:
        records.rmdir()
    except OSError:
        pass
    return summary
