"""``audiodiff serve``: the HTTP server on a free loopback port, driven by concurrent clients.

The server runs in a background thread (``BackgroundServer``) with the tiny test model loaded from
its file; the clients are ``http.client`` in threads, raw sockets (a client that goes away
mid-stream) and aiohttp's client (a stream sent and received at once).
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("aiohttp")

from audiodiff.pipeline import load_model  # noqa: E402
from audiodiff.serve import BackgroundServer, Limits, make_app  # noqa: E402
from audiodiff.serve.app import STATE  # noqa: E402
from audiodiff.serve.inputs import parse_options, pcm16, wav_bytes  # noqa: E402
from conftest import make_tiny_model  # noqa: E402

N_MELS = 80
LIMITS = Limits(max_seconds=1.0, max_batch=4, batch_window_ms=150, max_streams=2, stream_idle_seconds=1.0)


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def mel_of(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(-4, 1.5, (N_MELS, frames)).astype(np.float32)


def request(server, method: str, path: str, body: bytes | None = None, headers=None) -> tuple[int, bytes, dict]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def info(server) -> dict:
    status, body, _ = request(server, "GET", "/info")
    assert status == 200
    return json.loads(body)


def read_wav(body: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    audio, rate = sf.read(io.BytesIO(body), dtype="float32")
    return audio, rate


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


#: The device under test (``AUDIODIFF_TEST_DEVICE``, as conftest's ``device`` fixture reads it).
DEVICE = os.environ.get("AUDIODIFF_TEST_DEVICE", "cpu")
#: A row vocoded in a batch against the same row alone: float rounding (~4e-7 on a CPU; a GPU
#: picks kernels by batch shape, and cuDNN may use TF32).
BATCH_ATOL = 1e-5 if DEVICE == "cpu" else 2e-3


def vocode_at_once(server, mels: list[np.ndarray], seeds: list[int]) -> list[tuple[int, bytes, dict]]:
    """``POST /vocode`` of each mel with its seed (float32 WAV), all from their own threads at
    once; each request's ``(status, body, headers)``."""
    results: list = [None] * len(mels)

    def client(k: int) -> None:
        results[k] = request(server, "POST", f"/vocode?seed={seeds[k]}&format=f32", npy(mels[k]))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(len(mels))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def offline(model, mel: np.ndarray, seed: int) -> np.ndarray:
    """``model.vocode(mel, seed=seed)``, as the server runs it (fp32)."""
    return model.vocode(torch.from_numpy(mel), seed=seed, precision="fp32")[0].float().cpu().numpy()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("AUDIODIFF_TEST_DEVICE asks for CUDA but none is available")
    torch.set_num_threads(1)
    path = make_tiny_model().save(tmp_path_factory.mktemp("serve") / "tiny.safetensors")
    return load_model(path, device=DEVICE)  # as `audiodiff serve` runs it: the engine auto chooses by device


@pytest.fixture(scope="module")
def server(model):
    with BackgroundServer(make_app(model, LIMITS, precision="fp32", name="tiny")) as running:
        yield running


class FakeSpan:
    """A stand-in for ``AudioDiffusion.vocode_span`` (the server's plumbing, not the vocoder, is
    under test): each frame's audio is its first mel bin repeated ``hop`` times, so any window of
    a mel gives exactly that mel's audio on its frames. Records each call's rows and start frames."""

    def __init__(self, hop: int) -> None:
        self.hop = hop
        self.calls: list[list[int]] = []

    def __call__(self, mel, start_frame=0, **options):
        rows = mel.shape[0]
        self.calls.append([start_frame] * rows if isinstance(start_frame, int) else list(start_frame))
        return mel[:, 0].repeat_interleave(self.hop, dim=-1)


@pytest.fixture(scope="module")
def fake_server():
    model = make_tiny_model()
    model.vocode_span = FakeSpan(model.hop_length)
    with BackgroundServer(make_app(model, LIMITS, name="fake")) as running:
        yield running, model.vocode_span


# --------------------------------------------------------------------------------- plain /vocode


@pytest.mark.slow
def test_vocode_equals_offline_vocode(server, model):
    mel = mel_of(20)
    status, body, headers = request(server, "POST", "/vocode?seed=7&format=f32", npy(mel))
    assert status == 200 and headers["Content-Type"] == "audio/wav"
    audio, rate = read_wav(body)
    alone = offline(model, mel, 7)
    assert rate == model.sample_rate and audio.shape == alone.shape == (20 * model.hop_length,)
    np.testing.assert_array_equal(audio, alone)  # alone in its batch: the same computation

    status, body, _ = request(server, "POST", "/vocode?seed=7", npy(mel.T.copy()))  # (frames, n_mels), 16-bit
    assert status == 200
    assert body == wav_bytes(torch.from_numpy(alone), model.sample_rate, "pcm16")


@pytest.mark.slow
def test_concurrent_requests_are_batched_and_each_equals_its_offline_vocode(server, model):
    mels = [mel_of(16, seed=k) for k in range(4)]
    seeds = [3, 11, 0, 5]
    before = info(server)["stats"]
    results = vocode_at_once(server, mels, seeds)
    stats = info(server)["stats"]
    assert stats["requests"] - before["requests"] == 4
    assert stats["batches"] - before["batches"] < 4  # some shared a batch
    assert stats["largest_batch"] >= 2
    for k, (status, body, headers) in enumerate(results):
        assert status == 200
        audio, _ = read_wav(body)
        alone = offline(model, mels[k], seeds[k])
        np.testing.assert_allclose(audio, alone, rtol=0, atol=BATCH_ATOL)  # a batched product may round differently
    assert max(int(headers["X-Batch-Size"]) for _, _, headers in results) >= 2


@pytest.mark.slow
def test_padded_batch_of_different_lengths_equals_each_alone(server, model):
    mels, seeds = [mel_of(n, seed=n) for n in (9, 30, 17)], [1, 2, 3]
    results = vocode_at_once(server, mels, seeds)
    assert max(int(headers["X-Batch-Size"]) for _, _, headers in results) >= 2
    for k, (status, body, _) in enumerate(results):
        assert status == 200
        alone = offline(model, mels[k], seeds[k])
        np.testing.assert_allclose(read_wav(body)[0], alone, rtol=0, atol=BATCH_ATOL)


BAD_BODIES = {
    "not a .npy": (b"RIFF....WAVEfmt ", 400, "not a .npy file"),
    "pickled": (npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), 400, "could run code"),
    "wrong n_mels": (npy(np.zeros((64, 10), np.float32)), 400, "80 mel bins"),
    "NaN": (npy(np.full((N_MELS, 10), np.nan, np.float32)), 400, "NaN or Inf"),
    "Inf": (npy(np.full((N_MELS, 10), np.inf, np.float32)), 400, "NaN or Inf"),
    "integer dtype": (npy(np.zeros((N_MELS, 10), np.int16)), 400, "integer"),
    "zero frames": (npy(np.zeros((N_MELS, 0), np.float32)), 400, "no frames"),
    "a batch of two": (npy(np.zeros((2, N_MELS, 10), np.float32)), 400, "one mel per request"),
    "too long": (npy(np.zeros((N_MELS, 200), np.float32)), 413, "--max-seconds"),
    "truncated": (npy(np.zeros((N_MELS, 10), np.float32))[:-40], 400, "cannot read the .npy"),
}


@pytest.mark.parametrize("case", BAD_BODIES)
def test_a_bad_body_gets_one_4xx_line(server, case):
    body, status, words = BAD_BODIES[case]
    got, text, _ = request(server, "POST", "/vocode", body)
    assert got == status
    line = text.decode()
    assert words in line and line.endswith("\n") and line.count("\n") == 1


@pytest.mark.parametrize(("query", "words"), [
    ("sampler=nope", "unknown sampler"), ("steps=x", "steps must be an integer"), ("seed=-1", "seed must be"),
    ("format=mp3", "unknown format"), ("colour=red", "unknown query parameter"), ("sampler=fast&steps=3", "fast"),
])
def test_bad_query_options_get_one_400_line(server, query, words):
    status, text, _ = request(server, "POST", f"/vocode?{query}", npy(mel_of(5)))
    assert status == 400 and words in text.decode() and text.decode().count("\n") == 1


def test_a_body_over_the_byte_limit_is_refused_while_reading(server):
    limit = info(server)["limits"]["max_body_bytes"]
    status, text, _ = request(server, "POST", "/vocode", b"\0" * (limit + 1))  # refused from Content-Length
    assert status == 413 and b"at most" in text

    def chunks():  # no Content-Length: refused once the bytes read pass the limit, not at the end
        for _ in range(limit // 65536 + 50):
            yield b"\0" * 65536

    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        try:
            connection.request("POST", "/vocode", body=chunks(), encode_chunked=True)
        except (BrokenPipeError, ConnectionResetError):  # the server answered and closed while we sent
            pass
        response = connection.getresponse()
        assert response.status == 413 and b"over" in response.read()
    finally:
        connection.close()


@pytest.mark.slow
def test_the_server_keeps_serving_after_bad_requests(server, model):
    for body, _, _ in BAD_BODIES.values():
        request(server, "POST", "/vocode", body)
    mel = mel_of(8, seed=4)
    status, body, _ = request(server, "POST", "/vocode?seed=2&format=f32", npy(mel))
    assert status == 200
    np.testing.assert_array_equal(read_wav(body)[0], offline(model, mel, 2))


def test_info_and_health(server, model):
    assert request(server, "GET", "/health")[:2] == (200, b'{"status": "ok"}')
    described = info(server)
    assert described["model"] == "tiny" and described["sample_rate"] == model.sample_rate
    assert described["hop_length"] == model.hop_length and described["n_mels"] == N_MELS
    assert described["limits"]["max_seconds"] == 1.0 and described["limits"]["max_batch"] == 4
    assert "fast" in described["lookahead_frames"]
    status, text, _ = request(server, "GET", "/nowhere")
    assert status == 404 and text.count(b"\n") == 1


# --------------------------------------------------------------------------------------- /stream


def test_stream_pcm16_samples_equal_the_wav_writer_s():
    samples = np.random.default_rng(0).uniform(-1.3, 1.3, 5000).astype(np.float32)
    wav, _ = read_wav(wav_bytes(torch.from_numpy(samples), 22050, "pcm16"))
    np.testing.assert_array_equal(pcm16(samples), np.round(wav * 32768).astype(np.int16))



def frame_bytes(mel: np.ndarray) -> bytes:
    """A mel ``(n_mels, frames)`` as /stream reads it: frame-major little-endian float32."""
    return np.ascontiguousarray(mel.T, dtype="<f4").tobytes()


async def stream_client(server, mel: np.ndarray, query: str = "", block: int = 5, pause: float = 0.01):
    """Send ``mel`` in blocks of ``block`` frames while reading the audio as it comes; returns
    ``(status, headers, chunks)``."""
    import aiohttp

    async def frames():
        for start in range(0, mel.shape[1], block):
            yield frame_bytes(mel[:, start:start + block])
            await asyncio.sleep(pause)

    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/stream?{query}", data=frames()) as response:
            chunks = [chunk async for chunk in response.content.iter_any()]
            return response.status, dict(response.headers), chunks


def first_audio_frames(server) -> int:
    """Frames a stream must send before its first audio comes: ``2L`` (the default emission holds ``L``)."""
    return 2 * server.app[STATE].model.stream_lookahead("fast")


def test_stream_relays_each_window_s_audio_as_it_is_vocoded(fake_server):
    server, fake = fake_server
    mel = mel_of(80)
    calls = len(fake.calls)
    status, headers, chunks = asyncio.run(stream_client(server, mel, "format=f32", block=4))
    assert status == 200 and headers["X-Audio-Format"] == "f32"
    audio = np.frombuffer(b"".join(chunks), dtype="<f4")
    np.testing.assert_array_equal(audio, np.repeat(mel[0], fake.hop))
    windows = fake.calls[calls:]
    assert len(windows) >= 2 and all(len(rows) == 1 for rows in windows)  # one stream: its windows alone
    assert windows[0] == [0] and windows[-1][0] > 0  # later windows keep only L frames of context
    status, _, chunks = asyncio.run(stream_client(server, mel, "format=pcm16", block=4))
    assert np.array_equal(np.frombuffer(b"".join(chunks), dtype="<i2"), pcm16(np.repeat(mel[0], fake.hop)))


def test_concurrent_streams_share_batches_and_each_gets_its_own_audio(fake_server):
    server, fake = fake_server
    mels = [mel_of(n, seed=n) for n in (80, 61)]  # LIMITS.max_streams
    before = info(server)["stats"]

    async def clients():
        return await asyncio.gather(*(stream_client(server, mel, "format=f32", block=3 + k, pause=0.02)
                                      for k, mel in enumerate(mels)))

    for mel, (status, _, chunks) in zip(mels, asyncio.run(clients())):
        assert status == 200
        np.testing.assert_array_equal(np.frombuffer(b"".join(chunks), dtype="<f4"), np.repeat(mel[0], fake.hop))
    stats = info(server)["stats"]
    assert stats["mixed_batches"] > before["mixed_batches"]  # windows of different clients in one call
    assert stats["largest_batch"] >= 2 and stats["stream_windows"] - before["stream_windows"] >= 6


@pytest.mark.parametrize(("body", "query", "status", "words"), [
    (b"\0" * 3, "", 400, "ended inside a frame"),  # (later in a stream whose audio began: cut off)
    (b"", "", 400, "no mel frames"),
    (np.full((2, N_MELS), np.nan, "<f4").tobytes(), "", 400, "frame 0 contains NaN"),
    (np.zeros((200, N_MELS), "<f4").tobytes(), "", 413, "--max-seconds"),
    (b"", "sampler=nope", 400, "unknown sampler"),
])
def test_a_bad_stream_gets_one_4xx_line(fake_server, body, query, status, words):
    server, _ = fake_server
    got, text, _ = request(server, "POST", f"/stream?{query}", body)
    assert got == status and words in text.decode() and text.decode().count("\n") == 1
    wait_for(lambda: info(server)["stats"]["open_streams"] == 0)


class RawStream:
    """A stream request over a bare socket: chunked frames go out, and the socket can be dropped at any time."""

    def __init__(self, server, query: str = "") -> None:
        self.socket = socket.create_connection((server.host, server.port), timeout=30)
        self.socket.sendall(f"POST /stream?{query} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())

    def send(self, data: bytes) -> None:
        self.socket.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def read_some(self) -> bytes:
        return self.socket.recv(65536)

    def drop(self) -> None:
        self.socket.close()


def test_a_client_that_disconnects_mid_stream_frees_its_slot(fake_server):
    server, fake = fake_server
    state = server.app[STATE]
    closed = state.streams["closed"]
    client = RawStream(server)
    client.send(frame_bytes(mel_of(first_audio_frames(server) + 5)))
    head = client.read_some()  # the response began: the stream is open and vocoding
    assert head.startswith(b"HTTP/1.1 200")
    assert info(server)["stats"]["open_streams"] == 1
    calls = len(fake.calls)
    client.drop()
    wait_for(lambda: state.streams["closed"] == closed + 1)
    assert info(server)["stats"]["open_streams"] == 0
    assert len(fake.calls) == calls  # the stream's last frames were never vocoded: nobody waits for them


def test_a_bad_frame_after_the_audio_began_cuts_the_response_off(fake_server):
    server, _ = fake_server
    client = RawStream(server)
    client.send(frame_bytes(mel_of(first_audio_frames(server))))
    reply = client.read_some()
    assert reply.startswith(b"HTTP/1.1 200")
    client.send(np.full((1, N_MELS), np.nan, "<f4").tobytes())
    while part := client.read_some():
        reply += part
    client.drop()
    assert not reply.endswith(b"0\r\n\r\n")  # no final chunk: the client sees an incomplete body
    wait_for(lambda: info(server)["stats"]["open_streams"] == 0)


@pytest.mark.slow
def test_a_silent_stream_is_closed_after_the_idle_time(fake_server):
    server, _ = fake_server
    client = RawStream(server)  # headers sent, then nothing
    started = time.monotonic()
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.endswith(b"\n"):
        part = client.read_some()
        if not part:
            break
        reply += part
    client.drop()
    assert reply.startswith(b"HTTP/1.1 408") and b"--stream-idle-seconds" in reply
    assert time.monotonic() - started < LIMITS.stream_idle_seconds + 5
    wait_for(lambda: info(server)["stats"]["open_streams"] == 0)


def test_streams_over_the_limit_are_refused_until_a_slot_frees(fake_server):
    server, _ = fake_server
    state = server.app[STATE]
    clients = [RawStream(server) for _ in range(LIMITS.max_streams)]
    for client in clients:
        client.send(frame_bytes(mel_of(2)))
    wait_for(lambda: state.open_streams == LIMITS.max_streams)
    status, text, _ = request(server, "POST", "/stream", frame_bytes(mel_of(3)))
    assert status == 429 and b"--max-streams" in text
    clients[0].drop()
    wait_for(lambda: state.open_streams == LIMITS.max_streams - 1)
    status, body, _ = request(server, "POST", "/stream", frame_bytes(mel_of(3)))
    assert status == 200 and len(body) == 3 * server.app[STATE].model.hop_length * 4
    for client in clients[1:]:
        client.drop()
    wait_for(lambda: state.open_streams == 0)


@pytest.mark.slow
def test_stream_equals_offline_vocode(server, model):
    mel = mel_of(40, seed=9)
    status, headers, chunks = asyncio.run(stream_client(server, mel, "seed=5", block=7))
    assert status == 200 and headers["X-Sample-Rate"] == str(model.sample_rate)
    audio = np.frombuffer(b"".join(chunks), dtype="<f4")
    alone = offline(model, mel, 5)
    np.testing.assert_allclose(audio, alone, rtol=0, atol=BATCH_ATOL)


@pytest.mark.slow
def test_concurrent_streams_and_a_request_batched_together_each_equal_offline_vocode(server, model):
    """Two clients stream (different lengths, seeds and block sizes) while a third posts a plain
    request: their windows share batches on the device, and each gets its own offline audio."""
    mels, seeds = [mel_of(n, seed=n) for n in (70, 52, 30)], [5, 9, 2]
    before = info(server)["stats"]

    async def clients():
        streams = [stream_client(server, mels[k], f"seed={seeds[k]}", block=5 + 2 * k, pause=0.03) for k in (0, 1)]
        plain = asyncio.to_thread(request, server, "POST", f"/vocode?seed={seeds[2]}&format=f32", npy(mels[2]))
        return await asyncio.gather(*streams, plain)

    *streamed, (status, body, _) = asyncio.run(clients())
    assert status == 200
    np.testing.assert_allclose(read_wav(body)[0], offline(model, mels[2], seeds[2]), rtol=0, atol=BATCH_ATOL)
    for k, (status, _, chunks) in enumerate(streamed):
        assert status == 200
        audio = np.frombuffer(b"".join(chunks), dtype="<f4")
        np.testing.assert_allclose(audio, offline(model, mels[k], seeds[k]), rtol=0, atol=BATCH_ATOL)
    stats = info(server)["stats"]
    assert stats["mixed_batches"] > before["mixed_batches"]


def test_the_batcher_skips_work_nobody_waits_for_any_more(fake_server):
    """A client gone while its window waited for a batch: the window is never vocoded."""
    server, fake = fake_server
    state = server.app[STATE]
    mel = torch.from_numpy(mel_of(5))[None]

    async def give_up() -> int:
        batches = state.batcher.stats.batches
        waiting = asyncio.ensure_future(state.batcher.vocode(mel, parse_options({}, state.model, "f32")))
        await asyncio.sleep(0)  # queued; the batch window (150 ms) has not closed
        waiting.cancel()
        await asyncio.sleep(LIMITS.batch_window_ms / 1000 + 0.2)
        return state.batcher.stats.batches - batches

    calls = len(fake.calls)
    assert server.run(give_up()) == 0
    assert len(fake.calls) == calls


# ----------------------------------------------------------------------------------- the command


@pytest.mark.slow
def test_audiodiff_serve_command(tmp_path):
    path = make_tiny_model().save(tmp_path / "tiny.safetensors")
    process = subprocess.Popen([sys.executable, "-m", "audiodiff.cli", "serve", "--model", str(path), "--port", "0",
                                "--max-seconds", "1", "--threads", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[1])
    try:
        line = process.stdout.readline()
        assert line.startswith("serving "), process.stderr.read() if process.poll() is not None else line
        host_port = line.split("http://")[1].split()[0]

        class Address:
            host, port = host_port.rsplit(":", 1)[0], int(host_port.rsplit(":", 1)[1])

        limits = json.loads(request(Address, "GET", "/info")[1])["limits"]
        assert limits["max_seconds"] == 1.0 and limits["max_batch"] == 1  # on a CPU: one at a time
        status, body, _ = request(Address, "POST", "/vocode", npy(mel_of(6)))
        assert status == 200 and read_wav(body)[0].shape == (6 * 256,)
        assert request(Address, "POST", "/vocode", b"junk")[0] == 400
    finally:
        process.terminate()
        process.wait(timeout=30)
