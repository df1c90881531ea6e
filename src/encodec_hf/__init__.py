"""encodec_hf: Meta's EnCodec neural audio codec for the Hugging Face ecosystem.

The public names load on first use (PEP 562): ``import encodec_hf`` and ``encodec-hf --help`` stay free of torch
and transformers until a model, the container or the Auto registration is actually used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .codec.configuration import EncodecConfig
    from .codec.feature_extraction import EncodecFeatureExtractor
    from .codec.modeling import (
        EncodecDecoderOutput,
        EncodecEncoderOutput,
        EncodecModel,
        EncodecOutput,
        EncodecPreTrainedModel,
    )
    from .ecdc.container import compress, compress_to_file, decompress, decompress_from_file
    from .ecdc.lm import EncodecLM, EncodecLMConfig
    from .integrations.auto import register, unregister

__version__ = "0.1.0"

# name -> the module (relative to this package) that defines it
_EXPORTS = {
    "EncodecConfig": ".codec.configuration",
    "EncodecFeatureExtractor": ".codec.feature_extraction",
    "EncodecDecoderOutput": ".codec.modeling",
    "EncodecEncoderOutput": ".codec.modeling",
    "EncodecModel": ".codec.modeling",
    "EncodecOutput": ".codec.modeling",
    "EncodecPreTrainedModel": ".codec.modeling",
    "compress": ".ecdc.container",
    "compress_to_file": ".ecdc.container",
    "decompress": ".ecdc.container",
    "decompress_from_file": ".ecdc.container",
    "EncodecLM": ".ecdc.lm",
    "EncodecLMConfig": ".ecdc.lm",
    "register": ".integrations.auto",
    "unregister": ".integrations.auto",
}

__all__ = [
    "EncodecConfig",
    "EncodecDecoderOutput",
    "EncodecEncoderOutput",
    "EncodecFeatureExtractor",
    "EncodecLM",
    "EncodecLMConfig",
    "EncodecModel",
    "EncodecOutput",
    "EncodecPreTrainedModel",
    "__version__",
    "compress",
    "compress_to_file",
    "decompress",
    "decompress_from_file",
    "register",
    "unregister",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
