"""Diagnose a vocoder on held-out audio: one-step x0 quality against noise level, and its mel input.

Two measurements, both on the CPU in a few minutes for a base model and ~20 s of audio:

**One-step x0 against noise level** (``--levels``, training steps of the model's schedule). For
every held-out file (loaded at the model's rate, trimmed to whole mel frames) ``x0`` and each
level ``t``: ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` with ``eps`` drawn from ``--seed``
(file ``k`` uses ``seed + k``; the same noise at every level), the network's ``eps_hat`` given
``x_t``, step ``t`` and the mel of ``x0``, and ``x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) /
sqrt(abar_t)`` (not clipped). Scored against ``x0`` with :func:`audiodiff.eval.score_pair`
(``--metrics``, default log-mel L1, MR-STFT, V/UV F1 and PESQ), next to the *naive* estimate
``x_t / sqrt(abar_t)`` (what doing nothing gives; its error is ``sqrt(1/abar_t - 1) eps``). Also
the waveform SNR of both estimates (dB, over all files' samples), and the network's epsilon error
``mean |eps_hat - eps|`` (the training loss; predicting 0 scores ``sqrt(2/pi)`` = 0.80). A control
asks whether the network listens to the mel: the same call with a *flat* mel, each bin held at its
mean over the file (the same spectral envelope, no timing or pitch), scored by SNR, log-mel L1
and epsilon error. A network that uses the mel does clearly worse with the flat one.

**The same, started from Griffin-Lim** (``--griffin-lim-levels``): ``x0`` replaced by Griffin-Lim's
waveform from the same mel (64 iterations), noised to each level and denoised in one call; scored
against ``x0`` next to Griffin-Lim itself and the noised input. This separates what the network
does to a waveform from what the added noise does.

**The mel at the network's input** (the conditioner). Statistics of ``model.mel(audio)`` over
``--mel-stats-data`` (e.g. the training folder; ``--mel-stats-files`` of its files, chosen with
the seed; every file when 0), and, on the first held-out file at the middle level, what the
network does with it: the upsampler's output, each block's conditioner projection (``(B, 2C, T)``,
added to the dilated convolution's output before the gate) against the dilated convolution's own
output, and the share of gate/filter pre-activations beyond +-3 (saturated ``sigmoid``/``tanh``),
for the trained weights and for a freshly initialised network of the same size (what training
starts from), each fed the raw mel and the mel mapped linearly to [0, 1] (``(mel - ln 1e-5) /
(2 - ln 1e-5)``, the range of DiffWave's own mels; the fresh network only: the trained one never
saw such a mel).

    python benchmarks/diagnose_vocoder.py --model speech-22k --data held_out/ \
        --mel-stats-data train/ --json diagnose.json --threads 1
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEFAULT_LEVELS = (0, 2, 5, 9, 14, 19, 24, 29, 39, 49)
DEFAULT_GRIFFIN_LIM_LEVELS = (0, 2)
DEFAULT_METRICS = ("mel", "mrstft", "f0", "pesq")
#: Keys of the one-step table, in print order.
TABLE_KEYS = ("mel_l1", "mrstft", "vuv_f1", "pesq_wb")
SATURATION = 3.0  # |pre-activation| beyond which sigmoid'(x) < 0.05 and tanh'(x) < 0.01
LOG_FLOOR = math.log(1e-5)  # the hifigan preset's clamp


# ------------------------------------------------------------------ held-out audio
def load_clips(model, data: Path, max_files: int | None, seconds: float | None = None) -> list[tuple[str, torch.Tensor]]:
    """``(name, audio (T,))`` at the model's rate, its first ``seconds`` (all when ``None``), trimmed to
    whole frames, in name order."""
    from audiodiff.io.audio import load_audio
    from audiodiff.io.audio_files import audio_files_by_name

    clips = []
    for name, path in sorted(audio_files_by_name(data).items())[:max_files]:
        audio, _ = load_audio(path, model.sample_rate)
        audio = audio.reshape(-1).float()
        if seconds is not None:
            audio = audio[: int(seconds * model.sample_rate)]
        frames = audio.numel() // model.hop_length
        clips.append((name, audio[: frames * model.hop_length]))
    if not clips:
        raise SystemExit(f"{data}: no audio files")
    return clips


# ------------------------------------------------------------------ one-step x0
@torch.inference_mode()
def one_step(model, clips, levels: list[int], seed: int, metrics) -> dict[str, Any]:
    """Score ``x0_hat`` and the naive ``x_t / sqrt(abar)`` against ``x0`` at each level (see the module doc)."""
    from audiodiff.eval import score_pair

    schedule = model.schedule
    rows = {t: {"step": t, "sigma": float(schedule.sigmas[t]), "alpha_bar": float(schedule.alpha_bars[t]),
                "network": [], "naive": [], "eps_l1_files": [], "eps_l1_flat_mel_files": [], "flat_mel_l1_files": [],
                "sq": {"x0": 0.0, "network": 0.0, "naive": 0.0, "flat_mel": 0.0}}
            for t in levels}
    preset = model.config.mel.preset
    for k, (name, x0) in enumerate(clips):
        mel = model.mel(x0[None])
        conditioning = model.condition(mel)
        # the same mel with each bin held at its mean over time: no timing, no pitch, the same spectral envelope
        flat = model.condition(mel.mean(dim=-1, keepdim=True).expand_as(mel).contiguous())
        eps = torch.randn(x0[None].shape, generator=torch.Generator().manual_seed(seed + k))
        for t in levels:
            row, abar = rows[t], rows[t]["alpha_bar"]
            sigma = math.sqrt(1.0 - abar)
            x_t = math.sqrt(abar) * x0[None] + sigma * eps
            eps_hat = model.eps_fn(conditioning)(x_t, sigma).float()
            estimates = {"network": (x_t - sigma * eps_hat) / math.sqrt(abar), "naive": x_t / math.sqrt(abar)}
            eps_flat = model.eps_fn(flat)(x_t, sigma).float()
            x0_flat = (x_t - sigma * eps_flat) / math.sqrt(abar)
            row["eps_l1_files"].append(float((eps_hat - eps).abs().mean()))
            row["eps_l1_flat_mel_files"].append(float((eps_flat - eps).abs().mean()))
            row["flat_mel_l1_files"].append(score_pair(x0.numpy(), x0_flat[0].numpy(), model.sample_rate, mel_preset=preset,
                                                 metrics=["mel"]).mel_l1)
            row["sq"]["x0"] += float(x0.double().pow(2).sum())
            row["sq"]["flat_mel"] += float((x0_flat[0].double() - x0.double()).pow(2).sum())
            for kind, estimate in estimates.items():
                row["sq"][kind] += float((estimate[0].double() - x0.double()).pow(2).sum())
                score = score_pair(x0.numpy(), estimate[0].numpy(), model.sample_rate, mel_preset=preset,
                                   metrics=metrics)
                row[kind].append(_file_scores(name, score, metrics))
        print(f"  {name}: {len(levels)} levels scored", flush=True)
    return {"rows": [summarise_row(rows[t]) for t in levels]}


def summarise_row(row: dict[str, Any]) -> dict[str, Any]:
    """Fill a level's means from its per-file lists (kept, so runs over parts of a folder can merge)."""
    sq = row["sq"]
    row["snr_db"] = {kind: 10 * math.log10(sq["x0"] / max(sq[kind], 1e-30)) for kind in ("network", "naive", "flat_mel")}
    for key in ("eps_l1", "eps_l1_flat_mel", "flat_mel_l1"):
        values = [v for v in row[f"{key}_files"] if v is not None]
        row[key] = float(np.mean(values)) if values else None
    row["means"] = {kind: _means(row[kind]) for kind in ("network", "naive")}
    return row


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from runs of this script over disjoint parts of a folder (same model, levels and
    metrics; give each part the ``--seed`` of its first file's index so the noise matches one run)."""
    first = results[0]
    for other in results[1:]:
        if (other["model"], other["levels"], other["metrics"]) != (first["model"], first["levels"], first["metrics"]):
            raise SystemExit("--merge: the runs differ in model, levels or metrics")
    merged = {**first, "files": sum(r["files"] for r in results), "file_names": sum((r["file_names"] for r in results), []),
              "audio_seconds": sum(r["audio_seconds"] for r in results), "merged_from": [r["data"] for r in results],
              "data": " + ".join(r["data"] for r in results),
              "cpu_seconds": sum(r["cpu_seconds"] for r in results)}
    rows = []
    for i, row in enumerate(first["one_step"]["rows"]):
        parts = [r["one_step"]["rows"][i] for r in results]
        new = {key: row[key] for key in ("step", "sigma", "alpha_bar")}
        for key in ("network", "naive", "eps_l1_files", "eps_l1_flat_mel_files", "flat_mel_l1_files"):
            new[key] = sum((p[key] for p in parts), [])
        new["sq"] = {kind: sum(p["sq"][kind] for p in parts) for kind in row["sq"]}
        rows.append(summarise_row(new))
    merged["one_step"] = {"rows": rows}
    gls = [r["griffin_lim_one_step"] for r in results if "griffin_lim_one_step" in r]
    if gls:
        files = {kind: sum((g["files"][kind] for g in gls), []) for kind in gls[0]["files"]}
        merged["griffin_lim_one_step"] = {**gls[0], "files": files,
                                          "means": {kind: _means(f) for kind, f in files.items()}}
    for key in ("mel_stats", "mel_stats_data"):
        found = [r[key] for r in results if key in r]
        if found:
            merged[key] = found[0]
    return merged


@torch.inference_mode()
def griffin_lim_one_step(model, clips, levels: list[int], seed: int, metrics, iters: int = 64) -> dict[str, Any]:
    """The one-step check started from Griffin-Lim's waveform ``g`` instead of ``x0``: ``g``, the noised
    ``g_t / sqrt(abar)`` and the network's ``x0_hat`` from ``g_t``, each scored against ``x0``."""
    from audiodiff.eval import griffin_lim, score_pair

    preset, config = model.config.mel.preset, model.config.mel
    scored: dict[str, list[dict[str, Any]]] = {"griffin-lim": []}
    for k, (name, x0) in enumerate(clips):
        mel = model.mel(x0[None])
        conditioning = model.condition(mel)
        g = griffin_lim(mel[0], config, iters, seed=seed + k)[: x0.numel()][None].float()
        eps = torch.randn(g.shape, generator=torch.Generator().manual_seed(seed + k))
        outputs = {"griffin-lim": g}
        for t in levels:
            abar = float(model.schedule.alpha_bars[t])
            sigma = math.sqrt(1.0 - abar)
            g_t = math.sqrt(abar) * g + sigma * eps
            eps_hat = model.eps_fn(conditioning)(g_t, sigma).float()
            outputs[f"step {t}: naive"] = g_t / math.sqrt(abar)
            outputs[f"step {t}: network"] = (g_t - sigma * eps_hat) / math.sqrt(abar)
        for kind, audio in outputs.items():
            score = score_pair(x0.numpy(), audio[0].numpy(), model.sample_rate, mel_preset=preset, metrics=metrics)
            scored.setdefault(kind, []).append(_file_scores(name, score, metrics))
    return {"levels": levels, "iterations": iters, "means": {kind: _means(files) for kind, files in scored.items()},
            "files": scored}


def _file_scores(name: str, score, metrics) -> dict[str, Any]:
    """One file's scores: the keys of the chosen metric groups only, and the notes."""
    from audiodiff.eval import result_keys

    values = score.values()
    return {"file": name, **{key: values.get(key) for key in result_keys(metrics)}, "notes": score.notes}


def _means(files: list[dict[str, Any]]) -> dict[str, float | None]:
    keys = [k for k in files[0] if k not in ("file", "notes")]
    means = {}
    for key in keys:
        values = [f[key] for f in files if f.get(key) is not None]
        means[key] = float(np.mean(values)) if values else None
    return means


# ------------------------------------------------------------------ mel statistics
@torch.inference_mode()
def mel_statistics(model, data: Path, files: int, seed: int) -> dict[str, Any]:
    """Statistics of the model's mel over (a seeded sample of) the audio files under ``data``."""
    from audiodiff.io.audio import load_audio
    from audiodiff.io.audio_files import audio_files_by_name

    paths = sorted(audio_files_by_name(data).values())
    if files and files < len(paths):
        pick = np.random.default_rng(seed).choice(len(paths), files, replace=False)
        paths = [paths[i] for i in sorted(pick)]
    mels, rms = [], []
    for path in paths:
        audio, _ = load_audio(path, model.sample_rate)
        audio = audio.reshape(-1).float()
        if audio.numel() < model.config.mel.n_fft:
            continue
        mels.append(model.mel(audio[None])[0].double())
        rms.append(float(audio.pow(2).mean().sqrt()))
    allmel = torch.cat(mels, dim=-1)  # (n_mels, frames)
    values = allmel.flatten().numpy()
    per_bin = allmel.mean(dim=-1).numpy()
    frame_mean = allmel.mean(dim=0)
    quantiles = [0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999]
    return {
        "files": len(mels), "frames": int(allmel.shape[-1]),
        "min": float(values.min()), "max": float(values.max()),
        "mean": float(values.mean()), "std": float(values.std()),
        "quantiles": dict(zip([str(q) for q in quantiles], np.quantile(values, quantiles).tolist())),
        "at_floor": float(np.mean(values <= LOG_FLOOR + 1e-3)),
        "per_bin_mean_min": float(per_bin.min()), "per_bin_mean_max": float(per_bin.max()),
        "per_bin_std_mean": float(allmel.std(dim=-1).mean()),
        "frame_mean_std": float(frame_mean.std()),  # how much the whole frame's level moves over time
        "audio_rms_median": float(np.median(rms)), "audio_rms_max": float(np.max(rms)),
    }


# ------------------------------------------------------------------ the conditioner
def unit_range(mel: torch.Tensor) -> torch.Tensor:
    """The raw log-mel mapped to about [0, 1]: ``(mel - ln 1e-5) / (2 - ln 1e-5)``."""
    return (mel - LOG_FLOOR) / (2.0 - LOG_FLOOR)


@torch.inference_mode()
def conditioner_use(network, mel: torch.Tensor, x0: torch.Tensor, step: int, sigma: float, seed: int) -> dict[str, Any]:
    """How the eager ``network`` combines ``mel`` ``(1, n_mels, F)`` with ``x_t`` of ``x0`` at ``step``.

    Per block: std of the dilated convolution's output ``d`` and of the conditioner projection
    ``c`` over channels and time; ``c``'s mean offset (mean over time of ``|mean_t c|``) and its
    time variation (mean over channels of the std over time); the share of ``|d + c| > 3``.
    """
    upsampled = network.mel_upsampler(mel)
    conditioning = network.condition(mel)
    dilated: list[torch.Tensor] = []
    hooks = [layer.dilated_conv.register_forward_hook(lambda m, i, o: dilated.append(o))
             for layer in network.residual_layers]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    x_t = math.sqrt(1 - sigma**2) * x0 + sigma * eps
    try:
        network.denoise(x_t, torch.tensor([float(step)]), conditioning)
    finally:
        for hook in hooks:
            hook.remove()
    blocks = []
    for d, c in zip(dilated, conditioning):
        pre = d + c
        blocks.append({
            "dilated_std": float(d.std()), "cond_std": float(c.std()),
            "cond_offset": float(c.mean(dim=-1).abs().mean()), "cond_time_std": float(c.std(dim=-1).mean()),
            "saturated": float((pre.abs() > SATURATION).float().mean()),
            "saturated_without_cond": float((d.abs() > SATURATION).float().mean()),
        })
    summary = {key: float(np.mean([b[key] for b in blocks])) for key in blocks[0]}
    return {"mel_mean": float(mel.mean()), "mel_std": float(mel.std()),
            "upsampled_mean": float(upsampled.mean()), "upsampled_std": float(upsampled.std()),
            "upsampled_negative": float((upsampled < 0).float().mean()),
            "mean_over_blocks": summary, "blocks": blocks}


@torch.no_grad()
def upsampler_weights(network) -> list[dict[str, Any]]:
    return [{"kernel": list(stage.weight.shape), "weight_sum": float(stage.weight.sum()),
             "weight_abs_max": float(stage.weight.abs().max()),
             "bias": float(stage.bias) if stage.bias is not None else None} for stage in network.mel_upsampler.stages]


@torch.no_grad()
def projection_weights(network, fresh) -> dict[str, float]:
    """Norms of the blocks' conditioner 1x1 weights, trained and freshly initialised (mean over blocks)."""
    def norms(net):
        return [float(l.conditioner_projection.weight.norm()) for l in net.residual_layers]
    return {"trained_weight_norm": float(np.mean(norms(network))), "init_weight_norm": float(np.mean(norms(fresh))),
            "trained_bias_abs_mean": float(np.mean([float(l.conditioner_projection.bias.abs().mean())
                                                   for l in network.residual_layers]))}


def conditioner_report(model, x0: torch.Tensor, step: int, seed: int) -> dict[str, Any]:
    from audiodiff.network.diffwave import DiffWave

    network = model.network.eval()
    torch.manual_seed(seed)
    fresh = DiffWave(model.config.denoiser).eval()
    with torch.inference_mode():
        mel = model.mel(x0[None]).float()
    sigma = float(model.schedule.sigmas[step])
    cases = {
        "trained, raw mel": conditioner_use(network, mel, x0[None], step, sigma, seed),
        "fresh init, raw mel": conditioner_use(fresh, mel, x0[None], step, sigma, seed),
        "fresh init, mel in [0,1]": conditioner_use(fresh, unit_range(mel), x0[None], step, sigma, seed),
    }
    return {"step": step, "sigma": sigma, "cases": cases, "upsampler": upsampler_weights(network),
            "projection": projection_weights(network, fresh)}


# ------------------------------------------------------------------ output
def print_report(result: dict[str, Any]) -> None:
    from audiodiff.eval import METRICS

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import fmt, machine_lines, markdown_table

    print("\n".join(machine_lines(result["machine"])))
    print(f"\n{result['model']} (trained {result['training_step']} steps) on {result['data']}: "
          f"{result['files']} files, {result['audio_seconds']:.1f} s; one network call per level, seed {result['seed']}")
    header = {m.key: m.header for m in METRICS}
    keys = [k for k in TABLE_KEYS if k in result["one_step"]["rows"][0]["means"]["network"]]
    headers = ["step", "sigma", "SNR dB"] + [header[k] for k in keys] + ["eps L1", "flat mel: SNR / mel-L1 / eps L1"]
    rows = []
    for row in result["one_step"]["rows"]:
        cells = [f"{row['step']}", f"{row['sigma']:.4f}"]
        cells.append(f"{row['snr_db']['network']:.1f} / {row['snr_db']['naive']:.1f}")
        for key in keys:
            a, b = row["means"]["network"].get(key), row["means"]["naive"].get(key)
            cells.append(f"{fmt(a)} / {fmt(b)}")
        cells.append(f"{row['eps_l1']:.3f}")
        cells.append(f"{row['snr_db']['flat_mel']:.1f} / {fmt(row['flat_mel_l1'])} / {row['eps_l1_flat_mel']:.3f}")
        rows.append(cells)
    print("\nx0_hat from one network call / naive x_t/sqrt(abar), against x0 (mean over files; SNR over all samples);"
          "\n'flat mel': x0_hat when the network is given each mel bin's mean over time instead of the mel")
    print(markdown_table(headers, rows))
    if "griffin_lim_one_step" in result:
        gl = result["griffin_lim_one_step"]
        print(f"\nstarted from Griffin-Lim ({gl['iterations']} iterations) instead of x0, against x0 (mean over files)")
        print(markdown_table(["estimate"] + [header[k] for k in keys],
                             [[kind] + [fmt(m.get(k)) for k in keys] for kind, m in gl["means"].items()]))
    if "mel_stats" in result:
        s = result["mel_stats"]
        q = s["quantiles"]
        print(f"\nmel at the network input ({s['files']} files, {s['frames']} frames of {result['mel_stats_data']}): "
              f"min {s['min']:.2f}, max {s['max']:.2f}, mean {s['mean']:.2f}, std {s['std']:.2f}; "
              f"1/50/99 % {q['0.01']:.2f} / {q['0.5']:.2f} / {q['0.99']:.2f}; at the floor ln(1e-5) {100 * s['at_floor']:.2f} %; "
              f"per-bin means {s['per_bin_mean_min']:.2f} .. {s['per_bin_mean_max']:.2f}; audio RMS median {s['audio_rms_median']:.3f}")
    if "conditioner" in result:
        c = result["conditioner"]
        print(f"\nconditioner on {c['file']} at step {c['step']} (sigma {c['sigma']:.3f}), mean over blocks")
        rows = []
        for name, case in c["cases"].items():
            m = case["mean_over_blocks"]
            rows.append([name, f"{case['mel_mean']:.2f} ± {case['mel_std']:.2f}",
                         f"{case['upsampled_mean']:.2f} ± {case['upsampled_std']:.2f}",
                         f"{m['dilated_std']:.2f}", f"{m['cond_std']:.2f}", f"{m['cond_offset']:.2f}",
                         f"{m['cond_time_std']:.2f}", f"{100 * m['saturated']:.1f}",
                         f"{100 * m['saturated_without_cond']:.1f}"])
        print(markdown_table(["weights, input", "mel", "upsampled", "std d", "std c", "|offset c|",
                              "time-std c", "% |d+c|>3", "% |d|>3"], rows))
        p = c["projection"]
        print(f"conditioner 1x1 weight norm: trained {p['trained_weight_norm']:.2f}, at init {p['init_weight_norm']:.2f}; "
              "upsampler stages: " + "; ".join(f"sum(w) {u['weight_sum']:.3f}, bias {u['bias']:.3f}"
                                                for u in c["upsampler"]))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=False, help="a vocoder: .safetensors, .ckpt or a shipped model's name")
    parser.add_argument("--data", required=False, help="held-out audio folder")
    parser.add_argument("--levels", nargs="+", type=int, default=list(DEFAULT_LEVELS),
                        help="training steps (0 = least noise) to score; default a spread of 12 over T=50")
    parser.add_argument("--griffin-lim-levels", nargs="*", type=int, default=list(DEFAULT_GRIFFIN_LIM_LEVELS),
                        help="steps of the one-step check started from Griffin-Lim's waveform (none: skip it)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                        help="metric groups of audiodiff.eval (default: mel mrstft f0 pesq)")
    parser.add_argument("--max-files", type=int, default=None, help="use only the first N held-out files")
    parser.add_argument("--seconds", type=float, default=None, help="use only the first S seconds of each file")
    parser.add_argument("--mel-stats-data", default=None, help="folder for the mel statistics (e.g. the training set)")
    parser.add_argument("--mel-stats-files", type=int, default=200, help="files of it to read (0: all; default 200)")
    parser.add_argument("--conditioner-step", type=int, default=None, help="level of the conditioner check "
                        "(default: the middle of --levels)")
    parser.add_argument("--engine", default="folded", choices=["folded", "eager"],
                        help="how the network runs for the one-step scores (default folded, the CLI's CPU default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--json", default=None)
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="instead of measuring, merge the JSONs of runs over disjoint parts of a folder")
    args = parser.parse_args(argv)
    if args.merge:
        import json

        result = merge([json.loads(Path(path).read_text()) for path in args.merge])
        print_report(result)
        if args.json:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from _common import write_json

            print(f"wrote {write_json(args.json, result)}")
        return result
    if not (args.model and args.data):
        parser.error("--model and --data are required (unless --merge)")
    if args.threads:
        torch.set_num_threads(args.threads)


    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import load_vocoder, machine_info, write_json

    model = load_vocoder(args.model, parser)
    bad = [t for t in args.levels + args.griffin_lim_levels if not 0 <= t < model.schedule.num_steps]
    if bad:
        parser.error(f"--levels {bad} outside the model's training steps 0..{model.schedule.num_steps - 1}")
    levels = sorted(set(args.levels))
    clips = load_clips(model, Path(args.data), args.max_files, args.seconds)
    if args.engine == "folded":
        model.fold_denoiser()
    started = time.process_time()
    result: dict[str, Any] = {
        "machine": machine_info("cpu"), "model": Path(args.model).name, "training_step": model.config.training_step,
        "data": Path(args.data).name, "files": len(clips), "file_names": [n for n, _ in clips],
        "audio_seconds": sum(a.numel() for _, a in clips) / model.sample_rate, "seconds_per_file": args.seconds,
        "seed": args.seed,
        "engine": args.engine, "metrics": list(args.metrics), "levels": levels,
    }
    print(f"one-step x0 at {len(levels)} levels on {len(clips)} files", flush=True)
    result["one_step"] = one_step(model, clips, levels, args.seed, args.metrics)
    if args.griffin_lim_levels:
        print(f"one-step x0 from Griffin-Lim at steps {args.griffin_lim_levels}", flush=True)
        result["griffin_lim_one_step"] = griffin_lim_one_step(model, clips, sorted(set(args.griffin_lim_levels)),
                                                              args.seed, args.metrics)
    if args.mel_stats_data:
        result["mel_stats_data"] = Path(args.mel_stats_data).name
        result["mel_stats"] = mel_statistics(model, Path(args.mel_stats_data), args.mel_stats_files, args.seed)
    step = args.conditioner_step if args.conditioner_step is not None else levels[len(levels) // 2]
    result["conditioner"] = {"file": clips[0][0], **conditioner_report(model, clips[0][1], step, args.seed)}
    result["cpu_seconds"] = time.process_time() - started
    print_report(result)
    if args.json:
        print(f"wrote {write_json(args.json, result)}")
    return result


if __name__ == "__main__":
    main()
