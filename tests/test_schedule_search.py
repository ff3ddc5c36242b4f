"""Schedule search (``audiodiff search-schedule``) and stored schedules (``--schedule NAME``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from audiodiff.io.audio import save_audio
from audiodiff.cli import main
from audiodiff.pipeline import FORMAT_VERSION, check_schedule_name, load_model, ModelFileError, read_config_dict, SamplingSchedule
from audiodiff.jobs.search_schedule import coordinate_moves, level_grid, read_clips, search_schedule
from conftest import make_tiny_generator, make_tiny_model, speech_like

HOPS = 12  # 3072 samples at hop 256: enough for the mel and MR-STFT windows, cheap to vocode


def _clips(model, n: int = 2) -> list[torch.Tensor]:
    samples = HOPS * model.hop_length
    return [torch.from_numpy(speech_like(0.2, model.sample_rate, seed=k)[:samples]) for k in range(n)]


def _stored_version(path: Path) -> str:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()["format_version"]


@pytest.fixture(scope="module")
def searched():
    model = make_tiny_model()
    return model, search_schedule(model, _clips(model), 3, grid=5, rounds=1, progress=False)


def test_search_is_never_worse_than_its_start_and_keeps_levels_valid(searched):
    model, result = searched
    levels = result.levels
    assert result.score <= result.start.score
    assert result.score == min(e.score for e in result.history)
    assert len(levels) == 4 and levels[-1] == 0.0 and np.all(np.diff(levels) < 0)
    trained = model.schedule.sigmas
    assert np.all((levels[:-1] >= trained[0]) & (levels[:-1] <= trained[-1]))
    assert result.schedule.sampler == "ancestral" and result.schedule.metric == "mel"
    assert result.fast.schedule.steps == 6
    assert result.network_calls == sum(e.schedule.steps for e in result.history)  # no schedule scored twice
    assert "start (" in result.table() and "fast" in result.table()


def test_a_deterministic_solver_can_be_searched_too():
    model = make_tiny_model()
    result = search_schedule(model, _clips(model, 1), 2, sampler="ddim", metric="mrstft", grid=4, rounds=1,
                             progress=False)
    assert result.schedule.sampler == "ddim" and result.schedule.metric == "mrstft"
    assert result.score <= result.start.score and result.start.schedule.sampler == "ddim"


def test_search_of_the_fast_length_is_at_least_as_good_as_fast():
    model = make_tiny_model()
    result = search_schedule(model, _clips(model, 1), 6, rounds=0, progress=False)
    assert result.score <= result.fast.score  # the fast levels are one of the start candidates
    assert result.schedule.sigmas == result.start.schedule.sigmas  # no rounds: the best start


def test_search_scores_with_the_models_engine_and_precision():
    from audiodiff.jobs.search_schedule import ClipScorer

    model = make_tiny_model()
    clips = _clips(model, 1)
    eager = ClipScorer(model, clips)
    fast = model.sampling_schedule("fast")
    folded_bf16 = ClipScorer(make_tiny_model().fold_denoiser(), clips, precision="bf16")
    assert type(folded_bf16.conditioning).__name__ == "FoldedProjections"
    assert folded_bf16.conditioning.per_block[0].dtype == torch.bfloat16
    # the same vocoder: bf16 rounding moves the score a little, not a lot
    assert folded_bf16(fast) != eager(fast) and abs(folded_bf16(fast) - eager(fast)) < 0.05 * eager(fast)
    with pytest.raises(ValueError, match="unknown precision"):
        search_schedule(model, clips, 2, precision="fp8", progress=False)


def test_grid_and_moves_stay_in_range_and_ordered():
    model = make_tiny_model()
    grid = level_grid(model.schedule, 7)
    assert grid[0] == model.schedule.sigmas[-1] and grid[-1] == model.schedule.sigmas[0]
    assert np.all(np.diff(grid) < 0)
    levels = (grid[1], grid[4], grid[6], 0.0)
    for index in range(3):
        for move in coordinate_moves(levels, index, grid):
            assert np.all(np.diff(move) < 0) and move[-1] == 0.0 and move != levels
    assert [m[1] for m in coordinate_moves(levels, 1, grid)] == [grid[2], grid[3], grid[5]]
    assert [m[0] for m in coordinate_moves(levels, 0, grid)] == [grid[0], grid[2], grid[3]]


def test_stored_schedule_round_trips_and_equals_passing_its_levels(tmp_path, searched):
    model, result = searched
    model = make_tiny_model()
    path = model.with_schedule("searched-3", result.schedule).save(tmp_path / "m.safetensors")
    loaded = load_model(path, engine="eager")  # as the in-memory model: bit for bit
    assert loaded.config.schedules == {"searched-3": result.schedule}
    assert loaded.sampling_schedule("searched-3").sigmas == result.schedule.sigmas  # exact through JSON
    mel = loaded.mel(_clips(loaded, 1)[0])
    by_name = loaded.vocode(mel, sampler="searched-3", seed=5)
    by_levels = make_tiny_model().vocode(mel, sampler=SamplingSchedule("ancestral", result.schedule.sigmas), seed=5)
    torch.testing.assert_close(by_name, by_levels, atol=0, rtol=0)
    assert _stored_version(path) == "3" and FORMAT_VERSION >= 3  # the oldest version that has schedules
    assert read_config_dict(path)["schedules"]["searched-3"]["metric"] == "mel"


def test_files_without_schedules_keep_the_old_format_version(tmp_path):
    plain = make_tiny_model().save(tmp_path / "plain.safetensors")
    assert _stored_version(plain) == "1" and "schedules" not in read_config_dict(plain)
    assert _stored_version(make_tiny_generator().save(tmp_path / "classes.safetensors")) == "2"
    levels = SamplingSchedule("ancestral", (0.5, 0.1, 0.0))
    classes = make_tiny_generator().with_schedule("mine", levels).save(tmp_path / "classes3.safetensors")
    assert _stored_version(classes) == "3"
    assert load_model(classes).sigmas("mine").tolist() == [0.5, 0.1, 0.0]


def test_unknown_or_bad_schedules_are_refused(tmp_path):
    model = make_tiny_model().with_schedule("searched-2", SamplingSchedule("ddim", (0.5, 0.05, 0.0)))
    with pytest.raises(ValueError, match="stored: searched-2"):
        model.sigmas("searched-9")
    with pytest.raises(ValueError, match="has 2 steps"):
        model.sigmas("searched-2", 3)
    for name in ("ddim", "fast", "a b", "", "-x"):
        with pytest.raises(ValueError):
            check_schedule_name(name)
    with pytest.raises(ValueError, match="decrease"):
        SamplingSchedule("ddim", (0.1, 0.5, 0.0))
    with pytest.raises(ValueError, match="not one of"):
        SamplingSchedule("euler", (0.5, 0.0))
    with pytest.raises(ValueError, match="trained range"):
        model.sigmas(SamplingSchedule("ddim", (0.99, 0.0)))
    path = model.save(tmp_path / "m.safetensors")  # a file whose stored levels leave the trained range
    from safetensors.torch import load_file, save_file
    metadata = read_config_dict(path)
    metadata["schedules"]["searched-2"]["sigmas"] = [0.99, 0.0]
    save_file(load_file(str(path)), str(path), metadata={"format": "audiodiff", "format_version": "3",
                                                         "config": json.dumps(metadata)})
    with pytest.raises(ModelFileError, match="trained range"):
        load_model(path)


def test_read_clips_takes_centre_crops_and_skips_short_files(tmp_path):
    model = make_tiny_model()
    sf.write(tmp_path / "a.wav", speech_like(0.5, model.sample_rate), model.sample_rate)
    sf.write(tmp_path / "b.wav", speech_like(0.01, model.sample_rate), model.sample_rate)
    skipped: list[str] = []
    clips = read_clips(tmp_path, model, count=3, seconds=0.2, on_skip=skipped.append)
    assert [c.shape[-1] for c in clips] == [int(0.2 * model.sample_rate) // 256 * 256]
    assert len(skipped) == 1 and skipped[0].startswith("b: ") and "too short" in skipped[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        read_clips(tmp_path / "empty", model)


def test_search_schedule_keeps_the_stored_float_dtype_of_the_model_file(tmp_path, tiny_model):
    from audiodiff.pipeline import stored_float_dtype

    half = tiny_model.save(tmp_path / "half.safetensors", dtype=torch.float16)
    data = tmp_path / "held-out"
    save_audio(data / "clip.wav", speech_like(0.2, 22050), 22050)
    assert main(["search-schedule", str(half), "--data", str(data), "--steps", "1", "--rounds", "0", "--clips", "1",
                 "--seconds", "0.15", "--quiet", "--out", str(tmp_path / "out.safetensors")]) == 0
    assert stored_float_dtype(half) == stored_float_dtype(tmp_path / "out.safetensors") == torch.float16
    assert stored_float_dtype(tiny_model.save(tmp_path / "full.safetensors")) == torch.float32
    assert stored_float_dtype(tmp_path / "missing.safetensors") is None


@pytest.mark.slow
def test_search_schedule_cli_end_to_end(tmp_path, tiny_model_file, capsys):
    data = tmp_path / "held-out"
    for k in range(2):
        save_audio(data / f"clip{k}.wav", speech_like(0.2, 22050, seed=k), 22050)
    code = main(["search-schedule", str(tiny_model_file), "--data", str(data), "--steps", "2", "--grid", "4",
                 "--rounds", "1", "--clips", "2", "--seconds", "0.15", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    target = tiny_model_file.with_name("tiny-searched.safetensors")
    assert "start (" in out and "\nfast " in out and "searched-2" in out and "network calls" in out
    stored = read_config_dict(target)["schedules"]["searched-2"]
    assert stored["data"] == "held-out" and stored["sampler"] == "ancestral" and len(stored["sigmas"]) == 3

    assert main(["info", str(target)]) == 0
    assert "schedule searched-2: ancestral, 2 steps, log-mel L1" in capsys.readouterr().out

    mel_file = tmp_path / "mel.npy"
    model = load_model(target).fold_denoiser()  # the CLI's engine on a CPU
    np.save(mel_file, model.mel(_clips(model, 1)[0])[0].numpy())
    assert main(["vocode", str(mel_file), "--model", str(target), "--schedule", "searched-2",
                 "--out", str(tmp_path / "voc"), "--quiet"]) == 0
    direct = model.vocode(torch.from_numpy(np.load(mel_file)), sampler=SamplingSchedule("ancestral", stored["sigmas"]),
                          seed=0)
    save_audio(tmp_path / "direct.wav", direct[0], model.sample_rate)
    np.testing.assert_array_equal(sf.read(tmp_path / "voc" / "mel.wav")[0], sf.read(tmp_path / "direct.wav")[0])


@pytest.mark.slow
def test_cli_usage_errors_are_one_line(tmp_path, tiny_model_file, capsys):
    runs = [
        (["vocode", "x.npy", "--model", str(tiny_model_file), "--schedule", "searched-4"], "it stores none"),
        (["vocode", "x.npy", "--model", str(tiny_model_file), "--schedule", "s", "--sampler", "ddim"], "not both"),
        (["search-schedule", str(tiny_model_file), "--data", str(tmp_path / "missing"), "--steps", "2"],
         "folder not found"),
        (["search-schedule", str(tiny_model_file), "--data", str(tmp_path), "--steps", "2"], "no audio files"),
        (["search-schedule", str(tiny_model_file), "--data", str(tmp_path), "--steps", "2", "--name", "ddim"],
         "built-in sampler"),
        (["search-schedule", str(tiny_model_file), "--data", str(tmp_path), "--steps", "0"], "at least 1"),
    ]
    for argv, message in runs:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
