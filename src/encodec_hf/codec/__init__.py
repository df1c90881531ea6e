"""The EnCodec codec itself: configuration, feature extraction, the model and its layers.

This package imports nothing from the rest of encodec_hf, so it can be copied as is into a Hub repository for
``trust_remote_code`` loading by plain transformers.
"""

from .configuration import EncodecConfig
from .feature_extraction import EncodecFeatureExtractor
from .modeling import EncodecDecoderOutput, EncodecEncoderOutput, EncodecModel, EncodecOutput, EncodecPreTrainedModel

__all__ = [
    "EncodecConfig",
    "EncodecDecoderOutput",
    "EncodecEncoderOutput",
    "EncodecFeatureExtractor",
    "EncodecModel",
    "EncodecOutput",
    "EncodecPreTrainedModel",
]
