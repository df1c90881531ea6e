"""Writing an `EvaluationResult`: Markdown and CSV tables, the JSON document, PNG plots and an index.md.

Plots use matplotlib's Agg backend (no display needed): one PNG per metric against the measured bitrate (one
curve per model with / without the LM and one per Opus format, anchors as horizontal lines), and one
spectrogram PNG per bitrate for the first clip (reference above each decoded version).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .runner import HIGHER_IS_BETTER

METRIC_LABELS = {
    "si_snr": "SI-SNR (dB)",
    "mel_distance": "mel distance",
    "stft_distance": "MR-STFT distance",
    "visqol_audio": "ViSQOL audio",
    "visqol_speech": "ViSQOL speech",
    "stoi": "STOI",
    "pesq": "PESQ-WB",
}


def _fmt(stat: dict[str, Any] | None, digits: int = 2) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" ± {stat['ci95']:.{digits}f}" if stat.get("ci95") is not None else "")


def markdown_table(result) -> str:
    """The aggregated table: one line per condition, `mean ± 95% half-interval` over clips."""
    arrows = {name: "↑" if HIGHER_IS_BETTER[name] else "↓" for name in result.metrics}
    header = ["condition", "kbps", "file kbps", "clips"] + [f"{METRIC_LABELS[m]} {arrows[m]}" for m in result.metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in result.conditions:
        cells = [entry["condition"], _fmt(entry["kbps"]), _fmt(entry["file_kbps"]), str(entry["clips"])]
        cells += [_fmt(entry["metrics"][m]) for m in result.metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_notes(result) -> str:
    """Notes (cuts, resampling, LM) and problems (skipped inputs, metrics that could not score a clip)."""
    lines = [f"- {note}" for note in result.notes]
    lines += [
        "- problem: " + ": ".join(x for x in (p.clip, p.condition, p.metric) if x) + f": {p.message}"
        for p in result.problems
    ]
    return "\n".join(lines) + ("\n" if lines else "")


def write_csv(result, path: str | os.PathLike) -> None:
    """One line per condition: bitrates and each metric's mean and 95% half-interval."""
    fields = ["condition", "kind", "system", "sampling_rate", "channels", "bandwidth_kbps", "lm", "clips"]
    stats = ["kbps", "file_kbps"] + list(result.metrics)
    header = fields + [f"{s}_{part}" for s in stats for part in ("mean", "ci95")]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for entry in result.conditions:
            values = [entry[k] for k in fields]
            for s in stats:
                stat = entry[s] if s in ("kbps", "file_kbps") else entry["metrics"][s]
                values += [stat["mean"], stat["ci95"]]
            writer.writerow(["" if v is None else v for v in values])


def write_rows_csv(result, path: str | os.PathLike) -> None:
    """One line per clip and condition: measured bitrates, every metric, and why any is missing."""
    fields = ["clip", "condition", "kind", "system", "sampling_rate", "channels", "seconds", "bandwidth_kbps", "lm"]
    header = fields + ["kbps", "file_kbps"] + list(result.metrics) + ["errors", "notes"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in result.rows:
            values = [getattr(row, k) for k in fields + ["kbps", "file_kbps"]]
            values += [row.metrics.get(m) for m in result.metrics]
            values += ["; ".join(f"{k}: {v}" for k, v in row.errors.items()), "; ".join(row.notes)]
            writer.writerow(["" if v is None else v for v in values])


def write_json(result, path: str | os.PathLike) -> None:
    """Every number (schema in docs/evaluation.md); NaN / inf are written as null."""

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    with open(path, "w", encoding="utf-8") as f:
        json.dump(clean(result.to_dict()), f, indent=2, allow_nan=False)
        f.write("\n")


# ------------------------------------------------------------------------------------------------ plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curves(result) -> dict[str, list[dict]]:
    curves: dict[str, list[dict]] = {}
    for entry in result.conditions:
        if entry["kind"] == "encodec":
            label = entry["system"] + (" +LM" if entry["lm"] else "")
        elif entry["kind"] == "opus":
            label = f"Opus @ {entry['sampling_rate']} Hz"
        else:
            continue
        curves.setdefault(label, []).append(entry)
    return curves


def plot_metrics(result, directory: str | os.PathLike) -> list[Path]:
    """One PNG per metric: metric against measured kbps (log axis), 95% intervals as error bars."""
    plt = _pyplot()
    paths = []
    for name in result.metrics:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for label, entries in _curves(result).items():
            points = [
                (e["kbps"]["mean"], e["metrics"][name]["mean"], e["metrics"][name]["ci95"] or 0.0)
                for e in entries
                if e["kbps"]["mean"] is not None and e["metrics"][name]["mean"] is not None
            ]
            if not points:
                continue
            x, y, err = (np.array(v, dtype=float) for v in zip(*sorted(points), strict=True))
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
        anchors = [e for e in result.conditions if e["kind"] == "anchor"]
        for index, entry in enumerate(anchors):
            stat = entry["metrics"][name]
            if stat["mean"] is not None and math.isfinite(stat["mean"]):
                ax.axhline(stat["mean"], linestyle="--", linewidth=1, color="gray")
                where = (0.01 + 0.5 * (index % 2), stat["mean"])  # side by side when two anchors coincide
                ax.annotate(entry["condition"], where, xycoords=("axes fraction", "data"), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("measured bitrate (kbps)")
        ax.set_ylabel(
            METRIC_LABELS[name] + (" (higher is better)" if HIGHER_IS_BETTER[name] else " (lower is better)")
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(directory) / f"{name}_vs_bitrate.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def _log_spectrogram(audio: np.ndarray) -> np.ndarray:
    mono = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).mean(dim=0)
    spec = torch.stft(mono, 1024, 256, window=torch.hann_window(1024), return_complex=True).abs()
    return (20 * torch.log10(spec.clamp_min(1e-5))).numpy()


def plot_spectrograms(result, directory: str | os.PathLike) -> list[Path]:
    """For the first clip, one PNG per requested bitrate: the reference, then every condition at that bitrate."""
    plt = _pyplot()
    kept = [row for row in result.rows if row.audio is not None]
    references = {(r.sampling_rate, r.channels): r for r in kept if r.system == "reference (input)"}
    by_bitrate: dict[float, list] = {}
    for row in kept:
        if row.kind in ("encodec", "opus") and row.bandwidth_kbps is not None:
            by_bitrate.setdefault(row.bandwidth_kbps, []).append(row)
    paths = []
    for kbps, rows in sorted(by_bitrate.items()):
        panels = []
        for row in rows:
            reference = references.get((row.sampling_rate, row.channels))
            if reference is not None and ("reference", row.sampling_rate) not in [p[0] for p in panels]:
                panels.append((("reference", row.sampling_rate), f"reference @ {row.sampling_rate} Hz", reference))
            panels.append(((row.condition, row.sampling_rate), row.condition, row))
        fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.2 * len(panels)), squeeze=False)
        for ax, (_, title, row) in zip(axes[:, 0], panels, strict=True):
            spec = _log_spectrogram(row.audio)
            seconds = row.audio.shape[1] / row.sampling_rate
            ax.imshow(
                spec,
                origin="lower",
                aspect="auto",
                extent=(0, seconds, 0, row.sampling_rate / 2000),
                vmin=spec.max() - 90,
                vmax=spec.max(),
                cmap="magma",
            )
            ax.set_title(f"{title} ({row.clip})", fontsize=8)
            ax.set_ylabel("kHz")
        axes[-1, 0].set_xlabel("s")
        fig.tight_layout()
        path = Path(directory) / f"spectrogram_{kbps:g}kbps.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(result, directory: str | os.PathLike) -> Path:
    """Write table.md, results.csv, rows.csv, results.json, the PNGs and an index.md into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "table.md").write_text(markdown_table(result), encoding="utf-8")
    write_csv(result, directory / "results.csv")
    write_rows_csv(result, directory / "rows.csv")
    write_json(result, directory / "results.json")
    plots = plot_metrics(result, directory)
    spectrograms = plot_spectrograms(result, directory)
    clips = ", ".join(f"{c['name']} ({c['seconds']:.1f} s)" for c in result.clips)
    index = [
        "# Codec evaluation",
        "",
        f"Models: {', '.join(result.settings['models'])}. Content: {result.settings['content']}. "
        f"Clips: {clips}. Wall time {result.wall_s:.0f} s.",
        "",
        "`kbps` is measured: bits of codes per second (EnCodec), `.ecdc` bytes per second (+LM), Opus packet "
        "bytes per second; `file kbps` adds the container (`.ecdc` / Ogg). Values are mean ± 95% interval "
        "over clips (no interval for one clip).",
        "",
        markdown_table(result),
        "## Notes",
        "",
        markdown_notes(result),
        "## Files",
        "",
        "- [results.json](results.json) (every number), [results.csv](results.csv) (per condition), "
        "[rows.csv](rows.csv) (per clip), [table.md](table.md)",
    ]
    index += [f"- [{p.name}]({p.name})" for p in plots + spectrograms]
    (directory / "index.md").write_text("\n".join(index) + "\n", encoding="utf-8")
    return directory / "index.md"


__all__ = [
    "markdown_notes",
    "markdown_table",
    "plot_metrics",
    "plot_spectrograms",
    "write_csv",
    "write_json",
    "write_report",
    "write_rows_csv",
]
