"""Tests of audiodiff.io.audio: loading, resampling, partial reads, errors and atomic saving."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.io.audio import (
    AUDIO_SUFFIXES,
    AudioError,
    audio_info,
    load_audio,
    peak_amplitude,
    resample,
    save_audio,
)

PCM16_STEP = 1.0 / 32768


def sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_suffixes_are_lowercase_and_cover_common_formats():
    assert {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus"} <= AUDIO_SUFFIXES
    assert all(s == s.lower() and s.startswith(".") for s in AUDIO_SUFFIXES)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_save_load_round_trip_within_pcm16_tolerance(tmp_path, suffix):
    audio = torch.from_numpy(sine(440, 16000, 0.5))
    path = save_audio(tmp_path / f"x{suffix}", audio, 16000)
    loaded, sr = load_audio(path)
    assert sr == 16000
    assert loaded.dtype == torch.float32 and loaded.shape == audio.shape
    assert (loaded - audio).abs().max() <= PCM16_STEP


def test_save_accepts_channel_axis_and_rejects_stereo(tmp_path):
    audio = torch.from_numpy(sine(300, 8000, 0.1)).unsqueeze(0)
    loaded, _ = load_audio(save_audio(tmp_path / "a.wav", audio, 8000))
    assert loaded.shape == (audio.shape[1],)
    with pytest.raises(ValueError, match="mono"):
        save_audio(tmp_path / "b.wav", audio.repeat(2, 1), 8000)


def test_save_rejects_unknown_suffix_and_nan(tmp_path):
    with pytest.raises(ValueError, match=".mp4"):
        save_audio(tmp_path / "a.mp4", torch.zeros(100), 8000)
    with pytest.raises(ValueError, match="NaN"):
        save_audio(tmp_path / "a.wav", torch.tensor([0.0, float("nan")]), 8000)
    assert list(tmp_path.iterdir()) == []


def test_save_clips_instead_of_wrapping(tmp_path):
    audio = torch.tensor([1.5, -2.0, 0.25] * 100)
    loaded, _ = load_audio(save_audio(tmp_path / "a.wav", audio, 8000))
    assert loaded.max() == pytest.approx(1.0, abs=PCM16_STEP)
    assert loaded.min() == pytest.approx(-1.0, abs=PCM16_STEP)
    assert loaded[2] == pytest.approx(0.25, abs=PCM16_STEP)


def test_save_float_subtype_keeps_values_exactly(tmp_path):
    audio = torch.linspace(-1.5, 1.5, 1000)
    loaded, _ = load_audio(save_audio(tmp_path / "a.wav", audio, 8000, subtype="FLOAT"))
    assert torch.equal(loaded, audio)


def test_save_ogg_writes_vorbis(tmp_path):
    path = save_audio(tmp_path / "a.ogg", torch.from_numpy(sine(440, 22050, 0.5)), 22050)
    assert sf.info(str(path)).subtype == "VORBIS"
    assert audio_info(path).frames == 11025


def test_save_creates_parents_and_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "a" / "b" / "out.wav"
    audio = torch.from_numpy(sine(440, 16000, 1.0))
    save_audio(target, audio, 16000)
    save_audio(target, audio * 0.5, 16000)  # overwrite in place
    assert [p.name for p in target.parent.iterdir()] == ["out.wav"]
    assert audio_info(target).frames == 16000
    loaded, _ = load_audio(target)
    assert (loaded - audio * 0.5).abs().max() <= PCM16_STEP


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "out.wav"
    old = torch.from_numpy(sine(440, 16000, 0.5))
    save_audio(target, old, 16000)

    def failing_write(file, data, samplerate, **kwargs):
        with open(file, "wb") as handle:
            handle.write(b"RIFF partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sf, "write", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        save_audio(target, torch.zeros(16000), 16000)
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]
    loaded, _ = load_audio(target)
    assert (loaded - old).abs().max() <= PCM16_STEP


def test_stereo_is_downmixed_to_channel_mean(tmp_path):
    left, right = sine(440, 16000, 0.25), sine(1000, 16000, 0.25, amp=0.3)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    loaded, _ = load_audio(tmp_path / "s.wav")
    expected = torch.from_numpy((left + right) / 2)
    assert torch.allclose(loaded, expected, atol=1e-7)
    assert audio_info(tmp_path / "s.wav").channels == 2


def test_resampling_gives_right_length_and_keeps_frequency(tmp_path):
    sf.write(tmp_path / "s.wav", sine(440, 16000, 1.0), 16000, subtype="FLOAT")
    audio, sr = load_audio(tmp_path / "s.wav", 22050)
    assert sr == 22050 and audio.shape == (22050,)
    spectrum = torch.fft.rfft(audio * torch.hann_window(len(audio)))
    peak_hz = spectrum.abs().argmax().item() * sr / len(audio)
    assert peak_hz == pytest.approx(440, abs=1.5)
    assert audio.abs().max() == pytest.approx(0.5, abs=0.02)


def test_partial_read_equals_slice_of_full_read(tmp_path):
    sr = 16000
    sf.write(tmp_path / "n.flac", np.random.default_rng(0).uniform(-0.5, 0.5, 3 * sr), sr)
    full, _ = load_audio(tmp_path / "n.flac")
    part, _ = load_audio(tmp_path / "n.flac", start_seconds=1.25, duration_seconds=0.5)
    assert torch.equal(part, full[20000:28000])
    tail, _ = load_audio(tmp_path / "n.flac", start_seconds=2.9, duration_seconds=1.0)
    assert torch.equal(tail, full[46400:])  # cut short at the end, like a slice
    past, _ = load_audio(tmp_path / "n.flac", start_seconds=10.0)
    assert past.numel() == 0


def test_partial_read_decodes_only_the_crop(tmp_path, monkeypatch):
    sf.write(tmp_path / "long.wav", np.zeros(10 * 8000) + 0.1, 8000)
    requested: list[int] = []
    original = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        requested.append(frames)
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    audio, _ = load_audio(tmp_path / "long.wav", start_seconds=9.0, duration_seconds=0.5)
    assert audio.shape == (4000,)
    assert requested == [4000]


def test_resampled_partial_read_matches_full_read_inside(tmp_path):
    sf.write(tmp_path / "s.wav", sine(440, 16000, 2.0), 16000, subtype="FLOAT")
    full, _ = load_audio(tmp_path / "s.wav", 22050)
    part, _ = load_audio(tmp_path / "s.wav", 22050, start_seconds=0.5, duration_seconds=0.5)
    assert part.shape == (11025,)
    inner = slice(200, -200)  # away from the resampling filter's edges
    assert torch.allclose(part[inner], full[11025:22050][inner], atol=1e-3)


def test_audio_info(tmp_path):
    sf.write(tmp_path / "a.flac", np.zeros((24000, 2)) + 0.1, 48000)
    info = audio_info(tmp_path / "a.flac")
    assert (info.sample_rate, info.frames, info.channels) == (48000, 24000, 2)
    assert info.duration == pytest.approx(0.5)
    assert info.path == tmp_path / "a.flac"


def test_peak_amplitude_reads_in_blocks(tmp_path):
    audio = np.zeros(50000, dtype=np.float32)
    audio[43210] = -0.75
    sf.write(tmp_path / "p.wav", audio, 16000, subtype="FLOAT")
    assert peak_amplitude(tmp_path / "p.wav", block_frames=1000) == (0.75, 50000)


def _expect_error(path, reason_part):
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert str(path) in str(info.value)
    assert reason_part in info.value.reason
    assert str(info.value) == f"{path}: {info.value.reason}"
    assert "\n" not in str(info.value)
    with pytest.raises(AudioError):
        audio_info(path)


def test_error_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.wav", "not found")


def test_error_directory(tmp_path):
    (tmp_path / "dir.wav").mkdir()
    _expect_error(tmp_path / "dir.wav", "directory")


def test_error_empty_file(tmp_path):
    (tmp_path / "e.wav").touch()
    _expect_error(tmp_path / "e.wav", "empty")


def test_error_garbage_file(tmp_path):
    (tmp_path / "g.wav").write_bytes(b"this is not audio, just text\n" * 200)
    _expect_error(tmp_path / "g.wav", "not an audio file soundfile can read")


def test_error_zero_frames(tmp_path):
    sf.write(tmp_path / "z.wav", np.zeros(0), 16000)
    _expect_error(tmp_path / "z.wav", "no audio frames")


def test_error_nan_samples(tmp_path):
    audio = np.zeros(1000, dtype=np.float32)
    audio[500] = np.nan
    sf.write(tmp_path / "n.wav", audio, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(tmp_path / "n.wav")
    with pytest.raises(AudioError, match="NaN"):
        peak_amplitude(tmp_path / "n.wav")


def test_error_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "p.wav"
    sf.write(path, sine(440, 8000, 0.1), 8000)
    path.chmod(0)
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # root reads anything: pretend it cannot
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(path) else real_access(p, mode))
    try:
        _expect_error(path, "permission denied")
    finally:
        path.chmod(0o644)


def test_audio_error_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(AudioError("/x/y.wav", "broken")))
    assert str(err) == "/x/y.wav: broken" and err.reason == "broken"


def test_bad_arguments_are_value_errors(tmp_path):
    sf.write(tmp_path / "a.wav", sine(440, 8000, 0.1), 8000)
    with pytest.raises(ValueError):
        load_audio(tmp_path / "a.wav", start_seconds=-1.0)
    with pytest.raises(ValueError):
        load_audio(tmp_path / "a.wav", 0)


# ------------------------------------------------------------------ resampling
@pytest.mark.parametrize("orig_sr, new_sr", [(16000, 22050), (44100, 22050), (22050, 16000), (48000, 22050)])
def test_resample_gives_the_same_sine_at_the_new_rate(orig_sr, new_sr):
    freq, seconds = 441.0, 0.5
    out = resample(torch.from_numpy(sine(freq, orig_sr, seconds)).double(), orig_sr, new_sr)
    assert out.shape == (math.ceil(orig_sr * seconds * new_sr / orig_sr),) and out.dtype == torch.float64
    expected = torch.from_numpy(sine(freq, new_sr, seconds)).double()
    inner = slice(new_sr // 50, -new_sr // 50)  # away from the filter's edges
    assert float((out[inner] - expected[inner]).abs().max()) < 1e-3


def test_resample_keeps_batch_axes_dtype_and_removes_what_the_new_rate_cannot_hold():
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.normal(0, 0.1, (2, 3, 4410)).astype(np.float32))
    out = resample(batch, 44100, 22050)
    assert out.shape == (2, 3, 2205) and out.dtype == torch.float32
    torch.testing.assert_close(out[1, 2], resample(batch[1, 2], 44100, 22050))
    assert resample(batch, 22050, 22050) is batch
    # a 15 kHz tone is above the 11.025 kHz Nyquist frequency of 22.05 kHz: filtered out, not aliased
    high = resample(torch.from_numpy(sine(15000.0, 44100, 0.5)), 44100, 22050)
    assert float(high[500:-500].abs().max()) < 1e-3


def test_resample_is_close_to_torchaudio_where_installed():
    from conftest import torchaudio_or_skip

    functional = torchaudio_or_skip().functional
    audio = torch.from_numpy(sine(300.0, 16000, 0.5) + sine(2500.0, 16000, 0.5, amp=0.2))
    ours, theirs = resample(audio, 16000, 22050), functional.resample(audio, 16000, 22050)
    assert ours.shape == theirs.shape
    assert float((ours - theirs)[200:-200].abs().max()) < 2e-3
