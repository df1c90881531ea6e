"""Clips to evaluate: audio files, folders of them, or a `datasets` dataset, cut to a length limit.

Bad inputs do not stop the run: each unreadable file or row becomes a `Problem` with a message naming it,
and the remaining clips are evaluated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".w64")


@dataclass
class Clip:
    """One clip: `audio` float32 `[C, T]` at `sampling_rate`, `seconds` of it kept out of `original_seconds`."""

    name: str
    audio: np.ndarray
    sampling_rate: int
    original_seconds: float

    @property
    def seconds(self) -> float:
        return self.audio.shape[1] / self.sampling_rate

    @property
    def truncated(self) -> bool:
        return self.seconds < self.original_seconds - 1e-9


@dataclass(frozen=True)
class Problem:
    """An input (or a metric on one clip) that could not be evaluated, and why."""

    clip: str
    message: str
    condition: str | None = None
    metric: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _cut(name: str, audio: np.ndarray, rate: int, max_seconds: float | None) -> Clip:
    original = audio.shape[1] / rate
    if max_seconds is not None and original > max_seconds:
        audio = audio[:, : int(round(max_seconds * rate))]
    return Clip(name, np.ascontiguousarray(audio, dtype=np.float32), int(rate), original)


def _expand(source: str | os.PathLike) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    return [path]


def load_files(sources: list[str | os.PathLike], max_seconds: float | None = None) -> tuple[list[Clip], list[Problem]]:
    """Read audio files and every audio file under folders (sorted); unreadable ones become problems."""
    from ..audio_io import load_audio

    clips, problems = [], []
    for source in sources:
        paths = _expand(source)
        if Path(source).is_dir() and not paths:
            problems.append(Problem(str(source), f"No audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder."))
        for path in paths:
            try:
                audio, rate = load_audio(path)
            except (FileNotFoundError, ValueError) as err:
                problems.append(Problem(str(path), f"Cannot read this file as audio, skipped: {err}"))
                continue
            if audio.shape[1] == 0:
                problems.append(Problem(str(path), "The file holds no samples, skipped."))
                continue
            clips.append(_cut(str(path), audio.numpy(), rate, max_seconds))
    return clips, problems


def load_dataset_clips(
    dataset,
    audio_column: str = "audio",
    split: str = "test",
    max_seconds: float | None = None,
    limit: int | None = None,
) -> tuple[list[Clip], list[Problem]]:
    """Clips from a `datasets.Dataset` (or a Hub id / `save_to_disk` folder / data file, loaded with `split`).

    Audio is decoded here with soundfile (`Audio(decode=False)`), so stereo stays stereo (datasets#8005).

    Raises:
        KeyError: `audio_column` is not a column of the dataset.
    """
    from datasets import Audio

    from ..integrations.datasets import decode_audio_value
    from ..integrations.encode_dataset import _load_source

    if isinstance(dataset, (str, os.PathLike)):
        dataset = _load_source(os.fspath(dataset), split, None, None)
    if audio_column not in dataset.column_names:
        raise KeyError(f"Column {audio_column!r} not in the dataset's columns {dataset.column_names}.")
    if isinstance(dataset.features[audio_column], Audio):
        dataset = dataset.cast_column(audio_column, Audio(decode=False))
    clips, problems = [], []
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in range(count):
        value = dataset[index][audio_column]
        path = value.get("path") if isinstance(value, dict) else None
        name = f"{index}:{os.path.basename(path)}" if path else f"row {index}"
        try:
            audio, rate = decode_audio_value(value)
        except ValueError as err:
            problems.append(Problem(name, f"Cannot decode this row's audio, skipped: {err}"))
            continue
        if audio.shape[-1] == 0:
            problems.append(Problem(name, "The row holds no samples, skipped."))
            continue
        clips.append(_cut(name, audio, rate, max_seconds))
    return clips, problems


__all__ = ["AUDIO_SUFFIXES", "Clip", "Problem", "load_dataset_clips", "load_files"]
