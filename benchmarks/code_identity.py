"""What "identical codes" means, measured: every encode path against every other on real audio.

One full-size random-weight model per preset (Meta's original `encodec` 0.1.1 model with random weights and
codebooks drawn around the latents: ``--codebooks latent-scale``, the default, because trained codebooks sit among
the latents and Meta's unit-variance random ones far from them, which leaves most frames on a few codes;
``--codebooks unit`` keeps those), converted with conversion/convert_original_checkpoint.py (encodec_hf and
transformers load the converted folder), the real clips of tests/data (``test_24k.wav``: 20 s speech, 24 kHz mono;
``test_48k.wav``: 15 s music, 48 kHz stereo), at the largest bandwidth (every codebook; a lower bandwidth's codes
are the first K codebooks of these, so its counts are read off the same run).

Paths: ``meta`` (the original package), ``transformers``, ``plain`` (encodec_hf, ``fast_inference=False``),
``fast`` (``fast_inference=True``), ``stream`` (``StreamingEncoder`` in 20 ms blocks for 24 kHz,
``ChunkStreamingEncoder`` in 20 ms blocks for 48 kHz), ``plain@2threads`` (the plain path with 2 torch threads;
every other path runs with 1), ``plain@batch2`` / ``fast@batch2`` (the clip as item 0 of a batch of two). For
each pair: differing codes, frames with a difference, and the relative gap of each frame's first differing
codebook (tests/code_compare.py: the difference of the two squared distances relative to |r|^2 + |e|^2, judged
on the plain path's latents). Later codebooks of such a frame quantize a residual that differs by a whole
codeword, so they differ too; they are counted but not judged.

Usage::

    python benchmarks/code_identity.py                 # both presets; JSON to bench_out/code_identity.json
    python benchmarks/code_identity.py --preset 24khz --seconds 5   # a quick look

Needs Meta's ``encodec`` package (the Makefile installs it for the tests) and the repository's tests/ folder.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "conversion")]

import transformers  # noqa: E402
from code_compare import code_differences, encoder_latents  # noqa: E402
from convert_original_checkpoint import convert  # noqa: E402
from reference_encodec import build_original_model, save_original_checkpoint  # noqa: E402

from encodec_hf import EncodecModel  # noqa: E402
from encodec_hf.streaming import ChunkStreamingEncoder, StreamingEncoder  # noqa: E402

PRESETS = {"24khz": ("encodec_24khz", "test_24k.wav"), "48khz": ("encodec_48khz", "test_48k.wav")}
PAIRS = [
    ("plain", "transformers"),
    ("plain", "meta"),
    ("transformers", "meta"),
    ("fast", "plain"),
    ("fast", "transformers"),
    ("stream", "plain"),
    ("stream", "fast"),
    ("plain@2threads", "plain"),
    ("plain@batch2", "plain"),
    ("fast@batch2", "fast"),
]


def _per_chunk(codes: torch.Tensor, chunk_frames: list[int]) -> list[torch.Tensor]:
    """`encode`'s `[N, B, K, F]` (zero-padded) to a list of `[B, K, F_n]`."""
    return [codes[n, ..., :frames] for n, frames in enumerate(chunk_frames)]


@torch.no_grad()
def draw_codebooks_at_latent_scale(original, x: torch.Tensor, seed: int) -> None:
    """Redraws the original model's codebooks around the residual each one quantizes on `x` (per dimension: the
    residual's mean plus noise of its standard deviation), as tests/conftest.random_model does.

    Meta's unit-variance codebooks sit far from a random encoder's latents, so most frames take the same few
    codes and near-ties are rarer than with trained codebooks, which k-means puts among the latents.
    """
    torch.manual_seed(seed + 1000)
    if original.normalize:
        x = x / (x.mean(dim=1, keepdim=True).pow(2).mean(dim=2, keepdim=True).sqrt() + 1e-8)
    residual = original.encoder(x)[0].t()  # [F, D]
    for layer in original.quantizer.vq.layers:
        book = layer._codebook
        book.embed.copy_(residual.mean(0) + torch.randn_like(book.embed) * residual.std(0))
        dist = -(residual.pow(2).sum(1, keepdim=True) - 2 * residual @ book.embed.t() + book.embed.pow(2).sum(1))
        residual = residual - book.embed[dist.max(dim=-1).indices]


def run_preset(preset: str, seconds: float | None, seed: int, codebooks: str) -> dict:
    name, clip = PRESETS[preset]
    data, rate = sf.read(ROOT / "tests" / "data" / clip, dtype="float32", always_2d=True)
    x = torch.from_numpy(data.T.copy())[None]  # [1, C, T]
    if seconds is not None:
        x = x[..., : int(seconds * rate)]
    original = build_original_model(name, seed)
    if codebooks == "latent-scale":
        draw_codebooks_at_latent_scale(original, x, seed)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_original_checkpoint(original.state_dict(), Path(tmp), name)
        folder = convert(checkpoint, Path(tmp) / "converted")
        ours = EncodecModel.from_pretrained(folder).eval()
        theirs = transformers.EncodecModel.from_pretrained(folder).eval()
    bandwidth = max(ours.config.target_bandwidths)
    chunk_frames = ours.chunk_layout.chunk_frames(x.shape[-1])
    codes: dict[str, list[torch.Tensor]] = {}
    times: dict[str, float] = {}

    def timed(key, fn):
        start = time.perf_counter()
        codes[key] = fn()
        times[key] = round(time.perf_counter() - start, 2)

    with torch.inference_mode():
        original.set_target_bandwidth(bandwidth)
        timed("meta", lambda: [frame[0] for frame in original.encode(x)])
        timed("transformers", lambda: _per_chunk(theirs.encode(x, bandwidth=bandwidth).audio_codes, chunk_frames))
        ours.fast_inference = False
        timed("plain", lambda: _per_chunk(ours.encode(x, bandwidth=bandwidth).audio_codes, chunk_frames))
        torch.set_num_threads(2)
        timed("plain@2threads", lambda: _per_chunk(ours.encode(x, bandwidth=bandwidth).audio_codes, chunk_frames))
        torch.set_num_threads(1)
        # The clip as item 0 of a batch of two (item 1: the clip reversed): other batch shapes, other kernel blockings.
        pair = torch.cat([x, x.flip(-1)])
        timed(
            "plain@batch2", lambda: _per_chunk(ours.encode(pair, bandwidth=bandwidth).audio_codes[:, :1], chunk_frames)
        )
        ours.fast_inference = True
        timed("fast", lambda: _per_chunk(ours.encode(x, bandwidth=bandwidth).audio_codes, chunk_frames))
        timed(
            "fast@batch2", lambda: _per_chunk(ours.encode(pair, bandwidth=bandwidth).audio_codes[:, :1], chunk_frames)
        )
        block = rate // 50  # 20 ms
        blocks = [x[..., i : i + block] for i in range(0, x.shape[-1], block)]
        if ours.config.chunk_length_s is None:
            ours.fast_inference = False

            def stream():
                encoder = StreamingEncoder(ours, bandwidth=bandwidth)
                return [torch.cat([*(encoder.push(b) for b in blocks), encoder.flush()], -1)]
        else:

            def stream():
                encoder = ChunkStreamingEncoder(ours, bandwidth=bandwidth)
                chunks = [c for b in blocks for c in encoder.push(b)] + list(encoder.flush())
                return [c.audio_codes for c in chunks]

        timed("stream", stream)
        ours.fast_inference = False
    with torch.no_grad():
        latents = _per_chunk(encoder_latents(ours, x), chunk_frames)  # [B, D, F_n] per chunk

    num_books = codes["plain"][0].shape[-2]
    bandwidths = sorted(ours.config.target_bandwidths)
    rows = []
    for a, b in PAIRS:
        diffs, differing_codes, per_bw = [], 0, {bw: 0 for bw in bandwidths}
        for n, lat in enumerate(latents):
            ca, cb = codes[a][n], codes[b][n]
            if ca.shape != cb.shape:
                raise RuntimeError(f"{a} and {b} give chunk {n} shapes {tuple(ca.shape)} and {tuple(cb.shape)}")
            differing_codes += int((ca != cb).sum())
            for bw in bandwidths:
                k = ours.config.num_quantizers_for_bandwidth(bw)
                per_bw[bw] += int((ca[:, :k] != cb[:, :k]).sum())
            diffs += [(n, d) for d in code_differences(ca, cb, ours, lat)]
        total = sum(c.numel() for c in codes[a])
        rows.append(
            dict(
                pair=f"{a} vs {b}",
                codes=total,
                differing_codes=differing_codes,
                differing_frames=len(diffs),
                frames=sum(c[:, 0].numel() for c in codes[a]),
                differing_codes_per_kbps={str(bw): per_bw[bw] for bw in bandwidths},
                max_gap=max((d.gap for _, d in diffs), default=None),
                differences=[
                    dict(chunk=n, frame=d.frame, codebook=d.codebook, codes=[d.code_a, d.code_b], gap=d.gap)
                    for n, d in diffs
                ],
            )
        )
    return dict(
        preset=preset,
        clip=clip,
        seconds=round(x.shape[-1] / rate, 2),
        bandwidth=bandwidth,
        codebooks=num_books,
        codebook_init=codebooks,
        distinct_codes_first_4_codebooks=[len(torch.unique(codes["plain"][0][:, k])) for k in range(4)],
        seed=seed,
        seconds_per_path=times,
        pairs=rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), action="append", help="default: both")
    parser.add_argument("--seconds", type=float, default=None, help="cut the clip (default: whole clip)")
    parser.add_argument("--seed", type=int, default=0, help="random weights seed")
    parser.add_argument(
        "--codebooks",
        choices=["latent-scale", "unit"],
        default="latent-scale",
        help="random codebooks around the latents (default) or Meta's unit-variance draw",
    )
    parser.add_argument("--output", default=str(ROOT / "bench_out" / "code_identity.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = dict(
        machine=dict(
            processor=platform.processor() or platform.machine(),
            cpu=_cpu_name(),
            torch=torch.__version__,
            transformers=transformers.__version__,
        ),
        presets=[run_preset(p, args.seconds, args.seed, args.codebooks) for p in (args.preset or sorted(PRESETS))],
    )
    for result in results["presets"]:
        print(
            f"\n{result['preset']}: {result['clip']} ({result['seconds']} s), {result['bandwidth']} kbps, "
            f"{result['codebooks']} codebooks ({result['codebook_init']}; distinct codes in the first four: "
            f"{result['distinct_codes_first_4_codebooks']}), seed {result['seed']}; "
            f"seconds per path {result['seconds_per_path']}"
        )
        print(f"{'pair':28} {'codes':>8} {'differ':>7} {'frames':>7} {'max gap':>9}  per kbps")
        for row in result["pairs"]:
            gap = "-" if row["max_gap"] is None else f"{row['max_gap']:.1e}"
            print(
                f"{row['pair']:28} {row['codes']:>8} {row['differing_codes']:>7} {row['differing_frames']:>7} "
                f"{gap:>9}  {row['differing_codes_per_kbps']}"
            )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1))
    print(f"\nwritten to {output}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
