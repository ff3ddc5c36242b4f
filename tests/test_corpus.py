"""Corpus vocoding (``audiodiff vocode --manifest``): manifest parsing, probing, planning and
sharding as units; runs in one process and in two DDP processes on the CPU (gloo), resume, and
bad inputs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import make_tiny_generator, speech_like

import audiodiff
from audiodiff.cli import main
from audiodiff.io.mel_files import InputError
from audiodiff.jobs.corpus import (SUMMARY_NAME, ManifestEntry, Probe, make_plan, output_names, plan_batches,
                                   probe_entry, read_manifest, remove_stale_temporaries, seed_offset, shard)
from audiodiff.jobs.vocode import load_inputs

N_MELS = 80  # the tiny model's (hifigan preset)


def _mel(frames: int, seed: int) -> np.ndarray:
    """A log-mel-like array (natural-log range of the hifigan convention)."""
    return (np.random.default_rng(seed).standard_normal((N_MELS, frames)) - 5).astype(np.float32)


def _corpus(root: Path, lengths: list[int], extra_lines: list[str] = ()) -> Path:
    """Mels ``m<k>.npy`` of the given lengths under ``root/mels`` and a manifest naming them (relatively)."""
    (root / "mels").mkdir(parents=True, exist_ok=True)
    lines = ["# a corpus", ""]
    for k, frames in enumerate(lengths):
        np.save(root / "mels" / f"m{k}.npy", _mel(frames, k))
        lines.append(f"mels/m{k}.npy")
    manifest = root / "list.txt"
    manifest.write_text("\n".join(lines + list(extra_lines)) + "\n")
    return manifest


# ------------------------------------------------------------------ manifest
def test_manifest_lines_comments_and_relative_paths(tmp_path: Path):
    folder = tmp_path / "lists"
    folder.mkdir()
    absolute = tmp_path / "elsewhere" / "b.npy"
    (folder / "list.txt").write_bytes(
        b"# header\r\n\r\n  a.npy  \r\nsub/c.wav\n   # indented comment\n" + str(absolute).encode() + b"\n"
        b"bad\0name.npy\ncaf\xe9.npy\n")
    errors: list[InputError] = []
    entries = read_manifest(folder / "list.txt", errors.append)
    assert [e.path for e in entries] == [folder / "a.npy", folder / "sub" / "c.wav", absolute,
                                         folder / os.fsdecode(b"caf\xe9.npy")]
    assert [e.index for e in entries] == [0, 1, 2, 3]  # seeds seed + index: a bad line takes none
    assert [e.line for e in entries] == [3, 4, 6, 8]
    (error,) = errors
    assert "list.txt:7" in str(error) and "NUL" in str(error)


@pytest.mark.parametrize("content, words", [(None, "manifest not found"), ("# only a comment\n\n", "lists no input")])
def test_a_missing_or_empty_manifest_is_one_line(tmp_path: Path, content, words):
    manifest = tmp_path / "list.txt"
    if content is not None:
        manifest.write_text(content)
    with pytest.raises(InputError, match=words):
        read_manifest(manifest, lambda error: None)


def test_output_names_are_those_of_offline_vocode(tmp_path: Path, tiny_model):
    np.save(tmp_path / "one.npy", _mel(7, 0))
    np.save(tmp_path / "two.npy", np.stack([_mel(7, 1), _mel(7, 2)]))
    for name, rows in (("one", 1), ("two", 2)):
        loaded = load_inputs([tmp_path / f"{name}.npy"], tiny_model, pytest.fail)
        assert [item.name for item in loaded] == output_names(name, rows)
    assert seed_offset(3, 0, 10) == 3 and seed_offset(3, 1, 10) == 13  # rows of one file: unique seeds


# ------------------------------------------------------------------- probing
def test_probe_reads_lengths_and_sees_finished_outputs(tmp_path: Path, tiny_model):
    out = tmp_path / "out"
    np.save(tmp_path / "tts.npy", _mel(12, 0).T)  # (frames, n_mels): a TTS's layout
    np.save(tmp_path / "batch.npy", np.stack([_mel(9, 1), _mel(9, 2)]))
    np.savez(tmp_path / "z.npz", mel=_mel(5, 3))
    sf.write(tmp_path / "speech.wav", speech_like(0.3, 22050), 22050)
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    assert probe_entry(tmp_path / "tts.npy", out, tiny_model) == Probe(12, 1, False)
    assert probe_entry(tmp_path / "batch.npy", out, tiny_model) == Probe(9, 2, False)
    assert probe_entry(tmp_path / "z.npz", out, tiny_model) == Probe(5, 1, False)
    (real,) = load_inputs([tmp_path / "speech.wav"], tiny_model, pytest.fail)
    assert abs(probe_entry(tmp_path / "speech.wav", out, tiny_model).frames - real.mel.shape[-1]) <= 1
    assert probe_entry(tmp_path / "broken.npy", out, tiny_model) == Probe(0, 1, False)  # the full read reports it
    assert probe_entry(tmp_path / "missing.npy", out, tiny_model) == Probe(0, 1, False)

    out.mkdir()
    (out / "tts.wav").write_bytes(b"x")
    (out / "batch_0.wav").write_bytes(b"x")
    assert probe_entry(tmp_path / "tts.npy", out, tiny_model).done
    assert not probe_entry(tmp_path / "batch.npy", out, tiny_model).done  # batch_1.wav still missing
    (out / "batch_1.wav").write_bytes(b"x")
    assert probe_entry(tmp_path / "batch.npy", out, tiny_model).done


# ------------------------------------------------------------------ planning
def _entries(frames: list[int], names: list[str] | None = None) -> list[tuple[ManifestEntry, Probe]]:
    names = names or [f"f{k}.npy" for k in range(len(frames))]
    return [(ManifestEntry(k, Path(name), k + 1), Probe(n, 1, False)) for k, (n, name) in enumerate(zip(frames, names))]


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_are_disjoint_cover_everything_and_are_length_sorted(world: int):
    rng = np.random.default_rng(world)
    pending = _entries([int(n) for n in rng.integers(1, 500, size=41)])
    shares = [shard(pending, rank, world) for rank in range(world)]
    indices = [entry.index for share in shares for entry, _ in share]
    assert sorted(indices) == list(range(41))  # disjoint and complete
    for share in shares:
        frames = [probe.frames for _, probe in share]
        assert frames == sorted(frames, reverse=True)  # longest first
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    # each rank's total length is within one longest item of any other's
    totals = [sum(p.frames for _, p in share) for share in shares]
    assert max(totals) - min(totals) <= max(p.frames for _, p in pending)
    assert shard(pending, 0, world) == shard(list(reversed(pending)), 0, world)  # the same plan on every rank


def test_batches_are_tight_and_within_both_budgets():
    share = shard(_entries([100, 90, 90, 80, 30, 20, 20, 10, 500]), 0, 1)
    groups = plan_batches(share, batch_size=3, max_frames=250)
    assert [pair for group in groups for pair in group] == share  # in order, nothing lost
    assert [[p.frames for _, p in group] for group in groups] == [[500], [100, 90], [90, 80], [30, 20, 20], [10]]
    assert all(len(group) <= 3 for group in groups)
    rows = plan_batches(shard([(ManifestEntry(0, Path("b.npy"), 1), Probe(10, 2, False))] + _entries([10, 10]), 0, 1),
                        batch_size=3)
    assert [sum(p.rows for _, p in group) for group in rows] == [3, 1]  # a batched file counts its rows


def test_the_plan_refuses_name_collisions_and_skips_finished_entries():
    pairs = _entries([5, 6, 7, 8], ["x/a.npy", "y/a.npy", "b.wav", "c.npy"])
    pairs[3] = (pairs[3][0], Probe(8, 1, True))
    errors: list[InputError] = []
    plan = make_plan([e for e, _ in pairs], [p for _, p in pairs], errors.append)
    assert [e.path.name for e, _ in plan.pending] == ["a.npy", "b.wav"] and plan.pending[0][0].index == 0
    assert [e.path.name for e in plan.skipped] == ["c.npy"]
    (error,) = errors
    assert str(error).startswith(os.path.join("y", "a.npy")) and "already taken by" in str(error)


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path: Path):
    for name in (".a.wav.0123abcd.tmp", "a.wav", ".notes.txt", ".b.wav.tmp"):
        (tmp_path / name).write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.wav.tmp", ".notes.txt", "a.wav"]
    assert remove_stale_temporaries(tmp_path / "absent") == 0


def test_usage_errors(tmp_path: Path, capsys):
    for argv in (["vocode"], ["vocode", "a.npy", "--manifest", "list.txt"], ["vocode", "a.npy", "--devices", "2"]):
        with pytest.raises(SystemExit) as excinfo:
            main(argv)
        assert excinfo.value.code == 2
    assert "--manifest" in capsys.readouterr().err


def test_a_model_that_cannot_vocode_is_a_usage_error_in_both_paths(tmp_path: Path, capsys):
    generator = make_tiny_generator().save(tmp_path / "generator.safetensors")  # unconditional
    manifest = _corpus(tmp_path, [5])
    for inputs in ([str(tmp_path / "mels" / "m0.npy")], ["--manifest", str(manifest)]):
        assert main(["vocode", *inputs, "--model", str(generator), "--out", str(tmp_path / "out"), "-q"]) == 2
        assert "without mel conditioning cannot vocode; use 'audiodiff generate'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- runs
def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.wav"))}


@pytest.mark.slow
def test_a_corpus_run_resumes_reports_bad_inputs_and_matches_offline_vocode(tmp_path: Path, tiny_model_file: Path,
                                                                            capsys):
    manifest = _corpus(tmp_path, [12, 7, 20, 9], extra_lines=["mels/broken.npy", "mels/m0.npy", "mels/absent.npy"])
    (tmp_path / "mels" / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    out = tmp_path / "out"
    args = ["vocode", "--manifest", str(manifest), "--model", str(tiny_model_file), "--out", str(out), "--seed", "5",
            "--batch-size", "1", "-q"]
    assert main(args) == 1  # some inputs failed
    captured = capsys.readouterr()
    assert "4 written, 0 skipped (already there), 3 failed" in captured.out
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert (summary["inputs"], summary["written"], summary["skipped"], summary["failed"]) == (7, 4, 0, 3)
    failures = {f["file"]: f["error"] for f in summary["failures"]}
    assert sorted(Path(f).name for f in failures) == ["absent.npy", "broken.npy", "m0.npy"]
    assert any("already taken" in e for e in failures.values()) and any("file not found" in e for e in failures.values())
    for error in failures.values():
        assert f"error: {error}" in captured.err  # each reported as it happened ...
        assert f"failed: {error}" in captured.err  # ... and again at the end
    first = _outputs(out)
    assert sorted(first) == ["m0.wav", "m1.wav", "m2.wav", "m3.wav"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*first, SUMMARY_NAME])  # no temporaries, no records

    offline = tmp_path / "offline"  # entry i of the manifest uses seed + i, as vocode does for its input i
    assert main(["vocode", *(str(tmp_path / "mels" / f"m{k}.npy") for k in range(4)), "--model", str(tiny_model_file),
                 "--out", str(offline), "--seed", "5", "--batch-size", "1", "-q"]) == 0
    assert _outputs(offline) == first

    (out / "m2.wav").unlink()  # as if the job had died before this one
    (out / ".m3.wav.0123abcd.tmp").write_bytes(b"half a wav")
    assert main(args) == 1
    assert "1 written, 3 skipped (already there), 3 failed" in capsys.readouterr().out
    assert _outputs(out) == first and not list(out.glob("*.tmp"))


@pytest.mark.slow
def test_ctrl_c_keeps_the_finished_wavs_exits_130_and_a_rerun_resumes(tmp_path: Path, tiny_model_file: Path,
                                                                      monkeypatch, capsys):
    import signal

    from audiodiff.jobs.corpus import CorpusVocoder

    manifest = _corpus(tmp_path, [12, 7, 20])
    out = tmp_path / "out"
    args = ["vocode", "--manifest", str(manifest), "--model", str(tiny_model_file), "--out", str(out),
            "--batch-size", "1", "-q"]
    predict_step = CorpusVocoder.predict_step

    def interrupted_at_the_second_batch(self, batch, batch_idx=0):
        if batch_idx == 1:
            raise KeyboardInterrupt
        return predict_step(self, batch, batch_idx)

    monkeypatch.setattr(CorpusVocoder, "predict_step", interrupted_at_the_second_batch)
    on_interrupt = signal.getsignal(signal.SIGINT)
    assert main(args) == 130
    assert "interrupted: 1 file(s) finished" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is on_interrupt  # Lightning ignored Ctrl-C from then on; restored
    assert len(list(out.glob("*.wav"))) == 1 and not list(out.glob(".*.tmp"))
    monkeypatch.setattr(CorpusVocoder, "predict_step", predict_step)
    assert main(args) == 0
    assert "2 written, 1 skipped (already there), 0 failed" in capsys.readouterr().out
    assert len(list(out.glob("*.wav"))) == 3


@pytest.mark.slow
def test_two_cpu_processes_write_every_input_once_as_one_process_does(tmp_path: Path, tiny_model_file: Path):
    """DDP over 2 CPU processes (gloo) through the command line, as users run it."""
    manifest = _corpus(tmp_path, [14, 9, 14, 30, 9, 21, 5])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(audiodiff.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}

    def run(out: str, devices: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "audiodiff.cli", "vocode", "--manifest", str(manifest), "--model",
                               str(tiny_model_file), "--out", out, "--devices", str(devices), "--device", "cpu",
                               "--batch-size", "1", "--threads", "1", "-q"],
                              capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path, check=False)

    two = run("two", 2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in two.stderr + two.stdout
    summary = json.loads((tmp_path / "two" / SUMMARY_NAME).read_text())
    assert (summary["world_size"], summary["written"], summary["failed"]) == (2, 7, 0)
    assert sorted(r["written"] for r in summary["ranks"]) == [3, 4]  # both worked, no wav written twice
    one = run("one", 1)
    assert one.returncode == 0, one.stderr[-3000:]
    assert _outputs(tmp_path / "two") == _outputs(tmp_path / "one")
    assert len(_outputs(tmp_path / "one")) == 7

    again = run("two", 2)  # everything there: nothing is vocoded again
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 written, 7 skipped (already there), 0 failed" in again.stdout

    # --num-nodes 2: two "machines" on this one, each running the same command with its NODE_RANK
    # and the same MASTER_ADDR/MASTER_PORT, as a user starts them (one process per node here)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    def node(rank: int) -> subprocess.Popen:
        with (tmp_path / f"node{rank}.out").open("w") as out, (tmp_path / f"node{rank}.err").open("w") as err:
            return subprocess.Popen([sys.executable, "-m", "audiodiff.cli", "vocode", "--manifest", str(manifest),
                                     "--model", str(tiny_model_file), "--out", "nodes", "--devices", "1",
                                     "--num-nodes", "2", "--device", "cpu", "--batch-size", "1", "--threads", "1", "-q"],
                                    stdout=out, stderr=err, cwd=tmp_path,  # files: a full pipe would stall both
                                    env={**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                         "NODE_RANK": str(rank)})

    nodes = [node(0), node(1)]
    results = [(process.wait(timeout=600), (tmp_path / f"node{rank}.out").read_text(),
                (tmp_path / f"node{rank}.err").read_text()) for rank, process in enumerate(nodes)]
    for code, _, err in results:
        assert code == 0, err[-3000:]
    summary = json.loads((tmp_path / "nodes" / SUMMARY_NAME).read_text())
    assert (summary["world_size"], summary["written"], summary["failed"]) == (2, 7, 0)
    assert sorted(r["written"] for r in summary["ranks"]) == [3, 4]
    assert "7 written" in results[0][1] and "written" not in results[1][1]  # node 0 prints the summary
    assert _outputs(tmp_path / "nodes") == _outputs(tmp_path / "one")


# ----------------------------------------------------------------- benchmark
@pytest.mark.slow
def test_the_throughput_benchmark_prints_its_table(tmp_path: Path, capsys):
    """Smoke test of ``benchmarks/corpus_throughput.py``: the table's columns and rows, not the times."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "corpus_throughput.py"
    spec = importlib.util.spec_from_file_location("bench_corpus_throughput", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "results" / "corpus.json"
    report = bench.main(["--files", "3", "--seconds", "0.1", "--threads", "2", "--json", str(out)])
    stdout = capsys.readouterr().out
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert [p.name for p in out.parent.iterdir()] == ["corpus.json"]  # written atomically
    assert stdout.startswith("machine: ") and report["machine"]["commit"] in stdout

    table = [line for line in stdout.splitlines() if line.startswith("|")]
    assert [c.strip() for c in table[0].strip("|").split("|")] == bench.HEADERS
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    assert [row[:4] for row in cells] == [["vocode", "1", "2", "3"], ["corpus", "1", "2", "3"], ["corpus", "2", "1", "3"]]
    rows = report["rows"]
    assert rows[0]["vs_vocode"] == 1.0 and cells[0][8] == "1"
    for row, line in zip(rows, cells):
        assert row["audio_h_per_h"] == pytest.approx(row["audio_seconds"] / row["median_s"], rel=1e-12)
        assert row["per_device"] == pytest.approx(row["audio_h_per_h"] / row["processes"], rel=1e-12)
        assert line[6] == bench.fmt(row["audio_h_per_h"]) and line[8] == bench.fmt(row["vs_vocode"])
