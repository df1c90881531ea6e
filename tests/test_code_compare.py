"""The near-tie judge of tests/code_compare.py: passes equal codes and near-ties, fails real differences."""

from __future__ import annotations

import copy

import pytest
import torch
from code_compare import assert_codes_match, code_differences, encoder_latents
from conftest import audio, random_model, tiny_chunked_config, tiny_config

from encodec_hf.codec.quantization import EncodecResidualVectorQuantizer


def _near_tie_quantizer(latents: torch.Tensor, frame: int, rel: float) -> EncodecResidualVectorQuantizer:
    """Two stages of 8 codes; at `frame`, stage 0's codes 0 and 1 are at distances from the latent that differ
    by `rel` (relative), every other code is far: 0 is the nearest, 1 a near-tie."""
    torch.manual_seed(0)
    quantizer = EncodecResidualVectorQuantizer(2, 8, latents.shape[1])
    r = latents[0, :, frame]
    u = torch.randn_like(r) * 0.1
    book0 = torch.randn(8, r.numel()) + 10.0
    book0[0], book0[1] = r + u, r - u * (1 + rel)
    quantizer.layers[0].codebook.embed.copy_(book0)
    quantizer.layers[1].codebook.embed.copy_(torch.randn(8, r.numel()) * 0.1)
    return quantizer


@pytest.fixture(scope="module")
def tiny():
    model = random_model(tiny_config())
    x = audio(2, 1, 800, seed=3)
    with torch.no_grad():
        codes = model.encode(x, bandwidth=24.0).audio_codes  # [1, 2, 4, 100]
    return model, x, codes, encoder_latents(model, x)


def test_equal_codes_pass_and_report_nothing(tiny):
    model, _, codes, latents = tiny
    assert assert_codes_match(codes, codes.clone(), model, latents) == []


def test_a_constructed_near_tie_passes_and_its_later_codebooks_are_not_judged():
    latents = torch.randn(1, 6, 50, generator=torch.Generator().manual_seed(1))
    quantizer = _near_tie_quantizer(latents, frame=17, rel=1e-6)
    codes = quantizer.encode(latents, 2)  # [1, 2, 50]
    chosen = int(codes[0, 0, 17])
    assert chosen in (0, 1)  # which one is up to float32 rounding of the search: that is what a near-tie is
    flipped = codes.clone()
    flipped[0, 0, 17] = 1 - chosen  # the near-tie's other side
    flipped[0, 1, 17] = (codes[0, 1, 17] + 3) % 8  # the next stage then sees another residual
    (difference,) = assert_codes_match(codes, flipped, quantizer, latents)
    assert (difference.frame, difference.codebook, difference.code_a, difference.code_b) == (17, 0, chosen, 1 - chosen)
    assert difference.gap < 1e-5 and difference.later_differences == 1


def test_a_real_difference_fails_naming_frame_codebook_codes_and_gap():
    latents = torch.randn(1, 6, 50, generator=torch.Generator().manual_seed(1))
    quantizer = _near_tie_quantizer(latents, frame=17, rel=0.5)  # 1 is a clear second, not a tie
    codes = quantizer.encode(latents, 2)
    assert int(codes[0, 0, 17]) == 0
    wrong = codes.clone()
    wrong[0, 0, 17] = 1
    with pytest.raises(AssertionError, match=r"frame 17, codebook 0: code 0 vs 1, relative gap"):
        assert_codes_match(codes, wrong, quantizer, latents)


def test_a_wrong_weight_fails(tiny):
    model, x, codes, latents = tiny
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.encoder.layers[0].conv.bias.add_(0.02)  # a 2 % error in one weight
        got = broken.encode(x, bandwidth=24.0).audio_codes
    assert not torch.equal(got, codes)
    with pytest.raises(AssertionError, match="beyond a near-tie"):
        assert_codes_match(got, codes, model, latents)


def test_a_swapped_codebook_fails(tiny):
    model, x, codes, latents = tiny
    swapped = copy.deepcopy(model)
    with torch.no_grad():
        books = [layer.codebook.embed for layer in swapped.quantizer.layers]
        first, second = books[1].clone(), books[2].clone()
        books[1].copy_(second)
        books[2].copy_(first)
        got = swapped.encode(x, bandwidth=24.0).audio_codes
    with pytest.raises(AssertionError, match=r"codebook 1: code"):
        assert_codes_match(got, codes, model, latents)


def test_too_many_near_ties_fail_on_the_fraction():
    latents = torch.randn(1, 6, 50, generator=torch.Generator().manual_seed(1))
    quantizer = _near_tie_quantizer(latents, frame=17, rel=1e-6)
    codes = quantizer.encode(latents, 2)
    flipped = codes.clone()
    flipped[0, 0, 17] = 1 - codes[0, 0, 17]
    assert len(assert_codes_match(codes, flipped, quantizer, latents, max_fraction=0.02)) == 1
    with pytest.raises(AssertionError, match="2 near-tie differences in 100 frames"):
        # the default fraction (1 %) of 100 frames allows one near-tie: two fail
        doubled = torch.cat([flipped, flipped], 0)
        assert_codes_match(torch.cat([codes, codes], 0), doubled, quantizer, torch.cat([latents, latents], 0))


def test_shapes_and_latents_are_checked(tiny):
    model, _, codes, latents = tiny
    with pytest.raises(AssertionError, match="code shapes differ"):
        code_differences(codes, codes[..., :-1], model, latents)
    with pytest.raises(AssertionError, match="do not match codes"):
        code_differences(codes, codes, model, latents[..., :-1])


def test_encoder_latents_quantize_to_encode_codes_for_chunked_models():
    model = random_model(tiny_chunked_config())
    x = audio(2, 2, 2500, seed=4)  # 3 chunks of 800 samples (stride 720), the last shorter
    with torch.no_grad():
        codes = model.encode(x, bandwidth=24.0).audio_codes  # [N, B, K, F]
    latents = encoder_latents(model, x)  # [N, B, D, F]
    assert latents.shape[:2] == codes.shape[:2] and latents.shape[-1] == codes.shape[-1]
    frames = model.chunk_layout.chunk_frames(x.shape[-1])
    for n, count in enumerate(frames):
        direct = model.quantizer.encode(latents[n, ..., :count], codes.shape[2])
        assert_codes_match(direct, codes[n, ..., :count], model, latents[n, ..., :count])


def test_latents_given_as_a_callable_are_computed_only_when_codes_differ(tiny):
    model, _, codes, latents = tiny
    calls = []

    def lazy():
        calls.append(1)
        return latents

    assert assert_codes_match(codes, codes.clone(), model, lazy) == [] and calls == []
    wrong = codes.clone()
    wrong[0, 1, 0, 7] = (wrong[0, 1, 0, 7] + 1) % model.config.codebook_size
    with pytest.raises(AssertionError, match=r"index \(0, 1\), frame 7, codebook 0"):
        assert_codes_match(codes, wrong, model, lazy)
    assert calls == [1]
