"""encodec_hf: Meta's EnCodec neural audio codec for the Hugging Face ecosystem."""

from .auto import register, unregister
from .configuration import EncodecConfig
from .feature_extraction import EncodecFeatureExtractor
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
    "EncodecModel",
    "EncodecOutput",
    "EncodecPreTrainedModel",
    "__version__",
    "register",
    "unregister",
]
