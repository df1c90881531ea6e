"""File-to-file encoding and decoding in bounded memory: equal to offline encode/decode, invariant to blocking."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import torch
from code_compare import assert_codes_match, encoder_latents
from conftest import random_model

from encodec_hf import EncodecConfig
from encodec_hf.errors import EncodecInputError, SamplingRateError
from encodec_hf.streaming import (
    CodesFileError,
    decode_file,
    encode_file,
    iter_codes_file,
    load_codes_file,
)

SMALL = dict(upsampling_ratios=[4, 2], num_filters=4, hidden_size=16, codebook_size=64)


@pytest.fixture(scope="module")
def causal():
    return random_model(EncodecConfig(sampling_rate=8000, target_bandwidths=[12.0, 24.0], **SMALL), seed=0)


@pytest.fixture(scope="module")
def chunked():
    config = EncodecConfig.encodec_48khz(
        sampling_rate=8000, target_bandwidths=[12.0, 24.0], chunk_length_s=0.1, overlap=0.1, **SMALL
    )
    return random_model(config, seed=1)


def _write(path, model, seconds: float, seed: int = 0) -> torch.Tensor:
    config = model.config
    rng = np.random.default_rng(seed)
    audio = (0.3 * rng.standard_normal((int(seconds * config.sampling_rate), config.audio_channels))).astype("float32")
    sf.write(path, audio, config.sampling_rate, subtype="FLOAT")
    return torch.from_numpy(audio.T.copy())[None]


def test_causal_file_roundtrip_equals_offline(causal, tmp_path):
    x = _write(tmp_path / "in.wav", causal, 1.2345)
    info = encode_file(causal, tmp_path / "in.wav", tmp_path / "codes.ehfc", bandwidth=24.0, block_size=999)
    assert info.num_samples == x.shape[-1] and info.unit == "frame" and info.num_codebooks == 4
    assert not os.path.exists(tmp_path / "codes.ehfc.part")
    with torch.no_grad():
        ref = causal.encode(x, bandwidth=24.0)
        ref_audio = causal.decode(**ref).audio_values
    header, records = load_codes_file(tmp_path / "codes.ehfc")
    assert header == info
    codes = torch.cat([r.audio_codes for r in records], -1)
    assert_codes_match(codes, ref.audio_codes[0], causal, encoder_latents(causal, x)[0])  # stream vs encode
    assert all(r.audio_scales is None for r in records)

    decode_file(causal, tmp_path / "codes.ehfc", tmp_path / "out.wav", frames_per_block=37)
    out, sr = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    assert sr == 8000 and out.shape == (x.shape[-1], 1)
    torch.testing.assert_close(torch.from_numpy(out.T.copy())[None], ref_audio, atol=1e-5, rtol=0)


def test_codes_do_not_depend_on_how_the_file_is_cut(causal, chunked, tmp_path):
    """Chunk invariance: any block size gives the same codes (the records may be split differently); the frame
    stream's steps see other buffer shapes for other block sizes, so near-ties may flip (tests/code_compare.py)."""
    for model in (causal, chunked):
        x = _write(tmp_path / "in.wav", model, 0.377, seed=3)
        codes = []
        for block in (13, 160, 2048, 100_000):
            encode_file(model, tmp_path / "in.wav", tmp_path / f"{block}.ehfc", block_size=block)
            _, records = load_codes_file(tmp_path / f"{block}.ehfc")
            codes.append([(r.audio_codes, r.audio_scales) for r in records])
        if model is causal:
            joined = [torch.cat([c for c, _ in recs], -1) for recs in codes]
            latents = encoder_latents(model, x)[0]
            for j in joined[1:]:
                assert_codes_match(j, joined[0], model, latents)
        else:  # one record per chunk, identical codes and scales
            for recs in codes[1:]:
                assert len(recs) == len(codes[0])
                for (c, s), (c0, s0) in zip(recs, codes[0], strict=True):
                    assert torch.equal(c, c0) and torch.equal(s, s0)


def test_chunked_file_roundtrip_equals_offline(chunked, tmp_path):
    x = _write(tmp_path / "in.wav", chunked, 0.55)
    info = encode_file(chunked, tmp_path / "in.wav", tmp_path / "codes.ehfc", bandwidth=24.0)
    assert info.unit == "chunk" and info.chunk_length == 800 and info.chunk_stride == 720
    with torch.no_grad():
        ref = chunked.encode(x, bandwidth=24.0)
        ref_audio = chunked.decode(**ref).audio_values
    _, records = load_codes_file(tmp_path / "codes.ehfc")
    assert len(records) == ref.audio_codes.shape[0]
    for k, rec in enumerate(records):
        assert torch.equal(rec.audio_codes, ref.audio_codes[k, :, :, : rec.audio_codes.shape[-1]])
        assert torch.equal(rec.audio_scales, ref.audio_scales[k])
    decode_file(chunked, tmp_path / "codes.ehfc", tmp_path / "out.wav")
    out, _ = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    torch.testing.assert_close(torch.from_numpy(out.T.copy())[None], ref_audio, atol=1e-5, rtol=0)


def test_input_file_errors(causal, tmp_path):
    sf.write(tmp_path / "sr.wav", np.zeros(100, dtype="float32"), 16000)
    with pytest.raises(SamplingRateError, match="16000 Hz but the model expects 8000 Hz"):
        encode_file(causal, tmp_path / "sr.wav", tmp_path / "x.ehfc")
    sf.write(tmp_path / "st.wav", np.zeros((100, 2), dtype="float32"), 8000)
    with pytest.raises(EncodecInputError, match="2 channel"):
        encode_file(causal, tmp_path / "st.wav", tmp_path / "x.ehfc")
    sf.write(tmp_path / "nan.wav", np.full(100, np.nan, dtype="float32"), 8000, subtype="FLOAT")
    with pytest.raises(EncodecInputError, match="NaN"):
        encode_file(causal, tmp_path / "nan.wav", tmp_path / "x.ehfc")
    assert not os.path.exists(tmp_path / "x.ehfc") and not os.path.exists(tmp_path / "x.ehfc.part")


def test_codes_file_errors(causal, chunked, tmp_path):
    _write(tmp_path / "in.wav", causal, 0.3)
    encode_file(causal, tmp_path / "in.wav", tmp_path / "c.ehfc")
    data = (tmp_path / "c.ehfc").read_bytes()

    (tmp_path / "magic.ehfc").write_bytes(b"XXXX" + data[4:])
    with pytest.raises(CodesFileError, match="Not an encodec_hf codes file"):
        iter_codes_file(tmp_path / "magic.ehfc")
    (tmp_path / "version.ehfc").write_bytes(data[:4] + b"\x07" + data[5:])
    with pytest.raises(CodesFileError, match="version 7"):
        iter_codes_file(tmp_path / "version.ehfc")
    (tmp_path / "incomplete.ehfc").write_bytes(data[:5] + b"\xff" * 8 + data[13:])
    with pytest.raises(CodesFileError, match="incomplete"):
        iter_codes_file(tmp_path / "incomplete.ehfc")
    (tmp_path / "short.ehfc").write_bytes(data[:-3])
    with pytest.raises(CodesFileError, match="truncated"):
        load_codes_file(tmp_path / "short.ehfc")
    (tmp_path / "header.ehfc").write_bytes(data[:10])
    with pytest.raises(CodesFileError, match="truncated"):
        iter_codes_file(tmp_path / "header.ehfc")
    with pytest.raises(CodesFileError, match="other settings"):
        decode_file(chunked, tmp_path / "c.ehfc", tmp_path / "out.wav")
