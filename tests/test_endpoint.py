"""EndpointHandler (Inference Endpoints contract) and `serve` over real HTTP on 127.0.0.1, bad requests included."""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from encodec_hf.audio_io import resample
from encodec_hf.codec.chunking import ClipCodes
from encodec_hf.integrations.datasets import decode_clip, encode_clips
from encodec_hf.integrations.endpoint import EndpointHandler, EndpointRequestError, make_server, parse_request
from tests.hf_fixtures import one_torch_thread, save_tiny_model, write_clips


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_torch_thread()


REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_S = 1.0


def _wav_bytes(audio_tc: np.ndarray, rate: int, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio_tc, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("endpoint_model"), "stereo")


@pytest.fixture(scope="module")
def handler(model_dir):
    return EndpointHandler(str(model_dir), max_duration_s=MAX_S, device="cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    (path,) = write_clips(tmp_path_factory.mktemp("endpoint_clips"), [(6000, 16000, 2)])
    return Path(path).read_bytes()


@pytest.fixture(scope="module")
def server(handler):
    srv = make_server(handler, "127.0.0.1", 0, max_body_bytes=2_000_000)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[:2]
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


def _request(address, method, path, body=b"", content_type="application/json"):
    conn = http.client.HTTPConnection(*address, timeout=60)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        # The server may answer (413) before reading the whole body; its reply is still readable then.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _post_json(address, payload):
    return _request(address, "POST", "/", json.dumps(payload).encode())


def _samples(b64_wav: str) -> np.ndarray:
    return sf.read(io.BytesIO(base64.b64decode(b64_wav)), dtype="float32", always_2d=True)[0]


def _expected_codes(handler, wav: bytes) -> ClipCodes:
    data, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    audio = resample(torch.from_numpy(np.ascontiguousarray(data.T)), rate, handler.config.sampling_rate).numpy()
    return encode_clips(handler.model, [np.ascontiguousarray(audio)], 4.0)[0]


def test_handler_encode_decode_roundtrip(handler, clip):
    expected = _expected_codes(handler, clip)
    out = handler({"inputs": clip, "parameters": {"bandwidth": 4.0}})
    assert np.array_equal(np.array(out["audio_codes"]), expected.audio_codes)
    np.testing.assert_array_equal(np.array(out["audio_scales"], dtype=np.float32), expected.audio_scales)
    assert out["num_samples"] == 3000 and out["sampling_rate"] == 8000 and out["bandwidth"] == 4.0
    # base64 JSON input gives the same codes; decode returns a WAV with the exact length.
    assert handler({"inputs": base64.b64encode(clip).decode(), "parameters": {"bandwidth": 4.0}}) == out
    codes_in = {k: out[k] for k in ("audio_codes", "audio_scales", "num_samples")}
    decoded = handler({"inputs": codes_in})
    audio, rate = sf.read(io.BytesIO(base64.b64decode(decoded["audio"])), dtype="float32", always_2d=True)
    assert rate == 8000 and audio.shape == (3000, 2)
    np.testing.assert_allclose(audio.T, decode_clip(handler.model, expected), atol=1e-6)
    both = handler({"inputs": clip, "parameters": {"task": "roundtrip", "bandwidth": 4.0}})
    assert both["audio_codes"] == out["audio_codes"]
    # Compare samples, not bytes: libsndfile stamps float WAVs with the write time (PEAK chunk).
    np.testing.assert_array_equal(_samples(both["audio"]), _samples(decoded["audio"]))


def test_parse_request_errors_name_the_fix(handler):
    config = handler.config
    cases = [
        ({"inputs": b"\x00garbage" * 10}, 400, "Cannot read <bytes> as audio"),
        ({"inputs": "%%%"}, 400, "not valid base64"),
        ({"inputs": 3}, 400, "inputs must be audio bytes"),
        ({"parameters": {}}, 400, "no 'inputs'"),
        ({"inputs": b"x", "parameters": {"bandwith": 4}}, 400, "Unknown parameter"),
        ({"inputs": b"x", "parameters": {"bandwidth": 5.0}}, 400, r"Select one of \[2.0, 4.0, 8.0\]"),
        ({"inputs": b"x", "parameters": {"bandwidth": "high"}}, 400, "bandwidth must be a number"),
        ({"inputs": b"x", "parameters": {"task": "transcribe"}}, 400, "Unknown task"),
        ({"inputs": b"x", "parameters": {"task": "decode"}}, 400, "takes codes"),
        ({"inputs": {"audio_codes": [[[1]]]}}, 400, "Codes inputs must be"),
        ({"inputs": {"audio_codes": [[[1, 2], [3]]], "num_samples": 10, "audio_scales": [1]}}, 400, "rectangular"),
        ({"inputs": {"audio_codes": [[[99] * 50]], "num_samples": 10, "audio_scales": [1]}}, 400, r"\[0, 15\]"),
        ({"inputs": {"audio_codes": [[["a"] * 50]], "num_samples": 10, "audio_scales": [1]}}, 400, "integers"),
        (
            {"inputs": {"audio_codes": [[[1] * 50]] * 2, "num_samples": 10, "audio_scales": [1, 1]}},
            400,
            r"\[1, K, 50\]",
        ),
        ({"inputs": {"audio_codes": [[[1] * 50]], "num_samples": 10}}, 400, "audio_scales"),
        ({"inputs": {"audio_codes": [[[1] * 50]], "num_samples": 99999, "audio_scales": [1]}}, 400, r"\[127, K, 50\]"),
    ]
    for data, status, message in cases:
        with pytest.raises(EndpointRequestError, match=message) as info:
            parse_request(data, config, MAX_S)
        assert info.value.status == status, data


def test_http_good_requests(server, handler, clip):
    status, health = _request(server, "GET", "/health")
    assert status == 200 and health["sampling_rate"] == 8000 and health["max_duration_s"] == MAX_S
    status, out = _request(server, "POST", "/?bandwidth=4", clip, "audio/wav")
    assert status == 200
    assert out == handler({"inputs": clip, "parameters": {"bandwidth": 4.0}})
    flac = _wav_bytes(sf.read(io.BytesIO(clip), dtype="float32")[0], 16000, "FLAC")
    status, from_flac = _request(server, "POST", "/predict?bandwidth=4", flac, "audio/flac")
    assert status == 200 and from_flac["audio_codes"] == out["audio_codes"]
    codes = {k: out[k] for k in ("audio_codes", "audio_scales", "num_samples")}
    status, decoded = _post_json(server, {"inputs": codes})
    assert status == 200 and decoded["num_samples"] == 3000
    status, both = _request(server, "POST", "/?task=roundtrip&bandwidth=4", clip, "audio/x-wav")
    assert status == 200
    np.testing.assert_array_equal(_samples(both["audio"]), _samples(decoded["audio"]))
    mono = _wav_bytes(np.zeros(800, dtype=np.float32) + 0.1, 8000)  # mono is duplicated for the stereo model
    assert _request(server, "POST", "/", mono, "audio/wav")[0] == 200


@pytest.mark.parametrize(
    "fmt, subtype, content_type",
    [
        ("OGG", "VORBIS", "audio/ogg"),
        ("OGG", "OPUS", "audio/opus"),
        ("MP3", "MPEG_LAYER_III", "audio/mpeg"),
        ("AIFF", "PCM_16", "audio/aiff"),
        ("FLAC", "PCM_16", "application/octet-stream"),
        ("WAV", "PCM_16", "audio/wav"),  # the format comes from the bytes, not from the Content-Type
    ],
)
def test_http_takes_every_format_the_cli_reads(server, handler, fmt, subtype, content_type):
    """The endpoint decodes through `audio_io.read_audio`, as `encodec-hf compress` does: its codes for a file are
    those of the audio the CLI's reader gives for the same bytes."""
    rate = 48000 if subtype == "OPUS" else 16000  # Opus is 48 kHz only
    t = np.arange(rate // 4) / rate
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)], 1).astype(np.float32)
    data = _wav_bytes(audio, rate, fmt, subtype)
    status, out = _request(server, "POST", "/?bandwidth=4", data, content_type)
    assert status == 200, out
    from encodec_hf.audio_io import read_audio

    decoded, decoded_rate = read_audio(data)
    expected = encode_clips(
        handler.model, [resample(decoded, decoded_rate, handler.config.sampling_rate).numpy()], 4.0
    )[0]
    assert np.array_equal(np.array(out["audio_codes"]), expected.audio_codes)
    # The same bytes as base64 JSON.
    assert _post_json(server, {"inputs": base64.b64encode(data).decode(), "parameters": {"bandwidth": 4.0}})[1] == out


def test_http_bad_requests_get_4xx_and_server_keeps_serving(server, clip):
    long_audio = _wav_bytes(np.zeros((int(1.5 * 8000), 2), dtype=np.float32), 8000)
    ogg = _wav_bytes(np.zeros((800, 2), dtype=np.float32), 8000, "OGG", "VORBIS")
    bad = [
        (("POST", "/", os.urandom(512), "audio/wav"), 400, "Cannot read <bytes> as audio"),
        (("POST", "/", os.urandom(512), "audio/ogg"), 400, "libsndfile"),  # the message lists what it reads
        (("POST", "/", ogg, "text/plain"), 415, "Unsupported Content-Type 'text/plain'"),
        (("POST", "/", long_audio, "audio/wav"), 413, "at most 1 s"),
        (("POST", "/?bandwidth=5", clip, "audio/wav"), 400, "Select one of"),
        (("POST", "/?bandwidth=fast", clip, "audio/wav"), 400, "bandwidth must be a number"),
        (("POST", "/", b"{not json", "application/json"), 400, "not valid JSON"),
        (("POST", "/", b"[1, 2]", "application/json"), 400, "JSON object"),
        (
            ("POST", "/", json.dumps({"inputs": {"audio_codes": "abc", "num_samples": 3}}).encode(), None),
            415,
            "(none)",
        ),
        (("POST", "/", b"x" * 2_000_001, "audio/wav"), 413, "over the limit"),
        (("POST", "/other", b"{}", "application/json"), 404, "No such path"),
        (("GET", "/missing", b"", None), 404, "No such path"),
    ]
    malformed_codes = [
        {"audio_codes": "abc", "num_samples": 3, "audio_scales": [1]},
        {"audio_codes": [[[1, 2], [3]]], "num_samples": 10, "audio_scales": [1]},
        {"audio_codes": [[[-1] * 50]], "num_samples": 10, "audio_scales": [1]},
        {"audio_codes": [[[1] * 50]], "num_samples": -5, "audio_scales": [1]},
        {"audio_codes": [[[1] * 50]], "num_samples": 10, "audio_scales": ["x"]},
    ]
    for codes in malformed_codes:
        bad.append((("POST", "/", json.dumps({"inputs": codes}).encode(), "application/json"), 400, "Malformed codes"))
    bad.append(
        (
            (
                "POST",
                "/",
                json.dumps({"inputs": "AAAA", "parameters": {"bandwidth": 99}}).encode(),
                "application/json",
            ),
            400,
            "Select one of",
        )
    )
    for (method, path, body, ctype), status, message in bad:  # one request each: a bounded loop
        got, payload = _request(server, method, path, body, ctype)
        assert got == status, (path, ctype, payload)
        assert payload["status"] == status and message in payload["error"], payload
        assert _request(server, "GET", "/health")[0] == 200


def test_serve_command_subprocess_writes_nothing(model_dir, clip, tmp_path):
    """`python -m encodec_hf serve` on 127.0.0.1:0, bad and good requests; cwd, TMPDIR stay empty."""
    workdir, tmpdir = tmp_path / "cwd", tmp_path / "tmp"
    workdir.mkdir()
    tmpdir.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"), TMPDIR=str(tmpdir), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "encodec_hf", "serve", "--model", str(model_dir), "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--max-duration-s", "1", "--device", "cpu"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("Serving encodec_hf endpoint on http://127.0.0.1:"), line
        address = ("127.0.0.1", int(line.rsplit(":", 1)[1]))
        assert _request(address, "POST", "/", b"RIFF....WAVEfmt garbage", "audio/wav")[0] == 400
        assert _request(address, "POST", "/?bandwidth=3", clip, "audio/wav")[0] == 400
        status, out = _request(address, "POST", "/?task=roundtrip&bandwidth=4", clip, "audio/wav")
        assert status == 200 and len(out["audio_codes"]) == 4
        assert proc.poll() is None  # still serving
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert list(workdir.iterdir()) == [] and list(tmpdir.iterdir()) == []


def test_serve_command_bad_model_path(tmp_path, capsys):
    from encodec_hf.cli import main

    assert main(["serve", "--model", str(tmp_path / "nope"), "--port", "0"]) == 2
    assert capsys.readouterr().err.startswith(f"error: Model folder {tmp_path / 'nope'} does not exist")


def test_http_internal_failure_is_500_with_logged_traceback(server, handler, clip, monkeypatch, caplog):
    """A bug inside the handler is not the client's fault: 500, traceback in the log, and the server keeps serving
    (a plain ValueError included, which a broad catch would have answered as a 400)."""
    for bug in (ValueError("bug: negative stride"), TypeError("bug: None is not iterable"), RuntimeError("bug")):

        def broken(*args, exc=bug, **kwargs):
            raise exc

        monkeypatch.setattr("encodec_hf.integrations.endpoint.encode_clips", broken)
        caplog.clear()
        with caplog.at_level("ERROR", logger="encodec_hf.integrations.endpoint"):
            status, payload = _request(server, "POST", "/", clip, "audio/wav")
        assert status == 500 and payload["status"] == 500
        assert str(bug) not in payload["error"]  # internals stay in the log
        records = [r for r in caplog.records if r.exc_info]
        assert records and records[0].exc_info[1] is bug
    monkeypatch.undo()
    assert _request(server, "POST", "/", clip, "audio/wav")[0] == 200


def test_http_documented_input_error_from_inside_the_handler_is_400(server, clip, monkeypatch):
    from encodec_hf.errors import SamplingRateError

    def refuse(*args, **kwargs):
        raise SamplingRateError("Audio at 16000 Hz; this model takes 8000 Hz.")

    monkeypatch.setattr("encodec_hf.integrations.endpoint.encode_clips", refuse)
    status, payload = _request(server, "POST", "/", clip, "audio/wav")
    assert status == 400 and "8000 Hz" in payload["error"]
