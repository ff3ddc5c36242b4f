"""Tests of the training options for throughput: LR warm-up, the device-side grad norm, noise
drawn on the audio's device, and ``compile``."""

from __future__ import annotations

import os

import pytest
import torch
from pytorch_lightning.utilities import grad_norm

from audiodiff.diffusion.loss import epsilon_loss
from audiodiff.training.module import DiffusionModule

SMALL = {"residual_layers": 2, "residual_channels": 4}


def test_warmup_ramps_the_learning_rate_linearly_then_holds():
    module = DiffusionModule(size="tiny", learning_rate=1e-3, warmup_steps=4)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_no_warmup_is_a_plain_optimizer_as_before():
    optimizer = DiffusionModule(size="tiny", learning_rate=3e-4).configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]["lr"] == 3e-4
    with pytest.raises(ValueError, match="warmup_steps"):
        DiffusionModule(size="tiny", warmup_steps=-1)


def test_logged_grad_norm_equals_lightnings(monkeypatch):
    module = DiffusionModule(size="tiny", denoiser_overrides=SMALL)
    audio = torch.randn(2, 1024, generator=torch.Generator().manual_seed(0)) * 0.1
    module._loss(audio, module._mel(audio)).backward()
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.update({name: value}))
    module.on_before_optimizer_step(None)
    expected = grad_norm(module.model.network, norm_type=2)["grad_2.0_norm_total"]
    torch.testing.assert_close(logged["train/grad_norm"], expected, rtol=1e-6, atol=0)


def test_noise_and_steps_on_the_cpu_are_the_numbers_drawn_before():
    audio = torch.randn(3, 64)
    seen = {}

    def denoise(x, t):
        seen.update(x=x, t=t)
        return torch.zeros_like(x)

    alpha_bars = torch.linspace(0.99, 0.01, 50)
    torch.manual_seed(5)
    epsilon_loss(denoise, audio, alpha_bars)
    torch.manual_seed(5)
    steps = torch.randint(0, 50, (3,))
    noise = torch.randn(audio.shape)
    a = alpha_bars[steps].unsqueeze(-1)
    assert torch.equal(seen["t"], steps)
    assert torch.equal(seen["x"], a.sqrt() * audio + (1 - a).sqrt() * noise)


@pytest.mark.slow
def test_compiled_training_step_matches_eager(device):
    """Compiling takes minutes on a 2-core CPU: runs there only with ``AUDIODIFF_TEST_COMPILE=1``."""
    if device == "cpu" and os.environ.get("AUDIODIFF_TEST_COMPILE") != "1":
        pytest.skip("torch.compile on the CPU is slow; set AUDIODIFF_TEST_COMPILE=1 (runs with AUDIODIFF_TEST_DEVICE=cuda)")
    audio = torch.randn(2, 4 * 256, generator=torch.Generator().manual_seed(1)).to(device) * 0.1
    losses = []
    for compile in (False, True):
        torch.manual_seed(0)
        module = DiffusionModule(size="tiny", denoiser_overrides=SMALL, compile=compile).to(device)
        module.configure_model()
        module.train()
        assert (module._denoiser() != module.model.network.denoise) == compile
        torch.manual_seed(3)
        loss = module._loss(audio, module._mel(audio))
        loss.backward()
        losses.append((loss.detach(), module.model.network.input_projection.weight.grad.clone()))
        module.eval()
        assert module._denoiser() == module.model.network.denoise  # validation stays eager
    torch.testing.assert_close(losses[1][0], losses[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses[1][1], losses[0][1], rtol=1e-4, atol=1e-6)


class _Trainer:
    """What ``_seed_noise_per_rank`` reads of a Lightning trainer."""

    def __init__(self, global_rank: int, world_size: int) -> None:
        self.global_rank, self.world_size = global_rank, world_size


def _first_training_noise(rank: int, world: int) -> torch.Tensor:
    """The global generator's first draw after fit start on ``rank`` of ``world``, every rank seeded alike."""
    module = DiffusionModule(size="tiny", denoiser_overrides=SMALL)
    module._trainer = _Trainer(rank, world)
    torch.manual_seed(1234)  # what seed_everything does on every rank
    module._seed_noise_per_rank()
    return torch.randn(8)


def test_ddp_ranks_draw_their_own_noise_and_one_process_is_unchanged():
    ranks = [_first_training_noise(rank, 2) for rank in (0, 1)]
    assert not torch.equal(ranks[0], ranks[1])  # the same seed_everything, different noise and steps
    torch.manual_seed(1234)
    unchanged = torch.randn(8)
    assert torch.equal(_first_training_noise(0, 1), unchanged)  # one process: as before
    assert torch.equal(ranks[0], unchanged)  # rank 0 keeps the seed
    assert torch.equal(_first_training_noise(1, 2), ranks[1])  # and a rerun is reproducible
