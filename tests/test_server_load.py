"""`encodec-hf serve` under a burst, on loopback: every request is answered (200, or 503 with `Retry-After`), none is
reset or left hanging, `GET /health` answers while the server is saturated, and the server serves normally after.

Counts, not timings: the saturated case holds the workers on a gate, so how many requests are admitted is fixed by
`workers + max_queue`, whatever the machine's speed. Latencies of larger bursts: `benchmarks/load_test_server.py`.
"""

from __future__ import annotations

import http.client
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

from encodec_hf.integrations.endpoint import LISTEN_BACKLOG, EndpointHandler, make_server
from tests.hf_fixtures import one_torch_thread, save_tiny_model

BURST = 100
WORKERS, MAX_QUEUE = 2, 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def handler(tmp_path_factory):
    model_dir = save_tiny_model(tmp_path_factory.mktemp("load_model"), "mono")
    return EndpointHandler(str(model_dir), max_duration_s=2.0, device="cpu", workers=WORKERS, num_threads=1)


@pytest.fixture()
def server(handler):
    srv = make_server(handler, "127.0.0.1", 0, max_body_bytes=1_000_000, max_queue=MAX_QUEUE)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def wav(handler) -> bytes:
    rate = handler.config.sampling_rate
    audio = 0.3 * np.sin(2 * np.pi * 220 * np.arange(rate // 5) / rate).astype(np.float32)  # 0.2 s
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _post(address, body: bytes, path: str = "/?bandwidth=2") -> tuple[int, dict, str | None]:
    """One request on its own connection; any socket error (a reset included) propagates to the caller."""
    conn = http.client.HTTPConnection(*address, timeout=120)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "audio/wav"})
        response = conn.getresponse()
        return response.status, json.loads(response.read()), response.getheader("Retry-After")
    finally:
        conn.close()


def _get_health(address) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(*address, timeout=60)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _check_answers(results: list[tuple[int, dict, str | None]]) -> tuple[int, int]:
    ok = [r for r in results if r[0] == 200]
    busy = [r for r in results if r[0] == 503]
    assert len(ok) + len(busy) == len(results), sorted({r[0] for r in results})
    for _, payload, retry_after in busy:
        assert payload["status"] == 503 and "busy" in payload["error"]
        assert retry_after is not None and int(retry_after) >= 1
    for _, payload, _ in ok:
        assert len(payload["audio_codes"]) == 1 and payload["num_samples"] > 0
    return len(ok), len(busy)


def test_server_sizes_its_queues(server, handler):
    assert server.request_queue_size == LISTEN_BACKLOG >= BURST
    assert server.max_admitted == WORKERS + MAX_QUEUE
    status, health = _get_health(server.server_address)
    assert status == 200 and health["workers"] == WORKERS and health["max_queue"] == MAX_QUEUE
    assert health["active"] == 0


def test_saturated_server_answers_503_with_retry_after_and_stays_healthy(server, handler, wav, monkeypatch):
    """Workers held on a gate: exactly workers + max_queue requests are admitted, the other ones get 503 at once
    (their bodies read first: no reset), health answers meanwhile, and the admitted ones finish with 200."""
    gate, entered = threading.Event(), threading.Semaphore(0)
    run = handler._run

    def gated(request):
        entered.release()
        assert gate.wait(timeout=120), "the test never opened the gate"
        return run(request)

    monkeypatch.setattr(handler, "_run", gated)
    address = server.server_address
    with ThreadPoolExecutor(max_workers=BURST) as pool:
        futures = [pool.submit(_post, address, wav) for _ in range(BURST)]
        for _ in range(WORKERS):  # both workers are inside the model call, held
            assert entered.acquire(timeout=120)
        # Every request beyond the admitted ones is answered while the gate is closed.
        deadline = time.monotonic() + 120
        while len(done := [f for f in futures if f.done()]) < BURST - WORKERS - MAX_QUEUE:
            assert time.monotonic() < deadline, f"only {len(done)} answers while saturated"
            time.sleep(0.05)
        status, health = _get_health(address)
        assert status == 200 and health["active"] == WORKERS + MAX_QUEUE
        rejected = [f.result() for f in done]
        assert all(r[0] == 503 for r in rejected), sorted({r[0] for r in rejected})
        gate.set()
        results = [f.result(timeout=120) for f in futures]
    ok, busy = _check_answers(results)
    assert (ok, busy) == (WORKERS + MAX_QUEUE, BURST - WORKERS - MAX_QUEUE)
    monkeypatch.undo()
    # A slot is released just after its reply is written, so the last one may still be held for a moment.
    deadline = time.monotonic() + 30
    while _get_health(address)[1]["active"]:
        assert time.monotonic() < deadline, "admission slots were not released"
        time.sleep(0.05)
    assert _post(address, wav)[0] == 200


def test_burst_of_real_requests_all_answered(server, wav):
    """100 concurrent requests doing real work: each answered 200 or 503, none reset; normal service after."""
    address = server.server_address
    with ThreadPoolExecutor(max_workers=BURST) as pool:
        results = list(pool.map(lambda _: _post(address, wav), range(BURST)))
    ok, busy = _check_answers(results)
    assert ok >= WORKERS + MAX_QUEUE  # the first admitted ones at least are served
    assert ok + busy == BURST
    assert _get_health(address)[0] == 200
    status, out, _ = _post(address, wav)
    assert status == 200 and out["num_samples"] > 0
