"""A burst against `encodec-hf serve`: answer counts (200 / 503 / errors, resets counted apart) and latencies.

Sends ``--requests`` POSTs of one audio file from ``--concurrency`` client threads at once (each on its own
connection, through `http.client`), while probing ``GET /health`` every ``--health-every`` seconds, and reports:
how many were answered 200, 503 (with the `Retry-After` values seen) or otherwise, how many failed at the socket
(connection resets, timeouts), the latency percentiles of each kind of answer and of the health probes, and the
throughput. A healthy server under a burst answers every request (200 or 503) and every health probe.

Either against a running server (``--url``), or it starts one (``--start 24khz``: `python -m encodec_hf serve` on a
random-weight full-size model saved to a temporary folder, with ``--workers`` / ``--max-queue``) and stops it after.

Usage::

    python benchmarks/load_test_server.py --start 24khz --requests 400 --concurrency 200 --seconds 1
    python benchmarks/load_test_server.py --url http://127.0.0.1:8080 --audio speech.wav --requests 1000
"""

from __future__ import annotations

import argparse
import collections
import http.client
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values) * 1000
    return {f"p{q}": float(np.percentile(array, q)) for q in (50, 90, 99)} | {"max": float(array.max())}


def _post(host: str, port: int, path: str, body: bytes, content_type: str, timeout: float):
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After"), time.perf_counter() - start
    except (ConnectionResetError, BrokenPipeError) as err:
        return f"reset ({type(err).__name__})", None, time.perf_counter() - start
    except TimeoutError:
        return "timeout", None, time.perf_counter() - start
    except OSError as err:
        return f"error ({type(err).__name__})", None, time.perf_counter() - start
    finally:
        conn.close()


def _health(host: str, port: int, timeout: float):
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - start
    except OSError as err:
        return type(err).__name__, time.perf_counter() - start
    finally:
        conn.close()


def _audio_bytes(path: str | None, seconds: float, sampling_rate: int) -> tuple[bytes, str]:
    if path:
        return Path(path).read_bytes(), "application/octet-stream"
    import soundfile as sf

    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)).astype(
        np.float32
    )
    buffer = io.BytesIO()
    sf.write(buffer, audio, sampling_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue(), "audio/wav"


def _start_server(kind: str, folder: Path, workers: int | None, max_queue: int | None):
    """Saves a random-weight model and starts `python -m encodec_hf serve` on a free port; returns (process, url)."""
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""), HF_HUB_OFFLINE="1")
    code = (
        "import sys, torch; from encodec_hf import EncodecConfig, EncodecModel; torch.manual_seed(0); "
        f"EncodecModel(getattr(EncodecConfig, 'encodec_{kind}')()).save_pretrained(sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True, env=env)
    cmd = [sys.executable, "-m", "encodec_hf", "serve", "--model", str(folder), "--port", "0", "--device", "cpu"]
    cmd += ["--max-duration-s", "60"]
    if workers:
        cmd += ["--workers", str(workers)]
    if max_queue is not None:
        cmd += ["--max-queue", str(max_queue)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.startswith("Serving encodec_hf endpoint on "):
        proc.terminate()
        raise SystemExit(f"The server did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8080")
    where.add_argument("--start", choices=("24khz", "48khz"), help="start a server on a random full-size model")
    parser.add_argument("--workers", type=int, default=None, help="with --start: serve --workers")
    parser.add_argument("--max-queue", type=int, default=None, help="with --start: serve --max-queue")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=200, help="client threads sending at once")
    parser.add_argument("--audio", help="audio file to send (default: a generated clip at the model's rate)")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of the generated clip")
    parser.add_argument("--bandwidth", type=float, default=None, help="kbps (default: the server's)")
    parser.add_argument("--health-every", type=float, default=0.2, help="seconds between health probes")
    parser.add_argument("--timeout", type=float, default=300.0, help="client socket timeout, seconds")
    parser.add_argument("--output", default="bench_out/load_test_server.json")
    args = parser.parse_args()

    proc, tmp = None, None
    try:
        if args.start:
            tmp = tempfile.TemporaryDirectory(prefix="encodec_load_")
            proc, url = _start_server(args.start, Path(tmp.name) / "model", args.workers, args.max_queue)
        else:
            url = args.url
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or 80
        status, _ = _health(host, port, args.timeout)
        if status != 200:
            raise SystemExit(f"GET /health answered {status}")
        conn = http.client.HTTPConnection(host, port, timeout=args.timeout)
        conn.request("GET", "/health")
        info = json.loads(conn.getresponse().read())
        conn.close()
        body, content_type = _audio_bytes(args.audio, args.seconds, info["sampling_rate"])
        path = "/" if args.bandwidth is None else f"/?bandwidth={args.bandwidth:g}"

        probes: list[tuple[object, float]] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.wait(args.health_every):
                probes.append(_health(host, port, args.timeout))

        prober = threading.Thread(target=probe, daemon=True)
        start = time.perf_counter()
        prober.start()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            results = list(
                pool.map(lambda _: _post(host, port, path, body, content_type, args.timeout), range(args.requests))
            )
        wall = time.perf_counter() - start
        stop.set()
        prober.join()
        after = _post(host, port, path, body, content_type, args.timeout)[0], _health(host, port, args.timeout)[0]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
        if tmp is not None:
            tmp.cleanup()

    counts = collections.Counter(str(r[0]) for r in results)
    latency = {kind: _percentiles([r[2] for r in results if str(r[0]) == kind]) for kind in counts}
    retry_after = collections.Counter(r[1] for r in results if r[0] == 503)
    health_counts = collections.Counter(str(p[0]) for p in probes)
    report = {
        "server": {k: info.get(k) for k in ("sampling_rate", "workers", "max_queue", "max_duration_s")},
        "requests": args.requests,
        "concurrency": args.concurrency,
        "body_bytes": len(body),
        "counts": dict(counts),
        "latency_ms": latency,
        "retry_after_s": dict(retry_after),
        "health_probes": dict(health_counts),
        "health_latency_ms": _percentiles([p[1] for p in probes]),
        "wall_s": wall,
        "answered_200_per_s": counts.get("200", 0) / wall,
        "after_burst": {"post": after[0], "health": after[1]},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "load_average": os.getloadavg()},
    }
    print(
        f"{args.requests} requests ({len(body)} bytes each), {args.concurrency} at once, against {url} "
        f"({info.get('workers')} workers, queue {info.get('max_queue')}); {wall:.1f} s wall"
    )
    for kind, n in sorted(counts.items()):
        lat = latency[kind]
        print(
            f"  {kind}: {n}  latency ms p50 {lat['p50']:.0f}, p90 {lat['p90']:.0f}, p99 {lat['p99']:.0f}, "
            f"max {lat['max']:.0f}"
        )
    if retry_after:
        print(f"  Retry-After values: {dict(retry_after)}")
    hl = report["health_latency_ms"]
    if hl:
        print(
            f"  health probes during the burst: {dict(health_counts)}, ms p50 {hl['p50']:.0f}, p99 {hl['p99']:.0f}, "
            f"max {hl['max']:.0f}"
        )
    print(f"  after the burst: POST {after[0]}, GET /health {after[1]}")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    bad = sum(n for kind, n in counts.items() if kind not in ("200", "503"))
    sys.exit(1 if bad or after != (200, 200) else 0)


if __name__ == "__main__":
    main()
