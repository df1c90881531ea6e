"""The evaluation loop: every clip through every model bandwidth (with and without the LM), Opus and anchors.

Work is split into tasks of one clip and one system (a model, or the baselines at one audio format); tasks
run in this process (`workers=1`) or in spawned worker processes, each loading a model once. Every number
is a `Row` (one clip, one condition); `aggregate` turns them into means and 95% intervals per condition.

The reference of a model's rows is the clip converted to the model's rate and channels
(`encodec_hf.audio_io.convert_audio`); Opus and the anchors are computed on that same reference, so every
row of one format compares like with like.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import MetricInputError, OpusUnavailableError
from . import metrics as M
from .inputs import Clip
from .opus import opus_round_trip

DEFAULT_OPUS_KBPS = (6.0, 12.0, 24.0)
LOWPASS_HZ = 3500
CONTENTS = ("music", "speech")
LM_CHOICES = ("auto", "off", "only")
SPECTROGRAM_SECONDS = 10.0  # decoded audio kept (first clip only) for the spectrogram plots


def metric_names(content: str) -> list[str]:
    """The metrics computed for `content` ("music": general audio; "speech": adds STOI and PESQ if installed)."""
    names = ["si_snr", "mel_distance", "stft_distance"]
    if content == "speech":
        return names + ["visqol_speech", "stoi"] + (["pesq"] if M.pesq_available() else [])
    return names + ["visqol_audio"]


HIGHER_IS_BETTER = {
    "si_snr": True,
    "mel_distance": False,
    "stft_distance": False,
    "visqol_audio": True,
    "visqol_speech": True,
    "stoi": True,
    "pesq": True,
}


def compute_metrics(
    reference: np.ndarray, decoded: np.ndarray, sampling_rate: int, names: Iterable[str]
) -> tuple[dict[str, float], dict[str, str]]:
    """Each metric of `names` on `[C, T]` arrays; a metric that cannot score the clip gives a message instead."""
    ref, dec = torch.from_numpy(reference), torch.from_numpy(decoded)
    functions: dict[str, Callable[[], float]] = {
        "si_snr": lambda: float(M.si_snr(dec, ref)),
        "mel_distance": lambda: float(M.mel_distance(dec, ref, sampling_rate)),
        "stft_distance": lambda: float(M.stft_distance(dec, ref)),
        "visqol_audio": lambda: M.visqol(dec, ref, sampling_rate, mode="audio"),
        "visqol_speech": lambda: M.visqol(dec, ref, sampling_rate, mode="speech"),
        "stoi": lambda: M.stoi(dec, ref, sampling_rate),
        "pesq": lambda: M.pesq(dec, ref, sampling_rate),
    }
    values, errors = {}, {}
    for name in names:
        try:
            values[name] = functions[name]()
        except (MetricInputError, ImportError) as err:
            errors[name] = str(err)
    return values, errors


@dataclass
class Row:
    """One clip under one condition: measured bitrates and metric values (plus why any metric is missing)."""

    clip: str
    condition: str
    kind: str  # "encodec", "opus" or "anchor"
    system: str  # model name, "opus" or the anchor's name
    sampling_rate: int
    channels: int
    seconds: float
    bandwidth_kbps: float | None = None  # the model's nominal bandwidth, or the bitrate asked of Opus
    lm: bool = False
    kbps: float | None = None  # measured: bits of codes, LM-coded .ecdc bytes, or Opus packets, per second
    file_kbps: float | None = None  # measured whole file (.ecdc with the LM, Ogg Opus), per second
    metrics: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    audio: np.ndarray | None = field(default=None, repr=False)  # decoded [C, T], first clip only (plots)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("audio")
        return data


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: where from, its display name, bandwidths, LM use and audio format."""

    source: str
    name: str
    bandwidths: tuple[float, ...]
    lm_modes: tuple[bool, ...]
    sampling_rate: int
    channels: int


# ------------------------------------------------------------------------------------------- workers
_MODELS: dict[str, Any] = {}
_LMS: dict[str, Any] = {}
_DEVICE = "cpu"


def _init_worker(device: str, threads: int | None) -> None:
    global _DEVICE
    _DEVICE = device
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar for the whole run, not one per model load
    if threads:
        torch.set_num_threads(threads)


def _model(source: str):
    if source not in _MODELS:
        from ..integrations.hub import load_model

        _MODELS[source] = load_model(source, _DEVICE)
    return _MODELS[source]


def _lm(source: str):
    if source not in _LMS:
        from .. import EncodecLM

        _LMS[source] = EncodecLM.from_pretrained(source)  # on CPU: LM files must decode on any machine
    return _LMS[source]


def has_lm(source: str) -> bool:
    """Whether `source` (a model folder or Hub id) has entropy-coding LM weights."""
    from .. import EncodecLM

    if os.path.isdir(source):
        return os.path.isfile(os.path.join(source, "lm.safetensors"))
    try:
        EncodecLM.from_pretrained(source)
    except (OSError, ValueError):
        return False
    return True


def _reference(clip: Clip, sampling_rate: int, channels: int) -> np.ndarray:
    from ..audio_io import convert_audio

    audio = convert_audio(torch.from_numpy(clip.audio), clip.sampling_rate, sampling_rate, channels)
    return np.ascontiguousarray(audio.numpy(), dtype=np.float32)


def _keep_audio(audio: np.ndarray, sampling_rate: int, keep: bool) -> np.ndarray | None:
    return np.ascontiguousarray(audio[:, : int(SPECTROGRAM_SECONDS * sampling_rate)]) if keep else None


@torch.inference_mode()
def _run_model(task: dict) -> list[Row]:
    spec: ModelSpec = task["spec"]
    clip: Clip = task["clip"]
    model = _model(spec.source)
    config = model.config
    reference = _reference(clip, spec.sampling_rate, spec.channels)
    seconds = reference.shape[1] / spec.sampling_rate
    x = torch.from_numpy(reference)[None].to(next(model.parameters()).device)
    rows = []
    for bandwidth in spec.bandwidths:
        encoded = model.encode(x, bandwidth=bandwidth)
        codes = encoded.audio_codes  # [chunks, 1, K, F]
        frames = codes.shape[0] * codes.shape[-1] - (encoded.last_frame_pad_length or 0)
        codes_bits = frames * codes.shape[2] * config.codebook_nbits
        decoded = model.decode(
            codes,
            encoded.audio_scales,
            last_frame_pad_length=encoded.last_frame_pad_length,
            audio_length=encoded.audio_length,
        ).audio_values[0]
        decoded = decoded.float().cpu().numpy()
        values, errors = compute_metrics(reference, decoded, spec.sampling_rate, task["metrics"])
        base = dict(
            clip=clip.name,
            kind="encodec",
            system=spec.name,
            sampling_rate=spec.sampling_rate,
            channels=spec.channels,
            seconds=seconds,
            bandwidth_kbps=bandwidth,
        )
        if False in spec.lm_modes:
            rows.append(
                Row(
                    condition=f"{spec.name} {bandwidth:g} kbps",
                    kbps=codes_bits / seconds / 1000,
                    metrics=values,
                    errors=errors,
                    audio=_keep_audio(decoded, spec.sampling_rate, task["keep_audio"]),
                    **base,
                )
            )
        if True in spec.lm_modes:
            rows.append(_lm_row(spec, reference, decoded, bandwidth, values, errors, task, base))
    return rows


def _lm_row(spec, reference, decoded, bandwidth, values, errors, task, base) -> Row:
    """Compress with the LM to real `.ecdc` bytes and decode them; the metrics are those of that audio."""
    from .. import compress, decompress

    condition = f"{spec.name} {bandwidth:g} kbps +LM"
    model = _model(spec.source)
    seconds = base["seconds"]
    try:
        data = compress(model, torch.from_numpy(reference), bandwidth=bandwidth, use_lm=True, lm=_lm(spec.source))
        lm_audio, _ = decompress(data, model=model, lm=_lm(spec.source))
    except ValueError as err:  # e.g. a model the .ecdc format has no name for
        return Row(condition=condition, lm=True, errors={"ecdc": f"Cannot write an .ecdc file: {err}"}, **base)
    lm_audio = lm_audio.float().cpu().numpy()
    notes = []
    peak = float(np.abs(decoded).max()) if decoded.size else 0.0
    if lm_audio.shape == decoded.shape and float(np.abs(lm_audio - decoded).max()) <= 1e-5 * peak:
        notes.append("LM coding is lossless here: the decoded audio equals the codec's within 1e-5 of its peak")
    else:
        values, errors = compute_metrics(reference, lm_audio, spec.sampling_rate, task["metrics"])
    kbps = len(data) * 8 / seconds / 1000
    return Row(
        condition=condition,
        lm=True,
        kbps=kbps,
        file_kbps=kbps,
        metrics=values,
        errors=errors,
        notes=notes,
        audio=_keep_audio(lm_audio, spec.sampling_rate, task["keep_audio"]),
        **base,
    )


def lowpass(audio: np.ndarray, sampling_rate: int, cutoff_hz: float = LOWPASS_HZ) -> np.ndarray:
    """The low anchor: `audio` `[C, T]` band-limited to ~`cutoff_hz` (resampled to 2 x cutoff and back)."""
    from ..audio_io import resample

    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    y = resample(resample(x, sampling_rate, int(2 * cutoff_hz)), int(2 * cutoff_hz), sampling_rate)
    y = y[..., : x.shape[-1]]
    return np.ascontiguousarray(np.pad(y.numpy(), ((0, 0), (0, x.shape[-1] - y.shape[-1]))), dtype=np.float32)


def _run_baselines(task: dict) -> list[Row]:
    clip: Clip = task["clip"]
    rate, channels = task["format"]
    reference = _reference(clip, rate, channels)
    seconds = reference.shape[1] / rate
    base = dict(clip=clip.name, sampling_rate=rate, channels=channels, seconds=seconds)
    rows = []
    anchors = [("reference (input)", reference, rate * channels * 16 / 1000, "16-bit PCM of the input")]
    if rate > 2 * LOWPASS_HZ:
        anchors.append(("low-pass 3.5 kHz", lowpass(reference, rate), None, "the MUSHRA low anchor"))
    for name, audio, pcm_kbps, note in anchors:
        values, errors = compute_metrics(reference, audio, rate, task["metrics"])
        rows.append(
            Row(
                condition=f"{name} @ {rate} Hz",
                kind="anchor",
                system=name,
                kbps=pcm_kbps,
                metrics=values,
                errors=errors,
                notes=[note],
                audio=_keep_audio(audio, rate, task["keep_audio"]),
                **base,
            )
        )
    for kbps in task["opus_kbps"]:
        condition = f"Opus {kbps:g} kbps @ {rate} Hz"
        try:
            result = opus_round_trip(reference, rate, kbps)
        except (OpusUnavailableError, ValueError, RuntimeError) as err:
            rows.append(Row(condition=condition, kind="opus", system="opus", errors={"opus": str(err)}, **base))
            continue
        values, errors = compute_metrics(reference, result.audio, rate, task["metrics"])
        notes = []
        if abs(result.payload_kbps - kbps) > 0.1 * kbps:
            notes.append(f"libopus made {result.payload_kbps:.2f} kbps of packets when asked for {kbps:g}")
        rows.append(
            Row(
                condition=condition,
                kind="opus",
                system="opus",
                bandwidth_kbps=kbps,
                kbps=result.payload_kbps,
                file_kbps=result.file_kbps,
                metrics=values,
                errors=errors,
                notes=notes,
                audio=_keep_audio(result.audio, rate, task["keep_audio"]),
                **base,
            )
        )
    return rows


def _run_task(task: dict) -> tuple[list[Row], float]:
    start = time.perf_counter()
    rows = _run_model(task) if task["type"] == "model" else _run_baselines(task)
    return rows, time.perf_counter() - start


# ------------------------------------------------------------------------------------------ planning
def resolve_models(
    sources: list[str], bandwidths: list[float] | None = None, lm: str = "auto"
) -> tuple[list[ModelSpec], list[str]]:
    """Load each model's config once: its bandwidths (all, or those of `bandwidths` it has) and LM modes.

    Raises:
        ValueError: unknown `lm` choice; no bandwidth of `bandwidths` fits a model; `lm="only"` without LM.
    """
    from ..integrations.hub import load_config

    if lm not in LM_CHOICES:
        raise ValueError(f"lm must be one of {LM_CHOICES}, got {lm!r}.")
    specs, notes = [], []
    names = [os.path.basename(os.path.normpath(s)) or s for s in sources]
    for source, name in zip(sources, names, strict=True):
        if names.count(name) > 1:
            name = source
        config = load_config(source)  # a wrong path or no Hub fails here, before any clip is read
        chosen = tuple(
            config.target_bandwidths
            if bandwidths is None
            else [b for b in bandwidths if b in config.target_bandwidths]
        )
        if not chosen:
            raise ValueError(
                f"None of the bandwidths {bandwidths} is supported by {source}; it has {config.target_bandwidths}."
            )
        with_lm = lm != "off" and has_lm(source)
        if lm == "only" and not with_lm:
            raise ValueError(f"--lm only: {source} has no lm.safetensors.")
        if lm == "auto" and not with_lm:
            notes.append(f"{name}: no LM weights (lm.safetensors), so no +LM rows.")
        modes = (True,) if lm == "only" else ((False, True) if with_lm else (False,))
        specs.append(ModelSpec(source, name, chosen, modes, config.sampling_rate, config.audio_channels))
    return specs, notes


def plan_tasks(
    clips: list[Clip], specs: list[ModelSpec], content: str, opus_kbps: list[float] | None, baselines: bool
) -> list[dict]:
    """One task per (clip, model) and per (clip, audio format) for the baselines."""
    names = metric_names(content)
    tasks = []
    formats = sorted({(s.sampling_rate, s.channels) for s in specs})
    for index, clip in enumerate(clips):
        common = dict(clip=clip, metrics=names, keep_audio=index == 0)
        tasks += [dict(type="model", spec=spec, **common) for spec in specs]
        if baselines:
            for fmt in formats:
                if opus_kbps is None:
                    bands = {b for s in specs if (s.sampling_rate, s.channels) == fmt for b in s.bandwidths}
                    kbps = sorted(set(DEFAULT_OPUS_KBPS) | bands)
                else:
                    kbps = sorted(set(opus_kbps))
                tasks.append(dict(type="baselines", format=fmt, opus_kbps=kbps, **common))
    return tasks


def run_tasks(tasks: list[dict], workers: int = 1, device: str = "cpu", progress: bool = True) -> list[Row]:
    """Run `tasks` here (`workers=1`) or in `workers` spawned processes, with a tqdm progress bar."""
    import sys

    from tqdm.auto import tqdm

    rows: list[Row] = []
    bar = tqdm(total=len(tasks), desc="evaluate", unit="task", file=sys.stderr, disable=not progress)
    if workers <= 1:
        _init_worker(device, None)
        for task in tasks:
            rows += _run_task(task)[0]
            bar.update(1)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")  # fork would copy torch's threads and CUDA state
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(device, 1)) as pool:
            futures = [pool.submit(_run_task, task) for task in tasks]
            for future in as_completed(futures):
                rows += future.result()[0]
                bar.update(1)
    bar.close()
    order = {task["clip"].name: i for i, task in enumerate(tasks)}
    return sorted(rows, key=lambda r: (order[r.clip], r.condition))


# ------------------------------------------------------------------------------------------ aggregation
def mean_interval(values: list[float]) -> dict[str, float | int | None]:
    """Mean and Student-t 95% interval half-width over clips (None for a single clip)."""
    n = len(values)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0}
    mean = float(np.mean(values))
    if n == 1:
        return {"mean": mean, "ci95": None, "n": 1}
    from scipy.stats import t

    half = float(t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n))
    return {"mean": mean, "ci95": half, "n": n}


def aggregate(rows: list[Row], names: list[str]) -> list[dict[str, Any]]:
    """One entry per condition (in first-seen order): bitrates and metrics as mean / 95% interval / n."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.condition, []).append(row)
    out = []
    for condition, members in groups.items():
        first = members[0]
        entry: dict[str, Any] = {
            "condition": condition,
            "kind": first.kind,
            "system": first.system,
            "sampling_rate": first.sampling_rate,
            "channels": first.channels,
            "bandwidth_kbps": first.bandwidth_kbps,
            "lm": first.lm,
            "clips": len(members),
        }
        for key in ("kbps", "file_kbps"):
            entry[key] = mean_interval([r.__dict__[key] for r in members if r.__dict__[key] is not None])
        entry["metrics"] = {
            name: mean_interval([r.metrics[name] for r in members if name in r.metrics]) for name in names
        }
        out.append(entry)
    kinds = {"encodec": 0, "opus": 1, "anchor": 2}
    return sorted(out, key=lambda e: (kinds[e["kind"]], e["system"], e["lm"], e["bandwidth_kbps"] or 0))


__all__ = [
    "HIGHER_IS_BETTER",
    "ModelSpec",
    "Row",
    "aggregate",
    "compute_metrics",
    "lowpass",
    "mean_interval",
    "metric_names",
    "plan_tasks",
    "resolve_models",
    "run_tasks",
]
