"""Mel/audio alignment on the training path: the audio around sample ``n`` is what mel frame
``n // hop`` describes, and the conditioner puts frame ``i`` on samples ``[i hop, (i + 1) hop)``.

A vocoder whose conditioner is shifted against its audio by half a hop or more is trained to
make each sample from the mel of its neighbour; these tests would catch such a shift (issue 19).
"""

from __future__ import annotations

import pytest
import torch

from audiodiff.mel import MelSpectrogram, mel_preset
from audiodiff.network.diffwave import MelUpsampler


@pytest.mark.parametrize("sample", [3000, 3071, 3072, 3200, 3327, 3328, 5000])
def test_hifigan_frame_of_an_impulse_is_sample_over_hop(sample):
    """The ``hifigan`` preset's frame ``i`` is centred on ``i * hop + hop / 2``: an impulse at
    sample ``n`` is loudest in frame ``n // hop``, the frame whose samples the conditioner covers."""
    frontend = MelSpectrogram(mel_preset("hifigan"))
    audio = torch.zeros(8192)
    audio[sample] = 1.0
    energy = frontend(audio)[0].exp().sum(0)
    assert int(energy.argmax()) == sample // 256


def test_diffwave_frames_are_centred_on_multiples_of_the_hop():
    """The ``diffwave`` preset (``center=True``, as the reference's preprocessing) centres frame
    ``i`` on sample ``i * hop``: half a hop earlier than the samples the upsampler gives it, as in
    the reference implementation. Pinned so that a change to either is deliberate."""
    frontend = MelSpectrogram(mel_preset("diffwave"))
    for sample, frame in [(3000, 12), (3071, 12), (3200, 13), (3327, 13)]:
        audio = torch.zeros(8192)
        audio[sample] = 1.0
        assert int(frontend(audio)[0].sum(0).argmax()) == frame


@pytest.mark.parametrize("hop", [200, 256, 320])
def test_upsampler_centres_frame_i_on_its_hop(hop):
    """With box kernels (all weights 1, no bias), a single frame ``g`` spreads symmetrically
    around the middle of samples ``[g hop, (g + 1) hop)``, so the upsampler adds no shift."""
    upsampler = MelUpsampler(hop)
    with torch.no_grad():
        for stage in upsampler.stages:
            stage.weight.fill_(1.0)
            stage.bias.zero_()
    frame = 5
    mel = torch.zeros(1, 1, 12)
    mel[0, 0, frame] = 1.0
    with torch.no_grad():
        out = upsampler(mel)[0, 0]
    time = torch.arange(out.numel(), dtype=torch.float64)
    centroid = float((out.double() * time).sum() / out.double().sum())
    assert centroid == pytest.approx(frame * hop + (hop - 1) / 2, abs=1e-6)
