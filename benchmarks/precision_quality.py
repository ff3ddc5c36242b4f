"""Does the network's precision change what a vocoder says? fp32 vs bf16 vs fp16 on held-out speech.

Resynthesises every audio file of ``--data`` (its mel, in the model's convention) with the same
sampler and seed under each precision of ``--precisions``, and reports per precision the mean
log-mel L1 and MR-STFT distance to the original, and the largest sample difference from the fp32
output. Precision only changes the network's arithmetic (autocast); the sampler stays fp32. A
precision with ``-fused`` (``bf16-fused``) runs the fused Triton kernels (CUDA) in that dtype, one
with ``-folded`` (``bf16-folded``) the folded engine (the CLI's default on a CPU); their last column
is the largest difference from the same precision in the eager network.

    python benchmarks/precision_quality.py --model vocoder.safetensors --data held_out/ --device cuda \
        --json precision.json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt, machine_info, machine_lines, markdown_table, parser_from_doc, write_json  # noqa: E402


def held_out_audio(model, folder: Path) -> list[tuple[str, torch.Tensor]]:
    """``(name, audio (T,))`` for every readable audio file under ``folder`` at the model's rate."""
    from audiodiff.io.audio import AudioError, load_audio
    from audiodiff.io.audio_files import find_audio_files

    clips = []
    for path in find_audio_files(folder):
        try:
            clips.append((path.name, load_audio(path, model.sample_rate)[0]))
        except AudioError as error:
            print(f"skipped: {error}", file=sys.stderr)
    return clips


#: Engines a precision's suffix selects (``bf16-fused``), and how a model is set up for each.
ENGINES = {
    "fused": lambda model, launch: model.fuse_denoiser(launch),
    "folded": lambda model, launch: model.fold_denoiser(),
}


def split_precision(name: str) -> tuple[str, str | None]:
    """``"bf16-fused"`` -> ``("bf16", "fused")``; ``"fp32"`` -> ``("fp32", None)`` (the eager network)."""
    for engine in ENGINES:
        if name.endswith(f"-{engine}"):
            return name.removesuffix(f"-{engine}"), engine
    return name, None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = parser_from_doc(__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--sampler", default="fast", help="a built-in sampler or a schedule stored in the model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--launch", default=None, help="the fused kernels' launch, e.g. 128x8 (default: the package's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from audiodiff.dsp.spectral import mel_l1_distance, multi_resolution_stft_distance
    from audiodiff.pipeline import load_any

    model = load_any(args.model, args.device, engine="eager")
    engines = {engine for _, engine in map(split_precision, args.precisions)} - {None}
    models = {None: model, **{engine: ENGINES[engine](load_any(args.model, args.device, engine="eager"), args.launch)
                              for engine in engines}}
    clips = held_out_audio(model, args.data)
    if not clips:
        raise SystemExit(f"error: {args.data}: no readable audio")
    totals = {p: {"mel_l1": 0.0, "mrstft": 0.0, "max_abs_vs_fp32": 0.0, "max_abs_vs_eager": None}
              for p in args.precisions}
    for name, audio in clips:
        audio = audio.to(args.device).unsqueeze(0)
        mel = model.mel(audio)
        outputs = {p: models[split_precision(p)[1]].vocode(mel, sampler=args.sampler, seed=args.seed,
                                                           precision=split_precision(p)[0])
                   for p in args.precisions}
        with torch.inference_mode():
            for precision, out in outputs.items():
                length = min(out.shape[-1], audio.shape[-1])
                totals[precision]["mel_l1"] += float(mel_l1_distance(model.mel(out[..., :length]),
                                                                     model.mel(audio[..., :length])).mean())
                totals[precision]["mrstft"] += float(multi_resolution_stft_distance(out[..., :length],
                                                                                    audio[..., :length]).mean())
                if "fp32" in outputs:
                    diff = float((out - outputs["fp32"]).abs().max())
                    totals[precision]["max_abs_vs_fp32"] = max(totals[precision]["max_abs_vs_fp32"], diff)
                dtype_name, engine = split_precision(precision)
                eager = outputs.get(dtype_name)
                if engine is not None and eager is not None:
                    diff = float((out - eager).abs().max())
                    totals[precision]["max_abs_vs_eager"] = max(totals[precision]["max_abs_vs_eager"] or 0.0, diff)
    rows = [{"precision": p, "mel_l1": t["mel_l1"] / len(clips), "mrstft": t["mrstft"] / len(clips),
             "max_abs_vs_fp32": t["max_abs_vs_fp32"] if "fp32" in args.precisions else None,
             "max_abs_vs_eager": t["max_abs_vs_eager"]}
            for p, t in totals.items()]
    report = {"benchmark": "precision_quality", "machine": machine_info(args.device), "files": [n for n, _ in clips],
              "settings": {"model": Path(args.model).name, "sampler": args.sampler, "seed": args.seed}, "rows": rows}
    table = [[r["precision"], fmt(r["mel_l1"]), fmt(r["mrstft"]), fmt(r["max_abs_vs_fp32"]), fmt(r["max_abs_vs_eager"])]
             for r in rows]
    print("\n".join(machine_lines(report["machine"]) + [
        f"{len(clips)} files of {args.data.name}, sampler {args.sampler}, seed {args.seed}", "",
        markdown_table(["precision", "log-mel L1", "MR-STFT", "max |x - x_fp32|", "max |x - x_eager|"], table)]))
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
