"""A corpus of bad inputs, made here, run through every entry point.

Every entry point (``vocode``, ``mel``, ``eval``, ``generate``, ``info``, the training data scan
and the Python API) must, for each bad input, give one line that names the file and says what is
wrong (no traceback unless ``--verbose``), still write every good input, and exit with 1 when some
input failed. What can be converted (stereo, other rates, 8/24-bit, float beyond full scale) is
converted and mentioned once.

The corpus is built once for the module: ``audio/`` (good, convertible and bad audio files),
``mels/`` (mel ``.npy`` files for the ``hifigan`` tiny vocoder: 80 bins at 22050 Hz) and
``models/`` (a good model and bad model files). A name that is not UTF-8 (``b"caf\\xe9.wav"``) is
shown in messages as ``caf\\xe9.wav``.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf
import torch

import audiodiff
from audiodiff.io.audio import AudioError, load_audio
from audiodiff.cli import main
from audiodiff.data import AudioDataModule, read_segment
from audiodiff.diffusion.schedule import SCHEDULES
from audiodiff.mel import MelSpectrogram, mel_preset
from audiodiff.network.diffwave import denoiser_config
from audiodiff.pipeline import AudioDiffusion, load_checkpoint, ModelConfig, ModelFileError
from audiodiff.io.mel_files import InputError, orient_mel, read_mel_file
from conftest import speech_like

SR = 22050
N_MELS = 80
CLIP = np.pad(speech_like(0.1, SR), SR // 20)  # 0.2 s with pauses, as real speech has
MEL = MelSpectrogram(mel_preset("hifigan"))(torch.from_numpy(CLIP))[0].numpy()  # (80, 17)
RANDOM_BYTES = np.random.default_rng(0).bytes(4096)

#: (path of the file to make, path of a good model file) -> None
Maker = Callable[[Path, Path], None]


@dataclass(frozen=True)
class Entry:
    """One file of the corpus.

    ``error`` holds words the error about it must contain (empty: a usable file), ``note`` words
    of the one note about its conversion. ``fine_in`` lists the entry points where it is not an
    error after all, ``unlisted_in`` those that do not see it (a folder scan skips folders).
    """

    name: str | bytes
    make: Maker
    error: tuple[str, ...] = ()
    note: tuple[str, ...] = ()
    fine_in: frozenset[str] = field(default_factory=frozenset)
    unlisted_in: frozenset[str] = field(default_factory=frozenset)

    @property
    def fs_name(self) -> str:
        """The name as Python holds it (lone surrogates for bytes that are not UTF-8)."""
        return os.fsdecode(self.name)

    @property
    def shown(self) -> str:
        """The name as messages show it."""
        return os.fsencode(self.name).decode("utf-8", "backslashreplace")

    @property
    def stem(self) -> str:
        return Path(self.fs_name).stem

    def is_bad(self, point: str) -> bool:
        return bool(self.error) and point not in self.fine_in and point not in self.unlisted_in

    def is_usable(self, point: str) -> bool:
        return not self.is_bad(point) and point not in self.unlisted_in


def make_micro_model() -> AudioDiffusion:
    """A ``hifigan`` vocoder of 2 residual layers of 8 channels: the corpus needs a model, not a good one."""
    mel = mel_preset("hifigan")
    schedule = SCHEDULES["base"]
    denoiser = denoiser_config("tiny", residual_layers=2, residual_channels=8, dilation_cycle=2, n_mels=mel.n_mels,
                               hop_length=mel.hop_length, max_steps=schedule.num_steps)
    return AudioDiffusion(ModelConfig(denoiser=denoiser, mel=mel, schedule=schedule, sample_rate=SR)).eval()


# ------------------------------------------------------------------ makers
def wav_bytes(data: np.ndarray, rate: int = SR, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, subtype=subtype, format="WAV")
    return buffer.getvalue()


def raw(content: bytes) -> Maker:
    def make(path: Path, _model: Path) -> None:
        with open(path, "wb") as handle:  # open() takes names that are not UTF-8
            handle.write(content)

    return make


def wav(data: np.ndarray, rate: int = SR, subtype: str = "PCM_16") -> Maker:
    return raw(wav_bytes(data, rate, subtype))


def npy(array: np.ndarray) -> Maker:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return raw(buffer.getvalue())


def directory(path: Path, _model: Path) -> None:
    path.mkdir()


def unreadable(path: Path, model: Path) -> None:
    path.write_bytes(model.read_bytes() if path.suffix == ".safetensors" else wav_bytes(CLIP))
    path.chmod(0)


def cut_model(keep: int) -> Maker:
    return lambda path, model: path.write_bytes(model.read_bytes()[:keep])


def half_model(path: Path, model: Path) -> None:
    data = model.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def future_model(path: Path, model: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(model), framework="pt") as handle:
        metadata = {**handle.metadata(), "format_version": "99"}
    save_file(load_file(str(model)), str(path), metadata=metadata)


def plain_safetensors(path: Path, _model: Path) -> None:
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3)}, str(path))


def samples_with(value: float) -> np.ndarray:
    data = CLIP.copy()
    data[100] = value
    return data


STEREO_48K = np.stack([np.pad(speech_like(0.1, 48000, seed=1), 48000 // 20)] * 2, axis=1)
LOUD = CLIP / np.abs(CLIP).max() * 3.0  # float samples peaking at 3.0

AUDIO = (
    Entry("good.wav", wav(CLIP)),
    Entry("float.wav", wav(CLIP, subtype="FLOAT")),
    Entry(b"caf\xe9.wav", wav(CLIP)),
    Entry("stereo_48k.wav", wav(STEREO_48K, 48000), note=("stereo 48000 Hz -> mono 22050 Hz",)),
    Entry("pcm_u8.wav", wav(CLIP, subtype="PCM_U8"), note=("8-bit -> float32",)),
    Entry("pcm_24.wav", wav(CLIP, subtype="PCM_24"), note=("24-bit -> float32",)),
    Entry("float_loud.wav", wav(LOUD, subtype="FLOAT"), note=("peak 3.00 beyond full scale", "used as is")),
    Entry("empty.wav", raw(b""), error=("empty file (0 bytes)",)),
    Entry(b"caf\xe9_empty.wav", raw(b""), error=("empty file (0 bytes)",)),
    Entry("truncated.wav", raw(wav_bytes(CLIP)[:30]), error=("damaged or truncated WAV file",)),
    Entry("noise.wav", raw(RANDOM_BYTES), error=("not an audio file",)),
    Entry("zero_frames.wav", wav(CLIP[:0]), error=("no audio frames",)),
    Entry("short_20ms.wav", wav(CLIP[: SR // 50]), error=("too short",), fine_in=frozenset({"load_audio", "eval_gen"})),
    Entry("float_nan.wav", wav(samples_with(np.nan), subtype="FLOAT"), error=("NaN",)),
    Entry("float_inf.wav", wav(samples_with(np.inf), subtype="FLOAT"), error=("infinite",)),
    Entry("x.wav", directory, error=("directory",), unlisted_in=frozenset({"scan", "eval_gen", "eval_model"})),
    Entry("unreadable.wav", unreadable, error=("permission denied",)),
)

MELS = (
    Entry("mel_good.npy", npy(MEL)),
    Entry("mel_transposed.npy", npy(MEL.T)),  # (frames, n_mels), as TTS models write them
    Entry("mel_diffwave_range.npy", npy(np.random.default_rng(1).uniform(0, 1, MEL.shape).astype(np.float32)),
          note=("diffwave",)),
    Entry("mel_empty.npy", npy(np.zeros((N_MELS, 0), np.float32)), error=("no frames",)),
    Entry("mel_1d.npy", npy(np.zeros(N_MELS, np.float32)), error=("shape (80,)", "expected (80, frames)")),
    Entry("mel_4d.npy", npy(np.zeros((1, 1, N_MELS, 10), np.float32)), error=("shape (1, 1, 80, 10)",)),
    Entry("mel_int16.npy", npy(np.zeros((N_MELS, 10), np.int16)), error=("integer", "floating point")),
    Entry("mel_64_bins.npy", npy(np.zeros((64, 20), np.float32)), error=("(64, 20)", "expects 80 mel bins")),
    Entry("mel_nan.npy", npy(np.where(np.arange(MEL.size).reshape(MEL.shape) == 7, np.nan, MEL)), error=("NaN",)),
    Entry("mel_inf.npy", npy(np.where(np.arange(MEL.size).reshape(MEL.shape) == 7, -np.inf, MEL)), error=("Inf",)),
    Entry("mel_noise.npy", raw(RANDOM_BYTES), error=("not a .npy file", "numpy.save")),
    Entry("mel_zero_bytes.npy", raw(b""), error=("empty file (0 bytes)",)),
    Entry("mel_folder.npy", directory, error=("is a directory",)),
)

MODELS = (
    Entry("truncated.safetensors", half_model, error=("truncated", "copy or download it again")),
    Entry("truncated_header.safetensors", cut_model(30), error=("truncated", "header")),
    Entry("version99.safetensors", future_model, error=("format version 99", "upgrade audiodiff")),
    Entry("noise.safetensors", raw(RANDOM_BYTES), error=("not a safetensors model file",)),
    Entry("plain.safetensors", plain_safetensors, error=("not an audiodiff model",)),
    Entry("empty.safetensors", raw(b""), error=("empty file (0 bytes)",)),
    Entry("folder.safetensors", directory, error=("is a directory",)),
    Entry("noise.ckpt", raw(RANDOM_BYTES), error=("not a PyTorch checkpoint",)),
    Entry("unreadable.safetensors", unreadable, error=("permission denied",)),
)


def bad(entries: tuple[Entry, ...], point: str) -> list[Entry]:
    return [e for e in entries if e.is_bad(point)]


def usable(entries: tuple[Entry, ...], point: str) -> list[Entry]:
    return [e for e in entries if e.is_usable(point)]


# ------------------------------------------------------------------ the corpus
@dataclass(frozen=True)
class Corpus:
    audio: Path
    mels: Path
    models: Path

    @property
    def model(self) -> Path:
        return self.models / "good.safetensors"

    def paths(self, folder: Path, entries: tuple[Entry, ...]) -> list[str]:
        return [str(folder / e.fs_name) for e in entries]


@pytest.fixture(scope="module")
def unreadable_even_for_root():
    """Root reads a chmod 000 file; for root, ``os.access`` answers as it would for a user."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        yield
        return
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        return False if Path(os.fsdecode(path)).name.startswith("unreadable") else real_access(path, mode, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "access", access)
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, unreadable_even_for_root) -> Corpus:
    root = tmp_path_factory.mktemp("corpus")
    corpus = Corpus(root / "audio", root / "mels", root / "models")
    for path in (corpus.audio, corpus.mels, corpus.models):
        path.mkdir()
    make_micro_model().save(corpus.model)
    for folder, entries in ((corpus.audio, AUDIO), (corpus.mels, MELS), (corpus.models, MODELS)):
        for entry in entries:
            entry.make(folder / entry.fs_name, corpus.model)
    yield corpus
    for path in root.rglob("unreadable*"):  # so that pytest can clean up
        path.chmod(0o644)


# ------------------------------------------------------------------ checks
def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def check_error_lines(err: str, entries: list[Entry]) -> None:
    """One ``error: <path>: <reason>`` line per bad entry, with its words; no traceback."""
    lines = error_lines(err)
    assert "Traceback" not in err
    assert len(lines) == len(entries), "\n".join(lines)
    for entry in entries:
        mine = [line for line in lines if f"{os.sep}{entry.shown}: " in line]
        assert len(mine) == 1, (entry.shown, lines)
        for word in entry.error:
            assert word in mine[0], (word, mine[0])


def check_notes(messages: list[str], entries: list[Entry],
                label: Callable[[Entry], str] = lambda e: f"{os.sep}{e.shown}: ") -> None:
    """Exactly one message holding ``label(entry)`` per entry with a note (and its words); none
    for the others."""
    for entry in entries:
        mine = [m for m in messages if label(entry) in m]
        assert len(mine) == (1 if entry.note else 0), (entry.shown, mine)
        for word in entry.note:
            assert word in mine[0], (word, mine[0])


def log_messages(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records]


# ------------------------------------------------------------------ vocode, mel
@pytest.mark.slow
def test_vocode_writes_every_good_input_and_names_each_bad_one(corpus, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    inputs = corpus.paths(corpus.audio, AUDIO) + corpus.paths(corpus.mels, MELS)
    with caplog.at_level(logging.INFO):
        code = main(["vocode", *inputs, "--model", str(corpus.model), "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    check_error_lines(captured.err, bad(AUDIO, "vocode") + bad(MELS, "vocode"))
    good = usable(AUDIO, "vocode") + usable(MELS, "vocode")
    assert f"{len(inputs) - len(good)} input(s) failed, {len(good)} written" in captured.err
    for entry in good:
        audio, rate = sf.read(os.fsencode(out / f"{entry.stem}.wav"))  # bytes: soundfile cannot take the others
        assert rate == SR and audio.shape == (MEL.shape[1] * 256,), entry.shown
        assert f"wrote {out / Path(entry.shown).stem}.wav" in captured.out
    assert sorted(p.stem for p in out.iterdir()) == sorted(e.stem for e in good)
    check_notes(log_messages(caplog), good)


def test_mel_writes_every_good_input_and_names_each_bad_one(corpus, tmp_path, capsys, caplog):
    out = tmp_path / "mels"
    with caplog.at_level(logging.INFO):
        code = main(["mel", *corpus.paths(corpus.audio, AUDIO), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    check_error_lines(captured.err, bad(AUDIO, "mel"))
    good = usable(AUDIO, "mel")
    for entry in good:
        mel = np.load(out / f"{entry.stem}.npy")
        assert mel.dtype == np.float32 and mel.shape == MEL.shape, entry.shown
    assert sorted(p.stem for p in out.iterdir()) == sorted(e.stem for e in good)
    check_notes(log_messages(caplog), good)


# ------------------------------------------------------------------ eval
@pytest.mark.slow
def test_eval_scores_every_good_generated_file_and_names_each_bad_one(corpus, tmp_path, capsys):
    ref = tmp_path / "ref"
    ref.mkdir()
    for entry in AUDIO:
        wav(CLIP)(ref / f"{entry.stem}.wav", corpus.model)
    code = main(["eval", "--ref", str(ref), "--gen", str(corpus.audio), "--metrics", "mrstft", "mel", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    check_error_lines(captured.err, bad(AUDIO, "eval_gen"))
    notes = [line for line in captured.out.splitlines() if line.startswith("note: ")]
    check_notes(notes, usable(AUDIO, "eval_gen"), label=lambda e: f"note: {Path(e.shown).stem}: generated: ")
    assert "1 reference(s) without a generated file: x" in captured.out  # x.wav is a folder


@pytest.mark.slow
def test_eval_model_resynthesises_every_good_file_and_names_each_bad_one(corpus, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["eval", "--model", str(corpus.model), "--data", str(corpus.audio), "--out", str(out),
                 "--no-griffin-lim", "--metrics", "mrstft", "--device", "cpu", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    check_error_lines(captured.err, bad(AUDIO, "eval_model"))
    good = usable(AUDIO, "eval_model")
    assert sorted(p.stem for p in (out / "model").iterdir()) == sorted(e.stem for e in good)
    check_notes([line for line in captured.out.splitlines() if line.startswith("note: ")], good)


# ------------------------------------------------------------------ model files
COMMANDS = {
    "vocode": lambda c, model, out: ["vocode", str(c.mels / "mel_good.npy"), "--model", model, "--out", out],
    "generate": lambda c, model, out: ["generate", "--model", model, "--out", out, "--n", "1", "--seconds", "0.1"],
    "info": lambda c, model, out: ["info", model],
    "eval": lambda c, model, out: ["eval", "--model", model, "--data", str(c.audio), "--out", out],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("entry", MODELS, ids=lambda e: e.fs_name)
def test_a_bad_model_file_is_one_line_naming_it(corpus, tmp_path, capsys, command, entry):
    args = COMMANDS[command](corpus, str(corpus.models / entry.fs_name), str(tmp_path / "out"))
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1  # a model file that cannot be used is a failed input, not a usage error
    assert err.count("\n") == 1 and err.startswith(f"error: {corpus.models / entry.shown}: "), err
    assert all(word in err for word in entry.error), err
    assert not (tmp_path / "out").exists()


def test_verbose_shows_the_traceback(corpus):
    with pytest.raises(ModelFileError, match="noise.safetensors"):
        main(["info", str(corpus.models / "noise.safetensors"), "--verbose"])


def test_a_model_file_whose_name_is_not_utf8_loads(corpus, tmp_path, capsys):
    path = tmp_path / os.fsdecode(b"caf\xe9.safetensors")
    path.write_bytes(corpus.model.read_bytes())
    assert audiodiff.load_model(path).config.mel.n_mels == N_MELS
    assert main(["info", str(path)]) == 0
    assert "caf" in capsys.readouterr().out


# ------------------------------------------------------------------ training data scan
def test_training_scan_lists_every_skipped_file_and_goes_on(corpus, tmp_path, capsys, caplog):
    data = AudioDataModule(root=str(corpus.audio), sample_rate=SR, hop_length=256, crop_frames=8, batch_size=2,
                           num_workers=0, val_files=1, cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="audiodiff.data"):
        data.setup()
    printed = capsys.readouterr().out
    result = data.scan_result
    skipped = {Path(os.fsencode(s.path).decode("utf-8", "backslashreplace")).name: s for s in result.skipped}
    assert sorted(skipped) == sorted(e.shown for e in bad(AUDIO, "scan"))
    for entry in bad(AUDIO, "scan"):
        found = skipped[entry.shown]
        assert all(word in f"{found.category} ({found.reason})" for word in entry.error), found
        assert sum(f"{os.sep}{entry.shown}: " in m for m in log_messages(caplog)) == 1, entry.shown
    assert sorted(Path(f.path).name for f in result.usable) == sorted(e.fs_name for e in usable(AUDIO, "scan"))
    good, failed = len(usable(AUDIO, "scan")), len(bad(AUDIO, "scan"))
    assert f"scanned {good + failed} files: {good} usable, {failed} skipped" in printed
    conversions = next(line for line in printed.splitlines() if line.startswith("converted on reading: "))
    for part in ("1 file resampled from 48000 Hz to 22050 Hz", "1 file of 8-bit samples read as float32",
                 "1 file of 24-bit samples read as float32", "1 file downmixed to mono",
                 "1 file with peaks beyond full scale (1.0) used as is"):
        assert part in conversions
    report = result.report_path.read_bytes()
    assert all(os.fsencode(s.path) in report for s in result.skipped)
    for file in result.usable:  # every usable file reads, resampled and downmixed where needed
        crop = read_segment(file, 0, 8 * 256, SR)
        assert crop.shape == (8 * 256,) and torch.isfinite(crop).all(), file.name


# ------------------------------------------------------------------ Python API
@pytest.mark.parametrize("entry", AUDIO, ids=lambda e: e.shown)
def test_load_audio(corpus, entry):
    notes: list[str] = []
    path = corpus.audio / entry.fs_name
    if entry.is_bad("load_audio"):
        with pytest.raises(AudioError) as info:
            load_audio(path, SR, on_conversion=notes.append)
        assert str(info.value).startswith(f"{corpus.audio / entry.shown}: ")
        assert all(word in info.value.reason for word in entry.error) and "\n" not in str(info.value)
        return
    audio, rate = load_audio(path, SR, on_conversion=notes.append)
    assert rate == SR and audio.dtype == torch.float32 and audio.dim() == 1 and torch.isfinite(audio).all()
    assert len(notes) == (1 if entry.note else 0) and all(word in notes[0] for word in entry.note)


@pytest.mark.parametrize("entry", MELS, ids=lambda e: e.fs_name)
def test_read_mel_file(corpus, entry):
    path = corpus.mels / entry.fs_name
    if not entry.error:
        assert read_mel_file(path, N_MELS).shape == (1, N_MELS, MEL.shape[1])
        return
    with pytest.raises(InputError) as info:
        read_mel_file(path, N_MELS)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    assert all(word in info.value.reason for word in entry.error)


@pytest.mark.parametrize("entry", MODELS, ids=lambda e: e.fs_name)
def test_load_model(corpus, entry):
    load = load_checkpoint if entry.fs_name.endswith(".ckpt") else audiodiff.load_model
    with pytest.raises(ModelFileError) as info:
        load(corpus.models / entry.fs_name)
    assert str(info.value).startswith(f"{corpus.models / entry.fs_name}: ") and "\n" not in str(info.value)
    assert all(word in info.value.reason for word in entry.error)


BAD_MEL_TENSORS = {
    "1-D": (torch.zeros(N_MELS), "shape"),
    "4-D": (torch.zeros(1, 1, N_MELS, 10), "shape"),
    "no frames": (torch.zeros(1, N_MELS, 0), "no frames"),
    "int16": (torch.zeros(1, N_MELS, 10, dtype=torch.int16), "integer"),
    "64 bins": (torch.zeros(1, 64, 10), "80 mel bins"),
    "NaN": (torch.full((1, N_MELS, 10), float("nan")), "NaN"),
    "Inf": (torch.full((1, N_MELS, 10), float("inf")), "Inf"),
}


@pytest.mark.parametrize("name", BAD_MEL_TENSORS)
def test_orient_mel_refuses_bad_mel_tensors(name):
    mel, words = BAD_MEL_TENSORS[name]
    with pytest.raises(ValueError, match=words):  # InputError is a ValueError
        orient_mel(mel, N_MELS, "mel")


@pytest.mark.parametrize("name", BAD_MEL_TENSORS)
def test_vocode_api_refuses_bad_mel_tensors(name):
    mel, words = BAD_MEL_TENSORS[name]
    with pytest.raises(ValueError, match=words):
        make_micro_model().vocode(mel, seed=0)
