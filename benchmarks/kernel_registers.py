"""Registers, spills and shared memory of the fused kernel per launch, compiled for a GPU without one.

Triton compiles the kernel of :mod:`audiodiff.engines.fused` for ``--arch`` (default ``sm_90a``, the H100)
on any machine, specialised the way a launch on ``--batch`` x ``--seconds`` of base would be (16-byte
aligned pointers, lengths divisible by 16), and the ``ptxas`` that ships with Triton reports each
launch's registers per thread, spilled bytes and shared memory. Spills are the first thing to
check before spending GPU time on a launch: the single-block kernel at 128x4 uses all 255
registers without spilling, and a launch that spills kilobytes a thread is unlikely to be faster.

    python benchmarks/kernel_registers.py --launches 128x4 64x4 128x4g16 128x8g16 --json registers.json
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, machine_lines, markdown_table, parser_from_doc, write_json  # noqa: E402

from audiodiff.engines.fused import COND_CACHED, COND_MEL, Launch, group_plan, mel_blocks, tile_halo  # noqa: E402
from audiodiff.network.diffwave import denoiser_config  # noqa: E402


def ptxas_path() -> Path:
    """Triton's own ``ptxas`` (in its NVIDIA backend)."""
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"


def kernel_arguments(kernel, launch: Launch, layers: int, cond_mode: int, channels: int, batch: int, length: int,
                     n_mels: int, halo: int) -> tuple[dict[str, str], dict[str, Any], dict[tuple[int], list]]:
    """Triton's signature, constants and divisibility attributes for one launch of ``layers`` blocks."""
    kept = launch.block_t - 2 * halo
    integers = {"batch": batch, "T": length, "n_mels": n_mels, "halo": halo, "kept": kept,
                "tiles_per_row": -(-length // kept)}
    mel_a, mel_b = mel_blocks(n_mels) if cond_mode == COND_MEL else (16, 0)
    constants = {"C": channels, "BLOCK_T": launch.block_t, "MEL_A": mel_a, "MEL_B": mel_b, "COND_MODE": cond_mode,
                 "DOT_PRECISION": "tf32", "LAYERS": layers, "TILES_PER_PROGRAM": 1 if layers == 1 else 8}
    signature: dict[str, str] = {}
    attributes: dict[tuple[int], list] = {}
    for index, name in enumerate(kernel.arg_names):
        if name in constants:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*i32" if name == "dilations_ptr" else "*fp32" if "bias" in name else "*bf16"
            attributes[(index,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "i32"
            if integers[name] % 16 == 0:  # as Triton specialises an integer argument at launch
                attributes[(index,)] = [["tt.divisibility", 16]]
    return signature, constants, attributes


def compile_stats(launch: Launch, layers: int, cond_mode: int, halo: int, arch: str, channels: int, batch: int,
                  length: int, n_mels: int) -> dict[str, Any]:
    """Compile one kernel for ``arch`` and read ``ptxas -v``: registers, spill bytes, stack, shared memory."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from audiodiff.engines.fused import _kernel

    kernel = _kernel(False)
    signature, constants, attributes = kernel_arguments(kernel, launch, layers, cond_mode, channels, batch, length,
                                                        n_mels, halo)
    capability = int(re.sub(r"\D", "", arch))
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attributes),
                              target=GPUTarget("cuda", capability, 32), options=launch.options())
    with tempfile.TemporaryDirectory() as folder:
        ptx = Path(folder) / "kernel.ptx"
        ptx.write_text(compiled.asm["ptx"])
        report = subprocess.run([str(ptxas_path()), f"-arch={arch}", "-v", str(ptx), "-o", str(ptx.with_suffix(".cubin"))],
                                capture_output=True, text=True, check=True).stderr
    number = lambda pattern: int(re.search(pattern, report).group(1)) if re.search(pattern, report) else 0  # noqa: E731
    return {"registers": number(r"Used (\d+) registers"), "spill_stores": number(r"(\d+) bytes spill stores"),
            "spill_loads": number(r"(\d+) bytes spill loads"), "stack": number(r"(\d+) bytes stack frame"),
            "shared": compiled.metadata.shared}


def launch_rows(text: str, args) -> list[dict[str, Any]]:
    """One row per distinct kernel a pass of ``text`` launches (a single block, or each group size)."""
    launch = Launch.parse(text)
    config = denoiser_config(args.size)
    dilations = tuple(2 ** (i % config.dilation_cycle) for i in range(config.residual_layers))
    length = round(args.seconds * 22050 / config.hop_length) * config.hop_length
    cond_mode = COND_CACHED if args.mode == "cached" else COND_MEL
    kernels = {}
    for first, layers in group_plan(dilations, launch.group_halo if cond_mode == COND_MEL else 0):
        halo = tile_halo(sum(dilations[first + 1:first + layers]))
        kernels.setdefault((layers, halo), []).append(first)
    rows = []
    for (layers, halo), firsts in sorted(kernels.items()):
        row = {"launch": text, "mode": args.mode, "blocks": layers, "halo": halo, "kernels_per_pass": len(firsts)}
        try:
            row.update(compile_stats(launch, layers, cond_mode, halo, args.arch, config.residual_channels, args.batch,
                                     length, config.n_mels))
        except Exception as error:  # noqa: BLE001: a launch that does not compile is its row's error
            row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:160]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = parser_from_doc(__doc__)
    parser.add_argument("--launches", nargs="+", default=["128x4", "64x4", "128x4g16", "128x8g16"])
    parser.add_argument("--mode", default="mel", choices=["mel", "cached"])
    parser.add_argument("--arch", default="sm_90a", help="ptxas architecture: sm_90a (H100), sm_80 (A100), ...")
    parser.add_argument("--size", default="base", choices=["tiny", "base", "large"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not ptxas_path().exists():
        parser.error(f"Triton's ptxas is not at {ptxas_path()}: this needs the Linux CUDA build of torch/Triton")
    os.environ.pop("TRITON_INTERPRET", None)  # compile, do not interpret
    rows = [row for text in args.launches for row in launch_rows(text, args)]
    info = machine_info("cpu")
    print("\n".join(machine_lines(info) + [f"{args.size}, {args.mode}, compiled for {args.arch} (no GPU used)", ""]))
    print(markdown_table(
        ["launch", "blocks a kernel", "halo", "kernels a pass", "registers", "spill stores B", "spill loads B",
         "shared KB"],
        [[r["launch"], r["blocks"], r["halo"], r["kernels_per_pass"]]
         + ([r["registers"], r["spill_stores"], r["spill_loads"], r["shared"] // 1024] if "error" not in r
            else [r["error"][:60], "", "", ""]) for r in rows]))
    report = {"benchmark": "kernel_registers", "machine": info,
              "settings": {k: str(v) for k, v in vars(args).items() if k != "json"}, "rows": rows}
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
