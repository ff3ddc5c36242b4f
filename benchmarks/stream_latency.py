"""Streaming latency: time to first audio and real-time factor of ``AudioDiffusion.stream`` vs ``vocode``.

For each size (random weights of the recipe sizes, built as ``vocode_speed.py`` builds them: a
reference checkpoint imported with ``import_diffwave``; hop 256, 22.05 kHz) and each sampler, one
``--seconds`` utterance's mel arrives in blocks of ``--block`` frames, all at once (a TTS far faster
than real time), and is streamed with the library defaults (engine ``auto``, precision ``auto``,
``min_block_frames`` = the lookahead ``L``):

* ``first s``: wall time from the start of the stream to its first audio block (the stream waits
  for ``L + min_block`` frames, then vocodes them);
* ``stream RTF`` / ``vocode RTF``: audio seconds per wall second of the whole stream and of one
  ``vocode`` of the whole mel in the same run; ``stream/vocode``: the ratio of their wall times
  (the stream re-vocodes ``2L`` frames of context per emission);
* ``max diff``: the largest difference between the concatenated stream and ``vocode`` (same seed):
  float rounding, as the stream is exact.

Times are the median of ``--repeats`` runs after ``--warmup`` untimed ones. Prints a table (with the machine, date
and commit) and writes JSON (``--json``).

    python benchmarks/stream_latency.py                         # CPU: tiny and base, fast/ddim/dpmpp-2m, 5 s
    python benchmarks/stream_latency.py --device cuda --json out.json
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
    synchronize,
)

N_MELS = 80
#: One sampler of each family, at the fast schedule's 6 network calls.
SAMPLERS = ["fast", "ddim", "dpmpp-2m"]
HEADERS = ["size", "sampler", "steps", "L frames", "L ms", "block", "first s", "first audio s",
           "stream RTF", "vocode RTF", "stream/vocode", "max diff"]


def measure(model, mel: torch.Tensor, sampler: str, block: int, device: str, repeats: int,
            warmup: int = 1) -> dict[str, Any]:
    """``warmup`` plus ``repeats`` runs of the stream and of ``vocode``; times and the largest difference."""
    seconds = mel.shape[-1] * HOP / SAMPLE_RATE

    def stream() -> tuple[float, float, torch.Tensor]:
        """(seconds to the first audio block, seconds in all, the audio)."""
        blocks = [mel[..., k: k + block] for k in range(0, mel.shape[-1], block)]
        synchronize(device)
        start = time.perf_counter()
        pieces, first = [], None
        for audio in model.stream(blocks, sampler=sampler, seed=0):
            synchronize(device)
            first = time.perf_counter() - start if first is None else first
            pieces.append(audio)
        first_length.append(pieces[0].shape[-1])
        synchronize(device)
        return first, time.perf_counter() - start, torch.cat(pieces, dim=-1)

    def vocode() -> tuple[float, torch.Tensor]:
        synchronize(device)
        start = time.perf_counter()
        audio = model.vocode(mel, sampler=sampler, seed=0)
        synchronize(device)
        return time.perf_counter() - start, audio

    firsts, streams, vocodes, first_length = [], [], [], []
    for _ in range(warmup + repeats):
        first, total, streamed = stream()
        firsts.append(first)
        streams.append(total)
        elapsed, whole = vocode()
        vocodes.append(elapsed)
    first_s, stream_s, vocode_s = (statistics.median(t[warmup:]) for t in (firsts, streams, vocodes))
    lookahead = model.stream_lookahead(sampler)
    first_samples = first_length[0]
    return {
        "sampler": sampler, "steps": len(model.sigmas(sampler)) - 1, "lookahead_frames": lookahead,
        "lookahead_ms": 1000 * lookahead * HOP / SAMPLE_RATE, "block": block, "first_s": first_s,
        "first_audio_s": first_samples / SAMPLE_RATE,
        "stream_s": stream_s, "vocode_s": vocode_s, "audio_seconds": seconds,
        "stream_rtf": seconds / stream_s, "vocode_rtf": seconds / vocode_s, "stream_over_vocode": stream_s / vocode_s,
        "max_diff": float((streamed.float() - whole.float()).abs().max()),
        "stream_times_s": streams[warmup:], "vocode_times_s": vocodes[warmup:], "first_times_s": firsts[warmup:],
    }


def parse_args(argv: list[str] | None):
    parser = parser_from_doc(__doc__)
    parser.add_argument("--sizes", nargs="+", choices=["tiny", "base", "large"], default=["tiny", "base"])
    parser.add_argument("--samplers", nargs="+", default=SAMPLERS, help="sampler names (default: one per family)")
    parser.add_argument("--seconds", type=float, default=5.0, help="utterance length")
    parser.add_argument("--block", type=int, default=10, help="mel frames per arriving block")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per row")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before them (0 for a slow CPU row)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows and the machine here")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from audiodiff.engines.policy import resolve_engine

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    info = machine_info(device)
    frames = max(1, round(args.seconds * SAMPLE_RATE / HOP))
    mel = torch.rand(1, N_MELS, frames, generator=torch.Generator().manual_seed(0)).to(device)  # diffwave convention
    rows = []
    with tempfile.TemporaryDirectory(prefix="stream-latency-") as tmp:
        for index, size in enumerate(args.sizes):
            model = load_ours(save_reference_checkpoint(size, Path(tmp) / size, seed=index), device)
            model.use_engine(resolve_engine("auto", device))
            for sampler in args.samplers:
                row = {"size": size, "device": device, **measure(model, mel, sampler, args.block, device, args.repeats,
                                                                           args.warmup)}
                rows.append(row)
                print(f"  {size} {sampler}: first audio after {row['first_s']:.3g} s, stream RTF "
                      f"{row['stream_rtf']:.3g}, vocode RTF {row['vocode_rtf']:.3g}", file=sys.stderr, flush=True)
    report = {"benchmark": "stream_latency", "machine": info,
              "settings": {k: v for k, v in vars(args).items() if k != "json"}, "rows": rows}
    return publish(report, format_report(report), args.json)


def format_report(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = machine_lines(report["machine"]) + [
        f"{settings['seconds']:g} s utterance, mel blocks of {settings['block']} frames arriving at once, seed 0, "
        f"engine and precision auto, min_block_frames = L; median of {settings['repeats']} after "
        f"{settings.get('warmup', 1)} warm-up",
        "first s: wall time to the first audio block; first audio s: its length; RTF = audio s per wall s", ""]
    table = [[r["size"], r["sampler"], r["steps"], r["lookahead_frames"], fmt(r["lookahead_ms"]), r["block"],
              fmt(r["first_s"]), fmt(r["first_audio_s"]), fmt(r["stream_rtf"]), fmt(r["vocode_rtf"]),
              fmt(r["stream_over_vocode"]), f"{r['max_diff']:.1e}"] for r in report["rows"]]
    return "\n".join(lines + [markdown_table(HEADERS, table)])


if __name__ == "__main__":
    main()
