"""Streaming encoder/decoder: exactness against offline encode/decode, state handling, bad input."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from code_compare import assert_codes_match, encoder_latents
from conftest import random_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encodec_hf import EncodecConfig, EncodecModel
from encodec_hf.errors import EncodecInputError, StreamClosedError, StreamingNotSupportedError
from encodec_hf.streaming import (
    ChunkStreamingDecoder,
    ChunkStreamingEncoder,
    StreamingDecoder,
    StreamingEncoder,
    streaming_decoder,
    streaming_encoder,
)

SMALL = dict(upsampling_ratios=[4, 2], num_filters=4, hidden_size=16, codebook_size=64)
BW = 72.0  # 4 codebooks at the small config's 3000 frames/s
HYP = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def causal():
    return random_model(EncodecConfig(target_bandwidths=[36.0, BW], **SMALL), seed=0)


@pytest.fixture(scope="module")
def chunked():
    # 10 ms chunks (480 samples) with 10 % overlap (stride 432): many chunks from short signals.
    config = EncodecConfig.encodec_48khz(target_bandwidths=[96.0, 192.0], chunk_length_s=0.01, overlap=0.1, **SMALL)
    return random_model(config, seed=1)


def _split(x: torch.Tensor, sizes) -> list[torch.Tensor]:
    blocks, pos, sizes = [], 0, itertools.cycle(sizes)
    while pos < x.shape[-1]:
        n = next(sizes)
        blocks.append(x[..., pos : pos + n])
        pos += n
    return blocks


def _stream_codes(model, x, sizes, bandwidth=BW):
    enc = StreamingEncoder(model, bandwidth=bandwidth)
    pushed = [enc.push(b) for b in _split(x, sizes)]
    ready = sum(c.shape[-1] for c in pushed)
    return torch.cat([*pushed, enc.flush()], -1), ready


def _offline_codes(model, x, bandwidth=BW):
    with torch.no_grad():
        return model.encode(x, bandwidth=bandwidth).audio_codes[0]


def _assert_matches_offline(codes, model, x, bandwidth=BW):
    """Stream codes `[B, K, F]` against `encode`'s on the same audio. The stream's steps run other kernel shapes
    than the offline layers, so their latents round differently and a near-tie may flip (tests/code_compare.py,
    docs/performance.md "What identical codes means"); any other difference fails."""
    assert_codes_match(codes, _offline_codes(model, x, bandwidth), model, encoder_latents(model, x)[0])


def _offline_audio(model, codes):
    with torch.no_grad():
        return model.decode(codes[None], [None]).audio_values


# ------------------------------------------------------------------------------------------- frame-level encoder
@HYP
@given(
    length=st.integers(1, 400),
    sizes=st.lists(st.integers(1, 120), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_streamed_codes_equal_offline_for_any_blocks_and_length(causal, length, sizes, seed):
    x = torch.randn(2, 1, length, generator=torch.Generator().manual_seed(seed)) * 0.5
    codes, ready = _stream_codes(causal, x, sizes)
    hop, stall = causal.config.hop_length, causal.config.last_kernel_size
    _assert_matches_offline(codes, causal, x)
    assert codes.shape[-1] == -(-length // hop)
    # Every complete frame comes out of push() (once the start-up stall of last_kernel_size frames is over);
    # only the last partial frame needs flush().
    assert ready == (length // hop if length // hop >= stall else 0)


def test_block_of_one_sample_and_empty_blocks(causal):
    x = torch.randn(1, 1, 8 * 9 + 3) * 0.5
    enc = StreamingEncoder(causal, bandwidth=BW)
    out = []
    for i in range(x.shape[-1]):
        out.append(enc.push(x[..., i : i + 1]))
        out.append(enc.push(x[..., :0]))
    out.append(enc.flush())
    _assert_matches_offline(torch.cat(out, -1), causal, x)


def test_frames_are_final_but_the_last_partial_frame_depends_on_the_end(causal):
    """Full frames of a prefix equal those of any longer stream; the flushed partial frame is offline's
    (computed from right-reflect-padded audio), so its latent differs from what the same frame becomes when more
    audio follows (and its codes can differ)."""
    hop = causal.config.hop_length
    x = torch.randn(1, 1, 40 * hop, generator=torch.Generator().manual_seed(0))
    full, _ = _stream_codes(causal, x, [hop])
    cut = 20 * hop + 3  # ends 3 samples into frame 20
    prefix, ready = _stream_codes(causal, x[..., :cut], [17])
    assert ready == 20  # other block sizes, other kernel shapes: near-ties only
    assert_codes_match(prefix[..., :20], full[..., :20], causal, encoder_latents(causal, x)[0][..., :20])
    _assert_matches_offline(prefix, causal, x[..., :cut])
    with torch.no_grad():
        z_prefix, z_full = causal.encoder(x[..., :cut]), causal.encoder(x)
    assert torch.allclose(z_prefix[..., :20], z_full[..., :20], atol=1e-6)
    assert not torch.allclose(z_prefix[..., 20], z_full[..., 20], atol=1e-3)


def test_batch_stream_equals_single_streams(causal):
    x = torch.randn(3, 1, 501) * 0.5
    batched, _ = _stream_codes(causal, x, [37])
    latents = encoder_latents(causal, x)[0]
    for i in range(3):
        single = _stream_codes(causal, x[i : i + 1], [11])[0]
        assert_codes_match(batched[i : i + 1], single, causal, latents[i : i + 1])


def test_streams_side_by_side_and_fork(causal):
    a, b = torch.randn(1, 1, 400) * 0.5, torch.randn(1, 1, 400) * 0.5
    ea, eb = StreamingEncoder(causal, bandwidth=BW), StreamingEncoder(causal, bandwidth=BW)
    out_a, out_b = [], []
    for i in range(0, 400, 25):  # interleaved pushes into two independent states
        out_a.append(ea.push(a[..., i : i + 25]))
        out_b.append(eb.push(b[..., i : i + 25]))
        if i == 200:
            fork = copy.deepcopy(ea)  # a copy of the state continues independently
    fork_out = [fork.push(a[..., 225:]), fork.flush()]
    out_a.append(ea.flush())
    out_b.append(eb.flush())
    _assert_matches_offline(torch.cat(out_a, -1), causal, a)
    _assert_matches_offline(torch.cat(out_b, -1), causal, b)
    forked = torch.cat(fork_out, -1)
    tail = forked.shape[-1]
    assert_codes_match(forked, torch.cat(out_a, -1)[..., -tail:], causal, encoder_latents(causal, a)[0][..., -tail:])


def test_reset_and_context_manager(causal):
    x = torch.randn(1, 1, 300) * 0.5
    with StreamingEncoder(causal, bandwidth=BW) as enc:
        first = torch.cat([enc.push(x[..., :100]), enc.push(x[..., 100:])], -1)
        enc.reset()  # drop the stream midway, start again
        again = torch.cat([enc.push(x), enc.flush()], -1)
    assert enc.closed
    with pytest.raises(StreamClosedError, match="closed"):
        enc.push(x)
    _assert_matches_offline(again, causal, x)
    n = first.shape[-1]
    assert_codes_match(first, again[..., :n], causal, encoder_latents(causal, x)[0][..., :n])  # other blocks
    enc.reset()
    assert torch.equal(torch.cat([enc.push(x), enc.flush()], -1), again)


def test_default_bandwidth_is_the_lowest(causal):
    x = torch.randn(1, 1, 200)
    enc = StreamingEncoder(causal)
    codes = torch.cat([enc.push(x), enc.flush()], -1)
    assert codes.shape[1] == causal.config.num_quantizers_for_bandwidth(36.0)
    _assert_matches_offline(codes, causal, x, bandwidth=None)


# ------------------------------------------------------------------------------------------- frame-level decoder
@HYP
@given(frames=st.integers(1, 40), sizes=st.lists(st.integers(1, 9), min_size=1, max_size=4), seed=st.integers(0, 99))
def test_streamed_audio_matches_offline_decode(causal, frames, sizes, seed):
    codes = torch.randint(0, 64, (2, 4, frames), generator=torch.Generator().manual_seed(seed))
    dec = StreamingDecoder(causal)
    pushed = [dec.push(c) for c in _split(codes, sizes)]
    ready = sum(a.shape[-1] for a in pushed)
    audio = torch.cat([*pushed, dec.flush()], -1)
    ref = _offline_audio(causal, codes)
    assert audio.shape == ref.shape
    torch.testing.assert_close(audio, ref, atol=1e-5, rtol=0)
    hop, stall = causal.config.hop_length, causal.config.kernel_size
    assert ready == (frames * hop if frames >= stall else 0)


def test_decoder_roundtrip_of_streamed_codes_trimmed_to_input_length(causal):
    x = torch.randn(1, 1, 333) * 0.5
    enc, dec = StreamingEncoder(causal, bandwidth=BW), StreamingDecoder(causal)
    audio = [dec.push(enc.push(b)) for b in _split(x, [50])]
    audio += [dec.push(enc.flush()), dec.flush()]
    audio = torch.cat(audio, -1)[..., : enc.num_samples]
    with torch.no_grad():
        ref = causal.decode(**causal.encode(x, bandwidth=BW)).audio_values
    torch.testing.assert_close(audio, ref, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------- full-size 24 kHz
def test_full_size_24khz_parity_on_real_audio(real_clip):
    model = random_model(EncodecConfig.encodec_24khz(), seed=0)
    audio, sr = real_clip("test_24k.wav", frames=24_000 + 101)
    assert sr == 24_000
    x = audio[None]
    codes, ready = _stream_codes(model, x, [1, 319, 320, 2000, 7, 5000], bandwidth=6.0)
    ref = _offline_codes(model, x, bandwidth=6.0)
    assert ready == x.shape[-1] // 320
    _assert_matches_offline(codes, model, x, bandwidth=6.0)
    dec = StreamingDecoder(model)
    out = torch.cat([*(dec.push(c) for c in _split(codes, [1, 4, 13])), dec.flush()], -1)
    torch.testing.assert_close(out, _offline_audio(model, ref), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------- chunk-level streams
@HYP
@given(length=st.integers(1, 3000), sizes=st.lists(st.integers(1, 700), min_size=1, max_size=4))
def test_chunk_stream_equals_offline(chunked, length, sizes):
    x = torch.randn(2, 2, length) * 0.3
    enc = streaming_encoder(chunked, bandwidth=192.0)
    assert isinstance(enc, ChunkStreamingEncoder)
    chunks = [c for b in _split(x, sizes) for c in enc.push(b)]
    chunks += enc.flush()
    with torch.no_grad():
        ref = chunked.encode(x, bandwidth=192.0)
        ref_audio = chunked.decode(**ref).audio_values
    assert len(chunks) == ref.audio_codes.shape[0]
    for k, chunk in enumerate(chunks):
        frames = chunk.audio_codes.shape[-1]
        assert torch.equal(chunk.audio_codes, ref.audio_codes[k, :, :, :frames])
        assert torch.equal(ref.audio_codes[k, :, :, frames:], torch.zeros_like(ref.audio_codes[k, :, :, frames:]))
        assert torch.equal(chunk.audio_scales, ref.audio_scales[k])
    dec = streaming_decoder(chunked)
    assert isinstance(dec, ChunkStreamingDecoder)
    audio = torch.cat([*(dec.push(*c) for c in chunks), dec.flush()], -1)[..., :length]
    torch.testing.assert_close(audio, ref_audio, atol=1e-5, rtol=0)


def test_chunk_stream_emits_chunks_as_soon_as_complete(chunked):
    enc = ChunkStreamingEncoder(chunked, bandwidth=192.0)
    x = torch.randn(1, 2, 480 + 432)
    assert enc.push(x[..., :479]) == []
    assert len(enc.push(x[..., 479:480])) == 1  # chunk 0 is complete at sample 480
    assert len(enc.push(x[..., 480:])) == 1  # chunk 1 = [432, 912)
    dec = ChunkStreamingDecoder(chunked)
    first = dec.push(*ChunkStreamingEncoder(chunked, bandwidth=192.0).push(x[..., :480])[0])
    assert first.shape[-1] == 432  # the overlap waits for the next chunk


def test_full_size_48khz_chunk_parity_on_real_audio(real_clip):
    model = random_model(EncodecConfig.encodec_48khz(), seed=0)
    audio, sr = real_clip("test_48k.wav", frames=48_000 + 2_000)
    assert sr == 48_000
    x = audio[None]
    enc = streaming_encoder(model, bandwidth=6.0)
    chunks = [c for b in _split(x, [4_800, 12_345]) for c in enc.push(b)] + enc.flush()
    with torch.no_grad():
        ref = model.encode(x, bandwidth=6.0)
        ref_audio = model.decode(**ref).audio_values
    assert len(chunks) == 2
    for k, chunk in enumerate(chunks):
        assert torch.equal(chunk.audio_codes, ref.audio_codes[k, :, :, : chunk.audio_codes.shape[-1]])
        assert torch.equal(chunk.audio_scales, ref.audio_scales[k])
    dec = streaming_decoder(model)
    out = torch.cat([*(dec.push(*c) for c in chunks), dec.flush()], -1)[..., : x.shape[-1]]
    torch.testing.assert_close(out, ref_audio, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------- unsupported models
def test_models_that_cannot_stream_frame_by_frame(causal):
    with pytest.raises(StreamingNotSupportedError, match="chunks"):
        StreamingEncoder(EncodecModel(EncodecConfig.encodec_48khz(**SMALL, target_bandwidths=[96.0])))
    with pytest.raises(StreamingNotSupportedError, match="chunks"):
        StreamingDecoder(EncodecModel(EncodecConfig.encodec_48khz(**SMALL, target_bandwidths=[96.0])))
    noncausal = EncodecModel(EncodecConfig(use_causal_conv=False, target_bandwidths=[36.0], **SMALL))
    with pytest.raises(StreamingNotSupportedError, match="causal"):
        streaming_encoder(noncausal)
    with pytest.raises(StreamingNotSupportedError, match="causal"):
        streaming_decoder(noncausal)
    with pytest.raises(StreamingNotSupportedError, match="does not split"):
        ChunkStreamingEncoder(causal)
    with pytest.raises(StreamingNotSupportedError, match="does not split"):
        ChunkStreamingDecoder(causal)


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "block, error, match",
    [
        (torch.randn(1, 2, 10), EncodecInputError, "1 audio channel"),
        (torch.randn(2, 1, 10), EncodecInputError, "batch size 2"),
        (torch.randint(-100, 100, (1, 1, 10), dtype=torch.int16), TypeError, "floating point"),
        (torch.full((1, 1, 10), float("nan")), EncodecInputError, "NaN or Inf"),
        (torch.tensor([[[0.0, float("inf")]]]), EncodecInputError, "NaN or Inf"),
        (torch.randn(10), EncodecInputError, r"\[batch, channels, samples\]"),
        ([0.0, 0.1], TypeError, "torch.Tensor or numpy"),
    ],
)
def test_bad_blocks_raise_and_leave_the_stream_usable(causal, block, error, match):
    x = torch.randn(1, 1, 200) * 0.5
    enc = StreamingEncoder(causal, bandwidth=BW)
    out = [enc.push(x[..., :90])]
    with pytest.raises(error, match=match):
        enc.push(block)
    assert not enc.state.broken
    out += [enc.push(x[..., 90:]), enc.flush()]
    _assert_matches_offline(torch.cat(out, -1), causal, x)


def test_numpy_and_2d_blocks_are_accepted(causal):
    x = torch.randn(1, 1, 120) * 0.5
    enc = StreamingEncoder(causal, bandwidth=BW)
    codes = torch.cat([enc.push(x[0, :, :60].numpy()), enc.push(x[0, :, 60:]), enc.flush()], -1)
    _assert_matches_offline(codes, causal, x)


def test_closed_and_broken_streams(causal, monkeypatch):
    enc = StreamingEncoder(causal, bandwidth=BW)
    with pytest.raises(EncodecInputError, match="Nothing was pushed"):
        enc.flush()
    enc.push(torch.randn(1, 1, 100))
    enc.flush()
    for call in (lambda: enc.push(torch.randn(1, 1, 10)), enc.flush):
        with pytest.raises(StreamClosedError, match="reset"):
            call()
    enc.reset()
    enc.close()
    with pytest.raises(StreamClosedError):
        enc.push(torch.randn(1, 1, 10))

    # A failure inside the network marks the stream broken instead of leaving half-updated state in use.
    enc.reset()
    with monkeypatch.context() as m:
        m.setattr(causal.quantizer, "encode", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
        with pytest.raises(RuntimeError, match="boom"):
            enc.push(torch.randn(1, 1, 200))
    assert enc.state.broken
    with pytest.raises(StreamClosedError, match="broken"):
        enc.push(torch.randn(1, 1, 10))
    enc.reset()
    x = torch.randn(1, 1, 100)
    _assert_matches_offline(torch.cat([enc.push(x), enc.flush()], -1), causal, x)


@pytest.mark.parametrize(
    "codes, error, match",
    [
        (torch.randint(0, 64, (1, 2, 3)), EncodecInputError, "4 codebooks"),
        (torch.randint(0, 64, (2, 4, 3)), EncodecInputError, "batch 2"),
        (torch.full((1, 4, 3), 64), EncodecInputError, r"\[0, 64\)"),
        (torch.full((1, 4, 3), -1), EncodecInputError, r"\[0, 64\)"),
        (torch.rand(1, 4, 3), TypeError, "integer"),
        (torch.randint(0, 64, (1, 1, 4, 3)), EncodecInputError, "batch, codebooks, frames"),
    ],
)
def test_bad_codes_raise_and_leave_the_decoder_usable(causal, codes, error, match):
    good = torch.randint(0, 64, (1, 4, 10))
    dec = StreamingDecoder(causal)
    out = [dec.push(good[..., :5])]
    with pytest.raises(error, match=match):
        dec.push(codes)
    out += [dec.push(good[..., 5:]), dec.flush()]
    torch.testing.assert_close(torch.cat(out, -1), _offline_audio(causal, good), atol=1e-5, rtol=0)


def test_too_many_codebooks_and_bad_chunks(causal, chunked):
    with pytest.raises(EncodecInputError, match="1 to 4 codebooks"):
        StreamingDecoder(causal).push(torch.zeros(1, 5, 2, dtype=torch.long))
    dec = ChunkStreamingDecoder(chunked)
    with pytest.raises(EncodecInputError, match="audio_scales"):
        dec.push(torch.zeros(1, 2, 10, dtype=torch.long))  # normalising model: the scale is required
    with pytest.raises(EncodecInputError, match="1 to 60 frames"):
        dec.push(torch.zeros(1, 2, 61, dtype=torch.long), torch.ones(1, 1))
    with pytest.raises(EncodecInputError, match="positive"):
        dec.push(torch.zeros(1, 2, 10, dtype=torch.long), -torch.ones(1, 1))
    assert dec.push(torch.zeros(1, 2, 10, dtype=torch.long), torch.ones(1, 1)).shape == (1, 2, 80)
    enc = ChunkStreamingEncoder(chunked, bandwidth=192.0)
    with pytest.raises(EncodecInputError, match="2 audio channel"):
        enc.push(torch.randn(1, 1, 10))
    with pytest.raises(TypeError, match="bandwidth"):
        ChunkStreamingEncoder(chunked, bandwidth="6")
    with pytest.raises(ValueError, match="doesn't support the bandwidth 5"):
        StreamingEncoder(causal, bandwidth=5)
