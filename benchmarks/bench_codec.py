"""Side-by-side CPU benchmark of encodec_hf against transformers' EncodecModel.

Both models get the same random full-size weights (one ``save_pretrained`` folder loaded by each), the same
real audio (the ``tests/data`` clips tiled or cut to the wanted duration) and run in the same process,
alternating call by call, under ``torch.inference_mode`` with a warm-up and several repeats (median reported).

Usage::

    python benchmarks/bench_codec.py            # the full table (10 s / 60 s, batch 1 / 8, 24 kHz and 48 kHz)
    python benchmarks/bench_codec.py --quick    # 10 s only, for a fast check
    python benchmarks/bench_codec.py --layout reference  # encodec_hf on transformers' kernels (bit-identical)
    python benchmarks/bench_codec.py --dtype bfloat16  # encodec_hf's opt-in bf16 path (codes reported as agreement)
    python benchmarks/bench_codec.py --backend onnxruntime  # encoder/decoder exported to ONNX, run by onnxruntime

The table is printed and written as JSON to ``bench_out/bench_codec.json``.

"x realtime" is seconds of audio (all items of the batch) per second of wall time. "% fp32 limit" relates the
achieved FLOP rate to the fp32 matrix-product peak: the network costs 2.5 / 2.35 GFLOP (encode / decode) per
second of 24 kHz audio and 4.9 / 5.2 GFLOP per second of 48 kHz stereo (the figures of the performance issue),
and the peak is measured here with a large fp32 matmul (about 190 GFLOP/s on the 2-core AVX-512 machine the
issue used).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import transformers  # noqa: E402

from encodec_hf import EncodecConfig, EncodecModel  # noqa: E402

logger = logging.getLogger("bench_codec")

AUDIO_DIR = Path(os.environ.get("ENCODEC_BENCH_AUDIO", Path(__file__).resolve().parents[1] / "tests" / "data"))
# GFLOP per second of audio (encode, decode), from the performance issue.
GFLOP_PER_AUDIO_SECOND = {"24khz": (2.5, 2.35), "48khz": (4.9, 5.2)}
BANDWIDTH = 6.0


class PeakRSS:
    """Samples the process RSS in a background thread; ``peak_mb`` is the rise above the level at entry.

    torch allocates through its own CPU allocator (not visible to tracemalloc), so RSS is what tells the cost.
    The sampler runs while torch kernels hold no GIL, every millisecond.
    """

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.peak_mb = 0.0

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def __enter__(self) -> PeakRSS:
        self._base = self._rss()
        self._peak = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._rss())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._rss())
        self.peak_mb = (self._peak - self._base) / 2**20


def matmul_peak_gflops(seconds: float = 1.5) -> float:
    """fp32 GEMM rate of this machine with torch's current thread count (best of a few 2048^2 products)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9)
    return best


def make_models(name: str, workdir: Path) -> tuple[torch.nn.Module, EncodecModel]:
    """Random full-size weights saved once and loaded into both implementations."""
    config = getattr(EncodecConfig, f"encodec_{name}")()
    torch.manual_seed(0)
    model = EncodecModel(config)
    with torch.no_grad():
        for layer in model.quantizer.layers:  # random codebooks (transformers would initialise them to zero)
            layer.codebook.embed.normal_()
    folder = workdir / name
    model.save_pretrained(folder)
    ours = EncodecModel.from_pretrained(folder).eval()
    theirs = transformers.EncodecModel.from_pretrained(folder).eval()
    return theirs, ours


def load_clip(name: str, seconds: float, batch: int) -> torch.Tensor:
    """The real test clip tiled/cut to ``seconds``; items of a batch start at different offsets: `[B, C, T]`."""
    data, rate = sf.read(AUDIO_DIR / f"test_{name[:3]}.wav", dtype="float32", always_2d=True)
    audio = torch.from_numpy(data.T.copy())  # [C, N]
    length = int(seconds * rate)
    items = []
    for i in range(batch):
        shift = (i * rate // 3) % audio.shape[-1]
        rolled = torch.roll(audio, -shift, dims=-1)
        reps = -(-length // rolled.shape[-1])
        items.append(rolled.repeat(1, reps)[:, :length])
    return torch.stack(items)


def timed(fn) -> tuple[float, float, object]:
    """Wall time and process CPU time of one call, and its result.

    CPU time is reported next to wall time because it is far less disturbed by other processes competing for the
    cores (with several threads it also counts OpenMP spin-waiting, so it flatters neither side).
    """
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - t0, time.process_time() - c0, result


def peak_rss_mb(fn) -> tuple[float, object]:
    """Peak RSS rise (MB) during one call, and its result.

    The rise is how much the process grew, so 0 where earlier calls (other cases, the other implementation) already
    left that much memory with the allocator; `bench_memory.py` measures peaks in fresh processes. Kept out of the
    timed calls: the sampling thread wakes every millisecond, and on a 2-core machine it takes CPU from one of
    torch's two threads, which stalls every parallel region at its barrier (measured: 10-15% slower calls, more so
    for the implementation with more, shorter kernels).
    """
    with PeakRSS() as mem:
        result = fn()
    return mem.peak_mb, result


def decode_codes(model, enc):
    """``model.decode`` of an ``encode`` output (codes, scales and the last frame's padding)."""
    return model.decode(enc.audio_codes, enc.audio_scales, last_frame_pad_length=enc.last_frame_pad_length)


# oneDNN primitives that compute (everything else it runs is a reorder, i.e. a layout copy).
ONEDNN_COMPUTE_PRIMITIVES = ("convolution", "deconvolution", "rnn", "inner_product", "matmul")


@contextlib.contextmanager
def _stdout_fd_to(path: Path):
    """Redirect file descriptor 1 (where oneDNN's C code prints its verbose lines) to `path`."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(path, "wb") as sink:
            os.dup2(sink.fileno(), 1)
            try:
                yield
            finally:
                libc.fflush(None)  # C stdio buffers what oneDNN printed; push it to the file before switching back
                os.dup2(saved, 1)
    finally:
        os.close(saved)


def onednn_seconds(fn, workdir: Path) -> tuple[dict[str, float], object]:
    """Seconds spent inside each kind of oneDNN primitive during `fn()` (oneDNN's own verbose timings), and the
    call's result."""
    log = workdir / "onednn_verbose.log"
    with _stdout_fd_to(log), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        result = fn()
    seconds: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields[:5]:
            continue
        kind = fields[fields.index("exec") + 2]
        with contextlib.suppress(ValueError):
            seconds[kind] = seconds.get(kind, 0.0) + float(fields[-1]) / 1e3
    return seconds, result


# torch kernels whose bits the codes also depend on, on the reference layout (element-wise passes over every
# activation; GroupNorm's statistics are reductions whose order is the kernel's).
TORCH_BIT_DEFINING_OPS = ("aten::elu", "aten::elu_", "aten::native_group_norm")


def torch_op_seconds(fn, names: tuple[str, ...]) -> float:
    """Seconds spent in the torch operators `names` (their own time, as torch.profiler counts it) during `fn()`."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(event.self_cpu_time_total for event in prof.key_averages() if event.key in names) / 1e6


def kernel_floor(ours, audio: torch.Tensor, workdir: Path) -> dict | None:
    """The part of encodec_hf's encode and decode spent in oneDNN's compute primitives (bit-exact layout only).

    On the reference layout the codes are only identical because every convolution, transposed convolution and
    LSTM runs through the same oneDNN primitives as transformers' (other kernels sum in another order and move
    codes, see the README). Those primitives' own run time, measured by oneDNN and excluding its layout copies,
    is therefore a floor for any implementation with identical codes on this machine: transformers' time over it
    bounds the reachable speed-up. Two larger floors add the reorders around those primitives that torch's API
    imposes, then torch's ELU and GroupNorm kernels (timed by torch.profiler in one more call). Returns None on
    the time-major layout (its kernels are not the bit-defining ones) and where oneDNN reports nothing (a torch
    build without it).
    """
    if any(getattr(module, "time_major", False) for module in (ours.encoder, ours.decoder)):
        return None
    with torch.inference_mode():
        encode, enc = onednn_seconds(lambda: ours.encode(audio, bandwidth=BANDWIDTH), workdir)
        decode, _ = onednn_seconds(lambda: decode_codes(ours, enc), workdir)
        elementwise = {
            "encode": torch_op_seconds(lambda: ours.encode(audio, bandwidth=BANDWIDTH), TORCH_BIT_DEFINING_OPS),
            "decode": torch_op_seconds(lambda: decode_codes(ours, enc), TORCH_BIT_DEFINING_OPS),
        }
    floor = {}
    for stage, kinds in (("encode", encode), ("decode", decode)):
        floor[f"{stage}_floor_s"] = sum(kinds.get(kind, 0.0) for kind in ONEDNN_COMPUTE_PRIMITIVES)
        # Through torch's API those primitives only take plain tensors, so oneDNN reorders to and from its blocked
        # layout around each (torch has no ELU or GroupNorm on blocked tensors to stay there): a second floor.
        floor[f"{stage}_floor_with_reorders_s"] = floor[f"{stage}_floor_s"] + kinds.get("reorder", 0.0)
        floor[f"{stage}_floor_with_torch_ops_s"] = floor[f"{stage}_floor_with_reorders_s"] + elementwise[stage]
        floor[f"{stage}_onednn_s"] = kinds
    return floor if floor["encode_floor_s"] > 0 and floor["decode_floor_s"] > 0 else None


def run_case(theirs, ours, name: str, seconds: float, batch: int, repeats: int, workdir: Path) -> dict:
    audio = load_clip(name, seconds, batch)
    impls = {"transformers": theirs, "encodec_hf": ours}
    with torch.inference_mode():
        # Warm-up on a short input of the same batch size (allocator, oneDNN primitive caches, folded weights).
        warm = audio[..., : int(1.5 * theirs.config.sampling_rate)]
        for model in impls.values():
            enc = model.encode(warm, bandwidth=BANDWIDTH)
            decode_codes(model, enc)
        enc_t, dec_t, enc_c, dec_c, enc_mem, dec_mem, outputs = {}, {}, {}, {}, {}, {}, {}
        for key in impls:
            enc_t[key], dec_t[key], enc_c[key], dec_c[key] = [], [], [], []
        for key, model in impls.items():  # memory in a first, untimed, call each (before allocations are reused)
            enc_mem[key], enc = peak_rss_mb(lambda model=model: model.encode(audio, bandwidth=BANDWIDTH))
            dec_mem[key], _ = peak_rss_mb(lambda model=model, enc=enc: decode_codes(model, enc))
        for _ in range(repeats):  # alternate the implementations repeat by repeat
            for key, model in impls.items():
                t, c, enc = timed(lambda model=model: model.encode(audio, bandwidth=BANDWIDTH))
                enc_t[key].append(t)
                enc_c[key].append(c)
                t, c, dec = timed(lambda model=model, enc=enc: decode_codes(model, enc))
                dec_t[key].append(t)
                dec_c[key].append(c)
                outputs[key] = (enc.audio_codes, dec.audio_values)
    codes_a, codes_b = outputs["transformers"][0], outputs["encodec_hf"][0]
    codes_equal = torch.equal(codes_a, codes_b)
    codes_agree = (codes_a == codes_b).float().mean().item() if codes_a.shape == codes_b.shape else 0.0
    a, b = outputs["transformers"][1], outputs["encodec_hf"][1]
    audio_diff = (a - b.float()).abs().max().item() if a.shape == b.shape else float("nan")
    audio_seconds = seconds * batch
    enc_gflop, dec_gflop = GFLOP_PER_AUDIO_SECOND[name]
    row = {
        "model": name,
        "seconds": seconds,
        "batch": batch,
        "bandwidth": BANDWIDTH,
        "codes_identical": codes_equal,
        "codes_agree": codes_agree,
        "max_audio_diff": audio_diff,
    }
    for key in impls:
        e, d = statistics.median(enc_t[key]), statistics.median(dec_t[key])
        row[key] = {
            "encode_s": e,
            "decode_s": d,
            "encode_rtf": audio_seconds / e,
            "decode_rtf": audio_seconds / d,
            "encode_gflops": enc_gflop * audio_seconds / e,
            "decode_gflops": dec_gflop * audio_seconds / d,
            "encode_cpu_s": statistics.median(enc_c[key]),
            "decode_cpu_s": statistics.median(dec_c[key]),
            "encode_peak_mb": enc_mem[key],
            "decode_peak_mb": dec_mem[key],
        }
    row["encode_speedup"] = row["transformers"]["encode_s"] / row["encodec_hf"]["encode_s"]
    row["decode_speedup"] = row["transformers"]["decode_s"] / row["encodec_hf"]["decode_s"]
    row["encode_speedup_cpu"] = row["transformers"]["encode_cpu_s"] / row["encodec_hf"]["encode_cpu_s"]
    row["decode_speedup_cpu"] = row["transformers"]["decode_cpu_s"] / row["encodec_hf"]["decode_cpu_s"]
    floor = kernel_floor(ours, audio, workdir)
    if floor is not None:
        for stage in ("encode", "decode"):
            spent = row["transformers"][f"{stage}_s"]
            floor[f"{stage}_max_speedup"] = spent / floor[f"{stage}_floor_s"]
            floor[f"{stage}_max_speedup_with_reorders"] = spent / floor[f"{stage}_floor_with_reorders_s"]
            floor[f"{stage}_max_speedup_with_torch_ops"] = spent / floor[f"{stage}_floor_with_torch_ops_s"]
        row["kernel_floor"] = floor
    return row


def format_table(rows: list[dict], peak: float) -> str:
    head = (
        "| model | audio | batch | kbps | encode s (tf / ours) | speedup wall (cpu) | x realtime (tf / ours) "
        "| % fp32 limit (tf / ours) | decode s (tf / ours) | speedup wall (cpu) | x realtime (tf / ours) "
        "| % fp32 limit (tf / ours) "
        "| RSS rise MB enc+dec (tf / ours) | codes identical | max audio diff |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        tf, us = r["transformers"], r["encodec_hf"]
        lines.append(
            f"| {r['model']} | {r['seconds']:g} s | {r['batch']} | {r['bandwidth']:g} "
            f"| {tf['encode_s']:.2f} / {us['encode_s']:.2f} "
            f"| **{r['encode_speedup']:.2f}x** ({r['encode_speedup_cpu']:.2f}x) "
            f"| {tf['encode_rtf']:.0f} / {us['encode_rtf']:.0f} "
            f"| {100 * tf['encode_gflops'] / peak:.0f}% / {100 * us['encode_gflops'] / peak:.0f}% "
            f"| {tf['decode_s']:.2f} / {us['decode_s']:.2f} "
            f"| **{r['decode_speedup']:.2f}x** ({r['decode_speedup_cpu']:.2f}x) "
            f"| {tf['decode_rtf']:.0f} / {us['decode_rtf']:.0f} "
            f"| {100 * tf['decode_gflops'] / peak:.0f}% / {100 * us['decode_gflops'] / peak:.0f}% "
            f"| {max(tf['encode_peak_mb'], tf['decode_peak_mb']):.0f} / "
            f"{max(us['encode_peak_mb'], us['decode_peak_mb']):.0f} "
            f"| {'yes' if r['codes_identical'] else 'NO ({:.1f}% agree)'.format(100 * r['codes_agree'])} "
            f"| {r['max_audio_diff']:.1e} |"
        )
    floors = [r for r in rows if "kernel_floor" in r]
    if floors:
        lines += [
            "",
            "Bit-exact kernel floors: oneDNN's convolution / transposed-convolution / LSTM primitives alone (oneDNN's "
            "own timings), + the reorders to and from its blocked layout that torch's API adds around them, + torch's "
            "ELU and GroupNorm kernels (torch.profiler), in encodec_hf's run; transformers' time over a floor bounds "
            "any codes-identical speed-up:",
            "",
            "| model | audio | batch | encode floors s | max encode speed-up | decode floors s "
            "| max decode speed-up |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in floors:
            f = r["kernel_floor"]
            cells = []
            for stage in ("encode", "decode"):
                cells.append(
                    " / ".join(
                        f"{f[f'{stage}_{k}']:.2f}"
                        for k in ("floor_s", "floor_with_reorders_s", "floor_with_torch_ops_s")
                    )
                )
                cells.append(
                    " / ".join(
                        f"{f[f'{stage}_{k}']:.2f}x"
                        for k in ("max_speedup", "max_speedup_with_reorders", "max_speedup_with_torch_ops")
                    )
                )
            lines.append(f"| {r['model']} | {r['seconds']:g} s | {r['batch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                flags = Path("/proc/cpuinfo").read_text()
                extras = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
                return f"{name} ({', '.join(extras) or 'no AVX-512'})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s clips only (batch 1 and 8)")
    parser.add_argument("--models", nargs="+", default=["24khz", "48khz"], choices=["24khz", "48khz"])
    parser.add_argument("--seconds", nargs="+", type=float, default=None, help="clip durations (default 10 60)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per case (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for both (default: as is)")
    parser.add_argument(
        "--layout",
        choices=["default", "time-major", "reference"],
        default="default",
        help="encodec_hf's layout: the model's default (time-major for 24 kHz, reference for 48 kHz), or forced",
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="encodec_hf's weights (transformers stays float32): bfloat16 is the opt-in half-precision path; its "
        "codes are compared with transformers' float32 ones and reported as an agreement rate",
    )
    parser.add_argument(
        "--backend",
        choices=["pytorch", "onnxruntime"],
        default="pytorch",
        help="run encodec_hf's encoder/decoder with onnxruntime (encodec_hf.integrations.onnx; float32 only)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench_out" / "bench_codec.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    seconds = args.seconds or ([10.0] if args.quick else [10.0, 60.0])

    peak = matmul_peak_gflops()
    machine = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "fp32_matmul_gflops": peak,
        "layout": args.layout,
        "dtype": args.dtype,
        "backend": args.backend,
    }
    logger.info("machine: %s", machine)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            theirs, ours = make_models(name, Path(tmp))
            if args.layout != "default":
                ours.time_major = args.layout == "time-major"
            ours.to(getattr(torch, args.dtype))
            if args.backend == "onnxruntime":
                from encodec_hf.integrations.onnx import export_onnx, use_onnxruntime

                use_onnxruntime(ours, export_onnx(ours, Path(tmp) / f"{name}_onnx")["encoder"].parent)
            for sec in seconds:
                for batch in args.batches:
                    t0 = time.perf_counter()
                    row = run_case(theirs, ours, name, sec, batch, args.repeats, Path(tmp))
                    rows.append(row)
                    args.output.parent.mkdir(parents=True, exist_ok=True)
                    args.output.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
                    logger.info(
                        "%s %gs batch %d: encode %.2fx (cpu %.2fx), decode %.2fx (cpu %.2fx), codes identical %s, "
                        "max diff %.1e (%.0f s)",
                        name,
                        sec,
                        batch,
                        row["encode_speedup"],
                        row["encode_speedup_cpu"],
                        row["decode_speedup"],
                        row["decode_speedup_cpu"],
                        row["codes_identical"],
                        row["max_audio_diff"],
                        time.perf_counter() - t0,
                    )
    table = format_table(rows, peak)
    print(
        f"\nMachine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
        f"({machine['torch_threads']} threads), transformers {machine['transformers']}, "
        f"fp32 matmul peak {peak:.0f} GFLOP/s measured in this run\n"
    )
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    # The float32 contract: identical codes, audio within 1e-5. bfloat16 and onnxruntime are reported, not held to it.
    exact = args.dtype == "float32" and args.backend == "pytorch"
    ok = not exact or all(r["codes_identical"] and r["max_audio_diff"] <= 1e-5 for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
