"""Latency and per-frame CPU cost of frame-by-frame streaming with the 24 kHz model (random weights).

Reports:

* the algorithmic latency: one frame (``hop_length`` = 320 samples, 13.3 ms at 24 kHz): a frame's codes come out of
  ``push`` as soon as its last sample is in, and the decoder returns a frame's 320 samples as soon as its codes are in;
* the one-time start-up stall, measured: the samples pushed before the first codes (and frames pushed before the
  first audio), caused by the reflect left padding of the latent-rate convolutions;
* the measured compute time per frame when pushing one frame (320 samples / one frame of codes) at a time, as
  median and 90th percentile, next to the offline ``encode`` / ``decode`` cost per frame of the same audio (ratio).

Usage::

    python benchmarks/bench_streaming.py --frames 300 --bandwidth 6.0
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from encodec_hf import EncodecConfig, EncodecModel  # noqa: E402
from encodec_hf.streaming import StreamingDecoder, StreamingEncoder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="frames to time (after the start-up stall)")
    parser.add_argument("--bandwidth", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig.encodec_24khz()).eval()
    sr, hop = model.config.sampling_rate, model.config.hop_length
    total = args.frames + 20
    x = torch.randn(1, 1, total * hop) * 0.1

    enc = StreamingEncoder(model, bandwidth=args.bandwidth)
    first_codes_at, enc_times, codes = None, [], []
    enc_cpu = dec_cpu = 0.0
    for f in range(total):
        start, cpu = time.perf_counter(), time.process_time()
        out = enc.push(x[..., f * hop : (f + 1) * hop])
        elapsed = time.perf_counter() - start
        enc_cpu += (time.process_time() - cpu) if f >= 20 else 0.0
        if out.shape[-1] and first_codes_at is None:
            first_codes_at = (f + 1) * hop
        if f >= 20:  # past the stall and warm-up
            enc_times.append(elapsed)
        codes.append(out)
    codes = torch.cat([*codes, enc.flush()], -1)

    dec = StreamingDecoder(model)
    first_audio_at, dec_times = None, []
    for f in range(total):
        start, cpu = time.perf_counter(), time.process_time()
        out = dec.push(codes[..., f : f + 1])
        elapsed = time.perf_counter() - start
        dec_cpu += (time.process_time() - cpu) if f >= 20 else 0.0
        if out.shape[-1] and first_audio_at is None:
            first_audio_at = f + 1
        if f >= 20:
            dec_times.append(elapsed)

    with torch.no_grad():
        model.encode(x, bandwidth=args.bandwidth)  # warm-up
        start = time.perf_counter()
        offline = model.encode(x, bandwidth=args.bandwidth)
        offline_enc = (time.perf_counter() - start) / total
        start = time.perf_counter()
        model.decode(offline.audio_codes, offline.audio_scales)
        offline_dec = (time.perf_counter() - start) / total

    frame_ms = 1000 * hop / sr
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"algorithmic latency: 1 frame = {hop} samples = {frame_ms:.2f} ms at {sr} Hz")
    print(
        f"start-up stall: first codes after {first_codes_at} samples ({first_codes_at // hop} frames, "
        f"{1000 * first_codes_at / sr:.1f} ms); first audio after {first_audio_at} frames of codes"
    )
    print(
        "| step | median wall ms/frame | p90 wall ms/frame | mean CPU ms/frame | offline wall ms/frame "
        "| streaming / offline | real-time margin |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, times, cpu, off in (
        ("encode", enc_times, enc_cpu, offline_enc),
        ("decode", dec_times, dec_cpu, offline_dec),
    ):
        cpu_ms = 1000 * cpu / len(times)
        med = 1000 * statistics.median(times)
        p90 = 1000 * statistics.quantiles(times, n=10)[-1]
        ratio, margin = med / (1000 * off), frame_ms / med
        print(f"| {name} | {med:.2f} | {p90:.2f} | {cpu_ms:.2f} | {1000 * off:.2f} | {ratio:.1f}x | {margin:.1f}x |")


if __name__ == "__main__":
    main()
