"""Parity with transformers' EncodecModel (random weights, the three Hub configurations).

Codes and scales must be identical on the reference kernels (``fast_inference=False``: the same arithmetic as
transformers', bit for bit; the scales are the original's arithmetic on the same [B, C, L] chunks), audio within
1e-5. The default fast plan of the 24 / 32 kHz models rounds differently: its codes may differ at near-ties only
(tests/code_compare.py). For padded batches the reference encodes the padding too,
so there the contract is per item: each item of our padded batch equals the reference run on that item alone.
"""

from __future__ import annotations

import contextlib
from functools import partial

import pytest
import torch
from code_compare import assert_codes_match, encoder_latents
from conftest import audio

PRESETS = {
    # name: (bandwidths, channels, lengths of a padded batch in seconds)
    "24khz": ((1.5, 3.0, 6.0, 12.0, 24.0), 1, (0.71, 0.43)),
    "48khz": ((3.0, 6.0, 12.0, 24.0), 2, (2.13, 0.97, 1.6)),
    "32khz": ((2.2,), 1, (0.83, 0.51)),
}
ATOL = 1e-5


def _params():
    for name, (bandwidths, _, _) in PRESETS.items():
        for bw in bandwidths:
            yield pytest.param(name, bw, id=f"{name}-{bw}kbps")


@contextlib.contextmanager
def _reference_kernels(model):
    """transformers' kernels for the block (the session-wide model keeps its default afterwards)."""
    fast = model.fast_inference
    model.fast_inference = False
    try:
        yield model
    finally:
        model.fast_inference = fast


def _assert_scales_equal(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        if b is None:
            assert a is None
        else:
            assert a.dtype == b.dtype and torch.equal(a, b), (a, b)


@torch.inference_mode()
@pytest.mark.parametrize("name,bandwidth", list(_params()))
def test_single_and_equal_length_batch_match_transformers(model_pair, name, bandwidth):
    reference, model = model_pair(name)
    sr, channels = model.config.sampling_rate, model.config.audio_channels
    length = int(PRESETS[name][2][0] * sr)
    for batch in (1, 2):
        x = audio(batch, channels, length, seed=batch)
        ref = reference.encode(x, bandwidth=bandwidth)
        ours = model.encode(x, bandwidth=bandwidth)
        assert ours.audio_codes.dtype == torch.long
        if model.fast_inference:  # the fast plan (24 / 32 kHz default): near-ties only; the reference kernels: exact
            assert_codes_match(ours.audio_codes, ref.audio_codes, model, partial(encoder_latents, model, x))
            with _reference_kernels(model):
                assert torch.equal(model.encode(x, bandwidth=bandwidth).audio_codes, ref.audio_codes)
        else:
            assert torch.equal(ours.audio_codes, ref.audio_codes)
        assert ours.last_frame_pad_length == ref.last_frame_pad_length
        _assert_scales_equal(ours.audio_scales, ref.audio_scales)

        mask = torch.ones(batch, length, dtype=torch.bool)
        ref_audio = reference.decode(
            ref.audio_codes, ref.audio_scales, mask, last_frame_pad_length=ref.last_frame_pad_length
        ).audio_values
        ours_audio = model.decode(**ours).audio_values
        assert ours_audio.shape == (batch, channels, length)
        torch.testing.assert_close(ours_audio, ref_audio, atol=ATOL, rtol=0)

        if batch > 1:
            continue
        # forward = encode + decode, in both implementations
        forward = model(x, bandwidth=bandwidth)
        assert torch.equal(forward.audio_codes, ref.audio_codes)
        torch.testing.assert_close(
            forward.audio_values, reference(x, bandwidth=bandwidth).audio_values, atol=ATOL, rtol=0
        )


@torch.inference_mode()
@pytest.mark.parametrize("name,bandwidth", list(_params()))
def test_padded_batch_matches_transformers_per_item(model_pair, name, bandwidth):
    reference, model = model_pair(name)
    sr, channels = model.config.sampling_rate, model.config.audio_channels
    lengths = [int(s * sr) for s in PRESETS[name][2]]
    clips = [audio(1, channels, n, seed=i)[0] for i, n in enumerate(lengths)]
    width = max(lengths)
    x = torch.zeros(len(clips), channels, width)
    mask = torch.zeros(len(clips), width, dtype=torch.long)
    for i, clip in enumerate(clips):
        x[i, :, : clip.shape[-1]] = clip
        mask[i, : clip.shape[-1]] = 1
        x[i, :, clip.shape[-1] :] = 0.5  # junk in the padding must not matter

    ours = model.encode(x, mask, bandwidth=bandwidth)
    decoded = model.decode(ours.audio_codes, ours.audio_scales, mask, last_frame_pad_length=ours.last_frame_pad_length)
    assert decoded.audio_values.shape == (len(clips), channels, width)
    for i, clip in enumerate(clips):
        alone = reference.encode(clip[None], bandwidth=bandwidth)
        chunks, _, _, frames = alone.audio_codes.shape
        # the item alone runs other batch shapes (kernel blockings): near-ties only (tests/code_compare.py)
        item_codes = ours.audio_codes[:chunks, i : i + 1, :, :frames]
        assert_codes_match(item_codes, alone.audio_codes, model, partial(encoder_latents, model, clip[None]))
        assert not ours.audio_codes[chunks:, i].any(), "chunk slots past an item's end hold 0"
        assert not ours.audio_codes[:, i, :, frames:].any(), "frames past an item's end hold 0"
        if model.config.normalize:
            got = [s[i : i + 1] for s in ours.audio_scales[:chunks]]
            _assert_scales_equal(got, alone.audio_scales)
        ref_audio = reference.decode(
            alone.audio_codes,
            alone.audio_scales,
            torch.ones(1, clip.shape[-1]),
            last_frame_pad_length=alone.last_frame_pad_length,
        ).audio_values
        n = clip.shape[-1]
        torch.testing.assert_close(decoded.audio_values[i : i + 1, :, :n], ref_audio, atol=ATOL, rtol=0)
        assert not decoded.audio_values[i, :, n:].any(), "samples past an item's end are zero"


@torch.inference_mode()
def test_causal_padded_batch_agrees_with_transformers_batch_away_from_the_padding(model_pair):
    """For the causal model, frames that do not touch the padding are the same as transformers' batched codes:
    the two only differ in the item's last (partial) frame, which the reference computes from the zero padding."""
    reference, model = model_pair("24khz")
    hop = model.config.hop_length
    lengths = [24000, 10000]
    x = audio(2, 1, 24000, seed=3)
    mask = torch.ones(2, 24000, dtype=torch.long)
    mask[1, lengths[1] :] = 0
    ours = model.encode(x, mask, bandwidth=6.0)
    theirs = reference.encode(x, mask, bandwidth=6.0)
    full_frames = lengths[1] // hop
    latents = encoder_latents(model, x)  # causal: a frame's latent does not see later samples
    assert_codes_match(
        ours.audio_codes[..., :full_frames], theirs.audio_codes[..., :full_frames], model, latents[..., :full_frames]
    )
    assert_codes_match(ours.audio_codes[:, 0], theirs.audio_codes[:, 0], model, latents[:, 0])
    with _reference_kernels(model):
        exact = model.encode(x, mask, bandwidth=6.0).audio_codes
    assert torch.equal(exact[..., :full_frames], theirs.audio_codes[..., :full_frames])
    assert torch.equal(exact[:, 0], theirs.audio_codes[:, 0])


@torch.inference_mode()
def test_short_last_chunk_that_crashes_the_reference(model_pair):
    """47_760 samples at 48 kHz: the 240-sample last chunk ends before the first chunk's decoded overhang.
    transformers and Meta's package raise a shape error there; we blend the chunks as usual."""
    reference, model = model_pair("48khz")
    x = audio(1, 2, 47_760, seed=5)
    ours = model.encode(x, bandwidth=6.0)
    ref = reference.encode(x, bandwidth=6.0)
    assert torch.equal(ours.audio_codes, ref.audio_codes)
    with pytest.raises(RuntimeError):
        reference.decode(ref.audio_codes, ref.audio_scales, torch.ones(1, 47_760), last_frame_pad_length=149)
    decoded = model.decode(**ours).audio_values
    assert decoded.shape == (1, 2, 47_760)
    # Expected: the reference's own per-chunk decodes, blended with the triangular weights.
    first = reference._decode_frame(ref.audio_codes[0], ref.audio_scales[0])[0]
    last = reference._decode_frame(ref.audio_codes[1, :, :, :1], ref.audio_scales[1])[0]
    t = torch.linspace(0, 1, first.shape[-1] + 2)[1:-1]
    weight = 0.5 - (t - 0.5).abs()
    stride = model.config.chunk_stride
    out = first * weight
    total = weight.clone()
    out[:, stride : stride + last.shape[-1]] += last * weight[: last.shape[-1]]
    total[stride : stride + last.shape[-1]] += weight[: last.shape[-1]]
    torch.testing.assert_close(decoded[0], (out / total)[:, :47_760], atol=ATOL, rtol=0)
