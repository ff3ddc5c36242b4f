"""One open stream: mel frames in from the request body, audio chunks out as soon as they are final.

The stream's bookkeeping is :class:`~audiodiff.pipeline.streaming.StreamCursor` (which frames are
final, and the window of mel each emission vocodes). Each emission goes to the server's batcher
(:mod:`.batching`), where it shares a batch with other streams' windows and with plain requests.
So no stream holds the device: a client that sends slowly costs nothing while it sends, and
``N`` clients streaming at once cost one batched network call per sampler step, not ``N``.

Frames that arrive while an emission is being vocoded go into the next emission together, so a
stream that fell behind catches up in fewer, bigger emissions. Everything here runs on the event
loop; a client that goes away cancels the request's task, and with it the wait for its window
(the batcher skips a window nobody waits for).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import torch
from torch import Tensor

from audiodiff.pipeline.streaming import Emission, StreamCursor, default_min_block_frames
from audiodiff.serve.batching import Batcher
from audiodiff.serve.inputs import Options

#: Queued after the last frames: the request body is complete.
END = "end"


class StreamSession:
    """The frames one request has sent (queued by the body reader) and the audio they give.

    ``min_block_frames``: frames an emission holds at least (default: the lookahead, as
    ``AudioDiffusion.stream``).
    """

    def __init__(self, batcher: Batcher, options: Options, min_block_frames: int | None = None) -> None:
        model = batcher.device.model
        lookahead = model.stream_lookahead(options.sampler, options.steps)
        min_block = default_min_block_frames(lookahead) if min_block_frames is None else min_block_frames
        self.batcher = batcher
        self.options = options
        self.cursor = StreamCursor(model.config.denoiser.n_mels, lookahead, min_block)
        self.inputs: asyncio.Queue[Any] = asyncio.Queue()

    def feed(self, frames: Tensor) -> None:
        """Frames ``(n_mels, k)`` read from the body."""
        self.inputs.put_nowait(frames)

    def end(self) -> None:
        """The request body is complete."""
        self.inputs.put_nowait(END)

    def fail(self, error: Exception) -> None:
        """The body could not be read (a bad frame, a silent client): :meth:`chunks` raises ``error``."""
        self.inputs.put_nowait(error)

    async def chunks(self) -> AsyncIterator[Tensor]:
        """Audio ``(samples,)`` chunks in order, each as soon as its batch is vocoded; raises the
        body reader's error, or a bad block's ``InputError``."""
        while True:
            items = await self._available()
            for item in items:
                if isinstance(item, Exception):
                    raise item
            blocks = [item for item in items if isinstance(item, Tensor)]
            if blocks:
                emission = self.cursor.push(torch.cat(blocks, dim=-1))
                if emission is not None:
                    yield await self._vocode(emission)
            if any(item is END for item in items):
                emission = self.cursor.finish()
                if emission is not None:
                    yield await self._vocode(emission)
                return

    async def _available(self) -> list[Any]:
        """Everything queued: waits for the first item, then takes what else has come."""
        items = [await self.inputs.get()]
        while not self.inputs.empty():
            items.append(self.inputs.get_nowait())
        return items

    async def _vocode(self, emission: Emission) -> Tensor:
        return await self.batcher.vocode_emission(emission, self.options)
