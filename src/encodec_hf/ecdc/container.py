"""`.ecdc` files: EnCodec codes in the container of Meta's `encodec` package, byte for byte.

Layout (all big-endian): `b"ECDC"`, version byte 0, uint32 N, N bytes of JSON metadata
`{"m": model name, "al": samples per channel, "nc": codebooks, "lm": bool}` written with `json.dumps`
defaults; then for each chunk (one for the 24 kHz model, 1 s chunks with 1 % overlap for 48 kHz): the
chunk's scale as a float32 when the model normalises, then its codes, byte-aligned. Without the LM the
codes are packed time-major on 10 bits, LSB first; with it they are arithmetic-coded with probabilities
from [`EncodecLM`], restarted (fresh state, fresh coder) at every chunk.

The model name in the header comes from the model's config: `config.ecdc_model_name` (written by
`conversion/convert_original_checkpoint.py`), else inferred from the sampling rate and channels of Meta's
two codecs (24 kHz mono -> "encodec_24khz", 48 kHz stereo -> "encodec_48khz"); other models have no
`.ecdc` name and are refused, as the original refuses them. One name is this package's own: the bundled
"encodec_hf_small_24khz" (`encodec_hf.bundled`), which Meta's package cannot decode.

Every field of an untrusted file is validated before any model runs, against the size of the data, so a
forged header cannot make decoding allocate or loop without bound.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import torch

from ..bundled import BUNDLED_MODEL_DIR, BUNDLED_MODEL_NAME
from ..codec.chunking import ChunkLayout, ClipCodes
from ..errors import EcdcFormatError, EncodecInputError, HubUnreachableError, MissingLMError
from ..integrations.hub import load_model
from .bitpacking import packed_size
from .lm import EncodecLM
from .payload import SCALE as _SCALE
from .payload import PayloadWriter, decode_lm_segment, encode_lm_segment, iter_payload

logger = logging.getLogger(__name__)

MAGIC = b"ECDC"
VERSION = 0
_HEADER = struct.Struct("!4sBI")
ECDC_MODEL_NAMES = ("encodec_24khz", "encodec_48khz", BUNDLED_MODEL_NAME)
# Where `decompress` finds a model when none is given (Hub repositories of the same weights, the bundled folder).
DEFAULT_MODEL_REPOS = {
    "encodec_24khz": "facebook/encodec_24khz",
    "encodec_48khz": "facebook/encodec_48khz",
    BUNDLED_MODEL_NAME: str(BUNDLED_MODEL_DIR),
}
# A header may not claim more audio than this (samples per channel at the model rate): a bound on work.
MAX_DURATION_S = 6 * 3600
# An arithmetic-coded symbol costs at least -log2(1 - 2 * (card - 1) / 2**24) bits (the widest possible
# range); a frame of K symbols therefore needs at least K times that, which bounds the frames a payload holds.
_MIN_BITS_PER_LM_SYMBOL = -math.log2(1 - 2 * 1023 / 2**24)

ProgressCallback = Callable[[int, int], None]


@dataclass
class EcdcHeader:
    """The metadata of an `.ecdc` file."""

    model_name: str
    audio_length: int
    num_codebooks: int
    use_lm: bool

    def to_bytes(self) -> bytes:
        # Key order and json.dumps defaults (", ", ": ") are part of the byte-exact format.
        meta = json.dumps({"m": self.model_name, "al": self.audio_length, "nc": self.num_codebooks, "lm": self.use_lm})
        meta_bytes = meta.encode("utf-8")
        return _HEADER.pack(MAGIC, VERSION, len(meta_bytes)) + meta_bytes


def read_header(data: bytes | memoryview) -> tuple[EcdcHeader, int]:
    """Parse and validate the header at the start of `data`; returns it and the offset of the body.

    Raises:
        EcdcFormatError: wrong magic, unknown version, metadata past the end of the data, metadata that is
            not the JSON object `{"m": str, "al": int > 0, "nc": int > 0, "lm": bool}`.
    """
    if len(data) < _HEADER.size:
        raise EcdcFormatError(f"Truncated .ecdc file: {len(data)} bytes, the header alone takes {_HEADER.size}.")
    magic, version, meta_size = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise EcdcFormatError(f"Not an .ecdc file: it starts with {bytes(magic)!r}, expected {MAGIC!r}.")
    if version != VERSION:
        raise EcdcFormatError(f"Unsupported .ecdc version {version}; this reader knows version {VERSION}.")
    end = _HEADER.size + meta_size
    if end > len(data):
        raise EcdcFormatError(
            f"Truncated .ecdc file: the header announces {meta_size} bytes of metadata but only "
            f"{len(data) - _HEADER.size} follow."
        )
    try:
        meta = json.loads(bytes(data[_HEADER.size : end]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise EcdcFormatError(f"Corrupt .ecdc metadata: not UTF-8 JSON ({err}).") from None
    if not isinstance(meta, dict) or not {"m", "al", "nc", "lm"} <= meta.keys():
        raise EcdcFormatError(
            f"Corrupt .ecdc metadata: expected an object with keys m, al, nc, lm; got {meta!r:.200}."
        )
    name, length, ncodebooks, use_lm = meta["m"], meta["al"], meta["nc"], meta["lm"]
    if not isinstance(name, str):
        raise EcdcFormatError(f"Corrupt .ecdc metadata: model name 'm' must be a string, got {name!r:.100}.")
    for key, value in (("al", length), ("nc", ncodebooks)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise EcdcFormatError(f"Corrupt .ecdc metadata: '{key}' must be a positive integer, got {value!r:.100}.")
    if not isinstance(use_lm, bool):
        raise EcdcFormatError(f"Corrupt .ecdc metadata: 'lm' must be true or false, got {use_lm!r:.100}.")
    return EcdcHeader(name, length, ncodebooks, use_lm), end


# ---------------------------------------------------------------------------------------------- model helpers
def ecdc_model_name(config) -> str:
    """The `.ecdc` name of a model: `config.ecdc_model_name`, else inferred for Meta's two codecs.

    Raises:
        ValueError: the model is neither of the two codecs the `.ecdc` format knows.
    """
    name = getattr(config, "ecdc_model_name", None)
    if name:
        return name
    signature = (config.sampling_rate, config.audio_channels, config.codebook_size, tuple(config.upsampling_ratios))
    inferred = {
        (24_000, 1, 1024, (8, 5, 4, 2)): "encodec_24khz",
        (48_000, 2, 1024, (8, 5, 4, 2)): "encodec_48khz",
    }.get(signature)
    if inferred is None:
        raise EncodecInputError(
            f"This model ({config.sampling_rate} Hz, {config.audio_channels} channel(s)) has no .ecdc name: the "
            f"format only knows {', '.join(ECDC_MODEL_NAMES)}. Set config.ecdc_model_name if it is one of them."
        )
    return inferred


def _resolve_model(model, device) -> tuple[Any, str | None]:
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, device if device is not None else "cpu"), os.fspath(model)
    return model, getattr(model, "name_or_path", None) or None


def _resolve_lm(lm, source: str | None, device) -> EncodecLM:
    if isinstance(lm, EncodecLM):
        return lm
    where = os.fspath(lm) if lm is not None else source
    if not where:
        raise MissingLMError(
            "This needs the entropy-coding LM but none was given: pass lm=EncodecLM.from_pretrained(...) or a "
            "model folder/repository converted with --lm-checkpoint."
        )
    try:
        return EncodecLM.from_pretrained(where, device=device if device is not None else "cpu")
    except HubUnreachableError:
        raise  # no network and not cached: its own message says how to fix that, the LM may well exist
    except (FileNotFoundError, OSError) as err:
        raise MissingLMError(
            f"No LM weights (lm.safetensors) in {where}: the file is entropy-coded with the LM. Convert the original "
            "checkpoint with `conversion/convert_original_checkpoint.py --lm-checkpoint encodec_lm_*.th` "
            "and use that folder."
        ) from err


def _chunk_frames(config, audio_length: int) -> list[int]:
    """Frames of each chunk of an `.ecdc` file of `audio_length` samples, in order.

    The original counts `ceil(L * frame_rate / sampling_rate)` per chunk of L samples; for its two codecs
    `frame_rate * hop_length == sampling_rate`, so that is the model's `ceil(L / hop_length)`.
    """
    return ChunkLayout.from_config(config).chunk_frames(audio_length)


def _lm_for(lm: EncodecLM, config, num_codebooks: int) -> EncodecLM:
    # The original pairs each codec with an LM of past context int(3.5 * frame_rate) over all its codebooks.
    expected = (config.num_quantizers, config.codebook_size, int(3.5 * config.frame_rate))
    found = (lm.config.num_codebooks, lm.config.codebook_size, lm.config.past_context)
    if found != expected or num_codebooks > found[0]:
        raise EncodecInputError(
            f"The LM (codebooks, size, past context) = {found} does not fit this codec, which needs {expected}: "
            "it belongs to another model."
        )
    return lm


# ---------------------------------------------------------------------------------------------- compression
def _as_audio(audio, channels: int) -> torch.Tensor:
    audio = torch.as_tensor(audio)
    if audio.dim() == 1:
        audio = audio[None]
    if audio.dim() != 2:
        raise EncodecInputError(f"audio must be [C, T] (or [T] for mono), got shape {tuple(audio.shape)}.")
    if not audio.is_floating_point():
        raise TypeError(f"audio must be floating point in [-1, 1], got {audio.dtype}.")
    if audio.shape[0] != channels:
        raise EncodecInputError(
            f"The model takes {channels} channel(s), the audio has {audio.shape[0]}: convert it first "
            "(encodec_hf.audio_io.convert_audio)."
        )
    if audio.shape[1] == 0:
        raise EncodecInputError("Cannot compress empty audio (0 samples).")
    return audio.to(torch.float32)


@torch.inference_mode()
def compress(
    model,
    audio,
    bandwidth: float | None = None,
    use_lm: bool = False,
    lm: EncodecLM | str | None = None,
    device: str | torch.device | None = None,
    progress: Callable[[int], None] | None = None,
) -> bytes:
    """Compress `audio` `[C, T]` (at the model's sampling rate) into `.ecdc` bytes.

    Args:
        model: an `EncodecModel`, or a folder / Hub repository to load one from.
        audio (`torch.Tensor` or `np.ndarray`): `[C, T]` float waveform, C = the model's channels.
        bandwidth (`float`, *optional*): kbps, one of `config.target_bandwidths`; default the lowest (the
            package's one default, `EncodecConfig.resolve_bandwidth`; the `encodec-hf` command passes 6, as Meta's).
        use_lm (`bool`): entropy-code with the LM (smaller, much slower).
        lm: the `EncodecLM`, or where to load it from; default: the model's folder / repository.
        device: where to run the model when it is loaded here (the LM runs where it lives; use CPU for
            files that other machines must read, see the README).
        progress: called with the number of frames done, for progress bars.

    Returns:
        The bytes of the `.ecdc` file.
    """
    model, source = _resolve_model(model, device)
    config = model.config
    name = ecdc_model_name(config)
    bandwidth = config.resolve_bandwidth(bandwidth)
    audio = _as_audio(audio, config.audio_channels)
    lm_model = _resolve_lm(lm, source, None) if use_lm else None
    model_device = next(model.parameters()).device
    (clip,) = ClipCodes.from_encoder_output(model.encode(audio[None].to(model_device), bandwidth=bandwidth), config)
    num_codebooks = clip.audio_codes.shape[1]
    if lm_model is not None:
        _lm_for(lm_model, config, num_codebooks)
    out = io.BytesIO()
    out.write(EcdcHeader(name, audio.shape[1], num_codebooks, use_lm).to_bytes())
    writer = PayloadWriter(out, config.normalize, config.codebook_nbits, lm_model, num_codebooks)
    for codes, scale in clip.chunks(config):
        writer.begin_chunk(scale)
        writer.push(codes.numpy())  # [K, F]
        writer.end_chunk()
        if progress is not None:
            progress(codes.shape[1])
    return out.getvalue()


def total_frames(model_or_config, audio_length: int) -> int:
    """Frames an `.ecdc` file of `audio_length` samples holds (for progress bars)."""
    config = getattr(model_or_config, "config", model_or_config)
    return sum(_chunk_frames(config, audio_length))


def _check_payload_bound(header: EcdcHeader, config, chunk_frames: list[int], available: int) -> None:
    """Refuse sample counts the payload cannot hold, before running anything."""
    scale_bytes = _SCALE.size if config.normalize else 0
    frames = sum(chunk_frames)
    if header.use_lm:
        least = len(chunk_frames) * scale_bytes + frames * header.num_codebooks * _MIN_BITS_PER_LM_SYMBOL / 8
    else:
        least = sum(scale_bytes + packed_size(f * header.num_codebooks, config.codebook_nbits) for f in chunk_frames)
    if least > available:
        raise EcdcFormatError(
            f"Truncated or forged .ecdc file: {header.audio_length} samples of {header.num_codebooks} codebooks "
            f"need at least {math.ceil(least)} bytes of codes, only {available} follow the header."
        )


@dataclass
class OpenedEcdc:
    """A validated `.ecdc` file and what decoding it needs (see :func:`open_ecdc`)."""

    data: memoryview
    header: EcdcHeader
    offset: int  # where the body starts
    model: Any
    lm: EncodecLM | None
    chunk_frames: list[int]

    @property
    def config(self):
        return self.model.config

    def payload(self, block_frames: int, end: Callable[[int], None] | None = None):
        """``(chunk index, scale, codes [K, f])`` blocks of the body, in order (``payload.iter_payload``)."""
        config = self.config
        return iter_payload(
            self.data,
            self.offset,
            self.chunk_frames,
            self.header.num_codebooks,
            config.normalize,
            config.codebook_nbits,
            self.lm,
            block_frames,
            end,
        )


def open_ecdc(
    data: memoryview, model=None, lm=None, device=None, max_duration_s: float = MAX_DURATION_S
) -> OpenedEcdc:
    """Validates the header of `.ecdc` bytes against the data and the model (loaded here when a name is given),
    before any model runs; the arguments are :func:`decompress`'s."""
    header, offset = read_header(data)
    if header.model_name not in ECDC_MODEL_NAMES:
        raise EcdcFormatError(
            f"The file was made by an unknown model {header.model_name!r}; .ecdc files come from "
            f"{', '.join(ECDC_MODEL_NAMES)}."
        )
    if model is None:
        model = DEFAULT_MODEL_REPOS[header.model_name]
    model, source = _resolve_model(model, device)
    config = model.config
    name = ecdc_model_name(config)
    if name != header.model_name:
        raise EcdcFormatError(
            f"The file was made by {header.model_name} but the model is {name}: decode it with {header.model_name} "
            f"(e.g. model={DEFAULT_MODEL_REPOS[header.model_name]!r} or its converted folder)."
        )
    if header.num_codebooks > config.num_quantizers:
        raise EcdcFormatError(f"The file claims {header.num_codebooks} codebooks; {name} has {config.num_quantizers}.")
    if header.audio_length > max_duration_s * config.sampling_rate:
        raise EcdcFormatError(
            f"The file claims {header.audio_length} samples ({header.audio_length / config.sampling_rate:.0f} s), "
            f"more than max_duration_s={max_duration_s}; raise max_duration_s if it is genuine."
        )
    chunk_frames = _chunk_frames(config, header.audio_length)
    _check_payload_bound(header, config, chunk_frames, len(data) - offset)
    lm_model = _lm_for(_resolve_lm(lm, source, None), config, header.num_codebooks) if header.use_lm else None
    return OpenedEcdc(data, header, offset, model, lm_model, chunk_frames)


@torch.inference_mode()
def decompress(
    data: bytes | bytearray | memoryview,
    model=None,
    lm: EncodecLM | str | None = None,
    device: str | torch.device | None = None,
    progress: Callable[[int], None] | None = None,
    max_duration_s: float = MAX_DURATION_S,
) -> tuple[torch.Tensor, int]:
    """Decode `.ecdc` bytes into `(audio [C, T] float32, sampling_rate)`.

    Args:
        data: the file's bytes.
        model: an `EncodecModel`, or a folder / Hub repository; default: `DEFAULT_MODEL_REPOS[header name]`.
        lm: the `EncodecLM` (or where to load it) for LM-coded files; default: the model's folder / repository.
        device: where to run a model loaded here.
        progress: called with the number of frames decoded.
        max_duration_s: refuse files that claim more audio than this.

    Raises:
        EcdcFormatError: malformed, truncated or forged data, or a file made by another model.
        MissingLMError: the file is LM-coded and no LM weights are available.
    """
    data = memoryview(bytes(data) if not isinstance(data, (bytes, memoryview)) else data)
    opened = open_ecdc(data, model, lm, device, max_duration_s)
    config, header, model = opened.config, opened.header, opened.model
    blocks: list[list[np.ndarray]] = [[] for _ in opened.chunk_frames]
    scales: list[float | None] = [None] * len(opened.chunk_frames)
    for index, scale, codes in opened.payload(block_frames=64):  # blocks of 64 frames: progress that moves
        blocks[index].append(codes)
        scales[index] = scale
        if progress is not None:
            progress(codes.shape[1])
    chunks = [np.concatenate(c, axis=1) for c in blocks]
    clip = ClipCodes.from_chunks(config, chunks, scales, header.audio_length)
    decoded = model.decode(**ClipCodes.decoder_inputs([clip], next(model.parameters()).device))
    return decoded.audio_values[0].float().cpu(), config.sampling_rate


def compress_to_file(model, audio, fo: BinaryIO | str | os.PathLike, **kwargs) -> None:
    """`compress` and write the bytes to a file object or path (see `compress` for the arguments)."""
    data = compress(model, audio, **kwargs)
    if isinstance(fo, (str, os.PathLike)):
        with open(fo, "wb") as f:
            f.write(data)
    else:
        fo.write(data)


def decompress_from_file(fo: BinaryIO | str | os.PathLike, **kwargs) -> tuple[torch.Tensor, int]:
    """`decompress` the content of a file object or path (see `decompress` for the arguments)."""
    if isinstance(fo, (str, os.PathLike)):
        with open(fo, "rb") as f:
            data = f.read()
    else:
        data = fo.read()
    return decompress(data, **kwargs)


__all__ = [
    "DEFAULT_MODEL_REPOS",
    "EcdcHeader",
    "OpenedEcdc",
    "decode_lm_segment",
    "encode_lm_segment",
    "compress",
    "compress_to_file",
    "decompress",
    "decompress_from_file",
    "ecdc_model_name",
    "load_model",
    "open_ecdc",
    "read_header",
    "total_frames",
]
