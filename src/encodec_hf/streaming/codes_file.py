"""Codes files (``.ehfc``): long audio files to EnCodec codes and back in bounded memory, through the streams.

:func:`encode_file` reads an audio file block by block, pushes it through the streaming encoder and appends the
codes to the file as they come; :func:`decode_file` streams them back into an audio file. Both hold one block,
one chunk and the stream state in memory, whatever the file's length. :func:`iter_codes_file`
reads the records one at a time, :func:`read_clip_codes` a whole file as a
:class:`~encodec_hf.codec.chunking.ClipCodes`. The layout is described in :func:`encode_file`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

from ..audio_io import iter_audio_blocks
from ..codec.chunking import ClipCodes
from ..errors import CodesFileError, EncodecInputError, SamplingRateError, StreamingNotSupportedError
from ..files import atomic_path
from .streams import EncodedChunk, streaming_decoder, streaming_encoder

logger = logging.getLogger(__name__)

__all__ = [
    "CODES_MAGIC",
    "CODES_VERSION",
    "CodesFileError",
    "CodesFileInfo",
    "decode_file",
    "encode_file",
    "iter_codes_file",
    "load_codes_file",
    "read_clip_codes",
]

CODES_MAGIC = b"EHFC"
CODES_VERSION = 1
_FILE_HEADER = struct.Struct("<4sBQI")  # magic, version, num_samples, length of the JSON header
_RECORD_HEADER = struct.Struct("<If")  # frames in the record, scale (NaN when the model does not normalise)
_INCOMPLETE = 2**64 - 1  # num_samples of a file whose writer did not finish


@dataclass
class CodesFileInfo:
    """Header of a codes file (see :func:`encode_file` for the layout)."""

    num_samples: int
    sampling_rate: int
    audio_channels: int
    num_codebooks: int
    codebook_size: int
    hop_length: int
    unit: str
    chunk_length: int | None
    chunk_stride: int | None
    bandwidth: float


def _write_header(f, info: CodesFileInfo, num_samples: int) -> None:
    meta = {k: v for k, v in info.__dict__.items() if k != "num_samples"}
    blob = json.dumps(meta, sort_keys=True).encode()
    f.write(_FILE_HEADER.pack(CODES_MAGIC, CODES_VERSION, num_samples, len(blob)))
    f.write(blob)


def _read_exact(f, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise CodesFileError(f"The codes file is truncated: expected {n} bytes of {what}, found {len(data)}.")
    return data


def _read_header(f) -> CodesFileInfo:
    magic, version, num_samples, blob_len = _FILE_HEADER.unpack(_read_exact(f, _FILE_HEADER.size, "header"))
    if magic != CODES_MAGIC:
        raise CodesFileError(f"Not an encodec_hf codes file (magic {magic!r}, expected {CODES_MAGIC!r}).")
    if version != CODES_VERSION:
        raise CodesFileError(f"Unsupported codes file version {version} (this reader knows {CODES_VERSION}).")
    if num_samples == _INCOMPLETE:
        raise CodesFileError("The codes file is incomplete: its writer stopped before the end of the audio.")
    try:
        meta = json.loads(_read_exact(f, blob_len, "JSON header"))
        return CodesFileInfo(num_samples=num_samples, **meta)
    except (ValueError, TypeError) as err:
        raise CodesFileError(f"The codes file header is malformed: {err}") from err


def iter_codes_file(path: str | os.PathLike) -> tuple[CodesFileInfo, Iterator[EncodedChunk]]:
    """Opens a codes file; returns its header and an iterator over its records as :class:`EncodedChunk`
    (``audio_codes`` `[1, K, F]` int64, ``audio_scales`` `[1, 1]` or `None`). One record is in memory at a time.

    For ``unit == "chunk"`` every record is one chunk; for ``unit == "frame"`` records are consecutive runs of
    frames (split wherever the encoder's blocks ended). An ``.ecdc`` writer can consume the same iterator.
    """
    f = open(path, "rb")  # noqa: SIM115 - closed by the generator
    try:
        info = _read_header(f)
    except BaseException:
        f.close()
        raise

    def records() -> Iterator[EncodedChunk]:
        with f:
            k = info.num_codebooks
            while True:
                head = f.read(_RECORD_HEADER.size)
                if not head:
                    return
                if len(head) != _RECORD_HEADER.size:
                    raise CodesFileError("The codes file is truncated inside a record header.")
                frames, scale = _RECORD_HEADER.unpack(head)
                data = _read_exact(f, 2 * frames * k, "codes")
                codes = torch.from_numpy(np.frombuffer(data, dtype="<u2").astype(np.int64).reshape(frames, k))
                scales = None if math.isnan(scale) else torch.tensor([[scale]], dtype=torch.float32)
                yield EncodedChunk(codes.t()[None].contiguous(), scales)

    return info, records()


def load_codes_file(path: str | os.PathLike) -> tuple[CodesFileInfo, list[EncodedChunk]]:
    """Reads a whole codes file into memory (for short files and tests; long files: :func:`iter_codes_file`)."""
    info, records = iter_codes_file(path)
    return info, list(records)


def _audio_blocks(path, block_size: int, config) -> Iterator[torch.Tensor]:
    """The audio file's blocks `[1, C, n]`, after checking its rate and channels against the model's."""
    info, blocks = iter_audio_blocks(path, block_size)
    if info.samplerate != config.sampling_rate:
        blocks.close()
        raise SamplingRateError(
            f"{path} is sampled at {info.samplerate} Hz but the model expects {config.sampling_rate} Hz; "
            "resample it first (e.g. with encodec_hf.audio_io.convert_audio or ffmpeg)."
        )
    if info.channels != config.audio_channels:
        blocks.close()
        raise EncodecInputError(
            f"{path} has {info.channels} channel(s) but the model expects {config.audio_channels}; "
            f"convert it first (e.g. ffmpeg -ac {config.audio_channels})."
        )
    return (block[None] for block in blocks)


def encode_file(
    model,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    bandwidth: float | None = None,
    block_size: int | None = None,
) -> CodesFileInfo:
    """Encodes an audio file into a codes file, block by block, in memory independent of the file's length.

    The audio is read ``block_size`` samples at a time (default: one second), pushed through
    :func:`streaming_encoder` and the codes are appended to ``output_path`` as they come, so the result is the
    same as ``model.encode`` of the whole file (the same codes up to near-ties, see `StreamingEncoder`) while
    only one block, one chunk and the stream state are in memory.

    Codes file layout (little-endian; version 1)::

        "EHFC" | version u8 | num_samples u64 | header_len u32 | header JSON (CodesFileInfo fields but num_samples)
        then records until end of file: frames u32 | scale f32 (NaN if none) | codes u16 [frames, K] (frame-major)

    ``num_samples`` is written last (the file is first written with 2**64 - 1, read as "incomplete"), and the file
    is written under a temporary name and renamed when complete (``encodec_hf.files.atomic_path``).

    Returns:
        The file's :class:`CodesFileInfo`.
    """
    config = model.config
    if config.codebook_size > 2**16:
        raise StreamingNotSupportedError("Codes files store 16-bit codes; codebook_size must be at most 65536.")
    enc = streaming_encoder(model, bandwidth)
    block_size = block_size or config.sampling_rate
    blocks = _audio_blocks(input_path, block_size, config)
    info = CodesFileInfo(
        num_samples=0,
        sampling_rate=config.sampling_rate,
        audio_channels=config.audio_channels,
        num_codebooks=enc.num_codebooks,
        codebook_size=config.codebook_size,
        hop_length=config.hop_length,
        unit=enc.unit,
        chunk_length=config.chunk_length,
        chunk_stride=config.chunk_stride,
        bandwidth=enc.bandwidth,
    )

    def write(f, out) -> None:
        chunks = out if isinstance(out, list) else [EncodedChunk(out, None)]
        for chunk in chunks:
            frames = chunk.audio_codes.shape[-1]
            if frames == 0:
                continue
            scale = float("nan") if chunk.audio_scales is None else float(chunk.audio_scales.reshape(-1)[0])
            f.write(_RECORD_HEADER.pack(frames, scale))
            f.write(chunk.audio_codes[0].t().numpy().astype("<u2").tobytes())

    with atomic_path(output_path) as tmp_path, open(tmp_path, "wb") as f:
        _write_header(f, info, _INCOMPLETE)
        for block in blocks:
            write(f, enc.push(block))
        write(f, enc.flush())
        info.num_samples = enc.num_samples
        f.seek(0)
        _write_header(f, info, info.num_samples)
    logger.info("Encoded %d samples of %s into %s", info.num_samples, input_path, output_path)
    return info


def decode_file(
    model,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    subtype: str | None = None,
    frames_per_block: int | None = None,
) -> CodesFileInfo:
    """Decodes a codes file written by :func:`encode_file` into an audio file, in bounded memory.

    The output has exactly the encoded file's length and equals ``model.decode`` of all its codes within float
    rounding. ``subtype`` is soundfile's (default: ``"FLOAT"`` for WAV, soundfile's default otherwise).
    ``frames_per_block`` re-blocks frame-unit files (default: one second of frames per decoder call).
    """
    import soundfile as sf

    config = model.config
    info, records = iter_codes_file(input_path)
    expected = {
        "sampling_rate": config.sampling_rate,
        "audio_channels": config.audio_channels,
        "codebook_size": config.codebook_size,
        "hop_length": config.hop_length,
        "unit": "chunk" if config.chunk_length is not None else "frame",
        "chunk_length": config.chunk_length,
    }
    mismatched = {k: (getattr(info, k), v) for k, v in expected.items() if getattr(info, k) != v}
    if mismatched:
        records.close()
        details = ", ".join(f"{k}: file {a!r} vs model {b!r}" for k, (a, b) in mismatched.items())
        raise CodesFileError(f"{input_path} was made by a model with other settings ({details}).")
    dec = streaming_decoder(model)
    if subtype is None and str(output_path).lower().endswith(".wav"):
        subtype = "FLOAT"
    frames_per_block = frames_per_block or config.frame_rate
    remaining = info.num_samples
    with (
        atomic_path(output_path) as tmp_path,
        sf.SoundFile(tmp_path, "w", config.sampling_rate, config.audio_channels, subtype=subtype) as out,
    ):

        def write(audio: torch.Tensor) -> None:
            nonlocal remaining
            audio = audio[0, :, :remaining]
            remaining -= audio.shape[-1]
            if audio.shape[-1]:
                out.write(audio.t().numpy())

        pushed = False
        for record in records:
            if dec.unit == "chunk":
                write(dec.push(record.audio_codes, record.audio_scales))
                pushed = True
                continue
            for start in range(0, record.audio_codes.shape[-1], frames_per_block):
                write(dec.push(record.audio_codes[..., start : start + frames_per_block]))
                pushed = True
        if not pushed:
            raise CodesFileError(f"{input_path} holds no codes.")
        write(dec.flush())
        if remaining:
            raise CodesFileError(f"{input_path} holds {remaining} samples fewer than its header says.")
    return info


def read_clip_codes(path: str | os.PathLike) -> tuple[CodesFileInfo, ClipCodes]:
    """Reads a whole codes file as the codes of one clip (:class:`~encodec_hf.codec.chunking.ClipCodes`, what
    ``model.encode`` of the whole file gives): one record per chunk for chunked models, the frame runs joined
    into one chunk otherwise. For files that fit in memory; long files: :func:`iter_codes_file`."""
    info, records = iter_codes_file(path)
    records = list(records)
    if not records:
        raise CodesFileError(f"{path} holds no codes.")
    config = SimpleNamespace(
        chunk_length=info.chunk_length,
        chunk_stride=info.chunk_stride,
        hop_length=info.hop_length,
    )
    if info.unit == "chunk":
        chunks = [r.audio_codes[0] for r in records]
        scales = [None if r.audio_scales is None else float(r.audio_scales.reshape(-1)[0]) for r in records]
    else:
        chunks, scales = [torch.cat([r.audio_codes[0] for r in records], dim=-1)], [None]
    try:
        return info, ClipCodes.from_chunks(config, chunks, scales, info.num_samples)
    except EncodecInputError as err:
        raise CodesFileError(f"{path} does not hold the codes of its {info.num_samples} samples: {err}") from None
