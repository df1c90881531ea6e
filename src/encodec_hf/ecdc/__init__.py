"""`.ecdc` files, byte-compatible with Meta's `encodec` package: the container, the entropy-coding LM, the
arithmetic coder and the bit packing of codes."""

from .container import (
    DEFAULT_MODEL_REPOS,
    EcdcHeader,
    compress,
    compress_to_file,
    decompress,
    decompress_from_file,
    ecdc_model_name,
    load_model,
    read_header,
    total_frames,
)
from .lm import EncodecLM, EncodecLMConfig

__all__ = [
    "DEFAULT_MODEL_REPOS",
    "EcdcHeader",
    "EncodecLM",
    "EncodecLMConfig",
    "compress",
    "compress_to_file",
    "decompress",
    "decompress_from_file",
    "ecdc_model_name",
    "load_model",
    "read_header",
    "total_frames",
]
