"""Keep a shipped vocoder's stored noise schedules in a retrained copy, and check they still hold.

    python benchmarks/heldout_schedules.py carry CANDIDATE.safetensors --from speech-22k
    python benchmarks/heldout_schedules.py check speech-22k CANDIDATE.safetensors --data heldout8/ --device cuda

``carry`` copies every schedule stored in ``--from`` (``searched-3/4/5`` of the shipped
``speech-22k``) into CANDIDATE that it lacks, rewriting CANDIDATE in its own float dtype (the
float16 of ``audiodiff export --half``). A training checkpoint carries no schedules, so an export
of a run that continued the shipped model has none until this runs.

``check`` vocodes every file of ``--data`` with each model, with ``fast`` and with each schedule
stored in the first model (file k with seed k, as ``audiodiff eval``), and scores log-mel L1 and
MR-STFT against the file. A schedule was searched for the first model's weights; on the second it
**still holds** when its log-mel L1 relative to ``fast``'s (the ratio) is no worse than it was on
the first model, give or take ``--slack`` (0.01). Otherwise it prints that the schedule no longer
holds and the ``search-schedule`` command that re-searches it. Exit status 0 in both cases
(it informs; 2 on bad input).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def carry(candidate: str, source: str) -> list[str]:
    """Copy ``source``'s stored schedules that ``candidate`` lacks into ``candidate``; returns their names."""
    from audiodiff.pipeline import load_model, stored_float_dtype

    shipped, model = load_model(source, engine="eager"), load_model(candidate, engine="eager")
    missing = [name for name in shipped.config.schedules if name not in model.config.schedules]
    if missing:
        dtype = stored_float_dtype(candidate)
        for name in missing:
            model.with_schedule(name, shipped.config.schedules[name])
        model.save(candidate, dtype=dtype)
    return missing


def _clips(data: str, model) -> list[tuple[str, object, object]]:
    """``(name, audio (T,), mel (1, n_mels, frames))`` of every audio file of ``data``, in name order."""
    import torch

    from audiodiff.io.audio import load_audio
    from audiodiff.io.audio_files import audio_files_by_name

    clips = []
    for name, path in sorted(audio_files_by_name(data).items()):
        audio, _ = load_audio(path, model.sample_rate)
        audio = audio[: audio.shape[-1] // model.hop_length * model.hop_length]
        with torch.inference_mode():
            clips.append((name, audio, model.mel(audio).cpu()))
    return clips


def score_samplers(model, clips, samplers: dict[str, object], precision: str = "fp32") -> dict[str, dict[str, float]]:
    """Mean log-mel L1 and MR-STFT of ``model`` on ``clips`` for each named sampler (a name or a SamplingSchedule)."""
    import numpy as np

    from audiodiff.eval import score_pair

    preset = model.config.mel.preset
    result = {}
    for label, sampler in samplers.items():
        scores = []
        for k, (_, audio, mel) in enumerate(clips):
            vocoded = model.vocode(mel, sampler=sampler, seed=k, precision=precision)[0].float().cpu()
            scores.append(score_pair(audio, vocoded, model.sample_rate, mel_preset=preset, metrics=["mel", "mrstft"]))
        result[label] = {"mel_l1": float(np.mean([s.mel_l1 for s in scores])),
                         "mrstft": float(np.mean([s.mrstft for s in scores]))}
    return result


def check(first: str, second: str, data: str, device: str = "cpu", slack: float = 0.01) -> dict:
    """Score ``fast`` and ``first``'s stored schedules on both models; returns the table and verdicts."""
    from audiodiff.pipeline import load_model

    models = {"first": load_model(first, device, engine="eager"), "second": load_model(second, device, engine="eager")}
    schedules = dict(models["first"].config.schedules)
    clips = _clips(data, models["first"])
    if not clips:
        raise ValueError(f"{data}: no audio files")
    scores = {}
    for key, model in models.items():
        if model.device.type == "cpu":
            model.fold_denoiser()  # the CLI's CPU engine: the same audio, faster
        scores[key] = score_samplers(model, clips, {"fast": "fast", **schedules})
    verdicts = {}
    for name in schedules:
        ratios = [scores[key][name]["mel_l1"] / scores[key]["fast"]["mel_l1"] for key in ("first", "second")]
        verdicts[name] = {"steps": schedules[name].steps, "ratio_first": ratios[0], "ratio_second": ratios[1],
                          "holds": ratios[1] <= ratios[0] + slack}
    return {"first": first, "second": second, "data": data, "files": len(clips), "slack": slack,
            "scores": scores, "verdicts": verdicts}


def report(result: dict) -> str:
    lines = [f"stored schedules on {result['files']} file(s) of {Path(result['data']).name}: mean log-mel L1 / MR-STFT "
             f"(first = {Path(result['first']).name}, second = {Path(result['second']).name})",
             f"{'sampler':<12}{'first':>16}{'second':>16}"]
    for label in result["scores"]["first"]:
        cells = [f"{result['scores'][k][label]['mel_l1']:.3f} / {result['scores'][k][label]['mrstft']:.3f}"
                 for k in ("first", "second")]
        lines.append(f"{label:<12}{cells[0]:>16}{cells[1]:>16}")
    for name, verdict in result["verdicts"].items():
        text = (f"schedule {name}: L1 / fast's L1 {verdict['ratio_first']:.3f} on the first model, "
                f"{verdict['ratio_second']:.3f} on the second: ")
        if verdict["holds"]:
            text += "still holds"
        else:
            text += (f"NO LONGER HOLDS on the new weights; re-search it on held-out files that are not the evaluation's: "
                     f"audiodiff search-schedule MODEL --data HELDOUT_SEARCH --steps {verdict['steps']} --name {name} --out MODEL")
        lines.append(text)
    if not result["verdicts"]:
        lines.append("no stored schedules")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("carry", help="copy the stored schedules of --from into CANDIDATE")
    p.add_argument("candidate")
    p.add_argument("--from", dest="source", required=True)
    p = sub.add_parser("check", help="do the first model's stored schedules hold on the second?")
    p.add_argument("first")
    p.add_argument("second")
    p.add_argument("--data", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--slack", type=float, default=0.01)
    p.add_argument("--json", help="also write the result as JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "carry":
            names = carry(args.candidate, args.source)
            print(f"{args.candidate}: carried schedule(s) {', '.join(names) if names else 'none (none missing)'} "
                  f"from {args.source}")
            return 0
        start = time.perf_counter()
        result = check(args.first, args.second, args.data, args.device, args.slack)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report(result))
    print(f"({time.perf_counter() - start:.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
