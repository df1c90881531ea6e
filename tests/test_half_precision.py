"""The opt-in half-precision path: ``model.to(torch.bfloat16)`` / ``model.half()``.

The encoder and decoder run in the lower precision, the quantizer keeps float32 codebooks (so the nearest-code
search sees their full values), inputs are cast to the weights' dtype and chunk outputs are cross-faded in float32.
Codes may differ from float32 ones: `benchmarks/bench_codec.py --dtype bfloat16` reports how many on real audio.
"""

from __future__ import annotations

import pytest
import torch
from conftest import audio, random_model, tiny_chunked_config, tiny_config

from encodec_hf import EncodecModel
from encodec_hf.streaming import ChunkStreamingDecoder


@pytest.mark.parametrize("cast", [lambda m: m.to(torch.bfloat16), lambda m: m.half()])
def test_cast_keeps_quantizer_in_float32_with_original_values(cast):
    model = random_model(tiny_config())
    embeds = [layer.codebook.embed.clone() for layer in model.quantizer.layers]
    half = cast(model)
    assert half.encoder.layers[0].conv.bias.dtype in (torch.bfloat16, torch.float16)
    assert half.dtype == half.encoder.layers[0].conv.bias.dtype
    for layer, embed in zip(half.quantizer.layers, embeds, strict=True):
        assert layer.codebook.embed.dtype == torch.float32
        assert torch.equal(layer.codebook.embed, embed)  # not a round trip through 16 bits
    back = half.float()
    assert back.encoder.layers[0].conv.bias.dtype == torch.float32
    assert back.double().quantizer.layers[0].codebook.embed.dtype == torch.float64  # widening still applies


@pytest.mark.parametrize("config", [tiny_config(), tiny_chunked_config(chunk_length_s=1.0)], ids=["causal", "chunked"])
def test_bfloat16_encode_decode_agrees_with_float32(config):
    model = random_model(config)
    x = audio(2, config.audio_channels, int(1.5 * config.sampling_rate))  # two 1 s chunks for the chunked model
    with torch.inference_mode():
        reference = model.encode(x, bandwidth=config.target_bandwidths[-1])
        reference_audio = model.decode(reference.audio_codes, reference.audio_scales).audio_values
        half = random_model(config).to(torch.bfloat16)
        latents = half.encoder(x.to(torch.bfloat16)).float()
        scale = 1.0
        if config.normalize:  # compare the encoder on the same normalised input as the float32 path
            scale = reference.audio_scales[0].view(-1, 1, 1)
            latents = half.encoder((x[..., : config.chunk_length] / scale).to(torch.bfloat16)).float()
            expected_latents = model.encoder(x[..., : config.chunk_length] / scale)
        else:
            expected_latents = model.encoder(x)
        rel = (latents - expected_latents).abs().max() / expected_latents.abs().max()
        assert rel < 0.05, f"bf16 latents off by {rel:.3f} relative"
        encoded = half.encode(x, bandwidth=config.target_bandwidths[-1])  # float32 input: cast to bf16 inside
        assert encoded.audio_codes.dtype == torch.long and encoded.audio_codes.shape == reference.audio_codes.shape
        decoded = half.decode(reference.audio_codes, reference.audio_scales).audio_values
    assert decoded.dtype == torch.bfloat16 and decoded.shape == reference_audio.shape
    # In bfloat16 the cross-fade window's end values round to 0; blending in float32 keeps them finite.
    assert torch.isfinite(decoded).all()
    rel = (decoded.float() - reference_audio).abs().max() / reference_audio.abs().max()
    assert rel < 0.1, f"bf16 audio off by {rel:.3f} relative"


def test_bfloat16_chunk_stream_decoder_is_finite_and_matches_offline():
    config = tiny_chunked_config(chunk_length_s=1.0)
    half = random_model(config).to(torch.bfloat16)
    x = audio(1, 2, int(2.5 * config.sampling_rate))
    with torch.inference_mode():
        enc = half.encode(x, bandwidth=config.target_bandwidths[0])
        offline = half.decode(enc.audio_codes, enc.audio_scales).audio_values
        stream = ChunkStreamingDecoder(half)
        pieces = [stream.push(enc.audio_codes[i], enc.audio_scales[i]) for i in range(enc.audio_codes.shape[0])]
        pieces.append(stream.flush())
    streamed = torch.cat(pieces, dim=-1)[..., : offline.shape[-1]]
    assert streamed.dtype == torch.bfloat16 and torch.isfinite(streamed).all()
    assert torch.allclose(streamed.float(), offline.float(), atol=1e-2)


def test_model_built_and_cast_under_inference_mode():
    """Parameters created under inference_mode carry no version counter: the folded-weight and codebook caches must
    not rely on one (this used to raise "Inference tensors do not track version counter")."""
    config = tiny_config()
    x = audio(1, 1, 800)
    expected = random_model(config)
    with torch.inference_mode():
        reference = expected.encode(x, bandwidth=config.target_bandwidths[-1])
        reference_audio = expected.decode(reference.audio_codes, reference.audio_scales).audio_values
        model = random_model(config)  # built (and its codebooks filled) inside inference_mode
        got = model.encode(x, bandwidth=config.target_bandwidths[-1])
        assert torch.equal(got.audio_codes, reference.audio_codes)
        assert torch.equal(model.decode(got.audio_codes, got.audio_scales).audio_values, reference_audio)
        half = model.to(torch.bfloat16)  # cast inside inference_mode as well
        assert torch.isfinite(half.decode(got.audio_codes, got.audio_scales).audio_values).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_from_pretrained_in_half_precision_keeps_codebooks_float32(dtype, tmp_path):
    model = random_model(tiny_config())
    model.save_pretrained(tmp_path)
    half = EncodecModel.from_pretrained(tmp_path, dtype=dtype)
    assert half.dtype == dtype
    for loaded, original in zip(half.quantizer.layers, model.quantizer.layers, strict=True):
        assert loaded.codebook.embed.dtype == torch.float32
        assert torch.equal(loaded.codebook.embed, original.codebook.embed)
