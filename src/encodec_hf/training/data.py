"""Training data: deterministic random crops of labelled audio, mixed with the EnCodec paper's strategies s1-s4.

API (what the trainer codes against)::

    from encodec_hf.training.data import build_dataset, build_dataloader

    ds = build_dataset("/work/data24k/manifest.jsonl", sampling_rate=24_000, channels=1, seed=0)
    # or a folder (`<root>/<label>/...` gives labels), a list of files, or a `datasets.Dataset` with an
    # "audio" column (and optionally a "label" column)
    loader = build_dataloader(ds, batch_size=64, num_workers=2, start_step=0)
    for step, batch in enumerate(loader, start=0):  # batch: float32 [B, C, T], T = crop_seconds * rate
        ...

`AudioCropDataset(sources, sampling_rate, channels, crop_seconds=1.0, seed=0, gain_db=(-10, 6), mixing=True)`
is the map-style dataset behind it; `ds[i]` is a float32 `[C, T]` tensor that depends only on `(seed, i)`, so
a data position is a single integer: `build_dataloader(..., start_step=s)` resumes exactly where step `s`
began, with any number of workers (each item is computed from its own generator, never from worker state).
`ds.describe(i)` returns what item `i` is made of (strategy, files, offsets, gains).

Item `i`:
1. Strategy (only when every source has a label and `mixing=True`), as in the paper / model card:
   s1 one music source (p 0.32), s2 one non-music source (p 0.32), s3 a mix of two sources from all data
   (p 0.24), s4 a mix of three non-music sources (p 0.12). Strategies whose pool is empty (say, no music)
   are dropped and the others' probabilities renormalised. Unlabelled data: one source per item.
2. Sources are drawn with probability proportional to their duration (a long file gives more crops),
   distinct within an item when the pool is large enough.
3. Each source gives a random `crop_seconds` crop at the model rate and channel count (resampled with
   `encodec_hf.audio_io.convert_audio`; mono targets average channels, stereo targets duplicate mono),
   scaled by the per-file normalisation (file RMS brought to `target_rms_db`, quieter than -60 dBFS counts as
   -60 so silence is not blown up into noise) and a uniform random gain in `gain_db`.
4. The sources are summed; if the sum's peak exceeds 1 it is scaled down to peak 1 (no clipping).

Files shorter than the crop are zero-padded at the end (`short="pad"`, default: speech prompts and jingles
stay usable, and codecs must code silence anyway) or dropped at construction (`short="skip"`).

Everything that can be checked is checked at construction, before any training step: option values, empty
folders, unreadable or empty files (named), label values, and channel counts under `channel_policy="strict"`.
Per-file RMS (at the model's rate and channels) comes from the manifest when given
(`conversion/prepare_training_data.py` writes it for 24 kHz mono) and is otherwise measured at construction by
decoding every file once, which also proves each file decodes fully.
All errors are `encodec_hf.errors.TrainingDataError` (a `ValueError`).

Decoding is soundfile (libsndfile: WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF) only: no FFmpeg or torchcodec.
`datasets` columns are cast to `Audio(decode=False)` and their bytes decoded here.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio_io import convert_audio, resample
from ..errors import TrainingDataError

logger = logging.getLogger(__name__)

__all__ = [
    "AUDIO_EXTENSIONS",
    "LABELS",
    "STRATEGY_PROBS",
    "AudioCropDataset",
    "AudioSource",
    "StepBatchSampler",
    "build_dataloader",
    "build_dataset",
    "index_files",
    "index_folder",
    "index_hf_dataset",
    "index_manifest",
]

LABELS = ("music", "speech", "other")
# Paper / model card: s1 one music source, s2 one non-music source, s3 two sources of any kind, s4 three non-music.
STRATEGY_PROBS: Mapping[str, float] = {"s1": 0.32, "s2": 0.32, "s3": 0.24, "s4": 0.12}
_STRATEGY_SPEC = {"s1": ("music", 1), "s2": ("non-music", 1), "s3": ("all", 2), "s4": ("non-music", 3)}
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
_SILENCE_FLOOR_DB = -60.0


@dataclass(frozen=True)
class AudioSource:
    """One decodable audio item: a file path or a row of a `datasets.Dataset`.

    Attributes:
        ref: file path (str) or row index (int) into the dataset's audio column.
        name: how errors and `describe` name it (the path, or `"row 12 (path)"`).
        num_frames: length at its own rate.
        sampling_rate: its own rate in Hz.
        channels: its own channel count.
        label: "music", "speech", "other" or None.
        rms: root mean square (linear) at the model's rate and channel count, or None until measured.
    """

    ref: str | int
    name: str
    num_frames: int
    sampling_rate: int
    channels: int
    label: str | None = None
    rms: float | None = None

    @property
    def duration(self) -> float:
        return self.num_frames / self.sampling_rate


# Decoding (soundfile only).


def _open(value: Any, name: str):
    """A `soundfile.SoundFile` for a path or a `{"bytes", "path"}` dict. Raises TrainingDataError naming it."""
    import soundfile as sf

    if isinstance(value, dict):
        value = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value.get("path")
        if value is None:
            raise TrainingDataError(f"{name}: audio value has neither 'bytes' nor 'path'.")
    try:
        return sf.SoundFile(value)
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError) as err:
        raise TrainingDataError(
            f"{name}: soundfile cannot read it ({err}). Convert it to WAV/FLAC/OGG or remove it from the data."
        ) from err


def _array_value(value: Any) -> np.ndarray | None:
    """`[C, T]` float32 array of an already decoded `{"array", "sampling_rate"}` value, else None."""
    if isinstance(value, dict) and value.get("array") is not None:
        array = np.asarray(value["array"], dtype=np.float32)
        return array[None] if array.ndim == 1 else array
    return None


def _measure_rms(value: Any, name: str, rate: int, channels: int) -> float:
    """RMS of the whole item as the model sees it (at `rate` with `channels`); decoding it all proves it decodes.

    Long files are converted in 30 s blocks: the block edges change the estimate by far less than a dB.
    """
    import soundfile as sf

    array = _array_value(value)
    if array is not None:
        converted = convert_audio(torch.from_numpy(array), int(value["sampling_rate"]), rate, channels)
        return float(converted.double().pow(2).mean().sqrt()) if converted.numel() else 0.0
    total, count = 0.0, 0
    with _open(value, name) as f:
        blocks = f.blocks(blocksize=30 * f.samplerate, dtype="float32", always_2d=True)
        while True:
            try:
                block = next(blocks, None)  # [T, C]
            except sf.LibsndfileError as err:  # a truncated or corrupt FLAC/OGG stops here
                raise TrainingDataError(f"{name}: decoding failed part-way ({err}); the file is damaged.") from err
            if block is None:
                break
            converted = convert_audio(torch.from_numpy(np.ascontiguousarray(block.T)), f.samplerate, rate, channels)
            total += float(converted.double().pow(2).sum())
            count += converted.numel()
    return math.sqrt(total / count) if count else 0.0


def _header(value: Any, name: str) -> tuple[int, int, int]:
    """`(num_frames, sampling_rate, channels)` from the header only."""
    array = _array_value(value)
    if array is not None:
        if value.get("sampling_rate") is None:
            raise TrainingDataError(f"{name}: an audio dict with 'array' must also give 'sampling_rate'.")
        return array.shape[-1], int(value["sampling_rate"]), array.shape[0]
    with _open(value, name) as f:
        return f.frames, f.samplerate, f.channels


def _read(value: Any, name: str, start: int, frames: int) -> np.ndarray:
    """Frames `[start, start + frames)` as float32 `[C, frames]`, zeros outside the file."""
    array = _array_value(value)
    if array is not None:
        channels, length = array.shape
        data = array[:, max(start, 0) : max(start + frames, 0)]
    else:
        with _open(value, name) as f:
            channels, length = f.channels, f.frames
            lo, hi = min(max(start, 0), length), min(max(start + frames, 0), length)
            f.seek(lo)
            data = f.read(hi - lo, dtype="float32", always_2d=True).T
    out = np.zeros((channels, frames), dtype=np.float32)
    lo = max(-start, 0)
    out[:, lo : lo + data.shape[1]] = data[:, : frames - lo]
    return out


# Indexing sources: folders, manifests, file lists, `datasets` datasets.


def _check_label(label: Any, name: str) -> str | None:
    if label is None:
        return None
    if not isinstance(label, str) or label.lower() not in LABELS:
        raise TrainingDataError(f"{name}: label {label!r} is not one of {LABELS}.")
    return label.lower()


def _file_source(path: str, label: str | None = None, rms: float | None = None) -> AudioSource:
    if not os.path.isfile(path):
        raise TrainingDataError(f"{path}: no such file.")
    frames, rate, channels = _header(path, path)
    return AudioSource(path, path, frames, rate, channels, _check_label(label, path), rms)


def index_files(paths: Sequence[str | os.PathLike], labels: Sequence[str | None] | None = None) -> list[AudioSource]:
    """Sources for explicit file paths (header read now; RMS measured by `AudioCropDataset`)."""
    paths = [os.fspath(p) for p in paths]
    if labels is not None and len(labels) != len(paths):
        raise TrainingDataError(f"Got {len(labels)} labels for {len(paths)} files.")
    return [_file_source(p, None if labels is None else labels[i]) for i, p in enumerate(paths)]


def index_folder(root: str | os.PathLike, labels: str | None = "auto") -> list[AudioSource]:
    """Every audio file under `root` (recursive, sorted). Labels from the layout `<root>/<label>/...`.

    Args:
        labels: "auto" uses the first folder level as the label when every file sits under a folder named
            music/speech/other, and no labels when none does (a partial layout is an error); "folder" requires
            the layout; None ignores it.
    """
    root = Path(root)
    if not root.is_dir():
        raise TrainingDataError(f"{root}: not a folder.")
    if labels not in ("auto", "folder", None):
        raise TrainingDataError(f"labels must be 'auto', 'folder' or None, got {labels!r}.")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise TrainingDataError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder.")
    found = [p.relative_to(root).parts[0].lower() if len(p.relative_to(root).parts) > 1 else None for p in files]
    labelled = [f in LABELS for f in found]
    if labels == "folder" or (labels == "auto" and any(labelled)):
        if not all(labelled):
            bad = files[labelled.index(False)]
            raise TrainingDataError(
                f"{bad}: not under {root}/<label>/ with <label> one of {LABELS}, but other files are. "
                "Move it, or pass labels=None to train without labels (no s1-s4 mixing)."
            )
        return [_file_source(str(p), lab) for p, lab in zip(files, found, strict=True)]
    return [_file_source(str(p)) for p in files]


def index_manifest(path: str | os.PathLike) -> list[AudioSource]:
    """Sources from a JSONL manifest: one object per line with "path" (relative to the manifest's folder or
    absolute) and optionally "label" and "rms_db" (file RMS in dBFS, which spares the measuring pass)."""
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such manifest.")
    sources = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            file = str(path.parent / entry["path"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise TrainingDataError(f"{path}:{n}: expected a JSON object with a 'path' key ({err}).") from err
        rms = 10 ** (float(entry["rms_db"]) / 20) if entry.get("rms_db") is not None else None
        sources.append(_file_source(file, entry.get("label"), rms))
    if not sources:
        raise TrainingDataError(f"{path}: the manifest lists no files.")
    return sources


def index_hf_dataset(dataset, audio_column: str = "audio", label_column: str | None = "label"):
    """`(dataset cast to Audio(decode=False), sources)` for a `datasets.Dataset`.

    Labels come from `label_column` when the dataset has it (strings, or a ClassLabel's integers).
    """
    import datasets

    if isinstance(dataset, datasets.IterableDataset):
        raise TrainingDataError(
            "A streaming datasets.IterableDataset has no random access; load it without streaming=True."
        )
    if audio_column not in dataset.column_names:
        raise TrainingDataError(f"Audio column {audio_column!r} not in dataset columns {dataset.column_names}.")
    if len(dataset) == 0:
        raise TrainingDataError("The dataset has no rows.")
    if isinstance(dataset.features[audio_column], datasets.Audio):
        dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))  # no torchcodec
    labels: list[Any] = [None] * len(dataset)
    if label_column is not None and label_column in dataset.column_names:
        feature = dataset.features[label_column]
        labels = list(dataset[label_column])
        if isinstance(feature, datasets.ClassLabel):
            labels = [feature.int2str(v) for v in labels]
    sources = []
    for row, item in enumerate(dataset.select_columns([audio_column])):
        value = item[audio_column]
        where = value.get("path") if isinstance(value, dict) else None
        name = f"row {row}" + (f" ({where})" if where else "")
        if isinstance(value, str):
            value = {"path": value, "bytes": None}
        frames, rate, channels = _header(value, name)
        sources.append(AudioSource(row, name, frames, rate, channels, _check_label(labels[row], name)))
    return dataset, sources


# The dataset.


class AudioCropDataset(torch.utils.data.Dataset):
    """Map-style dataset of float32 `[C, T]` training crops; item `i` is a pure function of `(seed, i)`.

    Any index `i >= 0` is valid (the stream is unbounded); `len()` is a nominal epoch, `num_items` (default:
    the number of sources). See the module docstring for the recipe.

    Args:
        sources: from `index_folder`, `index_manifest`, `index_files` or `index_hf_dataset`.
        sampling_rate: model rate in Hz; crops are resampled to it.
        channels: 1 or 2 (the model's `audio_channels`).
        crop_seconds: crop length; `T = round(crop_seconds * sampling_rate)`.
        seed: base seed of every item's generator.
        gain_db: `(low, high)` of the uniform random gain per source, in dB.
        mixing: use s1-s4 when every source is labelled (ignored for unlabelled data).
        strategy_probs: override of `STRATEGY_PROBS`.
        target_rms_db: per-file normalisation target (file RMS in dBFS after normalisation, before the gain).
        short: "pad" (zero-pad files shorter than the crop) or "skip" (drop them here).
        channel_policy: "convert" (average / duplicate channels) or "strict" (files must have `channels`).
        num_items: value of `len()`.
        hf_dataset: the `datasets.Dataset` whose rows integer `ref`s point into.
        audio_column: its audio column.
    """

    def __init__(
        self,
        sources: Sequence[AudioSource],
        sampling_rate: int,
        channels: int,
        crop_seconds: float = 1.0,
        seed: int = 0,
        gain_db: tuple[float, float] = (-10.0, 6.0),
        mixing: bool = True,
        strategy_probs: Mapping[str, float] | None = None,
        target_rms_db: float = -23.0,
        short: str = "pad",
        channel_policy: str = "convert",
        num_items: int | None = None,
        hf_dataset=None,
        audio_column: str = "audio",
    ) -> None:
        _check_options(sampling_rate, channels, crop_seconds, seed, gain_db, target_rms_db, short, channel_policy)
        self.sampling_rate, self.channels, self.seed = int(sampling_rate), int(channels), int(seed)
        self.crop_samples = round(crop_seconds * sampling_rate)
        self.gain_db = (float(gain_db[0]), float(gain_db[1]))
        self.target_rms = 10 ** (target_rms_db / 20)
        self.hf_dataset, self.audio_column = hf_dataset, audio_column
        sources = list(sources)
        if not sources:
            raise TrainingDataError("No audio sources were given.")
        if any(isinstance(s.ref, int) for s in sources) and hf_dataset is None:
            raise TrainingDataError("Sources refer to dataset rows but no hf_dataset was given.")
        for s in sources:
            if s.num_frames <= 0:
                raise TrainingDataError(f"{s.name}: the file has no audio frames.")
            if channel_policy == "strict" and s.channels != self.channels:
                raise TrainingDataError(
                    f"{s.name}: has {s.channels} channel(s) but the model takes {self.channels}. "
                    "Pass channel_policy='convert' to average to mono / duplicate to stereo."
                )
        sources = [s if s.rms is not None else self._with_rms(s) for s in sources]
        if short == "skip":
            kept = [s for s in sources if self._target_length(s) >= self.crop_samples]
            if not kept:
                raise TrainingDataError(f"Every file is shorter than the {crop_seconds} s crop (short='skip').")
            if len(kept) < len(sources):
                logger.info("Skipped %d file(s) shorter than %s s.", len(sources) - len(kept), crop_seconds)
            sources = kept
        self.sources = sources
        self.num_items = len(sources) if num_items is None else int(num_items)
        if self.num_items <= 0:
            raise TrainingDataError(f"num_items must be positive, got {num_items}.")
        self.strategies = self._strategies(mixing, strategy_probs)

    # -- construction helpers ---------------------------------------------------------------------

    def _value(self, source: AudioSource) -> Any:
        if isinstance(source.ref, int):
            value = self.hf_dataset[source.ref][self.audio_column]
            return {"path": value, "bytes": None} if isinstance(value, str) else value
        return source.ref

    def _with_rms(self, source: AudioSource) -> AudioSource:
        rms = _measure_rms(self._value(source), source.name, self.sampling_rate, self.channels)
        return AudioSource(**{**source.__dict__, "rms": rms})

    def _target_length(self, source: AudioSource) -> int:
        return math.ceil(source.num_frames * self.sampling_rate / source.sampling_rate)

    def _strategies(self, mixing: bool, probs: Mapping[str, float] | None) -> list[tuple[str, np.ndarray, float]]:
        """`[(name, pool of source indices, probability)]`; one uniform single-source strategy without labels."""
        everything = np.arange(len(self.sources))
        labels = [s.label for s in self.sources]
        if not mixing or all(label is None for label in labels):
            return [("single", everything, 1.0)]
        if any(label is None for label in labels):
            missing = self.sources[labels.index(None)].name
            raise TrainingDataError(f"{missing}: has no label but other sources do; label all or none.")
        probs = dict(STRATEGY_PROBS if probs is None else probs)
        if set(probs) - set(_STRATEGY_SPEC) or any(not (p >= 0) for p in probs.values()) or sum(probs.values()) <= 0:
            raise TrainingDataError(f"strategy_probs must map some of {list(_STRATEGY_SPEC)} to p >= 0, got {probs}.")
        music = np.array([label == "music" for label in labels])
        pools = {"music": everything[music], "non-music": everything[~music], "all": everything}
        chosen = [(name, pools[_STRATEGY_SPEC[name][0]], p) for name, p in probs.items() if p > 0]
        chosen = [(name, pool, p) for name, pool, p in chosen if len(pool)]
        if not chosen:
            raise TrainingDataError(f"No mixing strategy in {probs} has sources with the labels it needs.")
        total = sum(p for _, _, p in chosen)
        return [(name, pool, p / total) for name, pool, p in chosen]

    # -- items ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.num_items

    def _plan(self, index: int) -> tuple[str, list[tuple[int, int, float]]]:
        """Strategy name and `[(source index, crop offset at the model rate, gain dB)]` of item `index`."""
        if not isinstance(index, (int, np.integer)) or index < 0:
            raise IndexError(f"Item indices are integers >= 0, got {index!r}.")
        rng = np.random.default_rng([self.seed, int(index)])
        choice = rng.choice(len(self.strategies), p=[p for _, _, p in self.strategies])
        name, pool, _ = self.strategies[choice]
        count = _STRATEGY_SPEC[name][1] if name in _STRATEGY_SPEC else 1
        weights = np.array([self.sources[i].duration for i in pool])
        picked = rng.choice(pool, size=count, replace=len(pool) < count, p=weights / weights.sum())
        plan = []
        for i in picked:
            spare = self._target_length(self.sources[i]) - self.crop_samples
            offset = int(rng.integers(0, spare + 1)) if spare > 0 else 0
            plan.append((int(i), offset, float(rng.uniform(*self.gain_db))))
        return name, plan

    def describe(self, index: int) -> dict[str, Any]:
        """What item `index` is made of: strategy and, per source, name, label, offset (s) and gain (dB)."""
        name, plan = self._plan(index)
        rate, sources = self.sampling_rate, self.sources
        parts = [dict(name=sources[i].name, label=sources[i].label, offset_s=o / rate, gain_db=g) for i, o, g in plan]
        return {"strategy": name, "sources": parts}

    def _crop(self, source: AudioSource, offset: int) -> torch.Tensor:
        """`[channels, crop_samples]` at the model rate starting at `offset` (model-rate samples)."""
        value, rate, length = self._value(source), source.sampling_rate, self.crop_samples
        if rate == self.sampling_rate:
            audio = torch.from_numpy(_read(value, source.name, offset, length))
            return convert_audio(audio, rate, rate, self.channels)
        # Read a margin of native samples either side so the resampling filter sees real context, not zeros;
        # a margin that is a multiple of the reduced input ratio maps to a whole number of output samples.
        gcd = math.gcd(rate, self.sampling_rate)
        up, down = self.sampling_rate // gcd, rate // gcd
        margin = down * math.ceil(64 / down)
        start = offset * rate // self.sampling_rate
        native = _read(value, source.name, start - margin, math.ceil(length * down / up) + 2 * margin)
        audio = convert_audio(torch.from_numpy(native), rate, rate, self.channels)
        audio = resample(audio, rate, self.sampling_rate)[:, margin * up // down :][:, :length]
        if start + math.ceil(length * down / up) > source.num_frames:  # past the end: exact zeros, not ringing
            audio[:, max(self._target_length(source) - offset, 0) :] = 0
        return audio

    def __getitem__(self, index: int) -> torch.Tensor:
        """Float32 `[C, T]` crop number `index`."""
        _, plan = self._plan(index)
        mix = torch.zeros(self.channels, self.crop_samples)
        for i, offset, gain_db in plan:
            source = self.sources[i]
            scale = self.target_rms / max(source.rms, 10 ** (_SILENCE_FLOOR_DB / 20)) * 10 ** (gain_db / 20)
            mix += self._crop(source, offset) * scale
        peak = float(mix.abs().max())
        return mix / peak if peak > 1.0 else mix


def _check_options(sampling_rate, channels, crop_seconds, seed, gain_db, target_rms_db, short, channel_policy):
    """Raise TrainingDataError for option values no dataset can work with."""
    if not isinstance(sampling_rate, (int, np.integer)) or sampling_rate <= 0:
        raise TrainingDataError(f"sampling_rate must be a positive integer (Hz), got {sampling_rate!r}.")
    if channels not in (1, 2):
        raise TrainingDataError(f"channels must be 1 (mono) or 2 (stereo), got {channels!r}.")
    if not isinstance(crop_seconds, (int, float)) or not math.isfinite(crop_seconds) or crop_seconds <= 0:
        raise TrainingDataError(f"crop_seconds must be a positive number, got {crop_seconds!r}.")
    if round(crop_seconds * sampling_rate) < 1:
        raise TrainingDataError(f"crop_seconds={crop_seconds} is shorter than one sample at {sampling_rate} Hz.")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TrainingDataError(f"seed must be an integer >= 0, got {seed!r}.")
    try:
        low, high = (float(g) for g in gain_db)
    except (TypeError, ValueError) as err:
        raise TrainingDataError(f"gain_db must be (low_db, high_db), got {gain_db!r}.") from err
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise TrainingDataError(f"gain_db must be finite with low <= high, got {gain_db!r}.")
    if not math.isfinite(target_rms_db) or target_rms_db > 0:
        raise TrainingDataError(f"target_rms_db must be a finite level <= 0 dBFS, got {target_rms_db!r}.")
    if short not in ("pad", "skip"):
        raise TrainingDataError(f"short must be 'pad' or 'skip', got {short!r}.")
    if channel_policy not in ("convert", "strict"):
        raise TrainingDataError(f"channel_policy must be 'convert' or 'strict', got {channel_policy!r}.")


def build_dataset(
    data,
    sampling_rate: int,
    channels: int,
    *,
    labels: str | None = "auto",
    audio_column: str = "audio",
    label_column: str | None = "label",
    **options: Any,
) -> AudioCropDataset:
    """An `AudioCropDataset` from a folder, a JSONL manifest, an audio file, a list of files or a
    `datasets.Dataset`. `labels` applies to folders (see `index_folder`); `options` go to `AudioCropDataset`."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            return AudioCropDataset(index_folder(path, labels), sampling_rate, channels, **options)
        if path.suffix.lower() == ".jsonl":
            return AudioCropDataset(index_manifest(path), sampling_rate, channels, **options)
        if path.is_file():
            return AudioCropDataset(index_files([path]), sampling_rate, channels, **options)
        raise TrainingDataError(f"{path}: no such file or folder.")
    if isinstance(data, (list, tuple)):
        return AudioCropDataset(index_files(data), sampling_rate, channels, **options)
    import datasets

    if isinstance(data, (datasets.Dataset, datasets.IterableDataset)):
        data, sources = index_hf_dataset(data, audio_column, label_column)
        return AudioCropDataset(
            sources, sampling_rate, channels, hf_dataset=data, audio_column=audio_column, **options
        )
    raise TrainingDataError(
        f"Training data must be a folder, a .jsonl manifest, audio file(s) or a datasets.Dataset, "
        f"got {type(data).__name__}."
    )


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches of consecutive item indices: step `s` on rank `r` of `world_size` takes items
    `[(s * world_size + r) * B, ... + B)`. Starting at `start_step` resumes exactly; `num_steps=None` is endless."""

    def __init__(
        self, batch_size: int, start_step: int = 0, num_steps: int | None = None, rank: int = 0, world_size: int = 1
    ) -> None:
        if batch_size <= 0 or start_step < 0 or (num_steps is not None and num_steps < 0):
            raise TrainingDataError(
                f"Need batch_size > 0, start_step >= 0, num_steps >= 0; got {batch_size}, {start_step}, {num_steps}."
            )
        if not 0 <= rank < world_size:
            raise TrainingDataError(f"rank must be in [0, world_size), got rank {rank}, world_size {world_size}.")
        self.batch_size, self.start_step, self.num_steps = batch_size, start_step, num_steps
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while self.num_steps is None or step < self.start_step + self.num_steps:
            first = (step * self.world_size + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))
            step += 1

    def __len__(self) -> int:
        if self.num_steps is None:
            raise TypeError("An endless StepBatchSampler has no length; give num_steps.")
        return self.num_steps


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode and resample; one thread each keeps them from oversubscribing


def build_dataloader(
    dataset: AudioCropDataset,
    batch_size: int,
    num_workers: int = 0,
    start_step: int = 0,
    num_steps: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader of float32 `[B, C, T]` batches, step by step from `start_step` (see `StepBatchSampler`)."""
    if num_workers < 0:
        raise TrainingDataError(f"num_workers must be >= 0, got {num_workers}.")
    sampler = StepBatchSampler(batch_size, start_step, num_steps, rank, world_size)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if num_workers else None,
        persistent_workers=num_workers > 0,
    )
