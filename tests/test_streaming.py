"""Streaming vocoding (``AudioDiffusion.stream``) and exact padded batches equal vocoding the whole mel.

The test vocoder is tiny (6 residual layers, hop 64, 20 mel bins) with every weight random, so its
prediction depends strongly on the frames around it: a lookahead one frame too short is visible.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from audiodiff.diffusion.prior import EnergyPrior
from audiodiff.diffusion.samplers import SamplingSchedule
from audiodiff.diffusion.schedule import SCHEDULES
from audiodiff.engines.chunking import halo_frames
from audiodiff.io.mel_files import InputError
from audiodiff.jobs.vocode import VocodeItem, vocode_batch
from audiodiff.mel import mel_preset
from audiodiff.network.diffwave import denoiser_config
from audiodiff.pipeline import AudioDiffusion, ModelConfig
from audiodiff.pipeline.spans import TailWindow, plan_tail_windows
from audiodiff.pipeline.streaming import Emission, StreamCursor, default_min_block_frames
from conftest import make_tiny_generator

N_MELS = 20
ATOL = 1e-5
#: (sampler, steps): each family once, with few steps where the count is free.
SAMPLERS = [("fast", None), ("ddpm", 3), ("ddim", 3), ("dpmpp-2m-karras", 4), ("stored", None)]


def make_vocoder(prior: EnergyPrior | None = None) -> AudioDiffusion:
    torch.manual_seed(3)
    mel = mel_preset("hifigan", hop_length=64, n_fft=256, win_length=256, n_mels=N_MELS)
    schedule = SCHEDULES["base"]
    denoiser = denoiser_config("tiny", n_mels=N_MELS, hop_length=64, residual_layers=6, max_steps=schedule.num_steps)
    model = AudioDiffusion(ModelConfig(denoiser=denoiser, mel=mel, schedule=schedule, sample_rate=22050, prior=prior))
    for parameter in model.network.parameters():
        torch.nn.init.normal_(parameter, std=0.2 if parameter.dim() > 1 else 0.1)
    stored = SamplingSchedule("dpmpp-2m", tuple(model.sigmas("ddim-log-snr", 3)))
    return model.with_schedule("stored", stored).eval()


def random_mel(frames: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, N_MELS, frames, generator=generator) - 3.0


def split(mel: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    edges = np.cumsum([0] + sizes)
    return [mel[..., a:b] for a, b in zip(edges[:-1], edges[1:]) if b > a]


def random_sizes(frames: int, seed: int, largest: int = 12) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < frames:
        sizes.append(int(min(rng.integers(1, largest + 1), frames - sum(sizes))))
    return sizes


def streamed(model: AudioDiffusion, blocks, **options) -> torch.Tensor:
    return torch.cat(list(model.stream(blocks, **options)), dim=-1)


@pytest.fixture(scope="module")
def vocoder() -> AudioDiffusion:
    return make_vocoder()


# --------------------------------------------------------------------- fast
@pytest.mark.parametrize("sampler, steps", SAMPLERS)
def test_lookahead_is_network_calls_times_halo(vocoder, sampler, steps):
    calls = len(vocoder.sigmas(sampler, steps)) - 1
    assert vocoder.stream_lookahead(sampler, steps) == calls * halo_frames(vocoder.config.denoiser)
    assert vocoder.stream_lookahead("fast") == 6 * 3  # tiny, 6 layers, hop 64: halo 3


@pytest.mark.parametrize("block, words", [
    (torch.zeros(N_MELS + 1, 4), "expects 20 mel bins"),
    (torch.zeros(4, N_MELS), "transpose it"),
    (torch.full((N_MELS, 3), float("nan")), "NaN"),
    (torch.zeros(N_MELS, 3, dtype=torch.int64), "integer"),
    (torch.zeros(N_MELS), "shape"),
    (torch.zeros(1, N_MELS, 0), "no frames"),
    (torch.zeros(2, N_MELS, 3), "2 rows"),
])
def test_a_bad_block_is_refused_with_one_line(vocoder, block, words):
    stream = vocoder.stream([torch.zeros(N_MELS, 2), block], seed=0)
    with pytest.raises(InputError) as error:
        list(stream)
    message = str(error.value)
    assert message.startswith("mel block 1: ") and words in message and "\n" not in message


def test_stream_arguments_are_checked_at_the_call(vocoder):
    with pytest.raises(ValueError, match="needs a seed"):
        vocoder.stream([], seed=None)
    with pytest.raises(ValueError, match="min_block_frames"):
        vocoder.stream([], min_block_frames=0)
    with pytest.raises(ValueError, match="unknown sampler"):
        vocoder.stream([], sampler="nope")
    with pytest.raises(ValueError, match="unconditional"):
        make_tiny_generator(None).stream([])


def test_no_blocks_no_audio(vocoder):
    assert list(vocoder.stream(iter([]))) == []


def test_padded_tail_windows():
    assert plan_tail_windows([10, 4, 7], frames=10, lookahead=2) == [TailWindow(1, 0, 2, 4), TailWindow(2, 3, 5, 7)]
    assert plan_tail_windows([3], frames=9, lookahead=5) == [TailWindow(0, 0, 0, 3)]
    with pytest.raises(ValueError, match="lengths"):
        plan_tail_windows([11], frames=10, lookahead=2)


def test_default_block_is_the_lookahead():
    assert default_min_block_frames(18) == 18 and default_min_block_frames(0) == 1


# --------------------------------------------------------------------- slow
@pytest.mark.slow
@pytest.mark.parametrize("sampler, steps", SAMPLERS)
def test_stream_equals_vocode_for_any_blocks(vocoder, sampler, steps):
    frames = 36
    mel = random_mel(frames)
    whole = vocoder.vocode(mel, sampler=sampler, steps=steps, seed=11)
    assert whole.abs().mean() > 0.1
    options = dict(sampler=sampler, steps=steps, seed=11)
    splittings = {f"random {k}": split(mel, random_sizes(frames, k)) for k in range(2)}
    splittings["1-frame"] = split(mel, [1] * frames)
    splittings["one block"] = [mel[0]]  # (n_mels, frames)
    for name, blocks in splittings.items():
        torch.testing.assert_close(streamed(vocoder, blocks, **options), whole, atol=ATOL, rtol=0, msg=name)


@pytest.mark.slow
def test_stream_emitting_at_every_frame(vocoder):
    mel = random_mel(30)
    whole = vocoder.vocode(mel, sampler="ddim", steps=2, seed=11)
    blocks = split(mel, random_sizes(30, 7, largest=3))
    pieces = list(vocoder.stream(blocks, sampler="ddim", steps=2, seed=11, min_block_frames=1))
    lookahead = vocoder.stream_lookahead("ddim", 2)
    arrived = np.cumsum([b.shape[-1] for b in blocks])
    assert len(pieces) == int((arrived > lookahead).sum()) + 1  # past L frames, every block frees frames
    torch.testing.assert_close(torch.cat(pieces, -1), whole, atol=ATOL, rtol=0)


@pytest.mark.slow
def test_a_lookahead_too_short_changes_the_audio(vocoder, monkeypatch):
    """The equality above has teeth: with one frame of lookahead the pieces differ from the whole."""
    mel = random_mel(40)
    whole = vocoder.vocode(mel, sampler="ddim", steps=3, seed=1)
    monkeypatch.setattr(vocoder, "stream_lookahead", lambda *args, **kwargs: 1)
    pieces = streamed(vocoder, split(mel, [10] * 4), sampler="ddim", steps=3, seed=1, min_block_frames=1)
    assert (pieces - whole).abs().max() > 1e-3


@pytest.mark.slow
def test_a_stream_that_ends_early_is_the_vocoding_of_what_arrived(vocoder):
    mel = random_mel(60)
    received = 31
    audio = streamed(vocoder, split(mel[..., :received], [7, 7, 7, 7, 3]), seed=4)
    torch.testing.assert_close(audio, vocoder.vocode(mel[..., :received], seed=4), atol=ATOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [5, [5, 9]], ids=["int", "per-row"])
def test_batched_stream_with_seeds(vocoder, seed):
    mel = random_mel(40, batch=2, seed=2)
    audio = streamed(vocoder, split(mel, random_sizes(40, 3)), sampler="ddim", steps=3, seed=seed)
    assert audio.shape == (2, 40 * 64)
    torch.testing.assert_close(audio, vocoder.vocode(mel, sampler="ddim", steps=3, seed=seed), atol=ATOL, rtol=0)
    alone = vocoder.vocode(mel[1:], sampler="ddim", steps=3, seed=9 if isinstance(seed, list) else 6)
    torch.testing.assert_close(audio[1:], alone, atol=ATOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("sampler, steps", [("fast", None), ("dpmpp-2m", 3)])
def test_stream_with_a_prior(sampler, steps):
    model = make_vocoder(prior=EnergyPrior(energy_min=0.0, energy_max=2.0, std_min=0.1))
    mel = random_mel(40, seed=5) + 2.5  # loud and quiet frames: the prior's std varies
    assert model.noise_std(mel).std() > 0.05
    whole = model.vocode(mel, sampler=sampler, steps=steps, seed=2)
    audio = streamed(model, split(mel, random_sizes(40, 1)), sampler=sampler, steps=steps, seed=2)
    torch.testing.assert_close(audio, whole, atol=ATOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("min_block", [None, 4])
def test_first_audio_comes_after_lookahead_plus_min_block_frames(vocoder, min_block):
    lookahead = vocoder.stream_lookahead("fast")
    first = lookahead + (lookahead if min_block is None else min_block)
    mel = random_mel(first + 10)
    consumed = []

    def frames():
        for k in range(mel.shape[-1]):
            consumed.append(k)
            yield mel[..., k: k + 1]

    stream = vocoder.stream(frames(), seed=0, min_block_frames=min_block)
    audio = next(stream)
    assert len(consumed) == first
    assert audio.shape == (1, (first - lookahead) * 64)


@pytest.mark.slow
@pytest.mark.parametrize("sampler, steps", [("fast", None), ("dpmpp-2m-karras", 4)])
def test_padded_batch_rows_equal_their_unbatched_vocoding(vocoder, sampler, steps):
    lengths = [45, 23, 38]  # 23 < 2L: its window starts at the utterance's start
    mels = [random_mel(n, seed=k)[0] for k, n in enumerate(lengths)]
    padded = torch.stack([torch.nn.functional.pad(m, (0, 45 - m.shape[-1]), value=-11.5) for m in mels])
    audio = vocoder.vocode_checked(padded, sampler=sampler, steps=steps, seed=[3, 4, 5], lengths=lengths)
    for row, (mel, n) in enumerate(zip(mels, lengths)):
        alone = vocoder.vocode(mel, sampler=sampler, steps=steps, seed=3 + row)[0]
        torch.testing.assert_close(audio[row, : n * 64], alone, atol=ATOL, rtol=0)
        assert not audio[row, n * 64:].any()
    unfixed = vocoder.vocode_checked(padded, sampler=sampler, steps=steps, seed=[3, 4, 5])
    assert (unfixed[1, : 23 * 64] - audio[1, : 23 * 64]).abs().max() > 1e-3  # the padding was heard


@pytest.mark.slow
def test_vocode_batch_gives_each_item_its_unbatched_audio(vocoder):
    items = [VocodeItem(f"u{k}", None, random_mel(n, seed=k)[0]) for k, n in enumerate([30, 44, 17])]
    waves = vocode_batch(vocoder, list(enumerate(items)), sampler="ddim", steps=3, seed=7)
    for k, (item, wave) in enumerate(zip(items, waves)):
        alone = vocoder.vocode(item.mel, sampler="ddim", steps=3, seed=7 + k)[0]
        torch.testing.assert_close(wave, alone, atol=ATOL, rtol=0)


def test_a_window_needs_a_seed(vocoder):
    with pytest.raises(ValueError, match="needs a seed"):
        vocoder.vocode_span(random_mel(4), 3, seed=None)
    with pytest.raises(ValueError, match="need a seed"):
        vocoder.vocode_checked(random_mel(4, batch=2), seed=None, lengths=[4, 2])


# ------------------------------------------------- the cursor, and windows of several streams batched


def emissions_of(cursor: StreamCursor, blocks: list[torch.Tensor]) -> list[Emission]:
    emissions = [cursor.push(block) for block in blocks]
    return [e for e in [*emissions, cursor.finish()] if e is not None]


@pytest.mark.parametrize("sizes", [[1] * 50, [7, 3, 11, 29], [50], [2, 40, 8]])
def test_cursor_emissions_tile_the_frames_with_lookahead_each_side(sizes):
    lookahead, min_block = 6, 4
    mel = random_mel(sum(sizes))
    cursor = StreamCursor(N_MELS, lookahead, min_block)
    emissions = emissions_of(cursor, split(mel, sizes))
    assert [e.first for e in emissions] == [0] + [e.stop for e in emissions[:-1]]  # contiguous, no overlap
    assert emissions[-1].stop == sum(sizes) and emissions[-1].final and not any(e.final for e in emissions[:-1])
    for e in emissions:
        assert e.start == max(0, e.first - lookahead)  # the utterance's start, or L frames before
        assert e.final or e.start + e.frames == e.stop + lookahead  # the window runs L frames past stop
        assert e.final or e.stop - e.first >= min_block
        torch.testing.assert_close(e.window, mel[..., e.start: e.start + e.frames], rtol=0, atol=0)
    assert cursor.kept.shape[-1] <= lookahead  # only the context a later window would need


def test_cursor_refuses_a_block_with_other_rows_and_a_zero_min_block():
    cursor = StreamCursor(N_MELS, 3, 1)
    cursor.push(random_mel(4, batch=2))
    with pytest.raises(InputError, match="mel block 1: has 1 rows; the stream's first block had 2"):
        cursor.push(random_mel(4, batch=1))
    with pytest.raises(ValueError, match="at least 1"):
        StreamCursor(N_MELS, 3, 0)


@pytest.mark.slow
@pytest.mark.parametrize("sampler, steps", [("fast", None), ("dpmpp-2m-karras", 4)])
def test_windows_of_several_streams_in_one_padded_batch_equal_each_stream_alone(vocoder, sampler, steps):
    """What ``audiodiff serve`` does with concurrent streams: each step's ready windows of all
    streams go into one ``vocode_span`` call, padded to the longest, with each row's start frame,
    seed and (when the window ends its utterance) true length."""
    lookahead = vocoder.stream_lookahead(sampler, steps)
    mels = [random_mel(n, seed=n) for n in (70, 41, 23)]
    seeds = [4, 17, 8]
    queues = [emissions_of(StreamCursor(N_MELS, lookahead, 3), split(mel, random_sizes(mel.shape[-1], k, 9)))
              for k, mel in enumerate(mels)]
    pieces: list[list[torch.Tensor]] = [[] for _ in mels]
    hop = vocoder.hop_length
    while any(queues):
        rows = [k for k, queue in enumerate(queues) if queue]
        batch = [queues[k].pop(0) for k in rows]
        longest = max(e.frames for e in batch)
        padded = torch.cat([torch.nn.functional.pad(e.window, (0, longest - e.frames)) for e in batch])
        audio = vocoder.vocode_span(padded, [e.start for e in batch], sampler=sampler, steps=steps,
                                    seed=[seeds[k] for k in rows], precision="fp32",
                                    lengths=[e.frames if e.final else longest for e in batch])
        for k, e, row in zip(rows, batch, audio):
            pieces[k].append(e.cut(row[None], hop))
    for mel, seed, got in zip(mels, seeds, pieces):
        whole = vocoder.vocode(mel, sampler=sampler, steps=steps, seed=seed, precision="fp32")
        torch.testing.assert_close(torch.cat(got, dim=-1), whole, rtol=0, atol=ATOL)
