"""Positional noise: the same numbers for a sample whatever span is drawn, and standard normal."""

from __future__ import annotations

import pytest
import torch

from audiodiff.diffusion.positional_noise import NOISE_BLOCK, PositionalNoise, block_seed, positional_noise


def test_any_span_is_a_slice_of_the_whole():
    whole = positional_noise([7, 8], draw=3, start=0, stop=5 * NOISE_BLOCK + 123)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        start = int(torch.randint(0, whole.shape[1], (1,), generator=generator))
        stop = int(torch.randint(start, whole.shape[1] + 1, (1,), generator=generator))
        assert torch.equal(positional_noise([7, 8], 3, start, stop), whole[:, start:stop])


def test_seed_draw_and_block_each_change_the_noise():
    base = positional_noise([1], 0, 0, NOISE_BLOCK)
    assert not torch.equal(base, positional_noise([2], 0, 0, NOISE_BLOCK))
    assert not torch.equal(base, positional_noise([1], 1, 0, NOISE_BLOCK))
    assert not torch.equal(base, positional_noise([1], 0, NOISE_BLOCK, 2 * NOISE_BLOCK))
    seeds = {block_seed(s, d, j) for s in range(4) for d in range(4) for j in range(64)}
    assert len(seeds) == 4 * 4 * 64 and all(0 <= s < 2**63 for s in seeds)


def test_the_noise_is_standard_normal_and_uncorrelated_across_blocks():
    noise = positional_noise([0], 0, 0, 64 * NOISE_BLOCK)[0].double()
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 1) < 0.01
    blocks = noise.view(64, NOISE_BLOCK)
    correlation = torch.corrcoef(blocks)[~torch.eye(64, dtype=torch.bool)]
    assert correlation.abs().max() < 0.08  # independent 4096-sample blocks: |r| ~ 0.016 each, 5 sigma = 0.08


def test_a_sampler_run_draws_in_order_and_scales_by_its_std():
    std = torch.linspace(0.1, 1.0, 100).unsqueeze(0)
    run = PositionalNoise([5], 200, 300, "cpu", std=std)
    first = run.initial()
    second = run.fresh(first)
    assert torch.equal(first, positional_noise([5], 0, 200, 300) * std)
    assert torch.equal(second, positional_noise([5], 1, 200, 300) * std)
    with pytest.raises(ValueError, match="asked for"):
        run.fresh(torch.zeros(1, 99))
    with pytest.raises(RuntimeError, match="once"):
        run.initial()


def test_bad_spans_are_refused():
    with pytest.raises(ValueError, match="start"):
        positional_noise([0], 0, 10, 5)
    assert positional_noise([0, 1], 0, 7, 7).shape == (2, 0)


def test_per_row_starts_give_each_row_its_own_span():
    run = PositionalNoise.per_row([5, 6], [100, 9000], 300, "cpu")
    first, second = run.initial(), run.fresh(torch.zeros(2, 300))
    assert torch.equal(first[0], positional_noise([5], 0, 100, 400)[0])
    assert torch.equal(first[1], positional_noise([6], 0, 9000, 9300)[0])
    assert torch.equal(second[1], positional_noise([6], 1, 9000, 9300)[0])
