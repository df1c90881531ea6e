"""Peak memory (RSS) of long-file encoding and decoding: through ``encodec_hf.streaming`` (codes files) and, with
``--cli``, through the ``encodec-hf compress`` / ``decompress`` command (``.ecdc`` files).

For each model (full-size 24 kHz and 48 kHz configs, random weights) and each duration, this script

1. writes a synthetic test signal (a chirp plus noise, 16-bit WAV) block by block, never holding the whole signal;
2. runs ``encode_file`` (audio -> codes file) and ``decode_file`` (codes file -> audio) each in its own
   subprocess, and reads that subprocess's peak RSS with ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` from a
   small wrapper process whose only child is the worker;
3. prints a Markdown table (peak RSS, wall time, real-time factor) and writes it to ``--output`` as JSON.

A ``0 s`` row (model built, nothing encoded) gives the baseline of Python + torch + model.

With ``--cli`` the model (random weights, random codebooks) is saved with ``save_pretrained`` (``--lm``: with a
random full-size LM beside it) and each task is the command itself, ``python -m encodec_hf compress IN OUT.ecdc
--model DIR -b 6`` and ``decompress OUT.ecdc OUT.wav --model DIR``, in its own process; the baseline row is
``compress --help``'s import of the package plus loading the model (``decompress`` of a one-frame file).

Usage::

    python benchmarks/bench_memory.py --durations 60 600 3600 --models 24khz 48khz --output mem.json
    OMP_NUM_THREADS=1 python benchmarks/bench_memory.py --cli --durations 60 600 3600 --models 24khz
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")


# A narrow network with the same rates, strides (hop 320) and channels: ~1/60 of the compute, so hour-long runs
# finish on a small CPU and show that the streaming machinery itself (file blocks, stream state, codes writing)
# does not grow with the file's length.
TINY = dict(num_filters=4, hidden_size=16, codebook_size=64)


def _config(name: str):
    from encodec_hf import EncodecConfig

    if name == "24khz":
        return EncodecConfig.encodec_24khz()
    if name == "48khz":
        return EncodecConfig.encodec_48khz()
    if name == "24khz-tiny":
        return EncodecConfig.encodec_24khz(target_bandwidths=[1.8], **TINY)
    return EncodecConfig.encodec_48khz(target_bandwidths=[3.6], **TINY)


def _bandwidth(name: str) -> float:
    return 6.0 if name in ("24khz", "48khz") else _config(name).target_bandwidths[0]


def write_signal(path: str, name: str, seconds: float) -> None:
    """Writes ``seconds`` of a chirp plus noise at the model's rate, one second at a time."""
    import numpy as np
    import soundfile as sf

    config = _config(name)
    sr, channels = config.sampling_rate, config.audio_channels
    rng = np.random.default_rng(0)
    total = int(seconds * sr)
    with sf.SoundFile(path, "w", sr, channels, subtype="PCM_16") as f:
        for start in range(0, total, sr):
            n = min(sr, total - start)
            t = (start + np.arange(n)) / sr
            tone = 0.3 * np.sin(2 * np.pi * (200 + 50 * np.sin(2 * np.pi * t / 7)) * t)
            block = tone[:, None] + 0.05 * rng.standard_normal((n, channels))
            f.write(block.astype(np.float32))


def worker(task: str, name: str, src: str, dst: str) -> None:
    """Runs in its own process: builds the model (random weights, seed 0) and runs one task."""
    import torch

    from encodec_hf import EncodecModel
    from encodec_hf.streaming import decode_file, encode_file

    torch.manual_seed(0)
    model = EncodecModel(_config(name)).eval()
    start = time.perf_counter()
    if task == "encode":
        encode_file(model, src, dst, bandwidth=_bandwidth(name))
    elif task == "decode":
        decode_file(model, src, dst)
    print(json.dumps({"wall_s": time.perf_counter() - start}))


def save_cli_model(name: str, folder: str, with_lm: bool) -> None:
    """A random-weight model (codebooks drawn at random, as the tests do: a fresh model's are zero) saved with
    ``save_pretrained``, and with ``with_lm`` a random full-size LM beside it, for the command to load."""
    import torch

    from encodec_hf import EncodecModel
    from encodec_hf.ecdc import EncodecLM, EncodecLMConfig

    torch.manual_seed(0)
    config = _config(name)
    config.ecdc_model_name = "encodec_48khz" if name.startswith("48khz") else "encodec_24khz"  # tiny ones too
    model = EncodecModel(config).eval()
    with torch.no_grad():
        for layer in model.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.inited.fill_(1.0)
    model.save_pretrained(folder)
    if with_lm:
        EncodecLM(
            EncodecLMConfig.for_codec(config.num_quantizers, config.frame_rate, config.codebook_size)
        ).eval().save_pretrained(folder)


def cli_command(task: str, name: str, src: str, dst: str, folder: str, with_lm: bool) -> list[str]:
    """The ``encodec-hf`` command line of a task (``-f``: the output may exist from an earlier row)."""
    command = [sys.executable, "-m", "encodec_hf", task, src, dst, "--model", folder, "-f"]
    if task == "compress":
        command += ["-b", str(_bandwidth(name))] + (["--lm"] if with_lm else [])
    return command


def measure(args: list[str]) -> None:
    """Runs the worker (or, with ``cli ...``, the command) as this process's only child and reports its peak RSS
    (kB on Linux) and wall time."""
    if args[0] == "cli":
        start = time.perf_counter()
        proc = subprocess.run(json.loads(args[1]), capture_output=True, text=True)
        result = {"wall_s": time.perf_counter() - start, "summary": proc.stderr.strip().splitlines()[-1:]}
    else:
        proc = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True)
        result = json.loads(proc.stdout.strip().splitlines()[-1]) if not proc.returncode else {}
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(proc.returncode)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(result))


def run(task: str, name: str, src: str, dst: str, cli: tuple[str, bool] | None = None) -> dict:
    """Measures one task in a fresh process; ``cli = (model folder, with_lm)`` runs the command instead."""
    if cli is None:
        cmd = [sys.executable, __file__, "--measure", task, name, src, dst]
    else:
        cmd = [sys.executable, __file__, "--measure", "cli", json.dumps(cli_command(task, name, src, dst, *cli))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--durations", type=float, nargs="+", default=[60, 600, 3600], help="seconds of audio")
    models = ["24khz", "48khz", "24khz-tiny", "48khz-tiny"]
    parser.add_argument("--models", nargs="+", default=models[:2], choices=models)
    parser.add_argument("--output", default=None, help="JSON file to append results to")
    parser.add_argument("--tmpdir", default=None, help="where to write the test files (needs ~0.7 GB per hour)")
    parser.add_argument("--cli", action="store_true", help="measure `encodec-hf compress` / `decompress` (.ecdc)")
    parser.add_argument("--lm", action="store_true", help="with --cli: compress with the LM (a random full-size one)")
    parser.add_argument("--worker", nargs=4, metavar=("TASK", "MODEL", "SRC", "DST"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, SRC)
        worker(*args.worker)
        return
    if args.measure:
        sys.path.insert(0, SRC)
        measure(args.measure)
        return

    sys.path.insert(0, SRC)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        for name in args.models:
            cli = None
            if args.cli:
                folder = os.path.join(tmp, f"{name}_model")
                save_cli_model(name, folder, args.lm)
                cli = (folder, args.lm)
                # Baseline: a one-frame file through `compress` (imports, model loading, nothing to stream).
                one = os.path.join(tmp, "one.wav")
                subprocess.run([sys.executable, "-c", _WRITE_CMD, one, name, "0.01"], check=True, env=_env())
                base = run("compress", name, one, one + ".ecdc", cli)
            else:
                base = run("none", name, "-", "-")
            rows.append({"model": name, "seconds": 0, "task": "baseline (model only)", **base})
            print(json.dumps(rows[-1]), flush=True)
            for seconds in args.durations:
                stem = os.path.join(tmp, f"{name}_{seconds:g}")
                wav, out = f"{stem}.wav", f"{stem}.out.wav"
                codes = f"{stem}.ecdc" if args.cli else f"{stem}.ehfc"
                subprocess.run([sys.executable, "-c", _WRITE_CMD, wav, name, str(seconds)], check=True, env=_env())
                tasks = (
                    (("compress", wav, codes), ("decompress", codes, out))
                    if args.cli
                    else (
                        ("encode", wav, codes),
                        ("decode", codes, out),
                    )
                )
                for task, src, dst in tasks:
                    result = run(task, name, src, dst, cli)
                    row = {"model": name, "seconds": seconds, "task": task + (" --lm" if args.lm else ""), **result}
                    row["realtime_factor"] = seconds / result["wall_s"]
                    if task in ("encode", "compress"):
                        row["codes_file_mb"] = os.path.getsize(codes) / 2**20
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if args.output:
                        with open(args.output, "a") as f:
                            f.write(json.dumps(row) + "\n")
                for path in (wav, codes, out):
                    os.remove(path)
    print()
    print("| model | audio | task | peak RSS (MB) | wall time (s) | x real time |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        audio = _fmt_duration(r["seconds"])
        rtf = f"{r['realtime_factor']:.1f}" if "realtime_factor" in r else "-"
        print(f"| {r['model']} | {audio} | {r['task']} | {r['peak_rss_mb']:.0f} | {r['wall_s']:.0f} | {rtf} |")


def _fmt_duration(seconds: float) -> str:
    if seconds == 0:
        return "-"
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, HERE, os.environ.get("PYTHONPATH", "")])}


_WRITE_CMD = (
    "import sys; from bench_memory import write_signal; write_signal(sys.argv[1], sys.argv[2], float(sys.argv[3]))"
)

if __name__ == "__main__":
    main()
