"""MS-STFT discriminator: parity with Meta's ``encodec.msstftd`` on the same random weights, shapes, bad inputs.

Meta's module computes its STFT with torchaudio, which is not installed here; tests/reference_encodec.py provides a
stand-in ``Spectrogram`` that follows ``torchaudio.functional.spectrogram`` (window-energy normalisation).
"""

from __future__ import annotations

import pytest
import torch

from encodec_hf.errors import EncodecInputError, TrainingConfigError
from encodec_hf.training.discriminator import MultiScaleSTFTDiscriminator

PAPER_N_FFTS = [2048, 1024, 512, 256, 128]


def _meta_discriminator(in_channels: int, n_ffts: list[int], hops: list[int], seed: int = 0):
    from reference_encodec import import_reference

    msstftd = import_reference().msstftd
    torch.manual_seed(seed)
    with pytest.warns(FutureWarning):  # Meta's code uses the deprecated torch.nn.utils.weight_norm
        meta = msstftd.MultiScaleSTFTDiscriminator(
            32, in_channels=in_channels, n_ffts=n_ffts, hop_lengths=hops, win_lengths=n_ffts
        )
    with torch.no_grad():
        for name, tensor in meta.named_parameters():
            # Off the initial g = ||v||, so that a swapped or ignored g would change the outputs.
            if name.endswith("weight_g"):
                tensor.mul_(0.5 + torch.rand_like(tensor))
            elif name.endswith("bias"):
                tensor.copy_(0.1 * torch.randn_like(tensor))
    return meta


def _max_difference(ours, theirs) -> float:
    (logits_a, fmaps_a), (logits_b, fmaps_b) = ours, theirs
    assert len(logits_a) == len(logits_b) and len(fmaps_a) == len(fmaps_b)
    diffs = [(a - b).abs().max().item() for a, b in zip(logits_a, logits_b, strict=True)]
    for layers_a, layers_b in zip(fmaps_a, fmaps_b, strict=True):
        assert len(layers_a) == len(layers_b) == 5
        for a, b in zip(layers_a, layers_b, strict=True):
            assert a.shape == b.shape
            diffs.append((a - b).abs().max().item())
    return max(diffs)


@pytest.mark.parametrize(
    "in_channels, n_ffts, hops",
    [
        (1, PAPER_N_FFTS, [n // 4 for n in PAPER_N_FFTS]),  # the paper's five scales
        (2, PAPER_N_FFTS, [n // 4 for n in PAPER_N_FFTS]),  # stereo: [re_L, re_R, im_L, im_R] channels
        (1, [1024, 2048, 512], [256, 512, 128]),  # Meta's repository default
    ],
)
def test_matches_meta_outputs_and_feature_maps(in_channels, n_ffts, hops):
    meta = _meta_discriminator(in_channels, n_ffts, hops)
    ours = MultiScaleSTFTDiscriminator(in_channels=in_channels, n_ffts=n_ffts, hop_lengths=hops)
    result = ours.load_state_dict(meta.state_dict())  # legacy weight_g/weight_v keys + torchaudio window buffers
    assert not result.missing_keys and not result.unexpected_keys
    torch.manual_seed(1)
    audio = torch.randn(2, in_channels, 2600)
    audio_meta = audio.clone().requires_grad_(True)
    audio_ours = audio.clone().requires_grad_(True)
    out_meta, out_ours = meta(audio_meta), ours(audio_ours)
    assert _max_difference(out_ours, out_meta) <= 1e-5
    # The gradients reaching the audio (what the generator trains on) agree as well.
    sum(logit.square().sum() for logit in out_meta[0]).backward()
    sum(logit.square().sum() for logit in out_ours[0]).backward()
    torch.testing.assert_close(audio_ours.grad, audio_meta.grad, rtol=1e-5, atol=1e-6)


def test_paper_defaults_and_shapes():
    disc = MultiScaleSTFTDiscriminator()
    assert disc.num_discriminators == 5 and disc.min_length == 2048
    assert [d.n_fft for d in disc.discriminators] == PAPER_N_FFTS
    assert [d.hop_length for d in disc.discriminators] == [512, 256, 128, 64, 32]
    length = 4096
    logits, fmaps = disc(torch.randn(3, 1, length))
    for d, logit, layers in zip(disc.discriminators, logits, fmaps, strict=True):
        frames = 1 + (length - d.n_fft) // d.hop_length
        bins = d.n_fft // 2 + 1
        assert logit.shape == (3, 1, frames, -(-bins // 8))  # three stride-2 convs along frequency
        assert [f.shape[:3] for f in layers] == [(3, 32, frames)] * 5
        assert [f.shape[-1] for f in layers] == [bins, -(-bins // 2), -(-bins // 4), -(-bins // 8), -(-bins // 8)]
    # Weight norm on every conv except the first, as in Meta's code.
    first, *rest = disc.discriminators[0].convs
    assert not hasattr(first.conv, "parametrizations")
    assert all(hasattr(c.conv, "parametrizations") for c in [*rest, disc.discriminators[0].conv_post])


def test_own_state_dict_round_trip():
    torch.manual_seed(0)
    a, b = MultiScaleSTFTDiscriminator(n_ffts=[256, 128]), MultiScaleSTFTDiscriminator(n_ffts=[256, 128])
    state = a.state_dict()
    assert not any("window" in key for key in state)
    assert "discriminators.0.convs.1.conv.parametrizations.weight.original0" in state
    b.load_state_dict(state)
    audio = torch.randn(1, 1, 600)
    assert _max_difference(a(audio), b(audio)) == 0.0


@pytest.mark.parametrize(
    "audio, match",
    [
        (torch.randn(1, 4096), r"\[batch, 1, time\]"),
        (torch.randn(1, 2, 4096), r"\[batch, 1, time\]"),
        (torch.randn(1, 1, 2047), "at least 2048 samples"),
        (torch.ones(1, 1, 4096, dtype=torch.long), "floating-point"),
    ],
)
def test_bad_audio(audio, match):
    with pytest.raises(EncodecInputError, match=match):
        MultiScaleSTFTDiscriminator()(audio)


def test_bad_config():
    with pytest.raises(TrainingConfigError, match="same length"):
        MultiScaleSTFTDiscriminator(n_ffts=[512, 256], hop_lengths=[128])
    with pytest.raises(TrainingConfigError, match="win_length <= n_fft"):
        MultiScaleSTFTDiscriminator(n_ffts=[256], win_lengths=[512])
    with pytest.raises(TrainingConfigError, match="filters"):
        MultiScaleSTFTDiscriminator(filters=0)


def test_half_precision_audio_takes_a_float32_stft():
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator(n_ffts=[256, 128])
    audio = torch.randn(1, 1, 600).bfloat16()
    assert _max_difference(disc(audio), disc(audio.float())) == 0.0
