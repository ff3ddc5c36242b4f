"""One open stream: mel frames in from the event loop, audio chunks out of ``AudioDiffusion.stream``.

The model's stream is a blocking generator, so each open stream runs it in a thread of its own.
That thread holds the device lock (:attr:`audiodiff.serve.batching.Device.lock`) only while the
model computes: it lets go while it waits for more frames from the client and while it hands a
chunk to the event loop, so streams and batches take turns on the device and a slow client holds
nothing. Cancelling (a client that went away, a bad frame) closes the model's generator and ends the
thread; ``on_closed`` then runs on the event loop, which is where the server frees the stream's slot.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, Callable, Iterator

from torch import Tensor

from audiodiff.serve.batching import Device
from audiodiff.serve.inputs import Options

#: Items of the input queue besides mel frames: the end of the body, and the stream was cancelled.
END, CANCEL = "end", "cancel"


class StreamCancelled(Exception):
    """Raised inside the model's generator (from its frame source) when the stream is cancelled."""


def has_stream_api(model) -> bool:
    """Whether ``model`` can vocode a stream of frames (``AudioDiffusion.stream``)."""
    return callable(getattr(model, "stream", None))


def lookahead_frames(model, sampler: str = "fast", steps: int | None = None) -> int | None:
    """Mel frames the stream must have read past a sample before it can give that sample out, or
    ``None`` when the model cannot stream."""
    if not has_stream_api(model):
        return None
    lookahead = getattr(model, "stream_lookahead", None)
    return int(lookahead(sampler, steps)) if callable(lookahead) else None


def model_stream(device: Device, frames: Iterator[Tensor], options: Options) -> Iterator[Tensor]:
    """``AudioDiffusion.stream`` over ``frames`` (``(n_mels, k)`` each) with the request's options."""
    return device.model.stream(frames, sampler=options.sampler, steps=options.steps, seed=options.seed,
                               precision=device.precision)


class StreamSession:
    """The thread that vocodes one stream, and the queues in and out of it.

    ``outputs`` (an :class:`asyncio.Queue`) receives audio chunks ``(samples,)``, then either an
    exception or :data:`END`.
    """

    def __init__(self, device: Device, options: Options, on_closed: Callable[[], None]) -> None:
        self.device = device
        self.options = options
        self.loop = asyncio.get_running_loop()
        self.inputs: queue.Queue[Any] = queue.Queue()
        self.outputs: asyncio.Queue[Any] = asyncio.Queue()
        self.generator_closed = False
        self._on_closed = on_closed
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._work, name="audiodiff-stream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def feed(self, frames: Tensor) -> None:
        self.inputs.put(frames)

    def end(self) -> None:
        """The request body is complete."""
        self.inputs.put(END)

    def cancel(self) -> None:
        """Stop vocoding: the model's generator is closed at its next step (idempotent)."""
        self._cancelled.set()
        self.inputs.put(CANCEL)

    def _frames(self) -> Iterator[Tensor]:
        """The frames the model reads; waits for them without the device lock."""
        lock = self.device.lock
        while True:
            lock.release()
            try:
                item = self.inputs.get()
            finally:
                lock.acquire()
            if item is CANCEL or self._cancelled.is_set():
                raise StreamCancelled
            if item is END:
                return
            yield item

    def _put(self, item: Any) -> None:
        self._call_soon(self.outputs.put_nowait, item)

    def _call_soon(self, function: Callable, *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # the event loop is closed: the server has stopped
            pass

    def _work(self) -> None:
        lock = self.device.lock
        lock.acquire()
        try:
            chunks = model_stream(self.device, self._frames(), self.options)
            try:
                for chunk in chunks:
                    lock.release()
                    try:
                        self._put(chunk.detach().float().cpu().reshape(-1))
                    finally:
                        lock.acquire()
                    if self._cancelled.is_set():
                        break
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
                self.generator_closed = True
            self._put(END)
        except StreamCancelled:
            self._put(END)
        except BaseException as error:  # noqa: BLE001 - handed to the request, which reports it
            self._put(error)
        finally:
            lock.release()
            self._call_soon(self._on_closed)
