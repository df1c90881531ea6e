"""Training data: deterministic crops, normalisation and gain, s1-s4 mixing, resuming, and construction-time errors."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch

from encodec_hf.audio_io import convert_audio
from encodec_hf.errors import TrainingDataError
from encodec_hf.training.data import (
    STRATEGY_PROBS,
    AudioCropDataset,
    build_dataloader,
    build_dataset,
    index_folder,
)

RATE = 8000
CROP = 0.25  # 2000 samples


def write(path, seconds=1.0, rate=RATE, channels=1, amplitude=0.1, seed=0, subtype="PCM_16"):
    """White noise (stationary, so any crop has the file's RMS) written with soundfile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).standard_normal((round(seconds * rate), channels))
    sf.write(str(path), (amplitude * noise).clip(-1, 1).astype(np.float32), rate, subtype=subtype)
    return path


@pytest.fixture
def labelled(tmp_path):
    """`<root>/<label>/...` with two music, two speech and one other file of different rates and formats."""
    write(tmp_path / "music" / "a.flac", 2.0, rate=16000, channels=2, seed=1)
    write(tmp_path / "music" / "album" / "b.wav", 1.5, seed=2)
    write(tmp_path / "speech" / "c.ogg", 1.0, rate=16000, seed=3, subtype="VORBIS")
    write(tmp_path / "speech" / "d.wav", 1.2, seed=4, amplitude=0.01)
    write(tmp_path / "other" / "e.wav", 1.0, seed=5)
    (tmp_path / "README.txt").write_text("not audio")
    return tmp_path


def dataset(data, **options):
    return build_dataset(data, RATE, options.pop("channels", 1), crop_seconds=CROP, **options)


def test_items_are_deterministic_crops(labelled):
    ds = dataset(labelled, seed=3)
    again = dataset(labelled, seed=3)
    other_seed = dataset(labelled, seed=4)
    for i in (0, 7, 123456):
        item = ds[i]
        assert item.shape == (1, round(CROP * RATE)) and item.dtype == torch.float32
        assert torch.equal(item, again[i])
        assert item.abs().max() <= 1.0
    assert not torch.equal(ds[0], other_seed[0])
    assert not torch.equal(ds[0], ds[1])


def test_dataloader_workers_and_resume_match_indexing(labelled):
    ds = dataset(labelled)
    batches = list(build_dataloader(ds, batch_size=3, num_workers=2, num_steps=3))
    assert [tuple(b.shape) for b in batches] == [(3, 1, 2000)] * 3
    for step, batch in enumerate(batches):
        assert torch.equal(batch, torch.stack([ds[step * 3 + j] for j in range(3)]))
    resumed = next(iter(build_dataloader(ds, batch_size=3, start_step=2, num_steps=1)))
    assert torch.equal(resumed, batches[2])
    rank1 = next(iter(build_dataloader(ds, batch_size=3, rank=1, world_size=2, num_steps=1)))
    assert torch.equal(rank1, batches[1])  # rank 1 of 2 at step 0 takes items 3..5


def test_crop_is_the_resampled_file_slice_with_normalisation_and_gain(tmp_path):
    """A 48 kHz stereo file: the crop equals convert_audio of the whole file, sliced at the planned offset,
    times target_rms / file_rms * gain (resampling a crop with its margin = resampling the file, to 1e-5)."""
    path = write(tmp_path / "x.wav", 1.0, rate=48000, channels=2, subtype="FLOAT")
    ds = dataset([path], channels=1, target_rms_db=-20.0)
    audio = torch.from_numpy(sf.read(str(path), dtype="float32", always_2d=True)[0].T.copy())
    whole = convert_audio(audio, 48000, RATE, 1)
    file_rms = float(whole.double().pow(2).mean().sqrt())  # normalisation is measured as the model sees it
    for i in range(4):
        (part,) = ds.describe(i)["sources"]
        offset = round(part["offset_s"] * RATE)
        scale = 10 ** (-20 / 20) / file_rms * 10 ** (part["gain_db"] / 20)
        expected = whole[:, offset : offset + 2000] * scale
        torch.testing.assert_close(ds[i], expected, atol=1e-5, rtol=1e-4)
        gain = 20 * np.log10(float(ds[i].pow(2).mean().sqrt()) / 10 ** (-20 / 20))
        assert abs(gain - part["gain_db"]) < 1.0  # noise: the crop's level is the file level plus the gain
        assert -10 <= part["gain_db"] <= 6


def test_strategies_follow_the_paper(labelled):
    ds = dataset(labelled, num_items=10)
    counts, n = Counter(), 4000
    for i in range(n):
        plan = ds.describe(i)
        labels = [s["label"] for s in plan["sources"]]
        counts[plan["strategy"]] += 1
        expected = {"s1": 1, "s2": 1, "s3": 2, "s4": 3}[plan["strategy"]]
        assert len(labels) == expected
        if plan["strategy"] == "s1":
            assert labels == ["music"]
        if plan["strategy"] in ("s2", "s4"):
            assert "music" not in labels
        if plan["strategy"] == "s4":
            assert len({s["name"] for s in plan["sources"]}) == 3  # three distinct non-music files exist
    for name, p in STRATEGY_PROBS.items():
        assert abs(counts[name] / n - p) < 0.03, (name, counts[name] / n)


def test_a_mix_is_the_sum_of_its_scaled_crops(labelled):
    ds = dataset(labelled)
    i = next(i for i in range(100) if ds.describe(i)["strategy"] == "s4")
    _, plan = ds._plan(i)
    total = torch.zeros(1, 2000)
    for source_index, offset, gain_db in plan:
        source = ds.sources[source_index]
        total += ds._crop(source, offset) * ds.target_rms / source.rms * 10 ** (gain_db / 20)
    peak = float(total.abs().max())
    torch.testing.assert_close(ds[i], total / max(peak, 1.0))


def test_strategies_without_their_labels_are_dropped_and_renormalised(tmp_path):
    write(tmp_path / "music" / "a.wav", seed=1)
    write(tmp_path / "music" / "b.wav", seed=2)
    ds = dataset(tmp_path)
    assert {name: round(p, 4) for name, _, p in ds.strategies} == {
        "s1": round(0.32 / 0.56, 4),
        "s3": round(0.24 / 0.56, 4),
    }
    unlabelled = dataset(sorted((tmp_path / "music").glob("*.wav")))
    assert [name for name, _, _ in unlabelled.strategies] == ["single"]
    assert [name for name, _, _ in dataset(tmp_path, mixing=False).strategies] == ["single"]


def test_channels_and_short_files(tmp_path):
    stereo = write(tmp_path / "stereo.wav", channels=2, seed=1)
    short = write(tmp_path / "short.wav", 0.1, seed=2)  # 800 samples < 2000
    item = dataset([stereo], channels=2)[0]
    assert item.shape == (2, 2000) and not torch.equal(item[0], item[1])
    mono_to_stereo = dataset([short], channels=2)[0]
    assert torch.equal(mono_to_stereo[0], mono_to_stereo[1])
    padded = dataset([short])[0]
    assert torch.count_nonzero(padded[:, :800]) > 790  # the file, then exact zeros
    assert torch.count_nonzero(padded[:, 800:]) == 0
    assert [s.name for s in dataset([stereo, short], short="skip").sources] == [str(stereo)]
    with pytest.raises(TrainingDataError, match="shorter than"):
        dataset([short], short="skip")
    with pytest.raises(TrainingDataError, match=r"stereo\.wav: has 2 channel"):
        dataset([stereo], channels=1, channel_policy="strict")


def test_manifest_with_rms(tmp_path):
    write(tmp_path / "m" / "a.wav", seed=1)
    write(tmp_path / "s" / "b.wav", seed=2)
    lines = [{"path": "m/a.wav", "label": "music", "rms_db": -20.0}, {"path": "s/b.wav", "label": "speech"}]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ds = dataset(manifest)
    assert [s.label for s in ds.sources] == ["music", "speech"]
    assert ds.sources[0].rms == pytest.approx(0.1)  # taken from the manifest, not measured
    assert ds.sources[1].rms == pytest.approx(0.1, rel=0.05)  # measured: amplitude-0.1 noise


def test_datasets_dataset_matches_the_same_files(labelled):
    datasets = pytest.importorskip("datasets")
    sources = index_folder(labelled)
    rows = {"audio": [s.name for s in sources], "label": [s.label for s in sources]}
    features = datasets.Features(
        {"audio": datasets.Value("string"), "label": datasets.ClassLabel(names=["music", "speech", "other"])}
    )
    # A decoding Audio() column, as users have it: read here with soundfile after a cast to decode=False.
    hf = datasets.Dataset.from_dict(rows, features=features).cast_column("audio", datasets.Audio())
    from_hf = dataset(hf)
    from_files = dataset(labelled)
    assert [s.label for s in from_hf.sources] == [s.label for s in from_files.sources]
    for i in range(5):
        assert torch.equal(from_hf[i], from_files[i])
    with open(sources[1].name, "rb") as f:
        embedded = datasets.Dataset.from_dict({"audio": [{"bytes": f.read(), "path": None}]})
    assert dataset(embedded)[0].shape == (1, 2000)
    decoded = datasets.Dataset.from_dict({"audio": [{"array": [0.1, -0.1] * 2000, "sampling_rate": 16000}]})
    assert dataset(decoded, channels=2)[0].shape == (2, 2000)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(channels=3), "channels must be 1"),
        (dict(crop_seconds=0), "crop_seconds must be a positive"),
        (dict(crop_seconds=1e-6), "shorter than one sample"),
        (dict(gain_db=(6, -10)), "low <= high"),
        (dict(gain_db=5), r"gain_db must be \(low_db, high_db\)"),
        (dict(seed=-1), "seed must be an integer"),
        (dict(short="trim"), "short must be"),
        (dict(channel_policy="drop"), "channel_policy must be"),
        (dict(target_rms_db=3), "target_rms_db"),
        (dict(num_items=0), "num_items must be positive"),
        (dict(strategy_probs={"s9": 1.0}), "strategy_probs"),
    ],
)
def test_bad_options_raise_at_construction(labelled, options, message):
    options = {"crop_seconds": CROP, "channels": 1, **options}
    with pytest.raises(TrainingDataError, match=message):
        build_dataset(labelled, RATE, options.pop("channels"), **options)


def test_bad_sampling_rate(labelled):
    with pytest.raises(TrainingDataError, match="sampling_rate must be a positive integer"):
        build_dataset(labelled, 0, 1)


def test_bad_data_raises_at_construction_naming_the_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(TrainingDataError, match="no audio files"):
        dataset(empty)
    broken = tmp_path / "broken" / "bad.wav"
    broken.parent.mkdir()
    broken.write_bytes(b"RIFF\x00\x00not really a wave file")
    with pytest.raises(TrainingDataError, match=r"bad\.wav: soundfile cannot read it"):
        dataset(broken.parent)
    damaged = write(tmp_path / "damaged" / "cut.flac", 2.0)
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # header intact, half the frames
    with pytest.raises(TrainingDataError, match=r"cut\.flac: decoding failed part-way"):
        dataset(damaged.parent)
    silent = tmp_path / "zero.wav"
    sf.write(str(silent), np.zeros((0, 1), dtype=np.float32), RATE)
    with pytest.raises(TrainingDataError, match=r"zero\.wav: the file has no audio frames"):
        dataset([silent])
    with pytest.raises(TrainingDataError, match="no such file or folder"):
        dataset(tmp_path / "missing")
    with pytest.raises(TrainingDataError, match="must be a folder"):
        dataset(42)


def test_bad_labels_raise(tmp_path):
    write(tmp_path / "music" / "a.wav")
    write(tmp_path / "loose.wav")
    with pytest.raises(TrainingDataError, match=r"loose\.wav: not under"):
        dataset(tmp_path)
    assert [s.label for s in dataset(tmp_path, labels=None).sources] == [None, None]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": "music/a.wav", "label": "noise"}) + "\n")
    with pytest.raises(TrainingDataError, match="label 'noise' is not one of"):
        dataset(manifest)
    manifest.write_text('{"file": "music/a.wav"}\n')
    with pytest.raises(TrainingDataError, match=r"m\.jsonl:1: expected a JSON object with a 'path'"):
        dataset(manifest)
    manifest.write_text(json.dumps({"path": "music/gone.wav"}) + "\n")
    with pytest.raises(TrainingDataError, match=r"gone\.wav: no such file"):
        dataset(manifest)


def test_bad_hf_dataset_and_sampler_options(labelled):
    datasets = pytest.importorskip("datasets")
    with pytest.raises(TrainingDataError, match="Audio column 'audio' not in"):
        dataset(datasets.Dataset.from_dict({"sound": ["x.wav"]}))
    with pytest.raises(TrainingDataError, match="no rows"):
        dataset(datasets.Dataset.from_dict({"audio": []}))
    with pytest.raises(TrainingDataError, match="no such file|cannot read"):
        dataset(datasets.Dataset.from_dict({"audio": [str(labelled / "missing.wav")]}))
    ds = dataset(labelled)
    with pytest.raises(TrainingDataError, match="batch_size > 0"):
        build_dataloader(ds, batch_size=0)
    with pytest.raises(TrainingDataError, match="rank must be in"):
        build_dataloader(ds, batch_size=2, rank=2, world_size=2)
    with pytest.raises(IndexError):
        ds[-1]
    with pytest.raises(TrainingDataError, match="No audio sources"):
        AudioCropDataset([], RATE, 1)
