"""ONNX export (`encodec_hf.integrations.onnx`): graphs with dynamic batch and length, checked against eager PyTorch
within 1e-4, run through onnxruntime behind `EncodecModel.encode` / `decode`. Speed: `bench_codec.py --backend`."""

from __future__ import annotations

import pytest
import torch
from conftest import audio, random_model, tiny_chunked_config, tiny_config

from encodec_hf.integrations.onnx import (
    DECODER_FILE,
    ENCODER_FILE,
    MIN_FRAMES,
    OnnxRuntimeModule,
    export_onnx,
    use_onnxruntime,
)


@pytest.mark.parametrize("config", [tiny_config(), tiny_chunked_config()], ids=["causal", "chunked-groupnorm"])
def test_exported_halves_match_eager_for_any_batch_and_length(config, tmp_path):
    model = random_model(config)
    paths = export_onnx(model, tmp_path)
    assert paths == {"encoder": tmp_path / ENCODER_FILE, "decoder": tmp_path / DECODER_FILE}
    assert not list(tmp_path.glob("*.tmp"))  # written through temporary files, nothing partial left
    reference = random_model(config)
    use_onnxruntime(model, tmp_path)
    assert isinstance(model.encoder, OnnxRuntimeModule) and isinstance(model.decoder, OnnxRuntimeModule)
    hop = config.hop_length
    with torch.inference_mode():
        for batch, length in [(1, MIN_FRAMES * hop), (3, 40 * hop + 3), (2, 97 * hop - 1)]:
            x = audio(batch, config.audio_channels, length, seed=length)
            latents = reference.encoder(x)
            got = model.encoder(x)
            assert got.shape == latents.shape
            assert (got - latents).abs().max() <= 1e-4 * latents.abs().max().clamp_min(1.0)
            decoded = model.decoder(latents)
            expected = reference.decoder(latents)
            assert decoded.shape == expected.shape
            assert (decoded - expected).abs().max() <= 1e-4 * expected.abs().max().clamp_min(1.0)


def test_model_api_runs_on_onnxruntime_with_short_inputs_on_pytorch(tmp_path):
    config = tiny_config()
    model, reference = random_model(config), random_model(config)
    export_onnx(model, tmp_path)
    use_onnxruntime(model, tmp_path, threads=1)
    x = audio(2, 1, 300 * config.hop_length + 5)
    with torch.inference_mode():
        enc = model.encode(x, bandwidth=config.target_bandwidths[-1])
        expected = reference.encode(x, bandwidth=config.target_bandwidths[-1])
        # Float rounding apart, the same latents; onnxruntime's kernels are not bound to PyTorch's bits, so a
        # near-tie could flip a code (and the residual codes after it) on another CPU: allow a sliver.
        assert enc.audio_codes.shape == expected.audio_codes.shape
        assert (enc.audio_codes == expected.audio_codes).float().mean() >= 0.99
        out = model.decode(**enc).audio_values
        ref = reference.decode(**expected).audio_values
        assert out.shape == x.shape and (out - ref).abs().max() <= 1e-4
        # Shorter than MIN_FRAMES frames: the PyTorch layers (the graph's reflect padding needs longer inputs).
        short = x[..., : (MIN_FRAMES - 1) * config.hop_length]
        assert torch.equal(
            model.encode(short, bandwidth=6.0).audio_codes, reference.encode(short, bandwidth=6.0).audio_codes
        )
    # Swapping again reuses the PyTorch modules rather than wrapping a wrapper.
    use_onnxruntime(model, tmp_path)
    assert not isinstance(model.encoder.fallback, OnnxRuntimeModule)


def test_bad_calls(tmp_path):
    model = random_model(tiny_config())
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        use_onnxruntime(model, tmp_path)
    with pytest.raises(TypeError, match="EncodecModel"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path)
    export_onnx(model, tmp_path)
    with pytest.raises(ValueError, match="float32"):
        use_onnxruntime(model.to(torch.bfloat16), tmp_path)
