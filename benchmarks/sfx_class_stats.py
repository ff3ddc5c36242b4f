"""Per-class spectral statistics of generated vs real sound effects.

For a class-conditional model and its labelled data folder, generates ``--n`` clips of every
class and compares them with (up to ``--max-real``) real clips of that class: median spectral
centroid, spectral flatness, RMS level, zero-crossing rate (librosa). It also classifies each
generated clip by the nearest real class in those features (standardised), a rough check that
the model's classes sound like their data (chance is 1 / number of classes), and gives the rank
correlation (Spearman, across classes) of each feature's real and generated medians: near 1 when
the classes that are brighter / noisier in the data are so in the generated clips too.

    python benchmarks/sfx_class_stats.py --model sfx.safetensors --data shared/data/sfx \
        --labels parent --n 8 --seconds 1.5 --guidance 3 --json sfx-stats.json

Prints a table and writes JSON (atomically).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

FEATURES = ("centroid_hz", "flatness", "rms_db", "zcr")


def clip_features(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Median frame features of a mono clip ``(T,)``."""
    import librosa

    audio = np.asarray(audio, dtype=np.float32)
    rms = librosa.feature.rms(y=audio)[0]
    loud = rms >= 0.1 * rms.max() if rms.max() > 0 else np.ones_like(rms, dtype=bool)
    centroid = librosa.feature.spectral_centroid(y=audio, sr=sample_rate)[0]
    flatness = librosa.feature.spectral_flatness(y=audio)[0]
    zcr = librosa.feature.zero_crossing_rate(audio)[0]
    n = min(len(loud), len(centroid), len(flatness), len(zcr))
    keep = loud[:n]
    return {
        "centroid_hz": float(np.median(centroid[:n][keep])),
        "flatness": float(np.median(flatness[:n][keep])),
        "rms_db": float(20 * np.log10(np.median(rms[:n][keep]) + 1e-8)),
        "zcr": float(np.median(zcr[:n][keep])),
    }


def real_clips(root: Path, labels: str, sample_rate: int, seconds: float, max_per_class: int):
    """``{class: [audio (T,)]}``: the first ``seconds`` of up to ``max_per_class`` files per class."""
    from audiodiff.io.audio import AudioError, load_audio
    from audiodiff.data.filelists import label_from_path
    from audiodiff.io.audio_files import find_audio_files

    clips: dict[str, list[np.ndarray]] = defaultdict(list)
    for path in find_audio_files(root):
        label = label_from_path(path, root, labels)
        if label is None or len(clips[label]) >= max_per_class:
            continue
        try:
            audio, _ = load_audio(path, sample_rate, duration_seconds=seconds)
        except AudioError as error:
            print(f"skipping {error}", file=sys.stderr)
            continue
        if audio.numel() >= 2048 and float(audio.abs().max()) > 1e-4:
            clips[label].append(audio.numpy())
    return clips


def nearest_class_accuracy(real: dict[str, list[dict]], generated: dict[str, list[dict]]) -> dict[str, float]:
    """Share of generated clips whose nearest real class mean (standardised features, log centroid) is their own."""
    def vector(f: dict) -> np.ndarray:
        return np.array([np.log(f["centroid_hz"] + 1.0), f["flatness"], f["rms_db"], f["zcr"]])

    all_real = np.stack([vector(f) for feats in real.values() for f in feats])
    mean, std = all_real.mean(0), all_real.std(0) + 1e-8
    centres = {c: ((np.stack([vector(f) for f in feats]) - mean) / std).mean(0) for c, feats in real.items() if feats}
    hits: dict[str, float] = {}
    for label, feats in generated.items():
        if label not in centres:
            continue
        guesses = [min(centres, key=lambda c: np.linalg.norm((vector(f) - mean) / std - centres[c])) for f in feats]
        hits[label] = float(np.mean([g == label for g in guesses]))
    return hits


def rank_correlations(rows: list[dict]) -> dict[str, float | None]:
    """Spearman correlation across classes of the real and generated median of each feature."""
    from scipy.stats import spearmanr

    result: dict[str, float | None] = {}
    for feature in FEATURES:
        pairs = [(r[f"real_{feature}"], r[f"gen_{feature}"]) for r in rows if r[f"real_{feature}"] is not None]
        value = spearmanr(*zip(*pairs)).correlation if len(pairs) >= 3 else None
        result[feature] = None if value is None or np.isnan(value) else float(value)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="labelled data folder")
    parser.add_argument("--labels", default="parent", choices=["folder", "parent"])
    parser.add_argument("--n", type=int, default=8, help="generated clips per class")
    parser.add_argument("--max-real", type=int, default=16, help="real clips per class")
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--sampler", default="fast")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="also write the generated clips and a contact sheet per class here")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from audiodiff.io.audio import save_audio
    from audiodiff.jobs.generate import generate_clips, plan_clips, save_contact_sheet
    from audiodiff.pipeline import load_any

    model = load_any(args.model, args.device, engine="eager")
    names = model.config.class_names
    if not names:
        parser.error(f"{args.model} is not a class-conditional model")
    sr = model.sample_rate
    real = {c: [clip_features(a, sr) for a in clips]
            for c, clips in real_clips(Path(args.data), args.labels, sr, args.seconds, args.max_real).items()}
    generated: dict[str, list[dict]] = defaultdict(list)
    per_class: dict[str, list] = defaultdict(list)
    clips = plan_clips(list(names), args.n, args.seed)
    for clip, audio in generate_clips(model, clips, round(args.seconds * sr), guidance=args.guidance,
                                      sampler=args.sampler, steps=args.steps):
        generated[clip.label].append(clip_features(audio.numpy(), sr))
        per_class[clip.label].append((clip, audio))
        if args.out:
            save_audio(Path(args.out) / clip.file_name, audio, sr)
    if args.out:
        for label, done in per_class.items():
            save_contact_sheet(Path(args.out) / f"sheet-{label}-seed{args.seed}.png", done, sr)
    accuracy = nearest_class_accuracy(real, generated)
    rows: list[dict] = []
    for label in names:
        row = {"class": label, "real_clips": len(real.get(label, [])), "generated_clips": len(generated[label]),
               "nearest_class_hit": accuracy.get(label)}
        for feature in FEATURES:
            row[f"real_{feature}"] = float(np.median([f[feature] for f in real[label]])) if real.get(label) else None
            row[f"gen_{feature}"] = float(np.median([f[feature] for f in generated[label]]))
        rows.append(row)
    result = {"model": Path(args.model).name, "guidance": args.guidance, "sampler": args.sampler,
              "steps": args.steps, "seconds": args.seconds, "rows": rows,
              "nearest_class_accuracy": float(np.mean(list(accuracy.values()))) if accuracy else None,
              "chance": 1.0 / len(names), "rank_correlation": rank_correlations(rows)}
    print_table(result)
    if args.json:
        from audiodiff.io.files import write_json

        write_json(args.json, result)
    return result


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(result: dict) -> None:
    print(f"{result['model']}: guidance {result['guidance']}, sampler {result['sampler']}, "
          f"{result['seconds']} s clips (real / generated medians)")
    print(f"{'class':<12} {'n real':>6} {'centroid Hz':>17} {'flatness':>15} {'RMS dB':>15} {'ZCR':>13} {'hit':>5}")
    for r in result["rows"]:
        print(f"{r['class']:<12} {r['real_clips']:>6} "
              f"{_fmt(r['real_centroid_hz'], '8.0f')} {_fmt(r['gen_centroid_hz'], '8.0f')} "
              f"{_fmt(r['real_flatness'], '7.3f')} {_fmt(r['gen_flatness'], '7.3f')} "
              f"{_fmt(r['real_rms_db'], '7.1f')} {_fmt(r['gen_rms_db'], '7.1f')} "
              f"{_fmt(r['real_zcr'], '6.3f')} {_fmt(r['gen_zcr'], '6.3f')} {_fmt(r['nearest_class_hit'], '5.2f')}")
    print(f"nearest-real-class accuracy of generated clips: {_fmt(result['nearest_class_accuracy'], '.2f')} "
          f"(chance {result['chance']:.2f})")
    print("rank correlation across classes, real vs generated medians: "
          + ", ".join(f"{k} {_fmt(v, '.2f')}" for k, v in result["rank_correlation"].items()))


if __name__ == "__main__":
    main()
