"""Streaming encode and decode with explicit state (``streams``), and long files in bounded memory
(``codes_file``)."""

from .codes_file import (
    CODES_MAGIC,
    CODES_VERSION,
    CodesFileError,
    CodesFileInfo,
    decode_file,
    encode_file,
    iter_codes_file,
    load_codes_file,
    read_clip_codes,
)
from .streams import (
    ChunkDecoderStreamState,
    ChunkEncoderStreamState,
    ChunkStreamingDecoder,
    ChunkStreamingEncoder,
    DecoderStreamState,
    EncodedChunk,
    EncoderStreamState,
    StreamingDecoder,
    StreamingEncoder,
    streaming_decoder,
    streaming_encoder,
)

__all__ = [
    "CODES_MAGIC",
    "CODES_VERSION",
    "ChunkDecoderStreamState",
    "ChunkEncoderStreamState",
    "ChunkStreamingDecoder",
    "ChunkStreamingEncoder",
    "CodesFileError",
    "CodesFileInfo",
    "DecoderStreamState",
    "EncodedChunk",
    "EncoderStreamState",
    "StreamingDecoder",
    "StreamingEncoder",
    "decode_file",
    "encode_file",
    "iter_codes_file",
    "load_codes_file",
    "read_clip_codes",
    "streaming_decoder",
    "streaming_encoder",
]
