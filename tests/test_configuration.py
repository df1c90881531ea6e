"""EncodecConfig: presets of the three Hub checkpoints, derived values and validation."""

from __future__ import annotations

import pytest
import transformers

from encodec_hf import EncodecConfig


@pytest.mark.parametrize(
    "preset,expected",
    [
        # hop, frame rate, codebooks, nbits, chunk length, chunk stride, codebooks per bandwidth
        ("encodec_24khz", (320, 75, 32, 10, None, None, [2, 4, 8, 16, 32])),
        ("encodec_48khz", (320, 150, 16, 10, 48000, 47520, [2, 4, 8, 16])),
        ("encodec_32khz", (640, 50, 4, 11, None, None, [4])),
    ],
)
def test_presets_and_derived_values(preset, expected):
    c = getattr(EncodecConfig, preset)()
    got = (c.hop_length, c.frame_rate, c.num_quantizers, c.codebook_nbits, c.chunk_length, c.chunk_stride)
    assert got == expected[:6]
    assert [c.num_quantizers_for_bandwidth(b) for b in c.target_bandwidths] == expected[6]
    assert c.num_quantizers_for_bandwidth(None) == c.num_quantizers


@pytest.mark.parametrize("preset", ["encodec_24khz", "encodec_48khz", "encodec_32khz"])
def test_presets_agree_with_transformers_config(preset, tmp_path):
    ours = getattr(EncodecConfig, preset)()
    ours.save_pretrained(tmp_path)
    theirs = transformers.EncodecConfig.from_pretrained(tmp_path)
    for name in ("hop_length", "frame_rate", "num_quantizers", "chunk_length", "chunk_stride", "codebook_nbits"):
        assert getattr(ours, name) == getattr(theirs, name), name
    reloaded = EncodecConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == ours.to_dict() | {"transformers_version": reloaded.transformers_version}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"norm_type": "layer_norm"}, "norm_type"),
        ({"pad_mode": "wrap"}, "pad_mode"),
        ({"audio_channels": 3}, "audio_channels"),
        ({"codebook_size": 1000}, "power of 2"),
        ({"target_bandwidths": []}, "target_bandwidths"),
        ({"upsampling_ratios": [8, 0]}, "upsampling_ratios"),
        ({"trim_right_ratio": 0.5, "use_causal_conv": False}, "trim_right_ratio"),
        ({"chunk_length_s": -1.0}, "chunk_length_s"),
        ({"overlap": 1.5, "chunk_length_s": 1.0}, "overlap"),
        ({"target_bandwidths": [0.1]}, "below one codebook"),
    ],
)
def test_invalid_values_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EncodecConfig(**kwargs)
