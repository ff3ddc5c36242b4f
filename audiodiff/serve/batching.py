"""Dynamic batching: work that arrives close together is vocoded as one batch on the device.

Work is a :class:`Job`: a plain request's whole mel, or one emission of an open stream (a window
of its mel, :class:`~audiodiff.pipeline.streaming.Emission`). The first job of a batch waits up to
``batch_window_ms`` for others; those with the same sampler and step count are vocoded together,
up to ``max_batch`` rows and ``batch_frames`` padded frames, whatever their lengths and whichever
client they come from, by one ``AudioDiffusion.vocode_span`` call with each row's seed, start
frame and (for a row that ends its utterance) true length. So each request's audio is what
``model.vocode(mel, seed=seed)`` gives for that mel alone, and each stream's what
``model.stream`` gives alone (up to float rounding: a batched matrix product may round
differently, ~1e-6).

Batches run one at a time in the device's worker thread, so the event loop keeps accepting
requests meanwhile; nothing else touches the model.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from audiodiff.pipeline.streaming import Emission
from audiodiff.serve.inputs import Options


class Device:
    """A model on its device, and the one thread that runs its batches."""

    def __init__(self, model, precision: str = "auto") -> None:
        self.model = model
        self.precision = precision
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audiodiff-batch")

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class Job:
    """Work waiting for its batch: mel frames ``[start, start + frames)`` of one utterance.

    A plain request is its whole mel (``start`` 0, ``final``); a stream's emission is a window,
    ``final`` only for the stream's last one. ``final``: the mel ends where the utterance ends, so
    a padded batch recomputes its tail with that end.
    """

    mel: Tensor  # (1, n_mels, frames), checked
    options: Options
    future: asyncio.Future = field(repr=False)
    start: int = 0
    final: bool = True
    stream: bool = False

    @property
    def frames(self) -> int:
        return int(self.mel.shape[-1])


@dataclass
class BatchStats:
    """What the batcher has done, for ``GET /info`` (and the tests)."""

    requests: int = 0  # plain /vocode requests
    stream_windows: int = 0  # emissions of streams
    batches: int = 0
    largest_batch: int = 0
    batched_requests: int = 0  # rows (requests or windows) that shared their batch with another
    mixed_batches: int = 0  # batches with rows of two or more streams, or of a stream and a request
    busy_seconds: float = 0.0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches

    def record(self, batch: list[Job], seconds: float) -> None:
        size = len(batch)
        windows = sum(job.stream for job in batch)
        self.requests += size - windows
        self.stream_windows += windows
        self.batches += 1
        self.largest_batch = max(self.largest_batch, size)
        self.batched_requests += size if size > 1 else 0
        self.mixed_batches += windows > 1 or 0 < windows < size
        self.busy_seconds += seconds
        self.sizes[size] = self.sizes.get(size, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "stream_windows": self.stream_windows, "batches": self.batches,
                "largest_batch": self.largest_batch, "batched_requests": self.batched_requests,
                "mixed_batches": self.mixed_batches, "busy_seconds": round(self.busy_seconds, 3),
                "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())}}


def split_batches(jobs: list[Job], max_batch: int, batch_frames: int) -> list[list[Job]]:
    """``jobs`` (in arrival order) -> batches that can each be vocoded as one.

    Jobs share a batch when their sampler and steps match; a batch holds at most ``max_batch``
    jobs and ``batch_frames`` padded frames (rows x longest). A job longer than ``batch_frames``
    goes alone.
    """
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.options.batch_key, []).append(job)
    batches = []
    for group in groups.values():
        current: list[Job] = []
        for job in group:
            longest = max([job.frames, *(j.frames for j in current)])
            if current and (len(current) >= max_batch or longest * (len(current) + 1) > batch_frames):
                batches.append(current)
                current = []
            current.append(job)
        batches.append(current)
    return batches


def vocode_batch(device: Device, jobs: list[Job]) -> list[Tensor]:
    """Vocode ``jobs`` (one sampler, steps) as one padded batch; each row's audio ``(frames * hop,)``,
    as the row alone gives it (a stream window's: on the frames it gives out)."""
    model = device.model
    options = jobs[0].options
    longest = max(job.frames for job in jobs)
    mel = torch.cat([torch.nn.functional.pad(job.mel, (0, longest - job.frames)) for job in jobs])
    lengths = [job.frames if job.final else longest for job in jobs]  # a window's right edge needs no fix
    audio = model.vocode_span(mel, [job.start for job in jobs], sampler=options.sampler, steps=options.steps,
                              seed=[job.options.seed for job in jobs], precision=device.precision,
                              lengths=lengths if min(lengths) < longest else None)
    audio = audio.float().cpu()
    return [audio[k, : job.frames * model.hop_length] for k, job in enumerate(jobs)]


class Batcher:
    """Collects plain requests and stream windows into batches and runs them, one batch at a time,
    on the device thread."""

    def __init__(self, device: Device, max_batch: int, window_s: float, batch_frames: int) -> None:
        self.device = device
        self.max_batch = max_batch
        self.window_s = window_s
        self.batch_frames = batch_frames
        self.stats = BatchStats()
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audiodiff-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))

    async def vocode(self, mel: Tensor, options: Options) -> tuple[Tensor, int]:
        """The audio ``(frames * hop,)`` of ``mel`` ``(1, n_mels, frames)``, vocoded in whichever
        batch it joins, and that batch's size."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(Job(mel, options, future))
        return await future

    async def vocode_emission(self, emission: Emission, options: Options) -> Tensor:
        """The audio ``((stop - first) * hop,)`` a stream gives out for ``emission`` (one row),
        vocoded in whichever batch its window joins."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(Job(emission.window, options, future, emission.start, emission.final, stream=True))
        audio, _ = await future
        return emission.cut(audio[None], self.device.model.hop_length)[0]

    async def _collect(self) -> list[Job]:
        """The next batch's candidates: the first waiting job, and those arriving within the window."""
        jobs = [await self._queue.get()]
        deadline = time.monotonic() + self.window_s
        while len(jobs) < self.max_batch:
            if not self._queue.empty():
                jobs.append(self._queue.get_nowait())
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [job for job in await self._collect() if not job.future.done()]  # not given up
            for batch in split_batches(jobs, self.max_batch, self.batch_frames):
                started = time.perf_counter()
                try:
                    audio = await loop.run_in_executor(self.device.executor, vocode_batch, self.device, batch)
                except Exception as error:  # noqa: BLE001 - reported to each request of the batch
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(error)
                    continue
                self.stats.record(batch, time.perf_counter() - started)
                for job, row in zip(batch, audio):
                    if not job.future.done():
                        job.future.set_result((row, len(batch)))
