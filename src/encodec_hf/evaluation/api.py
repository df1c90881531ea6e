"""`evaluate()`: the Python entry point of `encodec-hf evaluate`, and its `EvaluationResult`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from . import metrics as M
from .inputs import Clip, Problem, load_dataset_clips, load_files
from .runner import CONTENTS, Row, aggregate, metric_names, plan_tasks, resolve_models, run_tasks

SCHEMA_VERSION = 1
DEFAULT_MAX_SECONDS = 30.0


@dataclass
class EvaluationResult:
    """Everything one evaluation measured: `conditions` (aggregated), `rows` (per clip), notes and problems."""

    conditions: list[dict[str, Any]]
    rows: list[Row]
    metrics: list[str]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    clips: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (schema in docs/evaluation.md)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "settings": self.settings,
            "metrics": self.metrics,
            "clips": self.clips,
            "conditions": self.conditions,
            "rows": [row.to_dict() for row in self.rows],
            "notes": self.notes,
            "problems": [p.to_dict() for p in self.problems],
            "wall_s": self.wall_s,
        }


def _row_problems(rows: list[Row]) -> list[Problem]:
    return [
        Problem(row.clip, message, condition=row.condition, metric=metric)
        for row in rows
        for metric, message in row.errors.items()
    ]


def evaluate(
    models: list[str | os.PathLike],
    inputs: list[str | os.PathLike] | None = None,
    dataset=None,
    audio_column: str = "audio",
    split: str = "test",
    limit: int | None = None,
    bandwidths: list[float] | None = None,
    lm: str = "auto",
    content: str = "music",
    opus_kbps: list[float] | None = None,
    baselines: bool = True,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    device: str = "cpu",
    workers: int = 1,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate models (Hub ids or folders) at each bandwidth against Opus and anchors on the same clips.

    Args:
        models: one or more model folders / Hub ids.
        inputs: audio files and folders (searched recursively); and/or `dataset`: a `datasets.Dataset`,
            Hub id, `save_to_disk` folder or data file (`split`, `audio_column`, first `limit` rows).
        bandwidths: kbps to evaluate (default: every bandwidth of each model).
        lm: "auto" (rows with and without the LM where the model folder has `lm.safetensors`), "off", "only".
        content: "music" (ViSQOL audio mode at 48 kHz) or "speech" (ViSQOL speech mode at 16 kHz, STOI, PESQ).
        opus_kbps: Opus bitrates (default: 6, 12, 24 and the models' bandwidths); `baselines=False` skips Opus
            and the anchors.
        max_seconds: clips longer than this are cut to it (reported in `notes`); None keeps them whole.
        device: where the models run; workers: processes (spawned) over (clip, system) tasks.

    Raises:
        ValueError: no input given, no readable clip, unknown `content` / `lm`, bandwidths no model has.
    """
    start = time.perf_counter()
    if content not in CONTENTS:
        raise ValueError(f"content must be one of {CONTENTS}, got {content!r}.")
    if not models:
        raise ValueError("Give at least one model (a folder or Hub id).")
    if not inputs and dataset is None:
        raise ValueError("Give audio files / folders or a dataset to evaluate on.")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}.")
    specs, notes = resolve_models([os.fspath(m) for m in models], bandwidths, lm)  # fail fast, before any audio
    clips: list[Clip] = []
    problems: list[Problem] = []
    if inputs:
        found, bad = load_files(list(inputs), max_seconds)
        clips, problems = clips + found, problems + bad
    if dataset is not None:
        found, bad = load_dataset_clips(dataset, audio_column, split, max_seconds, limit)
        clips, problems = clips + found, problems + bad
    if not clips:
        details = "; ".join(f"{p.clip}: {p.message}" for p in problems)
        raise ValueError(f"No readable clip to evaluate. {details}")
    names = metric_names(content)
    if content == "speech" and "pesq" not in names:
        notes.append("PESQ skipped: the optional `pesq` package is not installed (pip install 'encodec-hf[pesq]').")
    notes += [
        f"{clip.name}: cut from {clip.original_seconds:.2f} s to {clip.seconds:.2f} s (max_seconds={max_seconds:g})."
        for clip in clips
        if clip.truncated
    ]
    formats = sorted({(s.sampling_rate, s.channels) for s in specs})
    notes += [
        M.resampling_note(name, rate)
        for name in names
        if name.startswith(("visqol", "pesq", "stoi"))
        for rate, _ in formats
    ]
    notes += [
        "References: each clip converted to the model's rate and channels "
        f"({', '.join(f'{r} Hz x {c}' for r, c in formats)}) with encodec_hf.audio_io.convert_audio; "
        "Opus and the anchors run on that same reference."
    ]
    tasks = plan_tasks(clips, specs, content, opus_kbps, baselines)
    rows = run_tasks(tasks, workers=workers, device=device, progress=progress)
    problems += _row_problems(rows)
    settings = dict(
        models=[s.source for s in specs],
        bandwidths={s.name: list(s.bandwidths) for s in specs},
        lm=lm,
        content=content,
        opus_kbps=opus_kbps,
        baselines=baselines,
        max_seconds=max_seconds,
        device=device,
        workers=workers,
    )
    clip_info = [
        dict(
            name=c.name,
            sampling_rate=c.sampling_rate,
            channels=int(c.audio.shape[0]),
            seconds=c.seconds,
            original_seconds=c.original_seconds,
            truncated=c.truncated,
        )
        for c in clips
    ]
    return EvaluationResult(
        conditions=aggregate(rows, names),
        rows=rows,
        metrics=names,
        settings=settings,
        notes=notes,
        problems=problems,
        clips=clip_info,
        wall_s=time.perf_counter() - start,
    )


__all__ = ["DEFAULT_MAX_SECONDS", "EvaluationResult", "evaluate"]
