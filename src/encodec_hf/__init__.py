"""encodec_hf: Meta's EnCodec neural audio codec for the Hugging Face ecosystem."""

from .auto import register, unregister
from .configuration import EncodecConfig
from .ecdc import compress, compress_to_file, decompress, decompress_from_file
from .feature_extraction import EncodecFeatureExtractor
from .lm import EncodecLM, EncodecLMConfig
from .modeling import (
    EncodecDecoderOutput,
    EncodecEncoderOutput,
    EncodecModel,
    EncodecOutput,
    EncodecPreTrainedModel,
)

__version__ = "0.1.0"

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
