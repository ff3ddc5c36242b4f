"""The HTTP server: ``POST /vocode``, ``POST /stream``, ``GET /info``, ``GET /health``.

Built on aiohttp: one well-kept asyncio package that is the server itself (no separate ASGI
server to choose, pin and run), reads request bodies and writes response bodies as streams (what
``/stream`` needs in both directions at once) and ships a test client. The event loop only parses
and answers requests; all vocoding, of plain requests and of the streams' windows alike, runs in
batches on the device's worker thread (:mod:`.batching`), so a request is accepted and a bad one
refused while the device is busy.

Every refused request gets a 4xx whose body is one line saying what is wrong
(:class:`~audiodiff.serve.inputs.RequestError`); the server goes on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from audiodiff.diffusion.samplers import SAMPLERS
from audiodiff.io.audio import one_line
from audiodiff.io.mel_files import InputError
from audiodiff.serve.batching import Batcher, Device
from audiodiff.serve.inputs import (FrameReader, Limits, RequestError, check_content_length, encode_chunk,
                                    parse_options, read_npy_mel, too_long, wav_bytes)
from audiodiff.serve.streaming import StreamSession

log = logging.getLogger("audiodiff.serve")

#: Bytes read from a request body at a time.
READ_BYTES = 64 * 1024


@dataclass
class ServerState:
    """What the handlers share: the device, the batcher, the limits and the open streams."""

    device: Device
    limits: Limits
    name: str
    batcher: Batcher
    max_body_bytes: int
    open_streams: int = 0
    streams: dict[str, int] = field(default_factory=lambda: {"opened": 0, "closed": 0, "refused": 0})

    @property
    def model(self):
        return self.device.model

    @property
    def n_mels(self) -> int:
        return self.model.config.denoiser.n_mels

    @property
    def max_frames(self) -> int:
        return self.limits.max_frames(self.model.sample_rate, self.model.hop_length)


STATE = web.AppKey("audiodiff_state", ServerState)


def make_app(model, limits: Limits | None = None, *, precision: str = "auto", name: str = "model") -> web.Application:
    """The server's application for ``model`` (a vocoder on its device, engine chosen)."""
    if model.mel_frontend is None or not model.network.conditional:
        raise ValueError(f"{name}: a model without mel conditioning cannot vocode")
    limits = limits or Limits()
    device = Device(model, precision)
    batcher = Batcher(device, limits.max_batch, limits.batch_window_ms / 1000,
                      limits.batch_frames(model.sample_rate, model.hop_length))
    max_body = limits.max_body_bytes(model.sample_rate, model.hop_length, model.config.denoiser.n_mels)
    app = web.Application(middlewares=[_one_line_errors], client_max_size=max_body)
    app[STATE] = ServerState(device=device, limits=limits, name=name, batcher=batcher, max_body_bytes=max_body)
    app.router.add_get("/health", health)
    app.router.add_get("/info", info)
    app.router.add_post("/vocode", vocode)
    app.router.add_post("/stream", stream)
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    return app


async def _start(app: web.Application) -> None:
    app[STATE].batcher.start()


async def _stop(app: web.Application) -> None:
    state = app[STATE]
    await state.batcher.stop()
    state.device.close()


def _refusal(status: int, message: str) -> web.Response:
    response = web.Response(status=status, text=one_line(message) + "\n")
    response.force_close()  # the rest of a refused body is not read
    return response


@web.middleware
async def _one_line_errors(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as error:
        log.info("%s %s refused (%d): %s", request.method, request.path, error.status, error.message)
        return _refusal(error.status, error.message)
    except web.HTTPException as error:  # 404, 405, ...: their reason on one line
        if error.status >= 400 and not error.text.endswith("\n"):
            error.text = one_line(error.text) + "\n"
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as error:  # noqa: BLE001 - one line for the client, the traceback in the log
        log.exception("%s %s failed", request.method, request.path)
        return web.Response(status=500, text=f"internal error: {one_line(error)}\n")


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def info(request: web.Request) -> web.Response:
    state = request.app[STATE]
    model = state.model
    samplers = [*SAMPLERS, *model.config.schedules]
    return web.json_response({
        "model": state.name,
        "sample_rate": model.sample_rate,
        "hop_length": model.hop_length,
        "n_mels": state.n_mels,
        "device": str(model.device),
        "precision": state.device.precision,
        "samplers": samplers,
        "lookahead_frames": {name: model.stream_lookahead(name) for name in samplers},
        "limits": {**state.limits.to_dict(), "max_frames": state.max_frames,
                   "max_body_bytes": state.max_body_bytes},
        "stats": {**state.batcher.stats.to_dict(), "open_streams": state.open_streams,
                  "streams": dict(state.streams)},
    })


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refused (413) as soon as it is over ``limit`` bytes."""
    check_content_length(request.content_length, limit)
    parts, size = [], 0
    async for part in request.content.iter_chunked(READ_BYTES):
        size += len(part)
        if size > limit:
            raise RequestError(413, f"request body is over {limit} bytes, the most this server takes "
                                    "(--max-seconds of mel as float64, plus the .npy header)")
        parts.append(part)
    return b"".join(parts)


async def vocode(request: web.Request) -> web.Response:
    """``POST /vocode``: a ``.npy`` mel -> a WAV file (16-bit PCM, or 32-bit float with ``format=f32``)."""
    state = request.app[STATE]
    model = state.model
    options = parse_options(request.query, model, default_format="pcm16")
    body = await _read_body(request, state.max_body_bytes)
    mel = read_npy_mel(body, state.n_mels)
    if mel.shape[-1] > state.max_frames:
        raise too_long(mel.shape[-1], state.max_frames, model.hop_length, model.sample_rate,
                       state.limits.max_seconds)
    audio, batch_size = await state.batcher.vocode(mel, options)
    return web.Response(body=wav_bytes(audio, model.sample_rate, options.format), content_type="audio/wav",
                        headers={"X-Batch-Size": str(batch_size)})


async def stream(request: web.Request) -> web.StreamResponse:
    """``POST /stream``: raw little-endian float32 mel frames in, raw audio chunks out as they are ready.

    A bad request, or a frame found bad before any audio went out, is a 4xx line; after that the
    response is cut off (no final chunk), which a client sees as an incomplete body.
    """
    state = request.app[STATE]
    options = parse_options(request.query, state.model, default_format="f32")
    reader = FrameReader(state.n_mels, state.max_frames)
    check_content_length(request.content_length, state.max_frames * reader.frame_bytes,
                         "--max-seconds of float32 frames")
    if state.open_streams >= state.limits.max_streams:
        state.streams["refused"] += 1
        raise RequestError(429, f"{state.open_streams} streams are open, the most this server serves at once "
                                "(--max-streams); try again shortly")
    state.open_streams += 1
    state.streams["opened"] += 1
    session = StreamSession(state.batcher, options)
    feeding = asyncio.get_running_loop().create_task(_feed(request, reader, session))
    try:
        return await _relay(request, session)
    finally:  # also when the client went away and aiohttp cancelled this handler
        feeding.cancel()
        state.open_streams -= 1
        state.streams["closed"] += 1


async def _relay(request: web.Request, session: StreamSession) -> web.StreamResponse:
    """Write ``session``'s audio chunks to the response as they come; the response begins with the first."""
    response: web.StreamResponse | None = None
    options = session.options
    try:
        async with contextlib.aclosing(session.chunks()) as chunks:
            async for chunk in chunks:
                if response is None:
                    response = web.StreamResponse(headers={
                        "Content-Type": "application/octet-stream", "X-Audio-Format": options.format,
                        "X-Sample-Rate": str(request.app[STATE].model.sample_rate)})
                    response.enable_chunked_encoding()
                    await response.prepare(request)
                await response.write(encode_chunk(chunk, options.format))
    except (RequestError, InputError) as error:
        if response is None:
            raise _as_request_error(error) from None
        log.warning("stream cut off after its audio began: %s", one_line(error))
        response.force_close()
        if request.transport is not None:
            request.transport.close()
        return response
    if response is None:  # nothing came out (the reader refuses an empty body), still a valid reply
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
    await response.write_eof()
    return response


def _as_request_error(error: Exception) -> RequestError:
    if isinstance(error, RequestError):
        return error
    return RequestError(400, error.reason if isinstance(error, InputError) else one_line(error))


async def _feed(request: web.Request, reader: FrameReader, session: StreamSession) -> None:
    """Read the body into ``session`` frame by frame; a bad frame, a client silent for
    ``stream_idle_seconds`` or a lost client ends the stream."""
    idle = request.app[STATE].limits.stream_idle_seconds
    try:
        while True:
            try:
                part = await asyncio.wait_for(request.content.readany(), idle)
            except asyncio.TimeoutError:
                raise RequestError(408, f"no mel frames came for {idle:g} s (--stream-idle-seconds); "
                                        "the stream was closed") from None
            if not part:
                break
            frames = reader.feed(part)
            if frames is not None:
                session.feed(frames)
        reader.finish()
        session.end()
    except RequestError as error:
        session.fail(error)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - aiohttp's payload and connection errors when the client goes away
        session.fail(RequestError(400, f"the request body could not be read ({one_line(error)})"))


class BackgroundServer:
    """The server on its own event loop in a background thread (tests, embedding): ``with
    BackgroundServer(app) as server: server.url``. ``port=0`` binds a free port; :attr:`port` is it."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app, self.host, self.port = app, host, port
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="audiodiff-serve", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def run(self, coroutine, timeout: float = 30) -> Any:
        """Run ``coroutine`` on the server's event loop (where its batcher lives) and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=timeout)

    def __enter__(self) -> "BackgroundServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _start(self) -> None:
        self._runner, self.port = await start_site(self.app, self.host, self.port)


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving ``app`` on ``host:port``; returns the runner and the bound port (``port=0``: a free one)."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, runner.addresses[0][1]


def serve_forever(app: web.Application, host: str, port: int, on_bound=None) -> None:
    """Serve ``app`` until interrupted (Ctrl-C, SIGTERM); ``on_bound(port)`` once it is listening."""

    async def main() -> None:
        runner, bound = await start_site(app, host, port)
        stop = asyncio.Event()
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        except (NotImplementedError, RuntimeError):  # no signal handlers here (Windows, a non-main thread)
            pass
        if on_bound is not None:
            on_bound(bound)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
