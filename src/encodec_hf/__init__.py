"""encodec_hf: Meta's EnCodec neural audio codec for the Hugging Face ecosystem."""

from .configuration import EncodecConfig

__version__ = "0.1.0"

__all__ = ["EncodecConfig", "__version__"]
