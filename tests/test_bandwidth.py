"""The bandwidth rule (`EncodecConfig.resolve_bandwidth`) and its one default, the lowest target bandwidth, at
every entry point that takes `bandwidth=None`; the command line keeps Meta's `-b 6`."""

from __future__ import annotations

import pytest
from conftest import audio, random_model, tiny_chunked_config, tiny_config

import encodec_hf
from encodec_hf import EncodecConfig, cli
from encodec_hf.errors import UnsupportedBandwidthError
from encodec_hf.integrations.datasets import EncodecMapFunction, encode_clips
from encodec_hf.integrations.endpoint import parse_request
from encodec_hf.streaming import ChunkStreamingEncoder, StreamingEncoder


def test_rule():
    config = EncodecConfig.encodec_48khz()
    assert config.resolve_bandwidth(None) == 3.0  # the lowest, as transformers' encode
    assert config.resolve_bandwidth(12) == 12.0 and isinstance(config.resolve_bandwidth(12), float)
    with pytest.raises(UnsupportedBandwidthError, match=r"Select one of \[3.0, 6.0, 12.0, 24.0\]"):
        config.resolve_bandwidth(1.5)
    for wrong in ("6", True, [6.0]):
        with pytest.raises(TypeError, match="bandwidth must be a number"):
            config.resolve_bandwidth(wrong)
    # transformers' helper keeps its own meaning: None there is every codebook.
    assert config.num_quantizers_for_bandwidth(None) == config.num_quantizers == 16


def test_every_entry_point_defaults_to_the_lowest():
    causal = random_model(tiny_config())  # [6, 12, 24] kbps: 1, 2, 4 codebooks
    chunked = random_model(tiny_chunked_config())
    chunked.config.ecdc_model_name = "encodec_48khz"
    x = audio(1, 1, 300)
    assert causal.encode(x).audio_codes.shape[2] == 1
    assert StreamingEncoder(causal).num_codebooks == 1
    assert ChunkStreamingEncoder(chunked).bandwidth == 6.0
    assert encode_clips(causal, [x[0].numpy()])[0].audio_codes.shape[1] == 1
    assert EncodecMapFunction(causal).bandwidth == 6.0
    assert parse_request({"inputs": {"audio_codes": [[[0] * 38]], "num_samples": 300}}, causal.config).bandwidth == 6.0
    header, _ = encodec_hf.ecdc.read_header(encodec_hf.compress(chunked, audio(1, 2, 300)[0]))
    assert header.num_codebooks == 1
    # The command line alone documents Meta's default of 6 kbps and passes it explicitly.
    args = cli.build_parser().parse_args(["compress", "in.wav"])
    assert args.bandwidth == 6.0
