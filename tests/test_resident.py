"""Tests of the resident training data (audiodiff.data.resident, ``AudioDataModule(resident=True)``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from audiodiff.io.audio import load_audio
from audiodiff.data import AudioDataModule, CropDataset
from audiodiff.mel import MelSpectrogram, mel_preset
from audiodiff.data.resident import CropPositions, ResidentAudio

from test_data import CROP, HOP, RAMP_SCALE, SR, module, ramp, tone, write


def ramp_folder(root: Path, lengths=(3000, 5000, 700, 4321, 9000)) -> Path:
    """Files whose sample i is ``(file_offset + i) / 2**20``: a crop tells where it came from."""
    for k, n in enumerate(lengths):
        write(root / f"r{k}.wav", ramp(n) + k * 10_000 / RAMP_SCALE)
    return root


def ramp_module(cache: Path, root: Path, **kwargs) -> AudioDataModule:
    return module(cache, root=str(root), min_seconds=0.05, **kwargs)  # keeps r2 (700 samples < CROP)


def batches(dm: AudioDataModule, device: str = "cpu") -> list[dict[str, torch.Tensor]]:
    """One epoch of training batches as the trainer sees them (moved to ``device``, then the hook)."""
    out = []
    for batch in dm.train_dataloader():
        batch = {k: v.to(device) for k, v in batch.items()}
        out.append(dm.on_after_batch_transfer(batch, 0))
    return out


def test_crops_are_hop_aligned_slices_of_the_files(tmp_path):
    root = ramp_folder(tmp_path / "d")
    dm = ramp_module(tmp_path / "cache", root, resident=True, batch_size=3, crops_per_epoch=60)
    dm.setup()
    files = {f.path.name: load_audio(f.path)[0] for f in dm.train_set.files}
    seen, padded = 0, 0
    for batch in batches(dm):
        audio = batch["audio"]
        assert audio.shape == (3, CROP) and audio.dtype == torch.float32
        for crop in audio:
            k, first = divmod(round(float(crop[0]) * RAMP_SCALE), 10_000)
            source = files[f"r{k}.wav"]
            assert first % HOP == 0, "crop start is not a multiple of the hop"
            real = source[first: first + CROP]
            assert torch.equal(crop[: real.numel()], real)  # a real slice of the file ...
            assert torch.all(crop[real.numel():] == 0)  # ... zero-padded only past its end (r2: 700 < CROP)
            seen += 1
            padded += real.numel() < CROP
    assert seen == 60 and padded > 0


def test_same_crops_as_the_disk_path_for_the_same_seed(tmp_path):
    root = ramp_folder(tmp_path / "d")
    kwargs = dict(batch_size=4, crops_per_epoch=20, seed=7)
    disk = ramp_module(tmp_path / "cache", root, **kwargs)
    resident = ramp_module(tmp_path / "cache", root, resident=True, **kwargs)
    disk.setup()
    resident.setup()
    assert isinstance(resident.train_set, CropPositions) and type(disk.train_set) is CropDataset
    assert [f.name for f in disk.train_set.files] == [f.name for f in resident.train_set.files]
    for epoch in range(2):
        expected = [b["audio"] for b in disk.train_dataloader()]
        got = [b["audio"] for b in batches(resident)]
        assert len(got) == len(expected) == 5
        for a, b in zip(got, expected):
            assert torch.equal(a, b)


def test_reproducible_with_a_seed_and_different_with_another(tmp_path):
    root = ramp_folder(tmp_path / "d")

    def epoch(seed: int) -> torch.Tensor:
        dm = ramp_module(tmp_path / "cache", root, resident=True, batch_size=4, crops_per_epoch=16, seed=seed)
        dm.setup()
        return torch.cat([b["audio"] for b in batches(dm)])

    assert torch.equal(epoch(1), epoch(1))
    assert not torch.equal(epoch(1), epoch(2))


def test_validation_split_and_clips_unchanged(tmp_path):
    root = tmp_path / "d"
    for i in range(7):
        write(root / f"f{i}.wav", tone(0.5, 200 + 50 * i))
    disk = module(tmp_path / "cache", root=str(root), val_files=2)
    resident = module(tmp_path / "cache", root=str(root), val_files=2, resident=True)
    disk.setup()
    resident.setup()
    assert [f.name for f in resident.train_set.files] == [f.name for f in disk.train_set.files]
    assert [f.name for f in resident.val_set.files] == [f.name for f in disk.val_set.files]
    for a, b in zip(resident.val_dataloader(), disk.val_dataloader()):
        assert a["name"] == b["name"] and torch.equal(a["audio"], b["audio"])
        assert resident.on_after_batch_transfer(a, 0) is a  # validation batches pass through


def test_mel_of_the_batch_equals_the_frontend_mel_of_the_file_slice(tmp_path):
    sr, hop, frames = 22050, 256, 8
    root = tmp_path / "d"
    rng = np.random.default_rng(0)
    for i in range(3):
        write(root / f"s{i}.wav", 0.3 * rng.standard_normal(sr // 2).astype(np.float32), sr)
    dm = AudioDataModule(root=str(root), sample_rate=sr, hop_length=hop, crop_frames=frames, batch_size=2,
                         num_workers=0, val_files=0, cache_dir=str(tmp_path / "cache"), resident=True,
                         crops_per_epoch=4)
    dm.setup()
    frontend = MelSpectrogram(mel_preset("hifigan"))
    positions = list(dm.train_dataloader())
    for pos, batch in zip(positions, batches(dm)):
        mel = frontend(batch["audio"])
        for row, (k, start) in enumerate(zip(pos["file"].tolist(), pos["start"].tolist())):
            source = load_audio(dm.train_set.files[k].path)[0][start: start + frames * hop]
            assert start % hop == 0
            torch.testing.assert_close(mel[row], frontend(source.unsqueeze(0))[0], rtol=0, atol=0)


def test_a_bad_file_is_reported_once_and_skipped(tmp_path, caplog):
    root = ramp_folder(tmp_path / "d")
    dm = ramp_module(tmp_path / "cache", root, resident=True, batch_size=2, crops_per_epoch=40, val_files=0)
    dm.scan()
    victim = root / "r3.wav"
    victim.write_bytes(b"no longer audio" * 100)  # broken after the scan, before decoding
    with caplog.at_level(logging.WARNING, logger="audiodiff.data"):
        dm.setup()
    warnings = [r.getMessage() for r in caplog.records if "r3.wav" in r.getMessage()]
    assert len(warnings) == 1 and "training without it" in warnings[0] and "\n" not in warnings[0]
    assert sorted(f.path.name for f in dm.train_set.files) == ["r0.wav", "r1.wav", "r2.wav", "r4.wav"]
    starts = {round(float(c[0]) * RAMP_SCALE) // 10_000 for b in batches(dm) for c in b["audio"]}
    assert 3 not in starts and starts <= {0, 1, 2, 4}


def test_float16_storage_and_labels(tmp_path):
    root = tmp_path / "sounds"
    for cls in ("door", "rain"):
        for i in range(2):
            write(root / cls / f"{cls}{i}.wav", tone(0.4, 300 + 100 * i))
    dm = module(tmp_path / "cache", root=str(root), labels="folder", resident=True, resident_dtype="float16",
                val_files=0, batch_size=4, crops_per_epoch=8)
    dm.setup()
    assert dm.resident_audio.audio.dtype == torch.float16
    assert dm.resident_audio.nbytes == 2 * dm.resident_audio.audio.numel()
    disk = module(tmp_path / "cache", root=str(root), labels="folder", val_files=0, batch_size=4, crops_per_epoch=8)
    disk.setup()
    for a, b in zip(batches(dm), disk.train_dataloader()):
        assert a["audio"].dtype == torch.float32
        torch.testing.assert_close(a["audio"], b["audio"], rtol=0, atol=2e-4)
        assert torch.equal(a["label"], b["label"])


def test_resident_dtype_is_checked(tmp_path):
    with pytest.raises(ValueError, match="resident_dtype"):
        module(tmp_path, root=str(tmp_path), resident=True, resident_dtype="int8")


def test_spans_cover_every_crop(tmp_path):
    root = ramp_folder(tmp_path / "d")
    files = ramp_module(tmp_path / "cache", root, val_files=0).scan().usable
    resident = ResidentAudio(files, SR, CROP)
    assert resident.spans.tolist() == [max(f.frames, CROP) for f in files]
    assert resident.offsets.tolist() == [0] + torch.cumsum(resident.spans, 0)[:-1].tolist()
    assert resident.audio.numel() == int(resident.spans.sum())


def test_lightning_fit_trains_on_resident_crops(tmp_path):
    import pytorch_lightning as pl

    from audiodiff.training.module import DiffusionModule

    root = tmp_path / "d"
    rng = np.random.default_rng(1)
    for i in range(3):
        write(root / f"s{i}.wav", 0.3 * rng.standard_normal(22050 // 2).astype(np.float32), 22050)
    dm = AudioDataModule(root=str(root), sample_rate=22050, hop_length=256, crop_frames=4, batch_size=2,
                         num_workers=0, val_files=0, cache_dir=str(tmp_path / "cache"), resident=True,
                         crops_per_epoch=4)
    seen = []

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch)

    trainer = pl.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Spy()])
    trainer.fit(DiffusionModule(size="tiny"), datamodule=dm)
    assert trainer.global_step == 3 and len(seen) == 3
    assert all(set(b) == {"audio"} and b["audio"].shape == (2, 4 * 256) for b in seen)
