"""LM entropy coding speed: encodec_hf against Meta's `encodec` 0.1.1, same process, same inputs.

Compresses and decompresses 10 s of audio at 6 kbps with the LM (`use_lm=True`) on CPU with both
implementations, checks that the `.ecdc` bytes are identical, and reports wall times, real-time factors and
ratios. Both sides use random weights (speed does not depend on the values) and the same torch thread
count. The codec model's encoder/decoder is identical work on both sides, so the LM + arithmetic-coding
stage is also reported alone: the time of `use_lm=True` minus that of `use_lm=False`.

    python benchmarks/bench_lm.py [--model encodec_24khz|encodec_48khz] [--seconds 10] [--repeat 1]

Requires the test-time reference (`pip install --no-deps encodec==0.1.1`); prints a table and writes JSON
to bench_out/bench_lm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "conversion")]

from reference_encodec import ConvertedPair, original_compress_module  # noqa: E402

import encodec_hf  # noqa: E402


def _timed(fn, repeat: int):
    """Best of `repeat` runs, in CPU seconds of this process (robust to other load on a shared machine: with
    one torch thread it is the work done) and in wall seconds."""
    best_cpu, best_wall, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        result = fn()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return (best_cpu, best_wall), result


def _load_clip(pair, seconds: float) -> torch.Tensor:
    sr, channels = pair.original.sample_rate, pair.original.channels
    path = Path(__file__).resolve().parents[1] / "tests" / "data" / f"test_{sr // 1000}k.wav"  # see its README
    if path.exists():
        from encodec_hf.audio_io import convert_audio, load_audio

        audio, file_sr = load_audio(path)
        audio = convert_audio(audio, file_sr, sr, channels)
        if audio.shape[1] >= seconds * sr:
            return audio[:, : int(seconds * sr)]
    return 0.1 * torch.randn(channels, int(seconds * sr), generator=torch.Generator().manual_seed(0))


def _floors(lm, num_codebooks: int, frames: int, repeat: int) -> dict[str, float]:
    """CPU seconds of the kernels a frame of decompression cannot avoid, over `frames` frames, in two depths.

    Decoding goes frame by frame (frame t's input is the code decoded at t - 1), and identical bytes need each
    kernel the probabilities depend on to get the original's shapes and values: per layer the single-row
    products (`F.linear` of one frame on the float32 weights: query, key/value, output, two feed-forward), the
    attention over the past window, GELU and two layer norms; then one output head per codebook, the softmax
    and the quantized CDFs. This replays exactly those calls on the LM's own weights, with nothing else (no
    state bookkeeping, no arithmetic decoding):

    - "products": the matrix-vector products alone, each weight matrix read just before its product (as our
      decoder does) or not, whichever is faster;
    - "kernels": every bit-defining kernel above, with the products read the faster way, in decoding order.
    """
    from encodec_hf.ecdc.arithmetic_coding import build_stable_quantized_cdf

    cfg = lm.config
    packed = lm._pack()
    layers = [(w_q, b_q, w_kv, b_kv, t) for w_q, b_q, w_kv, b_kv, _, t in packed["layers"]]
    heads = [(head.weight, head.bias) for head in lm.linears[:num_codebooks]]
    mats = [m for w_q, b_q, w_kv, b_kv, t in layers for m in ((w_q, b_q), (w_kv, b_kv), (t.out_w, t.out_b))]
    mats += [m for *_, t in layers for m in ((t.l1_w, t.l1_b), (t.l2_w, t.l2_b))] + heads
    inputs = {w.shape[1]: torch.randn(1, 1, w.shape[1]) for w, _ in mats}
    window = torch.randn(cfg.past_context + 1, cfg.dim)
    F = torch.nn.functional
    shape, heads_n, head_dim = (cfg.dim,), cfg.num_heads, cfg.dim // cfg.num_heads

    def products(prefetch: bool) -> None:
        for weight, bias in mats:
            if prefetch:
                weight.sum()
            F.linear(inputs[weight.shape[1]], weight, bias)

    def kernels(prefetch: bool, frame: int) -> None:
        x = inputs[cfg.dim]
        keys = min(frame + 2, cfg.past_context + 1)
        kv = window[:keys].as_strided((1, heads_n, keys, head_dim), (keys * cfg.dim, head_dim, cfg.dim, 1))
        for w_q, b_q, w_kv, b_kv, t in layers:
            if prefetch:
                w_q.sum(), w_kv.sum(), t.out_w.sum()
            q = F.linear(x, w_q, b_q).view(1, heads_n, 1, head_dim)
            F.linear(window[:4].unsqueeze(1), w_kv, b_kv)
            out = F.scaled_dot_product_attention(q, kv, kv, torch.zeros(1, 1, 1, keys))
            x = F.layer_norm(x + F.linear(out.reshape(1, 1, cfg.dim), t.out_w, t.out_b), shape, t.norm1_w, t.norm1_b)
            if prefetch:
                t.l1_w.sum(), t.l2_w.sum()
            hidden = F.gelu(F.linear(x, t.l1_w, t.l1_b))
            x = F.layer_norm(x + F.linear(hidden, t.l2_w, t.l2_b), shape, t.norm2_w, t.norm2_b)
        parts = []
        for weight, bias in heads:
            if prefetch:
                weight.sum()
            parts.append(F.linear(x, weight, bias))
        logits = torch.cat(parts, -1).view(1, num_codebooks, 1, cfg.codebook_size).permute(0, 3, 1, 2)
        probas = torch.softmax(logits, dim=1)[0, :, :, 0].t()
        build_stable_quantized_cdf(probas, check=False).numpy()

    best = {"products": float("inf"), "kernels": float("inf")}
    with torch.inference_mode():
        for prefetch in (False, True):
            for _ in range(repeat):
                start = time.process_time()
                for _ in range(frames):
                    products(prefetch)
                best["products"] = min(best["products"], time.process_time() - start)
                start = time.process_time()
                for frame in range(frames):
                    kernels(prefetch, frame)
                best["kernels"] = min(best["kernels"], time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="encodec_24khz", choices=("encodec_24khz", "encodec_48khz"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--bandwidth", type=float, default=6.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (Meta's benchmark.py uses 1)")
    parser.add_argument("--output", default=None, help="default: bench_out/bench_lm_<model>_<threads>t.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        pair = ConvertedPair(args.model, Path(tmp))
        original = original_compress_module()
        original.MODELS[args.model] = lambda: pair.original
        pair.original.set_target_bandwidth(args.bandwidth)
        x = _load_clip(pair, args.seconds)
        lm = encodec_hf.EncodecLM.from_pretrained(pair.folder)
        # Warm-up (first-call allocations, the one-off kernel measurement of EncodecLM) on 0.2 s.
        warm = x[:, : int(0.2 * pair.original.sample_rate)]
        encodec_hf.decompress(
            encodec_hf.compress(pair.model, warm, args.bandwidth, use_lm=True, lm=lm), pair.model, lm
        )
        original.decompress(original.compress(pair.original, warm, use_lm=True))

        rows = {}
        for use_lm in (False, True):
            t_oc, theirs = _timed(lambda u=use_lm: original.compress(pair.original, x, use_lm=u), args.repeat)
            t_hc, ours = _timed(
                lambda u=use_lm: encodec_hf.compress(pair.model, x, args.bandwidth, use_lm=u, lm=lm), args.repeat
            )
            if ours != theirs:
                raise SystemExit(f"use_lm={use_lm}: the .ecdc bytes differ from the original's")
            t_od, _ = _timed(lambda d=theirs: original.decompress(d), args.repeat)
            t_hd, _ = _timed(lambda d=theirs: encodec_hf.decompress(d, model=pair.model, lm=lm), args.repeat)
            if use_lm:
                num_codebooks = pair.model.config.num_quantizers_for_bandwidth(args.bandwidth)
                frames = -(-x.shape[-1] // pair.model.config.hop_length)
                floors = _floors(lm, num_codebooks, frames, args.repeat)
            rows[use_lm] = dict(
                bytes=len(ours),
                original_compress=t_oc,
                ours_compress=t_hc,
                original_decompress=t_od,
                ours_decompress=t_hd,
            )

    duration = args.seconds
    keys = ("original_compress", "ours_compress", "original_decompress", "ours_decompress")
    lm_only = {key: tuple(a - b for a, b in zip(rows[True][key], rows[False][key], strict=True)) for key in keys}
    report = dict(
        model=args.model,
        seconds=duration,
        bandwidth_kbps=args.bandwidth,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        cpu=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        load_average=os.getloadavg(),
        identical_bytes=True,
        times="(cpu_seconds, wall_seconds), best of repeat",
        without_lm=rows[False],
        with_lm=rows[True],
        lm_stage_only=lm_only,
        decompress_floors_cpu_s=floors,
    )
    print(
        f"{args.model}, {duration:g} s at {args.bandwidth:g} kbps, {torch.get_num_threads()} torch threads, "
        f"{os.cpu_count()} CPUs ({report['cpu']}), load average {report['load_average'][0]:.1f}"
    )
    print(f"bytes: {rows[False]['bytes']} without LM, {rows[True]['bytes']} with LM (random LM weights); identical")
    print(f"{'':30s}{'CPU s: original':>16s}{'ours':>8s}{'speed-up':>10s}{'wall s: original':>18s}{'ours':>8s}")
    for label, orig, ours in (
        ("compress, LM (end to end)", rows[True]["original_compress"], rows[True]["ours_compress"]),
        ("decompress, LM (end to end)", rows[True]["original_decompress"], rows[True]["ours_decompress"]),
        ("compress, LM stage only", lm_only["original_compress"], lm_only["ours_compress"]),
        ("decompress, LM stage only", lm_only["original_decompress"], lm_only["ours_decompress"]),
        ("compress, no LM", rows[False]["original_compress"], rows[False]["ours_compress"]),
        ("decompress, no LM", rows[False]["original_decompress"], rows[False]["ours_decompress"]),
    ):
        print(f"{label:30s}{orig[0]:15.2f}s{ours[0]:7.2f}s{orig[0] / ours[0]:9.1f}x{orig[1]:17.2f}s{ours[1]:7.2f}s")
    original = lm_only["original_decompress"][0]
    print(
        f"decompression floors, {frames} frames: the single-frame weight products alone take "
        f"{floors['products']:.2f} CPU s, all the kernels the probabilities depend on {floors['kernels']:.2f} CPU s; "
        f"so no bit-identical decoder on this machine can beat the original's LM stage by more than "
        f"{original / floors['products']:.1f}x, nor one calling torch's kernels one by one from Python by more than "
        f"{original / floors['kernels']:.1f}x"
    )
    output = Path(args.output or f"bench_out/bench_lm_{args.model}_{args.threads}t.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
