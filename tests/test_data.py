"""Tests of audiodiff.data: file discovery, the cached scan, crops, the validation split."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import audiodiff.data.scan as scan
from audiodiff.io.audio import load_audio
from audiodiff.io.audio_files import find_audio_files
from audiodiff.data import (
    AudioDataModule,
    AudioFile,
    CropDataset,
    CropSampler,
    read_filelist,
    read_segment,
)

SR = 8000
HOP = 80
CROP_FRAMES = 10
CROP = HOP * CROP_FRAMES
RAMP_SCALE = 2.0**20  # ramp files store sample i as i / 2**20 (exact in float32)


def write(path: Path, audio: np.ndarray, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subtype = "FLOAT" if path.suffix.lower() == ".wav" else None  # exact values in WAV files
    sf.write(path, np.asarray(audio, dtype=np.float32), sr, subtype=subtype)
    return path


def tone(seconds: float, freq: float = 440.0, sr: int = SR) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)


def ramp(n: int) -> np.ndarray:
    return np.arange(n) / RAMP_SCALE


def module(cache: Path, **kwargs) -> AudioDataModule:
    args = dict(sample_rate=SR, hop_length=HOP, crop_frames=CROP_FRAMES, batch_size=2,
                num_workers=0, val_files=1, cache_dir=str(cache))
    return AudioDataModule(**{**args, **kwargs})


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Four good files and three bad ones (corrupt, silent, too short)."""
    root = tmp_path / "data"
    for i in range(4):
        write(root / "spk" / f"good{i}.wav", tone(0.5, 200 + 100 * i))
    (root / "corrupt.wav").write_bytes(b"definitely not a wav file\n" * 50)
    write(root / "silent.flac", np.zeros(SR) + 1e-6)
    write(root / "short.wav", tone(0.05))
    (root / "notes.txt").write_text("not audio")
    return root


def test_find_audio_files_is_sorted_recursive_and_case_insensitive(tmp_path):
    write(tmp_path / "b" / "z.WAV", tone(0.1))
    write(tmp_path / "a.flac", tone(0.1))
    write(tmp_path / "b" / "c" / "y.wav", tone(0.1))
    write(tmp_path / ".hidden" / "x.wav", tone(0.1))
    write(tmp_path / "._a.wav", tone(0.1))
    (tmp_path / "readme.txt").write_text("x")
    found = find_audio_files(tmp_path)
    assert found == sorted(found)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.flac", "b/c/y.wav", "b/z.WAV"]


def test_scan_skips_exactly_the_bad_files_with_reasons(mixed_folder, tmp_path, caplog, capsys):
    dm = module(tmp_path / "cache", root=str(mixed_folder))
    with caplog.at_level(logging.WARNING, logger="audiodiff.data"):
        dm.setup("fit")
    result = dm.scan_result
    assert sorted(f.name for f in result.usable) == [f"spk/good{i}.wav" for i in range(4)]
    skipped = {s.path.name: s for s in result.skipped}
    assert {name: s.category for name, s in skipped.items()} == {
        "corrupt.wav": "unreadable", "silent.flac": "silent", "short.wav": "too short"}
    assert "not an audio file" in skipped["corrupt.wav"].reason
    assert "0.05" in skipped["short.wav"].reason and "min_seconds" in skipped["short.wav"].reason
    assert "silence_threshold" in skipped["silent.flac"].reason
    for name, s in skipped.items():
        assert any(name in r.message and s.reason in r.message for r in caplog.records)
    printed = capsys.readouterr().out
    assert "scanned 7 files: 4 usable, 3 skipped (1 unreadable, 1 silent, 1 too short); see " in printed
    report = result.report_path.read_text().splitlines()
    assert len(report) == 4 and all(str(mixed_folder) in line for line in report[1:])
    used = {f.name for f in dm.train_set.files} | {f.name for f in dm.val_set.files}
    assert used == {f.name for f in result.usable}


def test_second_scan_uses_cache_and_rechecks_only_changed_files(mixed_folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    module(cache, root=str(mixed_folder)).setup()
    calls: list[Path] = []
    real_probe = scan._probe_file
    monkeypatch.setattr(scan, "_probe_file", lambda path: calls.append(path) or real_probe(path))

    second = module(cache, root=str(mixed_folder))
    second.setup()
    assert calls == []
    assert len(second.scan_result.usable) == 4 and len(second.scan_result.skipped) == 3

    # thresholds apply to cached facts: no re-check needed
    stricter = module(cache, root=str(mixed_folder), min_seconds=0.6)
    with pytest.raises(RuntimeError, match="no usable audio"):
        stricter.setup()
    assert calls == []

    changed = mixed_folder / "spk" / "good0.wav"
    write(changed, tone(1.0))
    os.utime(changed, ns=(1, 10**18))  # a different mtime even on coarse clocks
    third = module(cache, root=str(mixed_folder))
    third.setup()
    assert calls == [changed]
    assert {f.path: f.frames for f in third.scan_result.usable}[changed] == SR
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]
    (cache_file,) = cache.glob("*.json")
    assert len(json.loads(cache_file.read_text())["files"]) == 7


def test_crops_have_crop_length_and_hop_aligned_starts(tmp_path):
    root = tmp_path / "ramps"
    write(root / "r0.wav", ramp(3 * SR))
    write(root / "r1.wav", ramp(2 * SR + 37))
    dm = module(tmp_path / "cache", root=str(root), val_files=0)
    dm.setup()
    assert dm.val_dataloader() == []
    dataset, sampler = dm.train_set, CropSampler(2, seed=0)
    starts = set()
    for _ in range(10):  # ten epochs
        for key in sampler:
            audio = dataset[key]["audio"]
            assert audio.shape == (CROP,) and audio.dtype == torch.float32
            index = audio.double() * RAMP_SCALE
            assert torch.equal(index, index[0] + torch.arange(CROP, dtype=torch.float64))
            start = int(index[0])
            assert start % HOP == 0 and start + CROP <= dataset.files[key[0]].frames
            starts.add(start)
    assert len(starts) > 5  # crops move across epochs
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio"].shape == (2, CROP)


def test_sampler_is_reproducible_per_epoch_and_changes_across_epochs():
    sampler = CropSampler(20, seed=3)
    epoch0, epoch1 = list(sampler), list(sampler)
    assert epoch0 != epoch1
    assert sorted(i for i, _ in epoch0) == list(range(20))
    sampler.set_epoch(1)
    assert list(sampler) == epoch1


def test_short_file_is_zero_padded_at_the_end(tmp_path):
    write(tmp_path / "d" / "short.wav", ramp(500) + 0.01)
    dm = module(tmp_path / "cache", root=str(tmp_path / "d"), min_seconds=0.05)
    dm.setup()
    audio = dm.train_set[0]["audio"]
    assert audio.shape == (CROP,)
    assert torch.allclose(audio[:500], torch.from_numpy(ramp(500) + 0.01).float())
    assert torch.count_nonzero(audio[500:]) == 0


def test_resampled_crop_equals_slice_of_resampled_file(tmp_path):
    path = write(tmp_path / "n.wav", np.random.default_rng(1).uniform(-0.5, 0.5, 22050), sr=22050)
    file = AudioFile(path, "n.wav", 22050, 22050)
    full, _ = load_audio(path, SR)
    for start in (0, 80, 2400, SR - CROP):
        crop = read_segment(file, start, CROP, SR)
        assert crop.shape == (CROP,)
        assert torch.allclose(crop, full[start:start + CROP], atol=1e-5)
    dataset = CropDataset([file], SR, HOP, CROP_FRAMES)
    assert dataset[0]["audio"].shape == (CROP,)


def test_validation_split_is_stable_and_disjoint(tmp_path):
    root = tmp_path / "many"
    for i in range(12):
        write(root / f"f{i:02d}.wav", tone(0.7, 100 + 50 * i))
    a = module(tmp_path / "cache", root=str(root), val_files=3, val_seconds=0.5)
    b = module(tmp_path / "cache2", root=str(root), val_files=3, val_seconds=0.5)
    a.setup()
    b.setup()
    val_names = [f.name for f in a.val_set.files]
    assert val_names == [f.name for f in b.val_set.files] and len(val_names) == 3
    by_hash = sorted((f"f{i:02d}.wav" for i in range(12)), key=lambda n: hashlib.sha1(n.encode()).hexdigest())
    assert set(val_names) == set(by_hash[:3])
    train_names = {f.name for f in a.train_set.files}
    assert not train_names & set(val_names) and len(train_names) == 9

    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    c = module(tmp_path / "cache", root=str(moved), val_files=3)
    c.setup()
    assert [f.name for f in c.val_set.files] == val_names  # hash of the relative path

    batches = list(a.val_dataloader())
    assert [batch["name"] for batch in batches] == [[n] for n in val_names]
    for batch in batches:
        assert batch["audio"].shape == (1, (SR // 2) // HOP * HOP)
    first = a.val_set[0]["audio"]
    assert torch.equal(first, a.val_set[0]["audio"])
    expected, _ = load_audio(root / val_names[0])
    assert torch.allclose(first, expected[: first.numel()])


def test_single_file_is_used_for_training_and_validation(tmp_path, caplog):
    write(tmp_path / "one" / "only.wav", tone(0.5))
    dm = module(tmp_path / "cache", root=str(tmp_path / "one"), val_files=4)
    with caplog.at_level(logging.WARNING, logger="audiodiff.data"):
        dm.setup()
    assert [f.name for f in dm.train_set.files] == [f.name for f in dm.val_set.files] == ["only.wav"]
    assert any("validating on the training file" in r.message for r in caplog.records)


def test_metadata_csv_source(tmp_path):
    root = tmp_path / "LJSpeech"
    write(root / "wavs" / "LJ001-0001.wav", tone(0.5))
    write(root / "wavs" / "LJ001-0002.wav", tone(0.5, 300))
    write(root / "unlisted.wav", tone(0.5))
    (root / "metadata.csv").write_text(
        "LJ001-0001|Printing, in the only sense|Printing, in the only sense\n"
        "LJ001-0002|in being comparatively modern.|in being comparatively modern.\n"
        "LJ001-0003|missing file|missing file\n"
    )
    dm = module(tmp_path / "cache", root=str(root))
    dm.setup()
    assert sorted(f.name for f in dm.scan_result.usable) == ["wavs/LJ001-0001.wav", "wavs/LJ001-0002.wav"]
    (missing,) = dm.scan_result.skipped
    assert missing.path == root / "wavs" / "LJ001-0003.wav" and "not found" in missing.reason


def test_filelist_source(tmp_path):
    write(tmp_path / "audio" / "a.wav", tone(0.5))
    write(tmp_path / "audio" / "b.flac", tone(0.5, 300))
    absolute = write(tmp_path / "elsewhere" / "c.wav", tone(0.5, 500))
    filelist = tmp_path / "lists" / "train.txt"
    filelist.parent.mkdir()
    filelist.write_text(f"# comment\n../audio/a.wav|some text|more\n\n../audio/b.flac\n{absolute}|x\n../audio/a.wav\n")
    assert read_filelist(filelist) == [
        filelist.parent / "../audio/a.wav", filelist.parent / "../audio/b.flac", absolute]
    dm = module(tmp_path / "cache", filelist=str(filelist), val_files=1)
    dm.setup()
    assert sorted(f.path.name for f in dm.scan_result.usable) == ["a.wav", "b.flac", "c.wav"]
    assert "audio/a.wav" in {f.name[-11:] for f in dm.scan_result.usable}


def test_exactly_one_source_is_required(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        AudioDataModule()
    with pytest.raises(ValueError, match="exactly one"):
        AudioDataModule(root=str(tmp_path), filelist=str(tmp_path / "x.txt"))


def test_no_usable_audio_names_the_source(tmp_path):
    write(tmp_path / "quiet" / "s.wav", np.zeros(SR))
    with pytest.raises(RuntimeError, match="quiet.*1 silent"):
        module(tmp_path / "cache", root=str(tmp_path / "quiet")).setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="no audio files.*empty"):
        module(tmp_path / "cache", root=str(tmp_path / "empty")).setup()
    with pytest.raises(FileNotFoundError, match="absent"):
        module(tmp_path / "cache", root=str(tmp_path / "absent")).setup()


@pytest.mark.parametrize("num_workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_file_deleted_after_scan_does_not_stop_an_epoch(tmp_path, caplog, num_workers):
    root = tmp_path / "d"
    for i in range(5):
        write(root / f"f{i}.wav", tone(0.5, 200 + 100 * i))
    dm = module(tmp_path / "cache", root=str(root), num_workers=num_workers, batch_size=2)
    dm.setup()
    victim = dm.train_set.files[1].path
    victim.unlink()
    loader = dm.train_dataloader()
    with caplog.at_level(logging.WARNING, logger="audiodiff.data"):
        for _ in range(2):
            batches = [batch["audio"] for batch in loader]
            assert len(batches) == 2 and all(b.shape == (2, CROP) for b in batches)
            assert all(b.abs().amax(dim=1).min() > 0.1 for b in batches)  # real audio, not zeros
    if num_workers == 0:  # worker processes log in their own process
        warnings = [r for r in caplog.records if victim.name in r.getMessage()]
        assert len(warnings) == 1 and "not found" in warnings[0].getMessage()


# --------------------------------------------------------------------------- labels
def test_folder_labels_give_sorted_class_names_and_labelled_items(tmp_path, caplog):
    root = tmp_path / "sounds"
    for name in ["rain/a.wav", "rain/sub/b.wav", "door/c.wav", "door/d.wav"]:
        write(root / name, tone(0.3))
    write(root / "stray.wav", tone(0.3))  # directly in root: no class
    dm = module(tmp_path / "cache", root=str(root), labels="folder", val_files=0)
    assert dm.class_names == ["door", "rain"]
    with caplog.at_level(logging.WARNING, logger="audiodiff.data"):
        dm.setup("fit")
    assert "no class folder" in caplog.text and "stray.wav" in caplog.text
    labels = {f.name: f.label for f in dm.train_set.files}
    assert labels == {"door/c.wav": 0, "door/d.wav": 0, "rain/a.wav": 1, "rain/sub/b.wav": 1}
    batch = next(iter(dm.train_dataloader()))
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (2,)
    names = [dm.train_set.files[i].name for i, _ in CropSampler(4, dm.seed)][:2]
    assert batch["label"].tolist() == [labels[n] for n in names]


def test_parent_labels_use_the_folder_holding_each_file(tmp_path):
    root = tmp_path / "sfx"
    write(root / "sonic-pi" / "bd" / "kick.flac", tone(0.3))
    write(root / "sonic-pi" / "sn" / "snare.flac", tone(0.3))
    write(root / "opensfx" / "horn.wav", tone(0.3))
    assert module(tmp_path / "c", root=str(root), labels="parent").class_names == ["bd", "opensfx", "sn"]
    assert module(tmp_path / "c", root=str(root), labels="folder").class_names == ["opensfx", "sonic-pi"]
    assert module(tmp_path / "c", root=str(root)).class_names is None


def test_csv_labels(tmp_path):
    write(tmp_path / "audio" / "x.wav", tone(0.3))
    write(tmp_path / "audio" / "y.wav", tone(0.3))
    table = tmp_path / "labels.csv"
    table.write_text("path,label\naudio/x.wav,bell\n\naudio/y.wav,\"whistle, steam\"\n")
    dm = module(tmp_path / "cache", filelist=str(table), labels="csv", val_files=0)
    assert dm.class_names == ["bell", "whistle, steam"]
    dm.setup("fit")
    assert sorted((f.name, f.label) for f in dm.train_set.files) == [("audio/x.wav", 0), ("audio/y.wav", 1)]
    table.write_text("audio/x.wav,bell\naudio/y.wav\n")
    with pytest.raises(ValueError, match="line 2"):
        module(tmp_path / "cache", filelist=str(table), labels="csv").class_names


def test_label_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="labels must be one of"):
        module(tmp_path, root=str(tmp_path), labels="folders")
    with pytest.raises(ValueError, match="filelist"):
        module(tmp_path, root=str(tmp_path), labels="csv")
    with pytest.raises(ValueError, match="root"):
        module(tmp_path, filelist=str(tmp_path / "a.txt"), labels="folder")
    write(tmp_path / "flat" / "a.wav", tone(0.3))
    with pytest.raises(RuntimeError, match="class folder"):
        module(tmp_path / "cache", root=str(tmp_path / "flat"), labels="folder").class_names


def test_balanced_classes_draw_every_class_equally_often(tmp_path):
    root = tmp_path / "sounds"
    write(root / "rare" / "only.wav", tone(0.3))
    for k in range(9):
        write(root / "common" / f"c{k}.wav", tone(0.3, freq=300 + 20 * k))
    counts = {}
    for balance in (False, True):
        dm = module(tmp_path / "cache", root=str(root), labels="folder", val_files=0, crops_per_epoch=4000,
                    balance_classes=balance)
        dm.setup("fit")
        sampler = dm.train_dataloader().sampler
        rare = dm.class_names.index("rare")
        drawn = [dm.train_set.files[i].label for i, _ in sampler]
        counts[balance] = drawn.count(rare) / len(drawn)
    assert counts[False] == pytest.approx(0.1, abs=0.001)  # one file in ten, exactly, by permutations
    assert counts[True] == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ValueError, match="labelled"):
        module(tmp_path, root=str(root), balance_classes=True)
