"""Training speed: optimizer steps per second and seconds of audio per second, forward and backward.

Each case builds a :class:`~encodec_hf.training.trainer.Trainer` on synthetic tones written to a temporary folder
(never the held-out clips), runs warm-up steps (with every codebook, so they run all the k-means initialisations),
then times whole training steps: codec forward, losses, balancer backward (with the commitment loss), the
adversary's forward and backward when it updates, and both Adam steps. Steps alternate with and without the
adversary's update as the seeded draw (probability 2/3) decides, so the figure is the mean of a real run's mix;
the codebook count is drawn per step too. Durations are the trainer's own per-step timings (``time/steps_per_s``
in ``metrics.jsonl``); they include fetching the batch from the DataLoader (main process, ``num_workers=0``).

Usage::

    python benchmarks/bench_train.py                       # tiny, small and full-size 24 kHz, batch 8 x 1 s
    python benchmarks/bench_train.py --cases full_24khz --batch 64 --steps 3   # the paper's batch
    python benchmarks/bench_train.py --threads 2

Results are printed and written as JSON to ``bench_out/bench_train.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from conftest import TINY_FIELDS  # noqa: E402  (the tests' tiny size, one home)

from encodec_hf.training.config import TrainingConfig  # noqa: E402
from encodec_hf.training.trainer import Trainer  # noqa: E402

CASES = {
    # The tests' tiny model: hop 8 at 8 kHz (1000 frames/s, so its LSTM runs 1000 steps per second of audio), a
    # 2-scale adversary with 4 filters.
    "tiny": {
        "model": {"config": dict(TINY_FIELDS)},
        "discriminator": {"n_ffts": [128, 64], "filters": 4},
        "losses": {"mel_max_exponent": 8, "n_mels": 16},
        "rate": 8000,
    },
    # A small 24 kHz model (8 filters, latent 32, 256 codes, one LSTM layer): 75 frames/s like the full one.
    "small_24khz": {
        "model": {
            "preset": "24khz",
            "config": {"num_filters": 8, "hidden_size": 32, "codebook_size": 256, "num_lstm_layers": 1},
        },
        "discriminator": {"filters": 8},
        "rate": 24000,
    },
    # The paper's 24 kHz model and recipe (5-scale MS-STFT adversary, mel windows 2^5..2^11).
    "full_24khz": {"model": {"preset": "24khz"}, "rate": 24000},
}


def write_tones(folder: Path, rate: int, count: int = 8, seconds: float = 3.0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(rate * seconds)) / rate
    for i in range(count):
        x = 0.3 * np.sin(2 * np.pi * (110 * (i + 1)) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(folder / f"tone{i}.wav", x.astype(np.float32), rate)


def bench_case(name: str, batch: int, crop: float, steps: int, warmup: int, workdir: Path) -> dict:
    case = {k: v for k, v in CASES[name].items() if k != "rate"}
    data = workdir / f"data_{name}"
    write_tones(data, CASES[name]["rate"])
    values = {
        **case,
        "data": {"train": str(data), "crop_seconds": crop, "valid_items": 1},
        "run": {
            "output_dir": str(workdir / f"run_{name}"),
            "steps": warmup + steps,
            "batch_size": batch,
            "progress": False,
            "save_every": 10**9,
            "valid_every": 10**9,
            "resume": False,
        },
    }
    trainer = Trainer(TrainingConfig.from_dict(values))
    trainer.save = lambda: None  # not timing checkpoint writes
    # Warm-up steps use every codebook, so that no timed step runs a k-means initialisation.
    drawn = trainer._decisions
    trainer._decisions = lambda step: (
        (trainer.model.config.num_quantizers, drawn(step)[1]) if step < warmup else drawn(step)
    )
    trainer.train()
    lines = (Path(values["run"]["output_dir"]) / "metrics.jsonl").read_text().splitlines()
    timed = [m for m in map(json.loads, lines) if "time/steps_per_s" in m][warmup:]
    durations = [1 / m["time/steps_per_s"] for m in timed]
    updated = [bool(m["discriminator_updated"]) for m in timed]
    mean = statistics.fmean(durations)
    params = sum(p.numel() for p in trainer.model.parameters())
    disc_params = sum(p.numel() for p in trainer.discriminator.parameters())
    return {
        "case": name,
        "batch": batch,
        "crop_seconds": crop,
        "steps_timed": steps,
        "codec_parameters": params,
        "discriminator_parameters": disc_params,
        "seconds_per_step": mean,
        "steps_per_s": 1 / mean,
        "audio_s_per_s": batch * crop / mean,
        "steps_with_adversary_update": sum(updated),
        "seconds_per_step_all": durations,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--batch", type=int, default=8, help="crops per step (the paper: 64)")
    parser.add_argument("--crop", type=float, default=1.0, help="crop length in seconds")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", type=Path, default=ROOT / "bench_out" / "bench_train.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            result = bench_case(name, args.batch, args.crop, args.steps, args.warmup, Path(tmp))
            results.append(result)
            print(
                f"{name:>11}: batch {args.batch} x {args.crop:g} s  {result['seconds_per_step']:.3f} s/step  "
                f"{result['steps_per_s']:.3f} steps/s  {result['audio_s_per_s']:.2f} audio s/s  "
                f"({result['steps_with_adversary_update']}/{args.steps} steps updated the adversary)",
                flush=True,
            )
    report = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "threads": args.threads,
            "device": "cpu",
            "load_average_1_5_15": list(os.getloadavg()),  # the machine is shared: other jobs slow these figures
        },
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
