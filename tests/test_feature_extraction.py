"""EncodecFeatureExtractor: same outputs as transformers' extractor, and clear errors for bad audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from encodec_hf import EncodecFeatureExtractor
from encodec_hf.errors import EncodecInputError, SamplingRateError

rng = np.random.default_rng(0)
MONO = [rng.uniform(-1, 1, n).astype(np.float32) for n in (93680, 71000)]
STEREO = [rng.uniform(-1, 1, (2, n)).astype(np.float32) for n in (50000, 30011)]


def _pair(**kwargs):
    return EncodecFeatureExtractor(**kwargs), transformers.EncodecFeatureExtractor(**kwargs)


def _assert_same(ours, theirs):
    assert set(ours.keys()) == set(theirs.keys())
    for key in theirs:
        np.testing.assert_array_equal(np.asarray(ours[key]), np.asarray(theirs[key]))


@pytest.mark.parametrize(
    "kwargs,call",
    [
        ({}, {}),
        ({}, {"padding": False, "audio": "single"}),
        ({"chunk_length_s": 1, "overlap": 0.01}, {}),
        ({"chunk_length_s": 1, "overlap": 0.01}, {"truncation": True}),
        ({"chunk_length_s": 1, "overlap": 0.01}, {"truncation": True, "max_length": 48000}),
        ({"chunk_length_s": 1, "overlap": 0.01}, {"padding": "max_length", "max_length": 100000}),
        ({"feature_size": 2, "sampling_rate": 48000, "chunk_length_s": 1, "overlap": 0.01}, {"audio": "stereo"}),
        ({"feature_size": 2, "sampling_rate": 48000}, {"audio": "stereo"}),
    ],
)
def test_matches_transformers(kwargs, call):
    call = dict(call)
    kind = call.pop("audio", "mono")
    data = {"mono": MONO, "single": MONO[0], "stereo": STEREO}[kind]
    ours, theirs = _pair(**kwargs)
    sr = ours.sampling_rate
    for tensors in ("np", "pt"):
        _assert_same(
            ours(data, sampling_rate=sr, return_tensors=tensors, **call),
            theirs(data, sampling_rate=sr, return_tensors=tensors, **call),
        )


def test_documented_shapes():
    fe = EncodecFeatureExtractor(chunk_length_s=1, overlap=0.01)
    out = fe(MONO, sampling_rate=24000, return_tensors="pt")
    assert out["input_values"].shape == (2, 1, 95280) and out["input_values"].dtype == torch.float32
    assert out["padding_mask"].shape == (2, 95280)
    assert out["padding_mask"][1].sum() == 71000
    stereo = EncodecFeatureExtractor(feature_size=2, sampling_rate=48000)(
        STEREO, sampling_rate=48000, return_tensors="pt"
    )
    assert stereo["input_values"].shape == (2, 2, 50000)
    assert torch.equal(stereo["input_values"][1, :, :30011], torch.from_numpy(STEREO[1]))


def test_float64_and_lists_become_float32():
    fe = EncodecFeatureExtractor()
    out = fe([MONO[0].astype(np.float64), MONO[1].tolist()], sampling_rate=24000, return_tensors="np")
    assert out["input_values"].dtype == np.float32


def test_save_and_load(tmp_path):
    fe = EncodecFeatureExtractor(feature_size=2, sampling_rate=48000, chunk_length_s=1.0, overlap=0.01)
    fe.save_pretrained(tmp_path)
    loaded = EncodecFeatureExtractor.from_pretrained(tmp_path)
    assert (loaded.feature_size, loaded.sampling_rate, loaded.chunk_stride) == (2, 48000, 47520)


@pytest.mark.parametrize(
    "audio,kwargs,error,match",
    [
        (MONO[0], {"sampling_rate": 16000}, SamplingRateError, r"^Audio sampled at 16000 Hz .* for 24000 Hz [^{]*$"),
        ((MONO[0] * 32767).astype(np.int16), {}, TypeError, "32768"),
        (np.array([0.1, np.nan, 0.2], dtype=np.float32), {}, EncodecInputError, "NaN"),
        (np.array([0.1, np.inf], dtype=np.float32), {}, EncodecInputError, "NaN or Inf"),
        (np.zeros(0, dtype=np.float32), {}, EncodecInputError, "empty"),
        ([], {}, EncodecInputError, "empty list"),
        (STEREO[0], {}, EncodecInputError, "mono"),
        (np.zeros((1, 2, 3), dtype=np.float32), {}, EncodecInputError, "shape"),
        (MONO[0].astype(np.complex64), {}, TypeError, "complex"),
        (MONO, {"padding": True, "truncation": True}, ValueError, "Both padding and truncation"),
    ],
)
def test_bad_mono_input(audio, kwargs, error, match):
    fe = EncodecFeatureExtractor()
    kwargs.setdefault("sampling_rate", 24000)
    with pytest.raises(error, match=match):
        fe(audio, **kwargs)


def test_stereo_given_as_length_by_channels_is_refused_with_a_transpose_hint():
    fe = EncodecFeatureExtractor(feature_size=2, sampling_rate=48000)
    with pytest.raises(EncodecInputError, match="transpose"):
        fe(STEREO[0].T.copy(), sampling_rate=48000)
    with pytest.raises(EncodecInputError, match="stereo"):
        fe(MONO[0], sampling_rate=48000)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="1 or 2"):
        EncodecFeatureExtractor(feature_size=3)


def test_missing_sampling_rate_warns(caplog):
    with caplog.at_level("WARNING"):
        EncodecFeatureExtractor()(MONO[0])
    assert "sampling_rate" in caplog.text
