"""Hub-hosted inference: the Inference Endpoints `EndpointHandler` and a small local HTTP server.

Custom-handler contract: the serving container builds `EndpointHandler(path)` once (with the repo folder)
and calls `handler(data)` per request, with `data = {"inputs": ..., "parameters": {...}}`; audio bodies
(`audio/wav`, `audio/flac`, ...) arrive as `{"inputs": <bytes>}`. The handler returns a JSON-able dict.

Requests:

* `inputs`: audio file bytes (any format `encodec-hf compress` reads: whatever libsndfile decodes, e.g. WAV, FLAC,
  OGG Vorbis/Opus, MP3, AIFF), the same bytes base64-encoded in a JSON string, or codes
  `{"audio_codes": [N][K][F] ints, "audio_scales": [N] floats or null, "num_samples": int}` (what
  `encode` returns).
* `parameters`: `task` (`"encode"`, `"decode"` or `"roundtrip"`; default `encode` for audio, `decode`
  for codes) and `bandwidth` (kbps, one of the model's `target_bandwidths`; default: the lowest).

Audio is resampled to the model rate (`encodec_hf.audio_io`) and mono/stereo converted to the model's channel count.
Responses: `encode` gives the codes dict plus `sampling_rate`, `bandwidth` and `frame_rate`; `decode`
gives `{"audio": <base64 WAV, float32>, "sampling_rate", "num_samples"}`; `roundtrip` gives both.
Everything happens in memory: nothing is written to disk.

Bad requests raise `EndpointRequestError` carrying the HTTP status to answer with (400 malformed or unreadable
audio, 413 too long or too large, 415 unsupported Content-Type); `serve()` turns it into a JSON error reply. Only
those and the package's other documented input errors (`encodec_hf.errors.EncodecInputError`) get a 4xx: any other
exception is a bug, answered with 500 and its traceback logged (logger `encodec_hf.integrations.endpoint`).

Load: the handler runs at most `workers` requests at once (the others wait), each with `num_threads` torch threads
(default: the physical cores divided by `workers`; `encodec_hf.threads`), restored afterwards. The local server
admits `workers + max_queue` requests; any further request is answered at once with 503 and a `Retry-After` header
(its body is read and dropped first, so the client gets the reply, not a connection reset). It keeps
`workers + max_queue + CONNECTION_HEADROOM` connection threads, so `GET /health` is answered while it is
saturated, and a listen queue of `LISTEN_BACKLOG` connections for bursts beyond that (the standard library's is 5,
which turned a 50-request burst into connection resets). The command line `encodec-hf serve` (in `cli.py`) runs
`serve()` on a local port.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import torch

from ..audio_io import audio_info, convert_audio, read_audio
from ..codec.chunking import ClipCodes
from ..errors import AudioFileError, EncodecInputError, EndpointRequestError
from ..threads import resolve_num_threads, torch_default_threads, torch_threads
from .datasets import decode_clip, encode_clips

logger = logging.getLogger(__name__)

__all__ = [
    "EndpointHandler",
    "EndpointRequestError",
    "EndpointServer",
    "default_workers",
    "make_server",
    "parse_request",
    "serve",
]

TASKS = ("encode", "decode", "roundtrip")
PARAMETERS = ("task", "bandwidth")
# A raw body is audio under any `audio/...` type or this one; its format is read from the bytes, as the CLI does.
RAW_AUDIO_CONTENT_TYPES = ("audio/*", "application/octet-stream")
DEFAULT_MAX_DURATION_S = 600.0
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_QUEUE = 16  # admitted requests waiting for a worker; beyond them: 503
CONNECTION_HEADROOM = 32  # connection threads beyond the admitted requests: health checks, quick 503s
LISTEN_BACKLOG = 1024  # connections the kernel holds while every connection thread is busy (capped by somaxconn)
IDLE_TIMEOUT_S = 30.0  # a connection that sends nothing for this long is closed (frees its thread)
MAX_RETRY_AFTER_S = 120


def default_workers() -> int:
    """`encodec-hf serve`'s default worker count: the physical cores, at most 4."""
    return max(1, min(4, torch_default_threads()))


def _readable_formats() -> str:
    import soundfile as sf

    return f"libsndfile {sf.__libsndfile_version__} formats: {', '.join(sorted(sf.available_formats()))}"


@dataclass
class Request:
    """A validated request: `audio` `[C, T]` at the model rate for encode/roundtrip, `codes` for decode."""

    task: str
    bandwidth: float
    audio: np.ndarray | None = None
    codes: ClipCodes | None = None


def _decode_audio_bytes(payload: bytes, config, max_duration_s: float) -> np.ndarray:
    """Audio file bytes -> float32 `[C, T]` at the model rate and channel count, with the length checked first."""
    if not payload:
        raise EndpointRequestError("inputs is empty: send audio file bytes, base64 audio, or codes.")
    try:
        info = audio_info(payload)
    except AudioFileError as err:
        raise EndpointRequestError(f"{err}. Send an audio file in one of the {_readable_formats()}.") from None
    if info.samplerate <= 0 or info.frames <= 0:
        raise EndpointRequestError("The audio holds no samples.")
    duration = info.frames / info.samplerate
    if duration > max_duration_s:
        raise EndpointRequestError(
            f"Audio is {duration:.2f} s long; this endpoint accepts at most {max_duration_s:g} s. "
            f"Split it into shorter pieces.",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    if info.channels not in (1, 2):
        raise EndpointRequestError(f"Expected mono or stereo audio, got {info.channels} channels.")
    try:
        audio, rate = read_audio(payload)  # [C, T]
    except AudioFileError as err:
        raise EndpointRequestError(f"{err}. Send an audio file in one of the {_readable_formats()}.") from None
    if not bool(torch.isfinite(audio).all()):
        raise EndpointRequestError("The audio contains NaN or infinite samples.")
    # Like Meta's CLI: average to mono or duplicate mono to stereo, then resample to the model's rate.
    audio = convert_audio(audio, rate, config.sampling_rate, config.audio_channels)
    return np.ascontiguousarray(audio.numpy(), dtype=np.float32)


def parse_request(data: Any, config, max_duration_s: float = DEFAULT_MAX_DURATION_S) -> Request:
    """Validate an endpoint payload against `config`; raises `EndpointRequestError` on anything unusable."""
    if not isinstance(data, dict):
        raise EndpointRequestError(f"The request must be a JSON object with 'inputs', got {type(data).__name__}.")
    if "inputs" not in data:
        raise EndpointRequestError(f"The request has no 'inputs' (keys: {sorted(data)}).")
    params = data.get("parameters") or {}
    if not isinstance(params, dict):
        raise EndpointRequestError(f"'parameters' must be an object, got {type(params).__name__}.")
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise EndpointRequestError(f"Unknown parameter(s) {unknown}; supported: {list(PARAMETERS)}.")
    try:
        bandwidth = config.resolve_bandwidth(params.get("bandwidth"))
    except (EncodecInputError, TypeError) as err:
        raise EndpointRequestError(str(err)) from None

    inputs = data["inputs"]
    is_codes = isinstance(inputs, dict)
    task = params.get("task", "decode" if is_codes else "encode")
    if task not in TASKS:
        raise EndpointRequestError(f"Unknown task {task!r}; choose one of {list(TASKS)}.")
    if is_codes != (task == "decode"):
        need = "codes ({'audio_codes', 'audio_scales', 'num_samples'})" if task == "decode" else "audio"
        raise EndpointRequestError(f"Task {task!r} takes {need} as inputs.")

    if is_codes:
        unknown = sorted(set(inputs) - {"audio_codes", "audio_scales", "num_samples"})
        if unknown or "audio_codes" not in inputs or "num_samples" not in inputs:
            raise EndpointRequestError(
                "Codes inputs must be {'audio_codes': [N][K][F] ints, 'audio_scales': [N] floats or null, "
                f"'num_samples': int}}; got keys {sorted(inputs)}."
            )
        try:
            codes = ClipCodes.checked(config, inputs["audio_codes"], inputs.get("audio_scales"), inputs["num_samples"])
        except EncodecInputError as err:
            raise EndpointRequestError(f"Malformed codes: {err}") from None
        max_samples = max_duration_s * config.sampling_rate
        if codes.num_samples > max_samples:
            raise EndpointRequestError(
                f"num_samples={codes.num_samples} is over this endpoint's limit of {max_duration_s:g} s.",
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            )
        return Request(task, bandwidth, codes=codes)

    if isinstance(inputs, str):
        text = inputs.split(",", 1)[1] if inputs.startswith("data:") else inputs  # allow data: URIs
        try:
            inputs = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise EndpointRequestError("inputs is a string but not valid base64-encoded audio.") from None
    if not isinstance(inputs, (bytes, bytearray, memoryview)):
        raise EndpointRequestError(
            f"inputs must be audio bytes, a base64 string or a codes object, got {type(inputs).__name__}."
        )
    return Request(task, bandwidth, audio=_decode_audio_bytes(bytes(inputs), config, max_duration_s))


def _wav_base64(audio: np.ndarray, sampling_rate: int) -> str:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, audio.T, sampling_rate, format="WAV", subtype="FLOAT")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class EndpointHandler:
    """Inference Endpoints custom handler (`handler.py` in the repo re-exports this class).

    Args:
        path (`str`): the model folder (the repo root on Inference Endpoints).
        max_duration_s (`float`, *optional*): longest audio accepted; default `$ENCODEC_HF_MAX_DURATION_S`
            or 600 s.
        device (`str`, *optional*): torch device; default CUDA when available.
        workers (`int`): requests computed at once; further calls wait for a free worker.
        num_threads (`int`, *optional*): torch threads per request; default `$ENCODEC_HF_NUM_THREADS`, else the
            process's count if the user set one (`OMP_NUM_THREADS`, `torch.set_num_threads`), else the physical
            cores divided by `workers` (at least 1). The calling thread's count is restored after each request.
    """

    def __init__(
        self,
        path: str = "",
        max_duration_s: float | None = None,
        device: str | None = None,
        workers: int = 1,
        num_threads: int | None = None,
    ):
        from ..codec.feature_extraction import EncodecFeatureExtractor
        from .hub import load_model

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_model(path or ".", device=device)
        self.config = self.model.config
        self.feature_extractor = EncodecFeatureExtractor.for_config(self.config)
        if max_duration_s is None:
            max_duration_s = float(os.environ.get("ENCODEC_HF_MAX_DURATION_S", DEFAULT_MAX_DURATION_S))
        if max_duration_s <= 0:
            raise ValueError(f"max_duration_s must be positive, got {max_duration_s}.")
        self.max_duration_s = float(max_duration_s)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}.")
        self.workers = workers
        # Resolved once, here: in a worker thread torch's count is that thread's, not the user's.
        self.num_threads = resolve_num_threads(num_threads, default=max(1, torch_default_threads() // workers))
        # The model is shared and its inference holds no per-call state, so `workers` calls may run at once.
        self._workers = threading.BoundedSemaphore(workers)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        threads = contextlib.nullcontext() if self.num_threads is None else torch_threads(self.num_threads)
        with self._workers, threads:
            return self._run(parse_request(data, self.config, self.max_duration_s))

    def _run(self, request: Request) -> dict[str, Any]:
        sr = self.config.sampling_rate
        if request.task == "decode":
            audio = decode_clip(self.model, request.codes)
            return {"audio": _wav_base64(audio, sr), "sampling_rate": sr, "num_samples": audio.shape[-1]}
        (codes,) = encode_clips(self.model, [request.audio], request.bandwidth, self.feature_extractor)
        result: dict[str, Any] = {
            "audio_codes": codes.audio_codes.tolist(),
            "audio_scales": None if codes.audio_scales is None else codes.audio_scales.tolist(),
            "num_samples": codes.num_samples,
            "sampling_rate": sr,
            "bandwidth": request.bandwidth,
            "frame_rate": self.config.frame_rate,
        }
        if request.task == "roundtrip":
            result["audio"] = _wav_base64(decode_clip(self.model, codes), sr)
        return result


# --------------------------------------------------------------------------------------------------
# Local HTTP server (stdlib): the same handler behind POST /, GET /health.
# --------------------------------------------------------------------------------------------------


class EndpointServer(ThreadingHTTPServer):
    """`ThreadingHTTPServer` with bounded work: `endpoint.workers` requests computed at once, `max_queue` more
    admitted and waiting, every further request answered 503 with `Retry-After` (module docstring)."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG  # read by server_activate's listen()

    def __init__(
        self,
        address,
        endpoint: EndpointHandler,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ):
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0:
            raise ValueError(f"max_queue must be a non-negative integer, got {max_queue!r}.")
        self.endpoint = endpoint
        self.max_body_bytes = max_body_bytes
        self.max_queue = max_queue
        self.max_admitted = endpoint.workers + max_queue
        self._admitted = threading.BoundedSemaphore(self.max_admitted)
        self._connections = threading.BoundedSemaphore(self.max_admitted + CONNECTION_HEADROOM)
        self._lock = threading.Lock()
        self.active = 0  # admitted requests (computing or waiting for a worker)
        self.mean_in_system_s = 1.0  # running mean of a request's time from admission to reply (Retry-After)
        super().__init__(address, _RequestHandler)

    # Connection threads are bounded: when all are busy the accept loop waits and new connections stay in the
    # listen queue (they are served, late, never reset). Admitted work holds at most `max_admitted` of them.
    def process_request(self, request, client_address) -> None:
        self._connections.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connections.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def try_admit(self) -> bool:
        """Takes an admission slot if one is free (never blocks)."""
        if not self._admitted.acquire(blocking=False):
            return False
        with self._lock:
            self.active += 1
        return True

    def release(self, in_system_s: float) -> None:
        with self._lock:
            self.active -= 1
            self.mean_in_system_s = 0.8 * self.mean_in_system_s + 0.2 * in_system_s
        self._admitted.release()

    def retry_after_s(self) -> int:
        """Seconds until the admitted requests are likely served: the recent time from admission to reply (when
        saturated, that is the queue's wait plus one request's computation)."""
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(self.mean_in_system_s)))


def _query_parameters(query: str) -> dict[str, Any]:
    params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    if "bandwidth" in params:
        try:
            params["bandwidth"] = float(params["bandwidth"])
        except ValueError:
            raise EndpointRequestError(f"bandwidth must be a number in kbps, got {params['bandwidth']!r}.") from None
    return params


def _is_raw_audio(content_type: str) -> bool:
    return content_type.startswith("audio/") or content_type == "application/octet-stream"


class _RequestHandler(BaseHTTPRequestHandler):
    server: EndpointServer
    protocol_version = "HTTP/1.1"
    server_version = "encodec-hf"
    timeout = IDLE_TIMEOUT_S  # socket timeout: an idle keep-alive connection does not hold its thread for ever

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        logger.info("%s %s", self.address_string(), format % args)

    def _reply(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._reply(status, {"error": message, "status": int(status)}, headers)

    def _discard_body(self, length: int) -> None:
        """Reads and drops the body: closing a socket with unread input makes the kernel send a reset, which
        would destroy the reply before the client reads it."""
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                return
            length -= len(chunk)

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        if urlsplit(self.path).path != "/health":
            self._error(HTTPStatus.NOT_FOUND, f"No such path {self.path!r}; POST / or GET /health.")
            return
        server, config = self.server, self.server.endpoint.config
        self._reply(
            HTTPStatus.OK,
            {
                "status": "ok",
                "sampling_rate": config.sampling_rate,
                "audio_channels": config.audio_channels,
                "target_bandwidths": list(config.target_bandwidths),
                "max_duration_s": server.endpoint.max_duration_s,
                "workers": server.endpoint.workers,
                "max_queue": server.max_queue,
                "active": server.active,
            },
        )

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self.close_connection = True
            self._error(HTTPStatus.LENGTH_REQUIRED, "Send a Content-Length header with the request body.")
            return
        length = int(length_header)
        if length > self.server.max_body_bytes:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"Request body of {length} bytes is over the limit of {self.server.max_body_bytes} bytes.",
            )
            return
        if not self.server.try_admit():
            self._discard_body(length)
            self.close_connection = True  # frees this connection's thread for other clients
            retry = self.server.retry_after_s()
            self._error(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"The server is busy ({self.server.max_admitted} requests in progress or queued); retry in {retry} s.",
                {"Retry-After": str(retry)},
            )
            return
        start = time.perf_counter()
        try:
            self._serve_admitted(self.rfile.read(length))
        finally:
            self.server.release(time.perf_counter() - start)

    def _serve_admitted(self, body: bytes) -> None:
        url = urlsplit(self.path)
        if url.path not in ("/", "/predict"):
            self._error(HTTPStatus.NOT_FOUND, f"No such path {url.path!r}; POST / or GET /health.")
            return
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            if content_type == "application/json":
                try:
                    data = json.loads(body)
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    raise EndpointRequestError(f"The body is not valid JSON: {err}.") from None
            elif _is_raw_audio(content_type):
                data = {"inputs": body, "parameters": _query_parameters(url.query)}
            else:
                raise EndpointRequestError(
                    f"Unsupported Content-Type {content_type or '(none)'!r}; use application/json or one of "
                    f"{list(RAW_AUDIO_CONTENT_TYPES)}.",
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                )
            result = self.server.endpoint(data)
        except EndpointRequestError as err:
            self._error(err.status, str(err))
        except EncodecInputError as err:  # the package's documented bad-input errors (encodec_hf.errors)
            self._error(HTTPStatus.BAD_REQUEST, str(err))
        except Exception:  # anything else is a bug, not a bad request: log the traceback, keep serving
            logger.exception("Internal error while serving %s %s", self.command, self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal error while processing the request.")
        else:
            self._reply(HTTPStatus.OK, result)


def make_server(
    endpoint: EndpointHandler,
    host: str = "127.0.0.1",
    port: int = 8080,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_queue: int = DEFAULT_MAX_QUEUE,
) -> EndpointServer:
    """Bind (port 0 picks a free port: read `server.server_address`) without starting to serve."""
    return EndpointServer((host, port), endpoint, max_body_bytes, max_queue)


def serve(endpoint: EndpointHandler, host: str = "127.0.0.1", port: int = 8080, **kwargs: Any) -> None:
    """Serve `endpoint` over HTTP until interrupted."""
    server = make_server(endpoint, host, port, **kwargs)
    try:
        server.serve_forever()
    finally:
        server.server_close()
