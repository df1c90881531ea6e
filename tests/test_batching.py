"""Batch = per item, exact output lengths, and the documented output shapes (hypothesis over lengths)."""

from __future__ import annotations

import pytest
import torch
from code_compare import assert_codes_match, encoder_latents
from conftest import audio, random_model, tiny_chunked_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encodec_hf import EncodecDecoderOutput, EncodecEncoderOutput, EncodecOutput
from encodec_hf.codec.inference_plan import BatchLimits

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check_batch_equals_items(model, lengths, bandwidth):
    channels = model.config.audio_channels
    clips = [audio(1, channels, n, seed=n)[0] for n in lengths]
    width = max(lengths)
    x = torch.zeros(len(clips), channels, width)
    mask = torch.zeros(len(clips), width, dtype=torch.bool)
    for i, clip in enumerate(clips):
        x[i, :, : clip.shape[-1]] = clip
        mask[i, : clip.shape[-1]] = True
    with torch.inference_mode():
        batch = model.encode(x, mask, bandwidth=bandwidth)
        batch_audio = model.decode(**batch).audio_values
        assert batch_audio.shape == (len(clips), channels, width)
        for i, clip in enumerate(clips):
            alone = model.encode(clip[None], bandwidth=bandwidth)
            chunks, _, _, frames = alone.audio_codes.shape
            # other batch sizes may take other kernel blockings (last bits): near-ties only (tests/code_compare.py)
            latents = encoder_latents(model, clip[None])
            assert_codes_match(batch.audio_codes[:chunks, i : i + 1, :, :frames], alone.audio_codes, model, latents)
            alone_audio = model.decode(**alone).audio_values
            assert alone_audio.shape[-1] == clip.shape[-1]
            torch.testing.assert_close(batch_audio[i : i + 1, :, : clip.shape[-1]], alone_audio, atol=1e-5, rtol=0)


@SETTINGS
@given(lengths=st.lists(st.integers(1, 700), min_size=1, max_size=4), bw=st.sampled_from([6.0, 24.0]))
def test_causal_batch_equals_items(model_pair, lengths, bw):
    _check_batch_equals_items(model_pair("tiny")[1], lengths, bw)


@SETTINGS
@given(lengths=st.lists(st.integers(1, 2500), min_size=1, max_size=3), bw=st.sampled_from([6.0, 24.0]))
def test_chunked_stereo_batch_equals_items(model_pair, lengths, bw):
    _check_batch_equals_items(model_pair("tiny_chunked")[1], lengths, bw)


def test_documented_output_shapes(model_pair):
    """Pins the shapes the docstrings state, so they cannot drift."""
    _, model = model_pair("tiny_chunked")  # 0.1 s chunks of 800 samples, stride 720, hop 8, 2 channels
    x = audio(3, 2, 2000)
    with torch.inference_mode():
        enc = model.encode(x, bandwidth=12.0)
        assert isinstance(enc, EncodecEncoderOutput)
        assert enc.audio_codes.shape == (3, 3, 2, 100)  # [chunks, B, K, F]
        assert len(enc.audio_scales) == 3 and enc.audio_scales[0].shape == (3, 1)
        assert enc.last_frame_pad_length == 100 - 70  # last chunk: 2000 - 1440 = 560 samples = 70 frames
        assert enc.audio_length.tolist() == [2000] * 3
        codes, scales, pad = model.encode(x, bandwidth=12.0, return_dict=False)
        assert torch.equal(codes, enc.audio_codes) and pad == enc.last_frame_pad_length
        dec = model.decode(**enc)
        assert isinstance(dec, EncodecDecoderOutput) and dec.audio_values.shape == (3, 2, 2000)
        # Without mask or length, every frame is decoded, as transformers does.
        untrimmed = model.decode(enc.audio_codes, enc.audio_scales, last_frame_pad_length=pad).audio_values
        assert untrimmed.shape == (3, 2, 720 * 2 + 70 * 8)
        out = model(x, bandwidth=12.0)
        assert isinstance(out, EncodecOutput) and out.audio_values.shape == x.shape
        assert model(x, bandwidth=12.0, return_dict=False)[1].shape == x.shape


def test_default_bandwidth_is_the_lowest_as_in_transformers(model_pair):
    _, model = model_pair("tiny")
    with torch.inference_mode():
        assert model.encode(audio(1, 1, 100)).audio_codes.shape[2] == 1


def test_audio_rate_pieces_give_the_same_codes_as_one_call():
    """``BatchLimits.audio_rate_samples`` only splits the audio-rate layers of a call into pieces of items (the
    frame-rate layers and the LSTM still see the whole group): the same codes up to near-ties, the same scales,
    and audio within 1e-5 (a
    kernel may pick another blocking for another batch size, which moves last bits, as between items of a batch
    and the items alone)."""
    model = random_model(tiny_chunked_config())
    x = audio(3, 2, 2000, seed=5)  # 3 items x 3 chunks (800, 800, 560 samples): groups of 6 and 3 chunks
    with torch.inference_mode():
        for fast in (False, True):
            model.fast_inference = fast
            model.batch_limits = BatchLimits(audio_rate_samples=48_000)  # one piece per group
            expected = model.encode(x, bandwidth=24.0)
            expected_audio = model.decode(**expected).audio_values
            model.batch_limits = BatchLimits(audio_rate_samples=1600)  # pieces of 2 chunks
            pieces = model.encode(x, bandwidth=24.0)
            latents = encoder_latents(model, x)
            assert_codes_match(pieces.audio_codes, expected.audio_codes, model, latents)
            assert torch.equal(torch.stack(pieces.audio_scales), torch.stack(expected.audio_scales))
            torch.testing.assert_close(model.decode(**pieces).audio_values, expected_audio, atol=1e-5, rtol=0)
            model.batch_limits = BatchLimits(chunks_per_call=1)  # chunk by chunk, as transformers runs them
            one_by_one = model.encode(x, bandwidth=24.0)
            assert_codes_match(one_by_one.audio_codes, expected.audio_codes, model, latents)
            torch.testing.assert_close(model.decode(**one_by_one).audio_values, expected_audio, atol=1e-5, rtol=0)


def test_batch_limits_sizes_and_validation():
    limits = BatchLimits(chunks_per_call=16, samples_per_call=1_536_000, audio_rate_samples=48_000)
    assert limits.chunks_in_call(48_000) == 16 and limits.chunks_in_call(240_000) == 6
    assert limits.chunks_in_call(10**9) == 1  # at least one chunk, however long
    assert (
        limits.items_in_piece(48_000) == 1 and limits.items_in_piece(800) == 60 and limits.items_in_piece(10**9) == 1
    )
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match="audio_rate_samples must be a positive int"):
            BatchLimits(audio_rate_samples=bad)
