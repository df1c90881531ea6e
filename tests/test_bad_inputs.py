"""Every documented bad input to EncodecModel.encode / decode gets a clear error at the boundary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import audio

from encodec_hf.errors import EncodecInputError, UnsupportedBandwidthError


@pytest.fixture(scope="module")
def mono(model_pair):
    return model_pair("tiny")[1]


@pytest.fixture(scope="module")
def stereo(model_pair):
    return model_pair("tiny_chunked")[1]


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: audio(1, 2, 100), EncodecInputError, "expects 1 audio channel.*has 2.*mean"),
        (lambda: audio(1, 1, 100)[0], EncodecInputError, r"\[batch, channels, samples\].*x\[None\]"),
        (lambda: (audio(1, 1, 100) * 32767).to(torch.int16), TypeError, "Integer PCM.*32768"),
        (lambda: audio(1, 1, 100).numpy(), TypeError, "torch.Tensor"),
        (lambda: torch.zeros(1, 1, 0), EncodecInputError, "empty"),
        (lambda: torch.zeros(0, 1, 10), EncodecInputError, "empty"),
        (lambda: torch.tensor([[[0.1, float("nan"), 0.2]]]), EncodecInputError, "NaN or Inf"),
        (lambda: torch.tensor([[[0.1, float("inf")]]]), EncodecInputError, "NaN or Inf"),
        (lambda: torch.zeros(1, 1, 10, dtype=torch.complex64), TypeError, "floating point"),
    ],
)
def test_bad_audio(mono, make, error, match):
    with pytest.raises(error, match=match):
        mono.encode(make(), bandwidth=6.0)


def test_stereo_model_refuses_mono_with_a_fix(stereo):
    with pytest.raises(EncodecInputError, match="expects 2 audio channel.*expand"):
        stereo.encode(audio(1, 1, 1000), bandwidth=6.0)


@pytest.mark.parametrize("bandwidth", [3.0, 48.0, 0.5])
def test_unsupported_bandwidth(mono, bandwidth):
    with pytest.raises(UnsupportedBandwidthError, match=r"Select one of \[6.0, 12.0, 24.0\]"):
        mono.encode(audio(1, 1, 100), bandwidth=bandwidth)


@pytest.mark.parametrize("bandwidth", ["6", True])
def test_bandwidth_of_wrong_type(mono, bandwidth):
    with pytest.raises(TypeError, match="number in kbps"):
        mono.encode(audio(1, 1, 100), bandwidth=bandwidth)


@pytest.mark.parametrize(
    "mask,match",
    [
        (torch.ones(1, 99), r"shape \[1, 100\]"),
        (torch.ones(2, 100), r"shape \[1, 100\]"),
        (torch.cat([torch.zeros(1, 10), torch.ones(1, 90)], 1), "right padding"),
        (torch.zeros(1, 100), "all padding"),
        (torch.full((1, 100), 0.5), "only 0"),
    ],
)
def test_bad_padding_mask(mono, mask, match):
    with pytest.raises(EncodecInputError, match=match):
        mono.encode(audio(1, 1, 100), mask, bandwidth=6.0)


def test_nan_in_padding_is_ignored(mono):
    """Padding is never read, so junk there (even NaN) is harmless and the item encodes as if alone."""
    x = audio(1, 1, 120)
    x[..., 100:] = float("nan")
    mask = torch.ones(1, 120, dtype=torch.bool)
    mask[:, 100:] = False
    with torch.inference_mode():
        padded = mono.encode(x, mask, bandwidth=6.0)
        alone = mono.encode(x[..., :100], bandwidth=6.0)
        assert torch.equal(padded.audio_codes[..., : alone.audio_codes.shape[-1]], alone.audio_codes)


def test_shorter_than_one_frame_is_padded_to_one_frame(mono):
    with torch.inference_mode():
        for length in (1, 3, 7):
            enc = mono.encode(audio(1, 1, length), bandwidth=6.0)
            assert enc.audio_codes.shape[-1] == 1
            assert mono.decode(**enc).audio_values.shape == (1, 1, length)


@pytest.fixture(scope="module")
def encoded(mono):
    with torch.inference_mode():
        return mono.encode(audio(2, 1, 160), bandwidth=24.0)


@pytest.mark.parametrize(
    "transform,error,match",
    [
        (lambda c: c + 64, EncodecInputError, r"\[0, 64\); got values from"),
        (lambda c: c - 100, EncodecInputError, r"\[0, 64\)"),
        (lambda c: c.float(), TypeError, "integer"),
        (lambda c: c[0], EncodecInputError, r"codes\[None\]"),
        (lambda c: torch.cat([c, c]), EncodecInputError, "1 chunk"),
        (lambda c: c[..., :0], EncodecInputError, "empty"),
        (lambda c: torch.cat([c, c, c], dim=2), EncodecInputError, "12 codebooks but the model has only 4"),
        (lambda c: c.numpy(), TypeError, "torch.Tensor"),
    ],
)
def test_bad_codes(mono, encoded, transform, error, match):
    with pytest.raises(error, match=match):
        mono.decode(transform(encoded.audio_codes), encoded.audio_scales)


def test_fewer_codebooks_than_encoded_is_allowed(mono, encoded):
    """Decoding with the first k codebooks is how lower bandwidths are obtained from one encode."""
    with torch.inference_mode():
        out = mono.decode(encoded.audio_codes[:, :, :1], encoded.audio_scales).audio_values
    assert out.shape == (2, 1, 160)


def test_codes_too_short_for_the_given_length(mono, encoded):
    with pytest.raises(EncodecInputError, match="needs 1 chunk.*of up to 21 frames.*has 1 chunk.*of 20 frames"):
        mono.decode(encoded.audio_codes, encoded.audio_scales, audio_length=torch.tensor([161, 160]))


@pytest.mark.parametrize("pad", [-1, 20, 1.5, True])
def test_bad_last_frame_pad_length(mono, encoded, pad):
    with pytest.raises((EncodecInputError, TypeError), match="last_frame_pad_length"):
        mono.decode(encoded.audio_codes, encoded.audio_scales, last_frame_pad_length=pad)


@pytest.fixture(scope="module")
def stereo_encoded(stereo):
    with torch.inference_mode():
        return stereo.encode(audio(2, 2, 2000), bandwidth=6.0)


@pytest.mark.parametrize(
    "scales,match",
    [
        (None, "needs the audio_scales"),
        ("drop_one", "entries but audio_codes has"),
        ("wrong_batch", "one scale per item"),
        ("negative", "finite and positive"),
        ("nan", "finite and positive"),
    ],
)
def test_scales_that_do_not_match_the_codes(stereo, stereo_encoded, scales, match):
    s = stereo_encoded.audio_scales
    bad = {
        None: None,
        "drop_one": s[:-1],
        "wrong_batch": [torch.ones(3, 1) for _ in s],
        "negative": [-x for x in s],
        "nan": [x * float("nan") for x in s],
    }[scales]
    with pytest.raises(EncodecInputError, match=match):
        stereo.decode(stereo_encoded.audio_codes, bad, last_frame_pad_length=stereo_encoded.last_frame_pad_length)


def test_forward_needs_codes_and_scales_together(mono, encoded):
    with pytest.raises(ValueError, match="did not specify the `audio_scales`"):
        mono(audio(2, 1, 160), audio_codes=encoded.audio_codes)
    with pytest.raises(ValueError, match="did not specify the `audio_codes`"):
        mono(audio(2, 1, 160), audio_scales=encoded.audio_scales)


def test_numpy_padding_mask_is_accepted(mono):
    mask = np.ones((1, 100), dtype=np.int32)
    with torch.inference_mode():
        assert mono.encode(audio(1, 1, 100), mask, bandwidth=6.0).audio_codes.shape[-1] == 13
