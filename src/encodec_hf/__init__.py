"""encodec_hf: Meta's EnCodec neural audio codec for the Hugging Face ecosystem."""

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
