"""The EnCodec codec itself: configuration, feature extraction, the model and its layers.

This package imports nothing from the rest of encodec_hf, so it can be copied as is into a Hub repository for
``trust_remote_code`` loading by plain transformers. Its names load on first use (PEP 562), so that importing
``codec.errors`` (as the command line does for ``--help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .configuration import EncodecConfig
    from .feature_extraction import EncodecFeatureExtractor
    from .modeling import (
        EncodecDecoderOutput,
        EncodecEncoderOutput,
        EncodecModel,
        EncodecOutput,
        EncodecPreTrainedModel,
    )

# name -> the module of this package that defines it
_EXPORTS = {
    "EncodecConfig": "configuration",
    "EncodecFeatureExtractor": "feature_extraction",
    "EncodecDecoderOutput": "modeling",
    "EncodecEncoderOutput": "modeling",
    "EncodecModel": "modeling",
    "EncodecOutput": "modeling",
    "EncodecPreTrainedModel": "modeling",
}

__all__ = [
    "EncodecConfig",
    "EncodecDecoderOutput",
    "EncodecEncoderOutput",
    "EncodecFeatureExtractor",
    "EncodecModel",
    "EncodecOutput",
    "EncodecPreTrainedModel",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
