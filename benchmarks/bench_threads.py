"""One thread against torch's default on the many-small-ops paths: frame streaming and the `.ecdc` LM.

Streams ``--seconds`` of audio through the full-size 24 kHz model (random weights) in ``--block-ms`` blocks, encoder
then decoder, and (with ``--lm``) runs the 24 kHz LM over the same number of frames, alternately with one torch
thread and with torch's default count (the physical cores), ``--repeats`` times each, in one process. Prints wall
and CPU seconds per run (median, min, max) and the ratios default / one thread: on a machine shared with other
processes the default's wall time varies widely from run to run, so the spread matters as much as the median.
The thread count is passed explicitly (``num_threads=``), so the environment does not change what is measured.

Usage::

    python benchmarks/bench_threads.py --seconds 3 --block-ms 20 --repeats 4 --lm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from encodec_hf import EncodecConfig, EncodecModel  # noqa: E402
from encodec_hf.ecdc.lm import EncodecLM, EncodecLMConfig  # noqa: E402
from encodec_hf.streaming import StreamingDecoder, StreamingEncoder  # noqa: E402
from encodec_hf.threads import torch_default_threads  # noqa: E402


def _stream(model, audio: torch.Tensor, block: int, threads: int) -> None:
    enc = StreamingEncoder(model, bandwidth=6.0, num_threads=threads)
    dec = StreamingDecoder(model, num_threads=threads)
    for start in range(0, audio.shape[-1], block):
        dec.push(enc.push(audio[..., start : start + block]))
    dec.push(enc.flush())
    dec.flush()


def _lm(lm: EncodecLM, codes: torch.Tensor, threads: int) -> None:
    """Decoding order: one frame at a time, as `decompress` runs the LM."""
    lm.num_threads = threads
    state = lm.init_state()
    lm.step_cdfs(None, state, codes.shape[0])
    for t in range(1, codes.shape[1]):
        lm.step_cdfs(codes[:, t - 1], state)


def _timed(fn, *args) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="audio streamed per run")
    parser.add_argument("--block-ms", type=float, default=20.0, help="block pushed per call")
    parser.add_argument("--repeats", type=int, default=4, help="runs per thread count (alternating)")
    parser.add_argument("--threads", type=int, default=None, help="the count compared with 1 (default: torch's)")
    parser.add_argument("--lm", action="store_true", help="also time the LM over the same frames")
    parser.add_argument("--output", default="bench_out/bench_threads.json")
    args = parser.parse_args()

    many = args.threads or torch_default_threads()
    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig.encodec_24khz()).eval()
    sr = model.config.sampling_rate
    audio = 0.1 * torch.randn(1, 1, int(args.seconds * sr), generator=torch.Generator().manual_seed(0))
    block = max(1, int(args.block_ms * sr / 1000))
    cases = {"stream": lambda n: _timed(_stream, model, audio, block, n)}
    if args.lm:
        frames = int(args.seconds * model.config.frame_rate)
        lm = EncodecLM(EncodecLMConfig.for_codec(8, model.config.frame_rate)).eval()  # 8 codebooks = 6 kbps
        codes = torch.randint(1024, (8, frames), generator=torch.Generator().manual_seed(1))
        cases["lm"] = lambda n: _timed(_lm, lm, codes, n)

    for name, case in cases.items():  # warm-up: plans, allocator, LM kernel measurements for both counts
        case(1)
        case(many)
        print(f"  {name}: warmed up", flush=True)
    results: dict = {}
    for name, case in cases.items():
        runs: dict[int, dict[str, list[float]]] = {1: {"wall": [], "cpu": []}, many: {"wall": [], "cpu": []}}
        for _ in range(args.repeats):
            for n in (1, many):
                wall, cpu = case(n)
                runs[n]["wall"].append(wall)
                runs[n]["cpu"].append(cpu)
                print(f"  {name}, {n} thread(s): {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
        results[name] = {str(n): {kind: _summary(values) for kind, values in r.items()} for n, r in runs.items()}
        one, other = results[name]["1"], results[name][str(many)]
        results[name]["ratio_default_over_one"] = {
            kind: other[kind]["median"] / one[kind]["median"] for kind in ("wall", "cpu")
        }

    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_default_threads": torch_default_threads(),
        "load_average_start": os.getloadavg()[0],
        "torch": torch.__version__,
    }
    print(
        f"{args.seconds:g} s of 24 kHz audio in {args.block_ms:g} ms blocks, {args.repeats} alternating runs per "
        f"count; torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print("| case | threads | wall s median (min-max) | CPU s median (min-max) |")
    print("|---|---|---|---|")
    for name in cases:
        for n in (1, many):
            r = results[name][str(n)]
            w, c = r["wall"], r["cpu"]
            print(
                f"| {name} | {n} | {w['median']:.2f} ({w['min']:.2f}-{w['max']:.2f}) "
                f"| {c['median']:.2f} ({c['min']:.2f}-{c['max']:.2f}) |"
            )
    for name in cases:
        ratio = results[name]["ratio_default_over_one"]
        print(f"{name}: {many} threads / 1 thread = {ratio['wall']:.2f}x wall, {ratio['cpu']:.2f}x CPU (medians)")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"args": vars(args), "machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
