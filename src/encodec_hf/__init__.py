"""encodec_hf: Meta's EnCodec neural audio codec for the Hugging Face ecosystem."""

from .configuration import EncodecConfig
from .ecdc import compress, compress_to_file, decompress, decompress_from_file
from .lm import EncodecLM, EncodecLMConfig

__version__ = "0.1.0"

__all__ = [
    "EncodecConfig",
    "EncodecLM",
    "EncodecLMConfig",
    "__version__",
    "compress",
    "compress_to_file",
    "decompress",
    "decompress_from_file",
]
