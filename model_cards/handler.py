"""Inference Endpoints custom handler for this repo: a thin shim over encodec_hf.integrations.endpoint.

The serving container imports `EndpointHandler` from this file, calls `EndpointHandler(path)` with the
repo folder once, then `handler(data)` per request. All logic (parsing, validation, encode / decode /
round trip) lives in the `encodec_hf` package, installed through requirements.txt. It takes the audio formats
`encodec-hf compress` takes (what libsndfile reads: WAV, FLAC, OGG, MP3, AIFF, ...), as raw bytes or base64 JSON.
"""

from encodec_hf.integrations.endpoint import EndpointHandler

__all__ = ["EndpointHandler"]
