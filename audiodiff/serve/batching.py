"""Dynamic batching: plain requests that arrive close together are vocoded as one batch.

The first request of a batch waits up to ``batch_window_ms`` for others; those that can share a
batch (the same sampler and step count; until the model can vocode padded batches exactly, the
same length too) are vocoded together, up to ``max_batch`` rows and ``batch_frames`` padded
frames, in a worker thread, so the event loop keeps accepting requests meanwhile. Each row has its
own seed, so each request's audio is the audio ``model.vocode(mel, seed=seed)`` gives for that mel
alone (up to float rounding: a batched matrix product may round differently, ~1e-6).

All device work (these batches and the streams) runs under one lock, :attr:`Device.lock`: one
worker at a time per device.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from audiodiff.serve.inputs import Options


class Device:
    """A model on its device, the lock its workers take, and the thread that runs batches."""

    def __init__(self, model, precision: str = "auto") -> None:
        self.model = model
        self.precision = precision
        self.lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audiodiff-batch")
        #: ``vocode_checked(mel, lengths=...)``: padded rows come out as each row alone.
        self.exact_padding = "lengths" in inspect.signature(model.vocode_checked).parameters

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class Job:
    """One plain request waiting for its batch."""

    mel: Tensor  # (1, n_mels, frames), checked
    options: Options
    future: asyncio.Future = field(repr=False)

    @property
    def frames(self) -> int:
        return int(self.mel.shape[-1])


@dataclass
class BatchStats:
    """What the batcher has done, for ``GET /info`` (and the tests)."""

    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    batched_requests: int = 0  # requests that shared their batch with at least one other
    busy_seconds: float = 0.0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches

    def record(self, size: int, seconds: float) -> None:
        self.requests += size
        self.batches += 1
        self.largest_batch = max(self.largest_batch, size)
        self.batched_requests += size if size > 1 else 0
        self.busy_seconds += seconds
        self.sizes[size] = self.sizes.get(size, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "batches": self.batches, "largest_batch": self.largest_batch,
                "batched_requests": self.batched_requests, "busy_seconds": round(self.busy_seconds, 3),
                "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())}}


def split_batches(jobs: list[Job], max_batch: int, batch_frames: int, exact_padding: bool) -> list[list[Job]]:
    """``jobs`` (in arrival order) -> batches that can each be vocoded as one.

    Jobs share a batch when their sampler and steps match (and, without exact padding, their
    length); a batch holds at most ``max_batch`` jobs and ``batch_frames`` padded frames (rows x
    longest). A job longer than ``batch_frames`` goes alone.
    """
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        key = job.options.batch_key if exact_padding else (*job.options.batch_key, job.frames)
        groups.setdefault(key, []).append(job)
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
    """Vocode ``jobs`` (one sampler, steps) as one padded batch; each row's audio trimmed to its length."""
    model = device.model
    options = jobs[0].options
    lengths = [job.frames for job in jobs]
    longest = max(lengths)
    mel = torch.cat([torch.nn.functional.pad(job.mel, (0, longest - job.frames)) for job in jobs])
    kwargs: dict[str, Any] = {"lengths": lengths} if device.exact_padding and len(set(lengths)) > 1 else {}
    with device.lock:
        audio = model.vocode_checked(mel, sampler=options.sampler, steps=options.steps,
                                     seed=[job.options.seed for job in jobs], precision=device.precision, **kwargs)
    audio = audio.float().cpu()
    return [audio[k, : n * model.hop_length] for k, n in enumerate(lengths)]


class Batcher:
    """Collects plain requests into batches and runs them, one batch at a time, on the device thread."""

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
        """The audio ``(frames * hop,)`` of ``mel``, vocoded in whichever batch it joins, and that
        batch's size."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(Job(mel, options, future))
        return await future

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
            for batch in split_batches(jobs, self.max_batch, self.batch_frames, self.device.exact_padding):
                started = time.perf_counter()
                try:
                    audio = await loop.run_in_executor(self.device.executor, vocode_batch, self.device, batch)
                except Exception as error:  # noqa: BLE001 - reported to each request of the batch
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(error)
                    continue
                self.stats.record(len(batch), time.perf_counter() - started)
                for job, row in zip(batch, audio):
                    if not job.future.done():
                        job.future.set_result((row, len(batch)))
