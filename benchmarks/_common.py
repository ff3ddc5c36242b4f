"""Shared pieces of the benchmark scripts (not a script itself).

* :func:`machine_info` / :func:`machine_lines`: what ran the benchmark (CPU, cores, torch, GPU,
  date, git commit), printed above every table and stored in the JSON;
* :class:`PeakMemory`: peak memory of a block of work, above what was in use when it started;
* :func:`run_worker`: one measurement in a fresh Python process (used on the CPU, so that the
  peak resident memory of one row is not hidden by memory an earlier row left to the allocator);
* the reference ``diffwave`` model of a named size, with random weights saved once as a
  reference checkpoint that both implementations load (ours through ``import_diffwave``);
* :func:`markdown_table` and :func:`write_json` (atomic).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

REPO = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 22050  # the reference's, and its fixed upsampler's hop
HOP = 256


# ------------------------------------------------------------------ machine
def _git(*args: str) -> str:
    try:
        result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict[str, Any]:
    """CPU model, cores, threads, torch, GPU (if the run uses one), date and git commit."""
    commit = _git("rev-parse", "--short", "HEAD")
    if commit and _git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"  # tracked files differ from the commit
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "gpu": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None,
        "cuda": torch.version.cuda if device.startswith("cuda") else None,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit or "unknown",
    }
    return info


def machine_lines(info: dict[str, Any]) -> list[str]:
    gpu = f"{info['gpu']} (CUDA {info['cuda']})" if info.get("gpu") else "none used"
    return [
        f"machine: {info['cpu']}, {info['cpu_cores']} cores, torch threads {info['torch_threads']}; GPU: {gpu}",
        f"torch {info['torch']}, Python {info['python']}; {info['date']}; commit {info['commit']}",
    ]


# ------------------------------------------------------------------- memory
def _proc_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    hwm, rss = _proc_status_kb("VmHWM"), _proc_status_kb("VmRSS")
    return hwm is not None and rss is not None and hwm <= rss + 1024


def _maxrss_kb() -> int:
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value // 1024 if sys.platform == "darwin" else value  # bytes on macOS, kB on Linux


class PeakMemory:
    """Peak memory of the block, in MiB above what was in use when the block began.

    * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
      ``memory_allocated`` at the start (tensors held by the caching allocator; the block's own
      peak, without the weights and inputs that were already there). ``total_mb`` keeps the
      raw ``max_memory_allocated``.
    * CPU: the peak resident set size. On Linux the kernel's peak mark (``VmHWM``) is reset to
      the current RSS on entry (``/proc/self/clear_refs``) and read on exit; the result is the
      peak minus the RSS on entry. Elsewhere ``ru_maxrss`` (monotonic) minus its value on entry,
      which is only meaningful in a fresh process whose earlier peak is below the block's.
      Memory that the C allocator kept from earlier work can be reused without raising RSS,
      which is why the scripts run each CPU measurement in a fresh process.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.mb: float = float("nan")
        self.total_mb: float | None = None
        self.method = ""

    def __enter__(self) -> "PeakMemory":
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "cuda max_memory_allocated - memory_allocated at start"
        elif _reset_peak_rss():
            self._start = _proc_status_kb("VmRSS") or 0
            self.method = "peak RSS (VmHWM, reset via /proc/self/clear_refs) - RSS at start, fresh process"
        else:
            self._start = _maxrss_kb()
            self.method = "ru_maxrss - ru_maxrss at start, fresh process"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.mb = (peak - self._start) / 2**20
            self.total_mb = peak / 2**20
        elif self.method.startswith("peak RSS"):
            self.mb = ((_proc_status_kb("VmHWM") or 0) - self._start) / 1024
        else:
            self.mb = (_maxrss_kb() - self._start) / 1024


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def autocast(device: str, precision: str):
    """``torch.autocast`` in bf16, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"unknown precision {precision!r}")
    return nullcontext()


# ------------------------------------------------------------------ workers
WORKER_FLAG = "--worker"


def run_worker(script: str | Path, spec: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run ``script --worker SPEC`` in a fresh interpreter; it prints one JSON line as its last line."""
    command = [sys.executable, str(script), WORKER_FLAG, json.dumps(spec)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"benchmark worker failed (exit {result.returncode}) for {spec}:\n{tail}")
    return json.loads(lines[-1])


def run_script(main: Callable[[], Any], worker: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """A benchmark's ``__main__``: ``script --worker SPEC`` runs ``worker`` and prints its JSON line
    (for :func:`run_worker`); anything else runs ``main``."""
    if len(sys.argv) == 3 and sys.argv[1] == WORKER_FLAG:
        print(json.dumps(worker(json.loads(sys.argv[2]))))
    else:
        main()


def parser_from_doc(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose description is ``doc``'s first line and whose epilog is the rest."""
    return argparse.ArgumentParser(description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n".join(doc.splitlines()[1:]))


def apply_device_defaults(parser: argparse.ArgumentParser, args: argparse.Namespace,
                          defaults: dict[str, dict[str, Any]]) -> None:
    """Fill the options left ``None`` from ``defaults["cpu"]`` or ``defaults["cuda"]`` by ``args.device``;
    a parser error if CUDA is asked for and absent."""
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    for key, value in defaults[kind].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if kind == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available")


def use_isolation(choice: str, device: str) -> bool:
    """``auto``: fresh processes on the CPU (memory), in-process on CUDA (start-up cost)."""
    return choice == "yes" or (choice == "auto" and not device.startswith("cuda"))


# ---------------------------------------------------------------- reference
def reference_params(size: str):
    """The reference package's ``params`` with the network of our named ``size``.

    Everything else (T=50 training betas 1e-4..0.05, its 6-step inference schedule, 80 mels,
    hop 256, 22.05 kHz) is the package's default: the upsampler is fixed at hop 256.
    """
    from diffwave.params import AttrDict, params

    from audiodiff.network.diffwave import SIZES

    shape = SIZES[size]
    return AttrDict({
        **params,
        "residual_channels": shape["residual_channels"],
        "residual_layers": shape["residual_layers"],
        "dilation_cycle_length": shape["dilation_cycle"],
    })


def save_reference_checkpoint(size: str, directory: Path, seed: int = 0) -> Path:
    """A reference model of ``size`` with random weights as ``directory/weights.pt``.

    The same file is what ``diffwave.inference.predict(model_dir=directory)`` reads and what
    ``audiodiff.pipeline.reference.import_diffwave`` converts. The reference zero-initialises the output
    projection; it gets random weights here so that outputs are not trivially zero.
    """
    from diffwave.model import DiffWave as ReferenceDiffWave

    torch.manual_seed(seed)
    params = reference_params(size)
    model = ReferenceDiffWave(params)
    torch.nn.init.normal_(model.output_projection.weight, std=0.05)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "weights.pt"
    torch.save({"model": model.state_dict(), "params": dict(params)}, path)
    return path


def load_reference(path: str | Path, device: str, train: bool = False):
    """The reference network from a checkpoint written by :func:`save_reference_checkpoint`."""
    from diffwave.model import DiffWave as ReferenceDiffWave
    from diffwave.params import AttrDict

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = ReferenceDiffWave(AttrDict(checkpoint["params"]))
    model.load_state_dict(checkpoint["model"])
    return model.to(device).train(train)


def load_ours(path: str | Path, device: str, train: bool = False):
    """Our model from the same reference checkpoint (``diffwave`` mel preset, hop 256)."""
    from audiodiff.pipeline import import_diffwave

    return import_diffwave(path).to(device).train(train)


# ------------------------------------------------------------------- output
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths)) + " |")
    return "\n".join(lines)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text in ("-", "n/a")
    return True


def fmt(value: float | None) -> str:
    """A number for a table: 3 significant digits below 100, whole numbers above; ``-`` for none."""
    if value is None:
        return "-"
    if value != value:  # NaN
        return "n/a"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (:func:`audiodiff.io.files.write_json`)."""
    from audiodiff.io.files import write_json as write

    return write(path, data, allow_nan=True)


def publish(report: dict[str, Any], table: str, json_path: str | Path | None) -> dict[str, Any]:
    """Print ``table`` (the report formatted) and, when ``json_path`` is given, write ``report``
    there atomically and say so; returns ``report`` (a benchmark's ``main`` ends with this)."""
    print(table)
    if json_path:
        write_json(json_path, report)
        print(f"wrote {json_path}")
    return report


def load_vocoder(path: str, parser: Any) -> Any:
    """The model at ``path`` (a file or a shipped name) on the CPU; ``parser.error`` unless it is a vocoder."""
    from audiodiff.pipeline import load_any

    model = load_any(path, "cpu", engine="eager")
    if model.mel_frontend is None:
        parser.error(f"{path} is not a vocoder")
    return model
