"""datasets recipe: stereo-safe decoding, resampling, batched map == per-item, num_proc, spawn + with_rank."""

from __future__ import annotations

import io
import math

import multiprocess
import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import Audio, Dataset

from encodec_hf.audio_io import resample
from encodec_hf.errors import EncodecInputError, UnsupportedBandwidthError
from encodec_hf.integrations.datasets import (
    EncodecMapFunction,
    cast_audio_for_model,
    decode_audio_value,
    decode_codes_example,
    encode_audio_dataset,
    encode_clips,
)
from tests.hf_fixtures import one_torch_thread, save_tiny_model, tiny_model, write_clips


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_torch_thread()


# (num_samples, source rate, channels): several rates so that every clip goes through the resampler,
# and lengths that end mid-frame, mid-chunk, and below one frame / one chunk.
STEREO_SPECS = [(3000, 16000, 2), (1203, 8000, 2), (5000, 22050, 2), (40, 8000, 2), (2377, 8000, 2)]
MONO_SPECS = [(3000, 16000, 1), (1203, 8000, 1), (5000, 22050, 1), (40, 8000, 1), (257, 11025, 1)]


def _dataset(paths):
    ds = Dataset.from_dict({"audio": paths, "id": list(range(len(paths)))})
    return cast_audio_for_model(ds, "audio", sampling_rate=8000)


def test_cast_keeps_target_rate_and_disables_torchcodec_decoding(tmp_path):
    ds = _dataset(write_clips(tmp_path, STEREO_SPECS[:1]))
    feature = ds.features["audio"]
    assert isinstance(feature, Audio) and feature.sampling_rate == 8000 and feature.decode is False
    assert set(ds[0]["audio"]) == {"bytes", "path"}


def test_stereo_flac_keeps_both_channels(tmp_path):
    (path,) = write_clips(tmp_path, [(16000, 16000, 2)], fmt="flac")
    audio, rate = decode_audio_value(_dataset([path])[0]["audio"])
    reference, _ = sf.read(path, dtype="float32", always_2d=True)
    assert rate == 16000 and audio.shape == (2, 16000)
    np.testing.assert_array_equal(audio, reference.T)
    # The two channels carry different tones: a downmix would have made them identical.
    assert np.abs(audio[0] - audio[1]).mean() > 0.1

    fn = EncodecMapFunction(tiny_model("stereo"))
    out = fn(_dataset([path])[:1])
    assert out["num_samples"] == [8000]  # resampled 16 kHz -> 8 kHz
    codes = out["audio_codes"][0]
    assert codes.shape[0] == 11 and codes.shape[2] == 50  # ceil(8000 / 792) chunks of 50 frames


def test_resampling_matches_audio_io_and_bytes_equal_paths(tmp_path):
    (path,) = write_clips(tmp_path, [(4410, 22050, 2)])
    model = tiny_model("stereo")
    fn = EncodecMapFunction(model, bandwidth=8.0)
    with open(path, "rb") as f:
        from_bytes = fn({"audio": [{"bytes": f.read(), "path": None}]})
    from_path = fn({"audio": [{"bytes": None, "path": path}]})
    raw, _ = sf.read(path, dtype="float32", always_2d=True)
    from_array = fn({"audio": [{"array": raw.T, "sampling_rate": 22050}]})
    expected = encode_clips(
        model, [resample(torch.from_numpy(np.ascontiguousarray(raw.T)), 22050, 8000).numpy()], 8.0
    )[0]
    for out in (from_bytes, from_path, from_array):
        np.testing.assert_array_equal(out["audio_codes"][0], expected.audio_codes)
        np.testing.assert_array_equal(out["audio_scales"][0], expected.audio_scales)
        assert out["num_samples"] == [1600]


@pytest.mark.parametrize("kind,specs", [("stereo", STEREO_SPECS), ("mono", MONO_SPECS), ("noncausal", MONO_SPECS)])
def test_batched_map_equals_per_item(tmp_path, kind, specs):
    model = tiny_model(kind)
    ds = _dataset(write_clips(tmp_path, specs))
    fn = EncodecMapFunction(model, bandwidth=8.0)
    batched = ds.map(fn, batched=True, batch_size=len(specs), features=fn.features(ds), remove_columns=["audio"])
    single = ds.map(fn, batched=True, batch_size=1, features=fn.features(ds), remove_columns=["audio"])
    assert batched.to_dict() == single.to_dict()
    assert batched.features["audio_codes"].feature.feature.feature.dtype == "int16"
    assert ("audio_scales" in batched.column_names) == (kind == "stereo")
    for row, (n, rate, _) in zip(batched, specs, strict=True):
        codes = np.asarray(row["audio_codes"])
        assert row["num_samples"] == math.ceil(n * 8000 / rate)
        assert codes.shape[1] == 4 and codes.min() >= 0 and codes.max() < 16
    # The codes vary (a model that maps everything to one code could hide a batch mix-up).
    assert len(np.unique(np.concatenate([np.asarray(r["audio_codes"])[:, 0].ravel() for r in batched]))) > 2


def test_num_proc_cpu_equals_single_process(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model", "stereo")
    ds = _dataset(write_clips(tmp_path / "clips", STEREO_SPECS))
    fn = EncodecMapFunction(str(model_dir), bandwidth=4.0)
    one = ds.map(fn, batched=True, batch_size=2, features=fn.features(ds), remove_columns=["audio"])
    two = ds.map(
        fn,
        batched=True,
        batch_size=2,
        num_proc=2,
        features=fn.features(ds),
        remove_columns=["audio"],
        load_from_cache_file=False,  # the path-based function hashes stably: make sure this run computes
    )
    assert two.to_dict() == one.to_dict()


def test_spawn_with_rank_recipe(tmp_path):
    """The GPU recipe (spawn + with_rank, model loaded in each worker) run on CPU."""
    model_dir = save_tiny_model(tmp_path / "model", "mono")
    ds = _dataset(write_clips(tmp_path / "clips", MONO_SPECS))
    reference = encode_audio_dataset(ds, str(model_dir), bandwidth=8.0, batch_size=2, device="cpu")
    previous = multiprocess.get_start_method(allow_none=True)
    multiprocess.set_start_method("spawn", force=True)
    try:
        spawned = encode_audio_dataset(ds, str(model_dir), bandwidth=8.0, batch_size=2, num_proc=2, device="cpu")
    finally:
        multiprocess.set_start_method(previous, force=True)
    assert spawned.to_dict() == reference.to_dict()
    assert spawned.column_names == ["id", "audio_codes", "num_samples"]


def test_decode_codes_example_restores_length_and_channels(tmp_path):
    model = tiny_model("stereo")
    ds = _dataset(write_clips(tmp_path, STEREO_SPECS[:2]))
    codes = encode_audio_dataset(ds, model, bandwidth=8.0)
    for row, (n, rate, channels) in zip(codes, STEREO_SPECS[:2], strict=True):
        out = decode_codes_example(row, model)
        assert out["audio_values"].shape == (channels, math.ceil(n * 8000 / rate))
        assert out["sampling_rate"] == 8000


def test_channel_mismatch_is_explained_and_convertible(tmp_path):
    ds = _dataset(write_clips(tmp_path, [(800, 8000, 1)]))
    fn = EncodecMapFunction(tiny_model("stereo"))
    with pytest.raises(EncodecInputError, match=r"1 channel\(s\) but the model expects 2.*convert_channels"):
        fn(ds[:1])
    out = EncodecMapFunction(tiny_model("stereo"), convert_channels=True)(ds[:1])
    assert out["num_samples"] == [800]
    mono_fn = EncodecMapFunction(tiny_model("mono"), convert_channels=True)
    stereo_ds = _dataset(write_clips(tmp_path / "s", [(800, 8000, 2)]))
    assert mono_fn(stereo_ds[:1])["num_samples"] == [800]


def test_bad_inputs_raise_clear_errors(tmp_path):
    model = tiny_model("mono")
    with pytest.raises(UnsupportedBandwidthError, match=r"Select one of \[2.0, 4.0, 8.0\]"):
        EncodecMapFunction(model, bandwidth=6.0)
    fn = EncodecMapFunction(model)
    with pytest.raises(EncodecInputError, match="Cannot read <bytes> as audio"):
        fn({"audio": [{"bytes": b"not audio at all", "path": None}]})
    with pytest.raises(EncodecInputError, match="neither 'bytes' nor 'path'"):
        fn({"audio": [{"bytes": None, "path": None}]})
    with pytest.raises(EncodecInputError, match="sampling_rate"):
        fn({"audio": [{"array": np.zeros(10, dtype=np.float32), "sampling_rate": None}]})
    with pytest.raises(KeyError, match="Audio column 'speech'"):
        EncodecMapFunction(model, audio_column="speech")({"audio": []})
    with pytest.raises(KeyError, match="Column 'speech'"):
        cast_audio_for_model(Dataset.from_dict({"audio": ["x.wav"]}), "speech", sampling_rate=8000)
    empty = io.BytesIO()
    sf.write(empty, np.zeros((0, 1), dtype=np.float32), 8000, format="WAV")
    with pytest.raises(EncodecInputError, match="empty"):
        fn({"audio": [{"bytes": empty.getvalue(), "path": None}]})


def test_errors_name_the_dataset_row_not_the_place_in_a_workers_batch(tmp_path):
    """Row 4 is not audio: with two workers and batches of 2 it is item 0 of some worker's batch; the error
    names row 4 (map's indices), in the recipe, in a plain map with_indices=True, and from a row_index column."""
    from encodec_hf.errors import AudioFileError

    model_dir = save_tiny_model(tmp_path / "model", "mono")
    paths = write_clips(tmp_path / "clips", MONO_SPECS[:4] + MONO_SPECS[:2])
    (tmp_path / "bad.wav").write_text("not audio")
    paths[4] = str(tmp_path / "bad.wav")
    ds = _dataset(paths)
    with pytest.raises(AudioFileError, match=r"^Dataset row 4: Cannot read .*bad\.wav"):
        encode_audio_dataset(ds, str(model_dir), batch_size=2, num_proc=2, device="cpu")
    fn = EncodecMapFunction(str(model_dir))
    with pytest.raises(AudioFileError, match=r"^Dataset row 4: "):
        ds.map(fn, batched=True, batch_size=2, with_indices=True, remove_columns=["audio"], features=fn.features(ds))
    with pytest.raises(AudioFileError, match=r"^Dataset row 1041: "):
        fn({"audio": [ds[4]["audio"]], "row_index": [1041]})  # the encode-dataset runner's column
    with pytest.raises(AudioFileError, match=r"^Item 0 of the batch: "):
        fn({"audio": [ds[4]["audio"]]})


def test_model_object_with_num_proc_names_the_fix(tmp_path):
    import pickle

    fn = EncodecMapFunction(tiny_model("mono"))
    with pytest.raises(TypeError, match="pass the model's name or path"):
        pickle.dumps(fn)


def test_path_based_function_fingerprint_is_stable(tmp_path):
    from datasets.fingerprint import Hasher

    model_dir = save_tiny_model(tmp_path / "model", "mono")
    a, b = EncodecMapFunction(str(model_dir), bandwidth=4.0), EncodecMapFunction(str(model_dir), bandwidth=4.0)
    assert Hasher.hash(a) == Hasher.hash(b)
    assert Hasher.hash(a) != Hasher.hash(EncodecMapFunction(str(model_dir), bandwidth=8.0))


def test_clip_codes_match_model_encode_on_whole_frames():
    """For a clip of whole frames, the helper's codes are exactly `model.encode` on that clip alone."""
    import torch

    model = tiny_model("mono")
    clip = (np.random.default_rng(3).standard_normal((1, 16 * 40)) * 0.3).astype(np.float32)
    (codes,) = encode_clips(model, [clip], 8.0)
    with torch.no_grad():
        direct = model.encode(torch.from_numpy(clip)[None], bandwidth=8.0).audio_codes  # [1, 1, K, F]
    np.testing.assert_array_equal(codes.audio_codes, direct[:, 0].numpy())
