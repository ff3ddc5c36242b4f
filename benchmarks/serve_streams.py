"""Concurrent streams on ``audiodiff serve``: windows of several clients batched vs one at a time.

For each size (random weights of the recipe sizes, as ``stream_latency.py`` builds them) and each
client count ``N`` in ``--clients``, ``N`` clients open ``POST /stream`` at once, each sending a
``--seconds`` utterance (its own mel and seed) in blocks of ``--block`` frames, paced as a TTS
``--pace`` times faster than real time would write them. The same server runs twice in the same
run:

* ``batched``: ``--max-batch N`` (the server's dynamic batching: each batch holds the windows of
  every stream that has one ready, and any plain requests);
* ``one at a time``: ``--max-batch 1``, the baseline (each window alone on the device, as the
  server ran streams before they were batched).

Columns: ``first s`` (median and slowest over clients: request start to the first audio bytes),
``RTF`` (audio seconds of all clients per wall second), ``batched/alone`` (the ratio of the two
RTFs), the mean rows per batch and ``max diff`` (largest difference of any client's audio from
``model.vocode`` of its whole mel with its seed: float rounding, as the server is exact).

    python benchmarks/serve_streams.py                          # CPU: tiny, 1 and 4 clients
    python benchmarks/serve_streams.py --device cuda --sizes base --clients 1 8 32 --json out.json
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    HOP,
    SAMPLE_RATE,
    fmt,
    load_ours,
    machine_info,
    machine_lines,
    markdown_table,
    parser_from_doc,
    publish,
    save_reference_checkpoint,
)

N_MELS = 80
HEADERS = ["size", "clients", "batching", "first s (median)", "first s (slowest)", "RTF", "batched/alone",
           "rows per batch", "max diff"]


async def one_client(url: str, mel: np.ndarray, seed: int, block: int, pause: float) -> tuple[float, np.ndarray]:
    """Stream ``mel`` ``(n_mels, frames)`` to the server; (seconds to the first audio bytes, the audio)."""
    import aiohttp

    async def frames():
        for start in range(0, mel.shape[1], block):
            yield np.ascontiguousarray(mel[:, start: start + block].T, dtype="<f4").tobytes()
            await asyncio.sleep(pause)

    started = time.perf_counter()
    first = None
    pieces = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        async with session.post(f"{url}/stream?seed={seed}&format=f32", data=frames()) as response:
            response.raise_for_status()
            async for chunk in response.content.iter_any():
                first = time.perf_counter() - started if first is None else first
                pieces.append(chunk)
    return first, np.frombuffer(b"".join(pieces), dtype="<f4")


def run_clients(model, mels: list[np.ndarray], max_batch: int, block: int, pause: float,
                window_ms: float) -> dict[str, Any]:
    """All ``mels`` streamed at once to a fresh server with ``max_batch``; times, audio and batch counts."""
    from audiodiff.serve import BackgroundServer, Limits, make_app
    from audiodiff.serve.app import STATE

    seconds = max(mel.shape[1] for mel in mels) * HOP / SAMPLE_RATE + 1
    limits = Limits(max_seconds=seconds, max_batch=max_batch, batch_window_ms=window_ms, max_streams=len(mels),
                    batch_seconds=seconds * len(mels), stream_idle_seconds=600)
    with BackgroundServer(make_app(model, limits, precision="auto", name="bench")) as server:

        async def everyone():
            return await asyncio.gather(*(one_client(server.url, mel, k, block, pause) for k, mel in enumerate(mels)))

        started = time.perf_counter()
        results = asyncio.run(everyone())
        wall = time.perf_counter() - started
        stats = server.app[STATE].batcher.stats.to_dict()
    return {"wall_s": wall, "firsts_s": [first for first, _ in results], "audio": [audio for _, audio in results],
            "batches": stats["batches"], "windows": stats["stream_windows"]}


def measure(model, size: str, clients: int, args, device: str) -> list[dict[str, Any]]:
    """The batched and one-at-a-time rows for ``clients`` streams."""
    frames = max(1, round(args.seconds * SAMPLE_RATE / HOP))
    generator = torch.Generator().manual_seed(clients)
    mels = [torch.rand(N_MELS, frames, generator=generator).numpy() for _ in range(clients)]
    pause = args.block * HOP / SAMPLE_RATE / args.pace
    offline = [model.vocode(torch.from_numpy(mel), seed=k)[0].float().cpu().numpy() for k, mel in enumerate(mels)]
    rows = []
    for batching, max_batch in (("batched", clients), ("one at a time", 1)):
        run = run_clients(model, mels, max_batch, args.block, pause, args.batch_window_ms)
        audio_seconds = clients * frames * HOP / SAMPLE_RATE
        rows.append({
            "size": size, "device": device, "clients": clients, "batching": batching, "max_batch": max_batch,
            "first_median_s": statistics.median(run["firsts_s"]), "first_max_s": max(run["firsts_s"]),
            "wall_s": run["wall_s"], "audio_seconds": audio_seconds, "rtf": audio_seconds / run["wall_s"],
            "batches": run["batches"], "windows": run["windows"],
            "rows_per_batch": run["windows"] / max(1, run["batches"]),
            "max_diff": max(float(np.abs(got - want).max()) for got, want in zip(run["audio"], offline)),
            "firsts_s": run["firsts_s"]})
    rows[0]["batched_over_alone"] = rows[0]["rtf"] / rows[1]["rtf"]
    return rows


def parse_args(argv: list[str] | None):
    parser = parser_from_doc(__doc__)
    parser.add_argument("--sizes", nargs="+", choices=["tiny", "base", "large"], default=["tiny"])
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 4], help="streams open at once")
    parser.add_argument("--seconds", type=float, default=2.0, help="each client's utterance length")
    parser.add_argument("--block", type=int, default=10, help="mel frames per block a client sends")
    parser.add_argument("--pace", type=float, default=20.0,
                        help="how many times faster than real time the clients send their frames")
    parser.add_argument("--batch-window-ms", type=float, default=10.0, help="the server's --batch-window-ms")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows and the machine here")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available")
    if min(args.clients) < 1:
        parser.error("--clients must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from audiodiff.engines.policy import resolve_engine

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info(args.device)
    rows = []
    with tempfile.TemporaryDirectory(prefix="serve-streams-") as tmp:
        for index, size in enumerate(args.sizes):
            model = load_ours(save_reference_checkpoint(size, Path(tmp) / size, seed=index), args.device)
            model.use_engine(resolve_engine("auto", args.device))
            for clients in args.clients:
                pair = measure(model, size, clients, args, args.device)
                rows.extend(pair)
                print(f"  {size}, {clients} clients: RTF batched {pair[0]['rtf']:.3g}, one at a time "
                      f"{pair[1]['rtf']:.3g}", file=sys.stderr, flush=True)
    report = {"benchmark": "serve_streams", "machine": info,
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"},
              "rows": rows}
    return publish(report, format_report(report), args.json)


def format_report(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = machine_lines(report["machine"]) + [
        f"each client: {s['seconds']:g} s utterance, blocks of {s['block']} frames sent {s['pace']:g}x faster than "
        f"real time, its own mel and seed; batch window {s['batch_window_ms']:g} ms; engine and precision auto",
        "first s: request start to the first audio bytes; RTF: audio s of all clients per wall s", ""]
    table = [[r["size"], r["clients"], r["batching"], fmt(r["first_median_s"]), fmt(r["first_max_s"]), fmt(r["rtf"]),
              fmt(r.get("batched_over_alone")), fmt(r["rows_per_batch"]), f"{r['max_diff']:.1e}"]
             for r in report["rows"]]
    return "\n".join(lines + [markdown_table(HEADERS, table)])


if __name__ == "__main__":
    main()
