"""`.ecdc` files, byte-compatible with Meta's `encodec` package: the container, its payload written and read a
block at a time, files of any length through the streams (`compress_file`, `decompress_file`), the entropy-coding
LM, the arithmetic coder and the bit packing of codes."""

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
from .streamed import EcdcFileSummary, compress_file, decompress_file

__all__ = [
    "DEFAULT_MODEL_REPOS",
    "EcdcFileSummary",
    "EcdcHeader",
    "EncodecLM",
    "EncodecLMConfig",
    "compress",
    "compress_file",
    "compress_to_file",
    "decompress",
    "decompress_file",
    "decompress_from_file",
    "ecdc_model_name",
    "load_model",
    "read_header",
    "total_frames",
]
