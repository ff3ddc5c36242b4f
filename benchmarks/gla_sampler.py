"""Griffin-Lim inside the sampler (issue 19, point 5): does it beat Griffin-Lim or the plain sampler?

On held-out files (each file's first ``--seconds``, at the model's rate, trimmed to whole mel
frames), from the model's mel of each file, four kinds of output, all scored against the file with
:func:`audiodiff.eval.score_pair` (PESQ-wb, V/UV F1, MR-STFT, log-mel L1, F0 error):

* **griffin-lim**: :func:`audiodiff.eval.griffin_lim`, ``--gl-iters`` (64) iterations;
* **plain**: the ``fast`` sampler (the model's 6-step ancestral schedule), file ``k`` seeded with
  ``seed + k`` (the same audio as ``model.vocode(mel, seed=seed + k)``);
* **from GL @ level i**: Griffin-Lim's waveform ``g`` noised to level ``i`` of the fast schedule,
  ``x = sqrt(1 - sigma_i^2) g + sigma_i n`` (``n`` the plain sampler's starting noise), then the
  rest of the schedule from level ``i`` (``6 - i`` network calls);
* **GLA-Grad k**: the plain sampler, except that in its first ``k`` steps the clean estimate
  ``x0 = (x - sigma eps) / alpha`` (clamped to [-1, 1]) is replaced by its Griffin-Lim projection
  (:func:`audiodiff.dsp.griffin_lim.project_magnitude`: ``x0``'s STFT phase under the mel's linear
  magnitude from :func:`audiodiff.eval.mel_to_linear`, then ``--projection-iters`` fast
  Griffin-Lim iterations), and the step uses the noise re-derived from it,
  ``eps = (x - alpha x0_proj) / sigma`` (Liu et al. 2024, "GLA-Grad").

Every variant of a file uses the same seed, so the plain sampler's noise is theirs too. Costs
about 45 network calls per file for the default levels and ``k``; on one CPU thread ~2.5 s each for
2 s of audio with the base network.

    python benchmarks/gla_sampler.py --model speech-22k --data held_out/ --seconds 2 \\
        --json benchmarks/results/gla-sampler-speech-22k-cpu.json --threads 1
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

DEFAULT_METRICS = ("mel", "mrstft", "f0", "pesq")
TABLE_KEYS = ("pesq_wb", "vuv_f1", "mrstft", "mel_l1")


def mel_projection(mel: Tensor, mel_config, n_iter: int) -> Callable[[Tensor], Tensor]:
    """``project(audio (1, frames * hop)) -> audio``: onto the linear magnitude of ``mel``
    ``(n_mels, frames)``, starting from ``audio``'s phase (see the module doc).

    ``hifigan`` frames are centred on ``(i + 1/2) * hop``, a centred STFT's on ``i * hop``: the
    audio is advanced by half a hop before the projection and delayed after it (its first half
    hop is kept as it was), as :func:`audiodiff.eval.griffin_lim` delays its output.
    """
    from audiodiff.eval import mel_to_linear
    from audiodiff.dsp.griffin_lim import project_magnitude

    hop = mel_config.hop_length
    linear = mel_to_linear(mel, mel_config)
    linear = torch.cat([linear, linear[..., -1:]], dim=-1)  # a centred STFT of frames * hop samples has frames + 1
    shift = hop // 2 if mel_config.style == "hifigan" else 0
    kwargs = dict(n_fft=mel_config.n_fft, hop_length=hop, win_length=mel_config.win_length, n_iter=n_iter)

    def project(audio: Tensor) -> Tensor:
        flat = audio.reshape(-1).float().cpu()
        n = flat.numel()
        if shift:
            flat = torch.cat([flat[shift:], flat.new_zeros(shift)])
        out = project_magnitude(flat, linear, **kwargs)
        if shift:
            out = torch.cat([audio.reshape(-1).float().cpu()[:shift], out[: n - shift]])
        return out.reshape(audio.shape).to(audio.device, audio.dtype)

    return project


def gla_eps_fn(eps_fn, project: Callable[[Tensor], Tensor], sigmas: set[float], clip: float = 1.0):
    """``eps_fn`` whose prediction at the levels in ``sigmas`` is re-derived from the projected clean
    estimate: ``eps = (x - alpha * project(clamp(x0))) / sigma``; elsewhere unchanged."""

    def predict(x: Tensor, sigma: float) -> Tensor:
        eps = eps_fn(x, sigma)
        if sigma not in sigmas:
            return eps
        alpha = math.sqrt(1.0 - sigma**2)
        x0 = torch.clamp((x - sigma * eps) / alpha, -clip, clip)
        return (x - alpha * project(x0)) / sigma

    return predict


def _generator_noise(seed: int) -> tuple[Callable[[Tensor], Tensor], Callable[[tuple[int, ...]], Tensor]]:
    """A fresh run's ``(noise_fn, first draw)``: the same draws as ``model.vocode(seed=seed)`` for one row
    (:class:`~audiodiff.diffusion.positional_noise.PositionalNoise`)."""
    from audiodiff.diffusion.positional_noise import PositionalNoise

    noise: list[PositionalNoise] = []

    def draw(shape: tuple[int, ...]) -> Tensor:
        noise.append(PositionalNoise([seed], 0, shape[-1], "cpu"))
        return noise[0].initial()

    return (lambda like: noise[0].fresh(like).to(like.device, like.dtype)), draw


@torch.inference_mode()
def run_file(model, x0: Tensor, seed: int, *, levels: list[int], ks: list[int], gl_iters: int,
             projection_iters: int) -> dict[str, Tensor]:
    """All variants' audio ``(T,)`` for one clip ``x0`` ``(T,)``, by label."""
    from audiodiff.diffusion.sampling import sample_ancestral
    from audiodiff.eval import griffin_lim

    config = model.config.mel
    sigmas = model.sigmas("fast")
    mel = model.mel(x0[None])
    eps_fn = model.eps_fn(model.condition(mel))
    shape = (1, x0.numel())
    outputs: dict[str, Tensor] = {}
    g = griffin_lim(mel[0].cpu(), config, gl_iters, seed=seed)[: x0.numel()][None].float()
    outputs["griffin-lim"] = g
    fresh, draw = _generator_noise(seed)
    outputs["plain"] = sample_ancestral(eps_fn, draw(shape), sigmas, noise_fn=fresh)
    for i in levels:
        fresh, draw = _generator_noise(seed)
        sigma = float(sigmas[i])
        start = math.sqrt(1.0 - sigma**2) * g + sigma * draw(shape)
        outputs[f"from GL @ level {i}"] = sample_ancestral(eps_fn, start, sigmas[i:], noise_fn=fresh)
    project = mel_projection(mel[0].cpu(), config, projection_iters)
    for k in ks:
        fresh, draw = _generator_noise(seed)
        predict = gla_eps_fn(eps_fn, project, {float(s) for s in sigmas[:k]})
        outputs[f"GLA-Grad k={k}"] = sample_ancestral(predict, draw(shape), sigmas, noise_fn=fresh)
    return {label: audio.reshape(-1).float().cpu() for label, audio in outputs.items()}


def _means(files: list[dict[str, Any]], keys: list[str]) -> dict[str, float | None]:
    means = {}
    for key in keys:
        values = [f[key] for f in files if f.get(key) is not None]
        means[key] = float(np.mean(values)) if values else None
    return means


def print_report(result: dict[str, Any]) -> None:
    from audiodiff.eval import METRICS

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import fmt, machine_lines, markdown_table

    print("\n".join(machine_lines(result["machine"])))
    print(f"\n{result['model']} (trained {result['training_step']} steps) on {result['data']}: {result['files']} files, "
          f"first {result['seconds_per_file']} s each ({result['audio_seconds']:.1f} s); fast schedule sigmas "
          + ", ".join(f"{s:.3f}" for s in result["sigmas"]) + f"; seed {result['seed']}")
    header = {m.key: m.header for m in METRICS}
    keys = [k for k in TABLE_KEYS if k in result["keys"]]
    rows = []
    for label, row in result["variants"].items():
        rows.append([label, f"{row['network_calls']}"] + [fmt(row["means"].get(k)) for k in keys])
    print("\nmean over files, against the original")
    print(markdown_table(["output", "net calls"] + [header[k] for k in keys], rows))
    print(f"\nbeats both Griffin-Lim and the plain sampler on {', '.join(keys)}: "
          + (", ".join(result["beats_both"]) or "none"))


def beats_both(variants: dict[str, Any], keys: list[str]) -> list[str]:
    """Labels (neither baseline) better than both baselines on every key (higher PESQ / F1, lower errors)."""
    higher = {"pesq_wb", "vuv_f1"}
    winners = []
    for label, row in variants.items():
        if label in ("griffin-lim", "plain"):
            continue
        ok = True
        for key in keys:
            value = row["means"].get(key)
            for base in ("griffin-lim", "plain"):
                ref = variants[base]["means"].get(key)
                if value is None or ref is None or (value <= ref if key in higher else value >= ref):
                    ok = False
        if ok:
            winners.append(label)
    return winners


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="speech-22k", help="a vocoder: .safetensors, .ckpt or a shipped model's name")
    parser.add_argument("--data", required=True, help="held-out audio folder")
    parser.add_argument("--seconds", type=float, default=2.0, help="first S seconds of each file (default 2)")
    parser.add_argument("--max-files", type=int, default=None)
    parser.add_argument("--levels", nargs="*", type=int, default=None,
                        help="fast-schedule levels to start from Griffin-Lim (0 = noisiest; default all)")
    parser.add_argument("--k", nargs="*", type=int, default=[1, 2, 3], help="GLA-Grad: projected first steps")
    parser.add_argument("--gl-iters", type=int, default=64)
    parser.add_argument("--projection-iters", type=int, default=8, help="Griffin-Lim iterations per projection")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--engine", default="folded", choices=["folded", "eager"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from audiodiff.eval import result_keys, score_pair

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import load_vocoder, machine_info, write_json
    from diagnose_vocoder import load_clips

    model = load_vocoder(args.model, parser)
    if model.config.prior is not None:
        parser.error(f"{args.model} has a data-dependent prior; this benchmark starts from standard normal noise")
    sigmas = model.sigmas("fast")
    n_steps = len(sigmas) - 1
    levels = list(range(n_steps)) if args.levels is None else sorted(set(args.levels))
    if any(not 0 <= i < n_steps for i in levels) or any(not 1 <= k <= n_steps for k in args.k):
        parser.error(f"levels must be in 0..{n_steps - 1} and k in 1..{n_steps}")
    clips = load_clips(model, Path(args.data), args.max_files, args.seconds)
    if args.engine == "folded":
        model.fold_denoiser()
    keys = result_keys(args.metrics)
    calls = {"griffin-lim": 0, "plain": n_steps, **{f"from GL @ level {i}": n_steps - i for i in levels},
             **{f"GLA-Grad k={k}": n_steps for k in args.k}}
    result: dict[str, Any] = {
        "machine": machine_info("cpu"), "model": Path(args.model).name, "training_step": model.config.training_step,
        "data": Path(args.data).name, "files": len(clips), "file_names": [n for n, _ in clips],
        "audio_seconds": sum(a.numel() for _, a in clips) / model.sample_rate, "seconds_per_file": args.seconds,
        "seed": args.seed, "engine": args.engine, "metrics": list(args.metrics), "keys": keys,
        "sigmas": [float(s) for s in sigmas], "levels": levels, "k": list(args.k), "gl_iters": args.gl_iters,
        "projection_iters": args.projection_iters,
        "level_sigmas": {f"from GL @ level {i}": float(sigmas[i]) for i in levels},
        "variants": {label: {"network_calls": c, "files": []} for label, c in calls.items()},
    }
    started = time.process_time()
    for k, (name, x0) in enumerate(clips):
        outputs = run_file(model, x0, args.seed + k, levels=levels, ks=list(args.k), gl_iters=args.gl_iters,
                           projection_iters=args.projection_iters)
        for label, audio in outputs.items():
            score = score_pair(x0.numpy(), audio.numpy(), model.sample_rate, mel_preset=model.config.mel.preset,
                               metrics=args.metrics)
            values = score.values()
            result["variants"][label]["files"].append({"file": name, **{key: values.get(key) for key in keys},
                                                       "notes": score.notes})
        print(f"  {name}: {len(outputs)} outputs scored ({time.process_time() - started:.0f} s CPU)", flush=True)
    for row in result["variants"].values():
        row["means"] = _means(row["files"], keys)
    table_keys = [k for k in TABLE_KEYS if k in keys]
    result["beats_both"] = beats_both(result["variants"], table_keys)
    result["cpu_seconds"] = time.process_time() - started
    print_report(result)
    if args.json:
        print(f"wrote {write_json(args.json, result)}")
    return result


if __name__ == "__main__":
    main()
