"""Pins the inference plan (``codec/inference_plan.py``) against the reference layers, and its caches against
weight changes.

* bit-identical by construction: the padding copies (``pad1d``'s reflection, ``pad_time_major``), the plan with
  ``fast=False`` (the reference layers themselves), the cached ``|e|^2`` of the quantizer; ELU fused into the
  padding copy up to the last bit of loop-tail samples (torch evaluates those with the scalar ``expm1``);
* float-rounding level (about 1e-7 relative): the time-major (channels-last) convolutions and the sub-pixel
  transposed convolution; for those the model-level gate is the one that matters to users: codes equal to
  transformers' EncodecModel up to near-ties (``tests/code_compare.py``: a flipped code must be within float
  rounding of its rival, and rare) and audio within 1e-5 (last tests).

No timing here: speed is measured by ``benchmarks/bench_codec.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from code_compare import assert_codes_match, encoder_latents
from conftest import audio, random_model, tiny_chunked_config, tiny_config
from torch import nn

from encodec_hf import EncodecConfig, EncodecModel
from encodec_hf.codec.conv import EncodecConv1d, EncodecConvTranspose1d, pad1d
from encodec_hf.codec.inference_plan import (
    InferencePlan,
    fast_steps,
    is_time_major,
    pad_time_major,
    run_steps,
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


# ---------------------------------------------------------------- padding and layout
@pytest.mark.parametrize("mode", ["reflect", "constant"])
@pytest.mark.parametrize("paddings", [(0, 0), (2, 0), (0, 3), (3, 1), (6, 7)])
@pytest.mark.parametrize("elu", [False, True])
@pytest.mark.parametrize("time_major_input", [False, True])
def test_pad_time_major_matches_pad_then_elu(mode, paddings, elu, time_major_input):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 11)
    reference = F.pad(F.elu(x) if elu else x, paddings, mode)  # torch's own padding kernels
    if time_major_input:
        x = to_time_major(x)
    out = pad_time_major(x, paddings, mode, elu=elu)
    assert is_time_major(out)
    if elu:  # equal up to one ulp (scalar vs vectorised expm1 at loop tails)
        assert (out - reference).abs().max() <= 2 * torch.finfo(torch.float32).eps
    else:
        assert torch.equal(out, reference)


@pytest.mark.parametrize("mode", ["reflect", "constant", "replicate"])
@pytest.mark.parametrize("paddings", [(0, 0), (2, 0), (0, 3), (3, 1), (6, 7)])
def test_pad1d_gives_torch_values_and_gradients(mode, paddings):
    """The reference layers' padding (reflection as one concatenation) is F.pad's, values and gradients."""
    x = torch.randn(3, 5, 11, requires_grad=True)
    out, reference = pad1d(x, paddings, mode), F.pad(x, paddings, mode)
    assert torch.equal(out, reference)
    weights = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    (expected,) = torch.autograd.grad((reference * weights).sum(), x)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("length", [1, 2, 3])
def test_short_reflect_zero_extends_like_the_reference(length):
    x = torch.randn(2, 3, length)
    left, right = 4, 2
    extra = max(left, right) - length + 1
    expected = F.pad(F.pad(x, (0, extra)), (left, right), "reflect")[..., : length + left + right]
    assert torch.equal(pad1d(x, (left, right), "reflect"), expected)
    assert torch.equal(pad_time_major(x, (left, right), "reflect"), expected)
    assert torch.equal(pad_time_major(x, (left, right), "reflect", elu=True), pad1d(F.elu(x), (4, 2), "reflect"))


def test_layout_helpers():
    x = torch.randn(2, 3, 7)
    assert not is_time_major(x)
    y = to_time_major(x)
    assert is_time_major(y) and torch.equal(x, y) and y.stride() == (21, 1, 3)
    assert to_time_major(y) is y  # no copy when already time-major
    assert is_time_major(torch.randn(2, 1, 7))  # mono: both layouts are the same memory


# ---------------------------------------------------------------- fast steps against the layers
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("norm_type", ["weight_norm", "time_group_norm"])
@pytest.mark.parametrize(("kernel", "stride", "dilation"), [(7, 1, 1), (3, 1, 3), (1, 1, 1), (8, 4, 1), (10, 5, 1)])
@pytest.mark.parametrize("length", [1, 9, 50])
def test_conv1d_fast_step_matches_layer(causal, norm_type, kernel, stride, dilation, length):
    torch.manual_seed(1)
    conv = EncodecConv1d(6, 5, kernel, stride, dilation, causal=causal, norm_type=norm_type).eval()
    x = torch.randn(3, 6, length)
    with torch.inference_mode():
        fast = run_steps(fast_steps([conv]), x)
        fused = run_steps(fast_steps([nn.ELU(), conv]), to_time_major(x))  # ELU fused into the padding copy
        reference, fused_reference = conv(x), conv(F.elu(x))
    assert is_time_major(fast) and is_time_major(fused)
    _close(fast, reference)
    _close(fused, fused_reference)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("norm_type", ["weight_norm", "time_group_norm"])
@pytest.mark.parametrize(("kernel", "stride"), [(16, 8), (4, 2), (2, 1), (5, 5), (7, 3)])
@pytest.mark.parametrize("frames", [1, 2, 13])
def test_conv_transpose_fast_step_matches_layer(causal, norm_type, kernel, stride, frames):
    """kernel = 2 x stride (every SEANet layer) runs as a sub-pixel conv; other shapes run the layer itself."""
    torch.manual_seed(2)
    conv = EncodecConvTranspose1d(6, 5, kernel, stride, causal=causal, norm_type=norm_type).eval()
    x = torch.randn(3, 6, frames)
    with torch.inference_mode():
        fast = run_steps(fast_steps([conv]), x)
        fused = run_steps(fast_steps([nn.ELU(), conv]), x)
        reference, fused_reference = conv(x), conv(F.elu(x))
    assert fast.shape == (3, 5, frames * stride)
    _close(fast, reference)
    _close(fused, fused_reference)
    if kernel == 2 * stride:
        assert is_time_major(fast) and is_time_major(fused)


@pytest.mark.parametrize("shortcut", [True, False])
def test_resnet_block_fast_step_matches_layer(shortcut):
    torch.manual_seed(3)
    kw = dict(causal=False, norm_type="weight_norm", pad_mode="reflect")
    block = EncodecResnetBlock(
        8, kernel_size=3, dilations=(2, 1), compress=2, use_conv_shortcut=shortcut, conv_kwargs=kw
    ).eval()
    x = torch.randn(2, 8, 40)
    kept = x.clone()
    with torch.inference_mode():
        _close(run_steps(fast_steps([block]), to_time_major(x)), block(x))
    assert torch.equal(x, kept)  # the in-place ELU and sum act on fresh activations only


@pytest.mark.parametrize(
    "config",
    [
        _tiny_config(),
        _tiny_config(norm_type="time_group_norm", use_causal_conv=False, audio_channels=2, num_residual_layers=2),
        _tiny_config(use_conv_shortcut=False, pad_mode="constant"),
    ],
)
def test_plans_match_the_reference_halves(config):
    """``fast=False`` is the reference layers bit for bit; ``fast=True`` agrees to float rounding; both split at
    the LSTM into pieces of items with results equal to one pass within float rounding."""
    torch.manual_seed(4)
    encoder, decoder = EncodecEncoder(config).eval(), EncodecDecoder(config).eval()
    x = torch.randn(3, config.audio_channels, 77)
    with torch.inference_mode():
        latents, audio_ref = encoder(x), decoder(encoder(x))
        assert torch.equal(InferencePlan.build(encoder, fast=False)(x), latents)
        assert torch.equal(InferencePlan.build(decoder, fast=False)(latents), audio_ref)
        for fast in (False, True):
            encode, decode = InferencePlan.build(encoder, fast=fast), InferencePlan.build(decoder, fast=fast)
            _close(encode(x), latents)
            _close(encode(x, max_items=2), latents)
            audio = decode(latents)
            assert audio.is_contiguous()
            _close(audio, audio_ref)
            _close(decode(latents, max_items=1), audio_ref)


# ---------------------------------------------------------------- which path runs, and the caches
def test_autograd_runs_the_reference_layers_and_trains():
    model = random_model(_tiny_config()).train()
    x = audio(2, 1, 160)
    model.decoder(model.encoder(x)).pow(2).mean().backward()
    g = model.encoder.layers[0].conv.parametrizations.weight.original0
    assert g.grad is not None and g.grad.abs().sum() > 0
    model.eval()
    codes = model.encode(x, bandwidth=24.0).audio_codes  # autograd on: the reference layers, no plan
    assert not model._inference_plans
    with torch.no_grad():
        model.fast_inference = False
        assert torch.equal(model.encode(x, bandwidth=24.0).audio_codes, codes)


def _edited_copy(model: EncodecModel) -> EncodecModel:
    copy = EncodecModel(model.config).eval()
    copy.load_state_dict(model.state_dict())
    copy.fast_inference = model.fast_inference
    return copy


@pytest.mark.parametrize("chunked", [False, True], ids=["weight_norm", "group_norm_fast"])
def test_in_place_weight_edits_reach_the_next_encode_and_decode(chunked):
    config = tiny_chunked_config() if chunked else tiny_config()
    model = random_model(config)
    model.fast_inference = True
    x = audio(2, config.audio_channels, 900)
    with torch.inference_mode():
        before = model.encode(x, bandwidth=config.target_bandwidths[-1])
        before_audio = model.decode(**before).audio_values
    with torch.no_grad():  # what an optimizer step or a user's edit does: in-place writes to the parameters
        for name, param in model.named_parameters():
            if name.startswith(("encoder.", "decoder.")):
                param.mul_(1.5 if "original0" in name or "bias" in name else -1.0)
    with torch.inference_mode():
        after = model.encode(x, bandwidth=config.target_bandwidths[-1])
        after_audio = model.decode(**before).audio_values
        fresh = _edited_copy(model)
        expected = fresh.encode(x, bandwidth=config.target_bandwidths[-1])
        assert not torch.equal(after.audio_codes, before.audio_codes)
        assert torch.equal(after.audio_codes, expected.audio_codes)
        assert not torch.allclose(after_audio, before_audio)
        assert torch.equal(after_audio, fresh.decode(**before).audio_values)


def _codebooks_at_latent_scale(model, x: torch.Tensor) -> None:
    """Redraws every codebook at the scale of the residual it quantizes on `x`: unit-variance codebooks around the
    tiny model's small latents (std ~0.1) put every frame on the same few codes: codes could not tell models apart."""
    with torch.no_grad():
        residual = model.encoder(x)  # [B, D, F]
        for layer in model.quantizer.layers:
            embed = layer.codebook.embed  # [bins, D]
            embed.copy_(torch.randn_like(embed) * residual.std())
            quantized = embed[layer.codebook.encode(residual.transpose(1, 2).reshape(-1, embed.shape[1]))]
            residual = residual - quantized.view(residual.shape[0], -1, embed.shape[1]).transpose(1, 2)


def test_load_state_dict_and_data_swaps_reach_the_next_encode():
    config = tiny_config()
    model, other = random_model(config, seed=0), random_model(config, seed=1)
    x = audio(1, 1, 400)
    _codebooks_at_latent_scale(other, x)
    with torch.inference_mode():
        model.encode(x)  # builds the plans
        expected = other.encode(x, bandwidth=24.0).audio_codes
    model.load_state_dict(other.state_dict())  # copies in place: version counters move
    with torch.inference_mode():
        assert torch.equal(model.encode(x, bandwidth=24.0).audio_codes, expected)
    swapped = dict(random_model(config, seed=2).named_parameters())
    for name, param in model.named_parameters():  # `.data` swaps move nothing: the documented explicit call
        param.data = swapped[name].data.clone()
    model.invalidate_inference_plan()
    with torch.inference_mode():
        codes = model.encode(x, bandwidth=24.0).audio_codes
        assert not torch.equal(codes, expected)
        assert torch.equal(codes, _edited_copy(model).encode(x, bandwidth=24.0).audio_codes)


def test_dtype_changes_rebuild_the_plans():
    model = random_model(tiny_config())
    x = audio(2, 1, 400)
    with torch.inference_mode():
        first = model.encode(x, bandwidth=24.0)
        model.double()  # through the model: the plans are dropped at once
        double = model.encode(x, bandwidth=24.0)
        assert model.decode(**double).audio_values.dtype == torch.float64
        fast_audio = model.decode(**double).audio_values
        model.fast_inference = False
        torch.testing.assert_close(fast_audio, model.decode(**double).audio_values, rtol=0, atol=1e-9)
        model.fast_inference = True
        model.float()
        assert torch.equal(model.encode(x, bandwidth=24.0).audio_codes, first.audio_codes)
        model.encoder.double()  # a half cast on its own: the recorded dtypes no longer match
        latents = model._run_half("encoder", x.double(), x.shape[-1])
        assert latents.dtype == torch.float64
        torch.testing.assert_close(latents, model.encoder(x.double()), rtol=1e-7, atol=1e-9)


def test_parameters_made_in_inference_mode_are_never_stale():
    """Inference tensors carry no version counter: their plan is rebuilt on every call instead of cached."""
    config = tiny_config()
    with torch.inference_mode():
        model = random_model(config)
        x = audio(1, 1, 400)
        before = model.encode(x, bandwidth=24.0).audio_codes
        for param in model.encoder.parameters():
            param.mul_(-1.0)
        after = model.encode(x, bandwidth=24.0).audio_codes
        model.fast_inference = False
        assert torch.equal(model.encode(x, bandwidth=24.0).audio_codes, after)
    assert not torch.equal(before, after)


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

    def latents():  # the fast plan rounds differently: near-ties may flip, nothing else
        return encoder_latents(ours, audio)

    with torch.inference_mode():
        for bandwidth in config.target_bandwidths:
            expected = theirs.encode(audio, bandwidth=bandwidth)
            got = ours.encode(audio, bandwidth=bandwidth)
            assert_codes_match(got.audio_codes, expected.audio_codes, ours, latents)
            args = (expected.audio_codes, expected.audio_scales)
            pad = expected.last_frame_pad_length
            reference = theirs.decode(*args, last_frame_pad_length=pad).audio_values
            decoded = ours.decode(*args, last_frame_pad_length=pad).audio_values
            assert (decoded - reference).abs().max() <= 1e-5
        # Batch equals per item.
        single = ours.encode(audio[1:], bandwidth=config.target_bandwidths[-1])
        batched = ours.encode(audio, bandwidth=config.target_bandwidths[-1])
        assert_codes_match(batched.audio_codes[:, 1:], single.audio_codes, ours, lambda: latents()[:, 1:])


def test_fast_inference_default_per_norm_and_switch(tmp_path):
    """Weight-norm models default to the fast steps, GroupNorm ones to the reference layers; switched off the
    results are bit-identical to transformers', switched on the codes are the same up to near-ties and the audio
    close."""
    assert EncodecModel(_tiny_config()).fast_inference
    assert not EncodecModel(_tiny_config(norm_type="time_group_norm", use_causal_conv=False)).fast_inference
    config = _tiny_config()
    theirs, ours = _pair(config, tmp_path)
    audio = _real_audio(config.sampling_rate, 1, 0.05, batch=2)
    with torch.inference_mode():
        expected = theirs.encode(audio, bandwidth=config.target_bandwidths[-1])
        reference_audio = theirs.decode(expected.audio_codes, expected.audio_scales).audio_values
        fast = ours.encode(audio, bandwidth=config.target_bandwidths[-1])
        assert_codes_match(fast.audio_codes, expected.audio_codes, ours, encoder_latents(ours, audio))
        _close(ours.decode(fast.audio_codes, fast.audio_scales).audio_values, reference_audio)
        ours.fast_inference = False
        exact = ours.encode(audio, bandwidth=config.target_bandwidths[-1])
        assert torch.equal(exact.audio_codes, expected.audio_codes)
        assert torch.equal(ours.decode(exact.audio_codes, exact.audio_scales).audio_values, reference_audio)
