"""How close the fused residual-block kernel comes to the GPU's limits, per launch.

For each launch of ``--launches`` and each conditioning of ``--modes`` (``mel``: the kernel projects
the upsampled mel; ``cached``: it reads cached per-block projections), in a fresh process (a bad
launch that faults cannot take the others down), on random weights of ``--size``:

* checks each kernel of one dilation cycle (one block, or a group of blocks under a launch's
  ``gHALO``) against the eager blocks in float32: the largest difference of the output and of the
  skip sum, relative to the float32 output's largest value, for the fused kernel and, as the
  yardstick, for the eager blocks under autocast in the same dtype; the kernel's
  99.99th-percentile difference and where its largest one is (JSON ``worst_at``);
* times one pass through all residual blocks (CUDA events, median of ``--repeats``) and turns it
  into time per block, memory traffic (GB/s, the bytes each block must move at least with one
  kernel per block: read ``x`` and the conditioning, write ``x'``, read and write the skip sum;
  grouped launches move less, so for them it is the bandwidth one kernel per block would need)
  and arithmetic (TFLOP/s, the block's matrix products at the true mel width, without the
  recomputed halo), with their share of ``--peak-gbs`` and ``--peak-tflops`` (defaults: an H100
  SXM's 3350 GB/s and 989 dense bf16 TFLOP/s).

    python benchmarks/fused_kernel.py --launches 64x4 128x8 --json fused-kernel.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    fmt,
    machine_info,
    machine_lines,
    markdown_table,
    parser_from_doc,
    synchronize,
    write_json,
)


def block_bytes(batch: int, length: int, channels: int, cond_channels: int, element: int = 2) -> int:
    """Least traffic of one block: read x, read the conditioning, write x', read + write the skip sum."""
    return batch * length * element * (channels + cond_channels + channels + 2 * channels)


def block_flops(batch: int, length: int, channels: int, mel_width: int) -> int:
    """Multiply-adds x 2 of one block: dilated conv (3 taps), mel projection (if any), output projection."""
    return 2 * batch * length * (3 * channels * 2 * channels + mel_width * 2 * channels + channels * 2 * channels)


def relative_difference(value: torch.Tensor, exact: torch.Tensor, scale: float) -> float:
    return (value.float() - exact).abs().max().item() / scale


def tail_value(difference: torch.Tensor, share: float = 1e-4) -> float:
    """The value that only ``share`` of the elements of ``difference`` exceed (its 99.99th percentile)."""
    count = max(1, int(difference.numel() * share))
    return torch.topk(difference.flatten(), count).values[-1].item()


def measure_one(launch: str, mode: str, size: str, batch: int, seconds: float, repeats: int,
                device: str = "cuda", dtype: str = "bf16") -> dict[str, Any]:
    """Check and time ``launch`` in ``mode`` in this process (on a CPU: Triton's interpreter, a dry run)."""
    from audiodiff.engines.fused import COND_CACHED, COND_MEL, BlockWeights, Launch, group_plan, residual_blocks
    from audiodiff.network.diffwave import DiffWave, denoiser_config

    torch.manual_seed(0)
    network = DiffWave(denoiser_config(size)).to(device).eval()
    activation = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    config, chosen = network.config, Launch.parse(launch)
    length = round(seconds * 22050 / config.hop_length) * config.hop_length
    mel = torch.rand(batch, config.n_mels, length // config.hop_length, device=device) * 4 - 8
    with torch.inference_mode(), torch.autocast(device, dtype=activation):
        conditioning = network.condition(mel, cache_projections=(mode == "cached"))
        weights = BlockWeights.of(network, activation)
        embedding = network.diffusion_embedding(torch.full((batch,), 10.0, device=device)).float()
        step_bias = torch.einsum("bh,lch->lbc", embedding, weights.step_weight) + weights.step_bias[:, None]
        if mode == "cached":
            conds, cond_mode, row_bias = [c.contiguous() for c in conditioning], COND_CACHED, weights.dilated_bias
        else:
            conds, cond_mode = conditioning.upsampled.to(activation).contiguous(), COND_MEL
            row_bias = weights.dilated_bias + weights.cond_bias
        row_bias = row_bias[:, None].expand(-1, batch, -1).contiguous()
        x = torch.randn(batch, config.residual_channels, length, device=device).to(activation)
        out, skip = torch.empty_like(x), torch.zeros_like(x)

        plan = group_plan(weights.dilations, chosen.group_halo if mode == "mel" else 0)

        def run_unit(first: int, layers: int) -> None:
            blocks = slice(first, first + layers)
            residual_blocks(x, out, skip, step_bias[blocks], row_bias[blocks],
                            conds[first] if isinstance(conds, list) else conds, cond_mode, weights, first, layers,
                            chosen)

        def eager_unit(first: int, layers: int, value: torch.Tensor, conditions) -> tuple[torch.Tensor, torch.Tensor]:
            """The eager blocks of one kernel: the last one's output and the sum of their skips."""
            skips = 0
            for layer in range(first, first + layers):
                value, block_skip = network.residual_layers[layer](value, embedding, conditions[layer])
                skips = skips + block_skip
            return value, skips

        with torch.autocast(device, enabled=False):
            fp32_conditioning = network.condition(mel, cache_projections=False)
        worst_fused = worst_eager = tail_fused = 0.0
        worst_at: dict[str, Any] = {}
        for first, layers in [unit for unit in plan if unit[0] < config.dilation_cycle]:  # one cycle's kernels
            skip.zero_()
            run_unit(first, layers)
            eager, eager_skip = eager_unit(first, layers, x, conditioning)
            with torch.autocast(device, enabled=False):
                exact, exact_skip = eager_unit(first, layers, x.float(), fp32_conditioning)
            scale = exact.abs().max().item()
            for name, value, expected in (("out", out, exact), ("skip", skip, exact_skip)):
                difference = (value.float() - expected).abs() / scale
                largest = difference.max().item()
                tail_fused = max(tail_fused, tail_value(difference))
                if largest > worst_fused:
                    row, channel, t = (int(i) for i in torch.unravel_index(difference.argmax(), difference.shape))
                    worst_fused, worst_at = largest, {"layer": first, "dilation": weights.dilations[first],
                                                      "blocks": layers, "output": name, "row": row,
                                                      "channel": channel, "t": t, "length": length}
            worst_eager = max(worst_eager, relative_difference(eager, exact, scale),
                              relative_difference(eager_skip, exact_skip, scale))
        times = []
        for _ in range(repeats + 1):
            synchronize(device)
            start = time.perf_counter()
            for first, layers in plan:
                run_unit(first, layers)
            synchronize(device)
            times.append((time.perf_counter() - start) / config.residual_layers)
    per_block = statistics.median(times[1:])
    cond_channels = 2 * config.residual_channels if mode == "cached" else config.n_mels
    mel_width = 0 if mode == "cached" else config.n_mels
    return {"launch": launch, "mode": mode, "max_rel_error": worst_fused, "eager_max_rel_error": worst_eager,
            "p9999_rel_error": tail_fused, "worst_at": worst_at,
            "block_us": per_block * 1e6,
            "gbs": block_bytes(batch, length, config.residual_channels, cond_channels) / per_block / 1e9,
            "tflops": block_flops(batch, length, config.residual_channels, mel_width) / per_block / 1e12,
            "samples_per_s_per_block": batch * length / per_block}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = parser_from_doc(__doc__)
    parser.add_argument("--launches", nargs="+", default=["64x4", "128x8"])
    parser.add_argument("--modes", nargs="+", default=["mel", "cached"], choices=["mel", "cached"])
    parser.add_argument("--size", default="base", choices=["tiny", "base", "large"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda", help="cpu: a dry run in Triton's interpreter (use --size tiny)")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    parser.add_argument("--peak-gbs", type=float, default=3350.0)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--one", nargs=2, metavar=("LAUNCH", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(*args.one, args.size, args.batch, args.seconds, args.repeats, args.device,
                                     args.dtype)))
        return {}
    rows = [measure_in_child(launch, mode, args) for launch in args.launches for mode in args.modes]
    for row in rows:
        if "gbs" in row:
            row["share_of_peak_gbs"] = row["gbs"] / args.peak_gbs
            row["share_of_peak_tflops"] = row["tflops"] / args.peak_tflops
    report = {"benchmark": "fused_kernel", "machine": machine_info(args.device),
              "settings": {k: v for k, v in vars(args).items() if k not in ("json", "one")}, "rows": rows}
    table = [[r["launch"], r["mode"], fmt(r.get("block_us")), fmt(r.get("gbs")), fmt(r.get("share_of_peak_gbs")),
              fmt(r.get("tflops")), fmt(r.get("share_of_peak_tflops")), fmt(r.get("max_rel_error")),
              fmt(r.get("p9999_rel_error")), fmt(r.get("eager_max_rel_error"))]
             if "error" not in r else [r["launch"], r["mode"], r["error"][:70]] + [""] * 7 for r in rows]
    print("\n".join(machine_lines(report["machine"]) + [
        f"{args.size}, batch {args.batch} x {args.seconds:g} s, {args.dtype}, one residual block (median of "
        f"{args.repeats} passes through all blocks)",
        "", markdown_table(["launch", "mode", "us/block", "GB/s", "of peak", "TFLOP/s", "of peak",
                                      "fused err vs fp32", "99.99 %", "eager err vs fp32"],
                           table)]))
    if args.json:
        write_json(args.json, report)
    return report


def measure_in_child(launch: str, mode: str, args) -> dict[str, Any]:
    """:func:`measure_one` in a fresh process; a fault or timeout becomes the row's error."""
    command = [sys.executable, __file__, "--one", launch, mode, "--size", args.size, "--batch", str(args.batch),
               "--seconds", str(args.seconds), "--repeats", str(args.repeats), "--device", args.device,
               "--dtype", args.dtype]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        return {"launch": launch, "mode": mode, "error": "timed out after 120 s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        errors = [line for line in done.stderr.splitlines() if "Error" in line] or done.stderr.splitlines()[-1:]
        return {"launch": launch, "mode": mode, "error": (errors[-1] if errors else f"exit {done.returncode}").strip()}
    row = json.loads(lines[-1])
    print(f"  {launch} {mode}: {row['block_us']:.0f} us/block, {row['gbs']:.0f} GB/s", file=sys.stderr, flush=True)
    return row


if __name__ == "__main__":
    main()
