"""The mel upsampler as transposed convolutions (DiffWave's form) and as sub-pixel convolutions (ours).

Both forms compute the same sums (``audiodiff.network.diffwave.subpixel_transposed_conv``). The fused CUDA
engine's profile had the transposed convolution at 7 % of its GPU time, which is why the upsampler
now runs as ``s``-channel 3 x 3 convolutions plus a reshape. This script times the two forms, in
the same run, on mels of ``--seconds`` at each ``--batch`` and precision, and reports the largest
difference between their outputs (relative to the output's largest value):

    python benchmarks/upsampler_speed.py --device cuda --batch 1 16 --precisions fp32 bf16 --json up.json
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import autocast, fmt, machine_info, machine_lines, markdown_table, parser_from_doc, synchronize, write_json  # noqa: E402

from audiodiff.network.diffwave import MelUpsampler  # noqa: E402


def transposed_form(upsampler: MelUpsampler, mel: torch.Tensor) -> torch.Tensor:
    """DiffWave's upsampler: ``ConvTranspose2d`` stages with leaky ReLU. ``(B, n_mels, F) -> (B, n_mels, F hop)``."""
    x = mel.unsqueeze(1)
    for stage in upsampler.stages:
        x = F.leaky_relu(stage(x), 0.4)
    return x.squeeze(1)[..., : mel.shape[-1] * upsampler.hop_length]


def median_seconds(run: Callable[[], torch.Tensor], device: str, repeats: int) -> float:
    """Median wall time of ``run`` over ``repeats`` calls, after one warm-up call."""
    run()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(upsampler: MelUpsampler, batch: int, frames: int, n_mels: int, precision: str,
            device: str, repeats: int) -> dict[str, Any]:
    mel = torch.randn(batch, n_mels, frames, device=device)
    with torch.inference_mode(), autocast(device, precision):
        transposed = transposed_form(upsampler, mel)
        subpixel = upsampler(mel)
        difference = (subpixel.float() - transposed.float()).abs().max().item() / transposed.float().abs().max().item()
        transposed_s = median_seconds(lambda: transposed_form(upsampler, mel), device, repeats)
        subpixel_s = median_seconds(lambda: upsampler(mel), device, repeats)
    return {"batch": batch, "frames": frames, "precision": precision, "transposed_s": transposed_s,
            "subpixel_s": subpixel_s, "speedup": transposed_s / subpixel_s, "max_rel_difference": difference}


def main() -> None:
    parser = parser_from_doc(__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=5.0, help="mel length, at 22.05 kHz and hop 256")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--n-mels", type=int, default=80)
    parser.add_argument("--hop", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available")
    torch.manual_seed(0)
    upsampler = MelUpsampler(args.hop).to(args.device)
    frames = max(1, round(args.seconds * 22050 / args.hop))
    info = machine_info(args.device)
    rows = [measure(upsampler, batch, frames, args.n_mels, precision, args.device, args.repeats)
            for precision in args.precisions for batch in args.batch]
    print("\n".join(machine_lines(info)))
    print(markdown_table(
        ["batch", "precision", "transposed conv ms", "sub-pixel ms", "× faster", "max rel. difference"],
        [[r["batch"], r["precision"], fmt(1e3 * r["transposed_s"]), fmt(1e3 * r["subpixel_s"]),
          fmt(r["speedup"]), f"{r['max_rel_difference']:.1e}"] for r in rows]))
    if args.json:
        write_json(args.json, {"machine": info, "seconds": args.seconds, "hop": args.hop, "n_mels": args.n_mels,
                               "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
