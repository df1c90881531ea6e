"""Pins the numerics of the offline fast paths against the plain reference computation.

* bit-identical by construction: the padding copy written into a preallocated buffer, in-place ELU / residual
  sum, the cached ``|e|^2`` of the quantizer; ELU fused into the padding copy up to the last bit of loop-tail
  samples (torch evaluates those with the scalar ``expm1``);
* float-rounding level (about 1e-7 relative): the time-major (channels-last) convolutions and the GEMM + overlap-add
  transposed convolution; for those the model-level gate is the one that matters to users: codes identical to
  transformers' EncodecModel and audio within 1e-5 (last tests).

No timing here: speed is measured by ``benchmarks/bench_codec.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import random_model

from encodec_hf import EncodecConfig, EncodecModel
from encodec_hf.codec.conv import (
    EncodecConv1d,
    EncodecConvTranspose1d,
    is_time_major,
    pad1d,
    pad1d_into,
    to_time_major,
)
from encodec_hf.codec.quantization import EncodecEuclideanCodebook
from encodec_hf.codec.seanet import EncodecDecoder, EncodecEncoder, EncodecResnetBlock


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    assert a.shape == b.shape
    scale = b.abs().max().clamp_min(1.0)
    assert (a - b).abs().max() <= rel * scale, f"max diff {(a - b).abs().max():.3e} (scale {scale:.3e})"


def _tiny_config(**kwargs) -> EncodecConfig:
    base = dict(num_filters=4, upsampling_ratios=[4, 2], hidden_size=16, codebook_size=32, num_lstm_layers=1)
    return EncodecConfig(**{**base, **kwargs})


@pytest.mark.parametrize("mode", ["reflect", "constant"])
@pytest.mark.parametrize("paddings", [(0, 0), (2, 0), (0, 3), (3, 1), (6, 7)])
@pytest.mark.parametrize("elu", [False, True])
@pytest.mark.parametrize("time_major_input", [False, True])
def test_pad1d_into_matches_pad_then_elu(mode, paddings, elu, time_major_input):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 11)
    reference = F.pad(F.elu(x) if elu else x, paddings, mode)  # torch's own padding kernels
    if time_major_input:
        x = to_time_major(x)
    out = pad1d_into(x, paddings, mode, elu=elu)
    assert is_time_major(out)
    if elu:  # equal up to one ulp (scalar vs vectorised expm1 at loop tails)
        assert (out - reference).abs().max() <= 2 * torch.finfo(torch.float32).eps
    else:
        assert torch.equal(out, reference)


@pytest.mark.parametrize("mode", ["reflect", "constant"])
@pytest.mark.parametrize("paddings", [(0, 0), (2, 0), (0, 3), (3, 1), (6, 7)])
@pytest.mark.parametrize("time_major_input", [False, True])
def test_pad1d_copies_exactly_what_torch_pads(mode, paddings, time_major_input):
    """pad1d's buffer + mirrored borders (the reference path's padding) gives F.pad's values, channel-major."""
    x = torch.randn(3, 5, 11)
    reference = F.pad(x, paddings, mode)
    out = pad1d(to_time_major(x) if time_major_input else x, paddings, mode)
    assert torch.equal(out, reference) and out.is_contiguous()


@pytest.mark.parametrize("length", [1, 2, 3])
def test_pad1d_into_short_reflect_falls_back_exactly(length):
    x = torch.randn(2, 3, length)
    assert torch.equal(pad1d_into(x, (4, 2), "reflect", elu=False), pad1d(x, (4, 2), "reflect"))
    assert torch.allclose(pad1d_into(x, (4, 2), "reflect", elu=True), pad1d(F.elu(x), (4, 2), "reflect"))


def test_layout_helpers():
    x = torch.randn(2, 3, 7)
    assert not is_time_major(x)
    y = to_time_major(x)
    assert is_time_major(y) and torch.equal(x, y) and y.stride() == (21, 1, 3)
    assert to_time_major(y) is y  # no copy when already time-major
    assert is_time_major(torch.randn(2, 1, 7))  # mono: both layouts are the same memory


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("norm_type", ["weight_norm", "time_group_norm"])
@pytest.mark.parametrize(("kernel", "stride", "dilation"), [(7, 1, 1), (3, 1, 3), (1, 1, 1), (8, 4, 1), (10, 5, 1)])
@pytest.mark.parametrize("length", [1, 9, 50])
def test_conv1d_time_major_matches_reference(causal, norm_type, kernel, stride, dilation, length):
    torch.manual_seed(1)
    conv = EncodecConv1d(6, 5, kernel, stride, dilation, causal=causal, norm_type=norm_type).eval()
    x = torch.randn(3, 6, length)
    with torch.inference_mode():
        reference = conv(x)
        fast = conv(to_time_major(x), time_major=True)
        fused = conv.forward_elu(x)
        fused_reference = conv(F.elu(x))
    assert is_time_major(fast)
    _close(fast, reference)
    _close(fused, fused_reference)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("norm_type", ["weight_norm", "time_group_norm"])
@pytest.mark.parametrize(("kernel", "stride"), [(16, 8), (4, 2), (5, 5), (7, 3), (3, 1)])
@pytest.mark.parametrize("frames", [1, 2, 13])
def test_conv_transpose_gemm_matches_reference(causal, norm_type, kernel, stride, frames):
    torch.manual_seed(2)
    conv = EncodecConvTranspose1d(6, 5, kernel, stride, causal=causal, norm_type=norm_type).eval()
    x = torch.randn(3, 6, frames)
    with torch.inference_mode():
        reference = conv.conv_forward(x)
        fast = conv.conv_forward(x, time_major=True)
        trimmed = conv(to_time_major(x), time_major=True)
        fused = conv.forward_elu(to_time_major(x))  # ELU fused into the sub-pixel conv's padding (k = 2s)
        fused_reference = conv(F.elu(x))
    assert is_time_major(fast) and is_time_major(fused)
    _close(fast, reference)
    _close(trimmed, conv(x))
    _close(fused, fused_reference)


def test_resnet_block_fast_path_matches_reference():
    torch.manual_seed(3)
    kw = dict(causal=False, norm_type="weight_norm", pad_mode="reflect")
    for shortcut in (True, False):
        block = EncodecResnetBlock(
            8, kernel_size=3, dilations=(2, 1), compress=2, use_conv_shortcut=shortcut, conv_kwargs=kw
        ).eval()
        x = torch.randn(2, 8, 40)
        with torch.inference_mode():
            _close(block(to_time_major(x), time_major=True), block(x))
        assert not torch.equal(x, torch.zeros_like(x))  # the input was not modified in place


@pytest.mark.parametrize(
    "config",
    [
        _tiny_config(),
        _tiny_config(norm_type="time_group_norm", use_causal_conv=False, audio_channels=2, num_residual_layers=2),
        _tiny_config(use_conv_shortcut=False, pad_mode="constant"),
    ],
)
def test_seanet_fast_path_matches_layer_by_layer(config):
    torch.manual_seed(4)
    encoder, decoder = EncodecEncoder(config).eval(), EncodecDecoder(config).eval()
    x = torch.randn(3, config.audio_channels, 77)
    with torch.inference_mode():
        encoder.time_major = decoder.time_major = False
        latents_ref = encoder(x)
        audio_ref = decoder(latents_ref)
        encoder.time_major = decoder.time_major = True
        latents = encoder(x)
        audio = decoder(latents_ref)
    _close(latents, latents_ref)
    _close(audio, audio_ref)
    assert audio.is_contiguous()


def test_training_uses_reference_route_and_cache_sees_weight_updates():
    torch.manual_seed(5)
    config = _tiny_config()
    encoder = EncodecEncoder(config)
    x = torch.randn(2, 1, 40, requires_grad=True)
    encoder(x).sum().backward()
    # The layer-level fast paths fall back to differentiable ops under autograd as well.
    conv = encoder.layers[0]
    conv(to_time_major(x), time_major=True).sum().backward()
    decoder = EncodecDecoder(config)
    decoder.layers[3](torch.randn(2, 16, 5), time_major=True).sum().backward()
    grad = encoder.layers[0].conv.parametrizations.weight.original1.grad
    assert grad is not None and grad.abs().sum() > 0
    # Cached re-laid-out weights follow in-place updates of the parameters.
    x = x.detach()
    encoder.eval()
    with torch.inference_mode():
        before = encoder(x)
    with torch.no_grad():
        encoder.layers[0].conv.parametrizations.weight.original1.mul_(2.0)
        encoder.layers[-1].conv.parametrizations.weight.original0.mul_(0.5)
    with torch.inference_mode():
        after = encoder(x)
        encoder.time_major = False
        after_ref = encoder(x)
    assert not torch.allclose(before, after)
    _close(after, after_ref)


def test_codebook_norm_cache_is_exact_and_invalidated():
    torch.manual_seed(6)
    book = EncodecEuclideanCodebook(64, 8)
    book.embed.normal_()
    x = torch.randn(100, 8)

    def plain(x):
        embed = book.embed.t()
        return (-(x.pow(2).sum(1, keepdim=True) - 2 * x @ embed + embed.pow(2).sum(0, keepdim=True))).max(-1).indices

    assert torch.equal(book.encode(x), plain(x))
    book.embed.mul_(-1.5)  # in place: the cache must notice
    assert torch.equal(book.encode(x), plain(x))
    book.embed = torch.randn(64, 8)  # replaced
    assert torch.equal(book.encode(x), plain(x))
    assert "_embed_sq_norm" not in book.state_dict()


# ---------------------------------------------------------------- model level: transformers parity
def _pair(config: EncodecConfig, tmp_path):
    transformers = pytest.importorskip("transformers")
    random_model(config).save_pretrained(tmp_path)
    return transformers.EncodecModel.from_pretrained(tmp_path).eval(), EncodecModel.from_pretrained(tmp_path).eval()


def _real_audio(rate: int, channels: int, seconds: float, batch: int) -> torch.Tensor:
    """Deterministic speech-like test signal (chirps + noise bursts), `[B, C, T]`."""
    g = torch.Generator().manual_seed(7)
    t = torch.arange(int(rate * seconds)) / rate
    items = []
    for i in range(batch):
        chans = []
        for c in range(channels):
            f0 = 110 * (i + 1) * (1 + 0.3 * c)
            tone = 0.3 * torch.sin(2 * torch.pi * (f0 * t + 40 * t**2)) * (0.5 + 0.5 * torch.sin(2 * torch.pi * 3 * t))
            chans.append(tone + 0.05 * torch.randn(t.shape, generator=g))
        items.append(torch.stack(chans))
    return torch.stack(items)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "seconds"), [("encodec_24khz", 3.0), ("encodec_48khz", 2.5), ("encodec_32khz", 2.0)]
)
def test_fast_paths_keep_transformers_codes(preset, seconds, tmp_path):
    config = getattr(EncodecConfig, preset)()
    theirs, ours = _pair(config, tmp_path)
    audio = _real_audio(config.sampling_rate, config.audio_channels, seconds, batch=2)
    with torch.inference_mode():
        for bandwidth in config.target_bandwidths:
            expected = theirs.encode(audio, bandwidth=bandwidth)
            got = ours.encode(audio, bandwidth=bandwidth)
            assert torch.equal(got.audio_codes, expected.audio_codes), f"codes differ at {bandwidth} kbps"
            args = (expected.audio_codes, expected.audio_scales)
            pad = expected.last_frame_pad_length
            reference = theirs.decode(*args, last_frame_pad_length=pad).audio_values
            decoded = ours.decode(*args, last_frame_pad_length=pad).audio_values
            assert (decoded - reference).abs().max() <= 1e-5
        # Batch equals per item.
        single = ours.encode(audio[1:], bandwidth=config.target_bandwidths[-1])
        batched = ours.encode(audio, bandwidth=config.target_bandwidths[-1])
        assert torch.equal(batched.audio_codes[:, 1:], single.audio_codes)


def test_time_major_default_per_norm_and_model_switch(tmp_path):
    """Weight-norm models default to the time-major layout, GroupNorm ones to the reference kernels; the model-level
    switch sets both halves, and switched off the results are bit-identical to transformers'."""
    assert EncodecModel(_tiny_config()).time_major
    group_norm = EncodecModel(_tiny_config(norm_type="time_group_norm", use_causal_conv=False))
    assert not group_norm.time_major and not group_norm.encoder.time_major and not group_norm.decoder.time_major
    config = _tiny_config()
    theirs, ours = _pair(config, tmp_path)
    audio = _real_audio(config.sampling_rate, 1, 0.05, batch=2)
    with torch.inference_mode():
        expected = theirs.encode(audio, bandwidth=config.target_bandwidths[-1])
        reference_audio = theirs.decode(expected.audio_codes, expected.audio_scales).audio_values
        fast = ours.encode(audio, bandwidth=config.target_bandwidths[-1])
        assert torch.equal(fast.audio_codes, expected.audio_codes)
        _close(ours.decode(fast.audio_codes, fast.audio_scales).audio_values, reference_audio)
        ours.time_major = False
        assert not ours.encoder.time_major and not ours.decoder.time_major
        exact = ours.encode(audio, bandwidth=config.target_bandwidths[-1])
        assert torch.equal(exact.audio_codes, expected.audio_codes)
        assert torch.equal(ours.decode(exact.audio_codes, exact.audio_scales).audio_values, reference_audio)
        ours.time_major = True
        assert ours.encoder.time_major and ours.decoder.time_major
