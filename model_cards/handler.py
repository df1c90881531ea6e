"""Inference Endpoints custom handler for this repo: a thin shim over encodec_hf.integrations.endpoint.

The serving container imports `EndpointHandler` from this file, calls `EndpointHandler(path)` with the
repo folder once, then `handler(data)` per request. All logic (parsing, validation, encode / decode /
round trip) lives in the `encodec_hf` package, installed through requirements.txt.
"""

from encodec_hf.integrations.endpoint import EndpointHandler

__all__ = ["EndpointHandler"]
