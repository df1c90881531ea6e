"""`.ecdc` files from audio files and back through the streams, in memory independent of the file's length.

:func:`compress_file` reads the audio file a block at a time (``audio_io.iter_audio_blocks``, one second per
block), converts its channels and rate block by block (``audio_io.StreamingConverter``, bit-identical to
``convert_audio`` of the whole file), encodes through the model's stream (``StreamingEncoder`` frame by frame for
the causal 24 kHz model, ``ChunkStreamingEncoder`` chunk by chunk for the 48 kHz one) and appends the codes to
the file as they come (``payload.PayloadWriter``: bit-packed, or arithmetic-coded with the LM a block of frames
at a time). The header needs the length up front; it is computed from the file's header
(``audio_io.audio_info``) and corrected at the end if the decoder delivered another count.

:func:`decompress_file` reads the codes a block at a time (``payload.iter_payload``), decodes them through the
stream (``StreamingDecoder`` / ``ChunkStreamingDecoder``) and writes 16-bit audio a block at a time
(``audio_io.save_audio_blocks``; with ``rescale`` the peak of the whole signal is needed first, so the float
audio goes to a temporary file next to the output and is scaled on a second pass).

Memory: the model, the stream state, one block of audio and its activations, the LM state, and the compressed
file itself on decompression (it is read whole: 2.7 MB per hour at 6 kbps). Nothing grows with the audio.

Bytes: the payload is written by the same class as ``compress`` writes it, so for the same codes the bytes are
the same. The chunk stream encodes each chunk with ``model.encode``, as ``compress`` does: identical codes. The
frame stream runs the reference layers step by step while ``compress`` runs ``model.encode`` (the fast plan by
default); their float sums are ordered differently, so where the two nearest codebook entries are within float
rounding of each other (relative distance ~1e-7 to 1e-5, a few codes in 10^4 on real audio with a full-size model)
the choice can flip; everywhere else the codes are the same (docs/streaming.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..audio_io import StreamingConverter, audio_info, iter_audio_blocks, save_audio_blocks
from ..errors import EncodecInputError
from ..files import atomic_path
from ..streaming.streams import streaming_decoder, streaming_encoder
from .container import EcdcHeader, _lm_for, _resolve_lm, _resolve_model, ecdc_model_name, open_ecdc
from .payload import PayloadWriter

Progress = Callable[[int], None]


@dataclass
class EcdcFileSummary:
    """What :func:`compress_file` / :func:`decompress_file` did: samples (per channel, at the model's rate), the
    `.ecdc` file's size and, on decompression, the peak before clipping or rescaling."""

    num_samples: int
    sampling_rate: int
    num_bytes: int
    peak: float | None = None

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sampling_rate

    @property
    def kbps(self) -> float:
        """The file's real bitrate, header included."""
        return 8 * self.num_bytes / self.duration_s / 1000


def can_stream(model, bandwidth: float | None = None) -> bool:
    """Whether :func:`compress_file` / :func:`decompress_file` can run ``model`` (Meta's two codecs can; a model
    that normalises whole unchunked inputs, or non-causal unchunked convolutions, cannot)."""
    from ..errors import StreamingNotSupportedError

    try:
        streaming_encoder(model, bandwidth)
        streaming_decoder(model)
    except StreamingNotSupportedError:
        return False
    return True


def _rewrite_header(path: Path, old_size: int, header: EcdcHeader) -> None:
    """Replaces the header of the file at ``path`` (``old_size`` bytes) by ``header``, copying the body."""
    fixed = path.with_name(path.name + ".header")
    try:
        with open(path, "rb") as src, open(fixed, "wb") as dst:
            src.seek(old_size)
            dst.write(header.to_bytes())
            shutil.copyfileobj(src, dst)
        os.replace(fixed, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fixed)


@torch.inference_mode()
def compress_file(
    model,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    bandwidth: float | None = None,
    use_lm: bool = False,
    lm=None,
    progress: Progress | None = None,
    block_seconds: float = 1.0,
) -> EcdcFileSummary:
    """Compresses an audio file into an `.ecdc` file, block by block, in memory independent of its length.

    Args:
        model: an `EncodecModel` that streams (``streaming_encoder``: Meta's two codecs do).
        input_path: any file soundfile reads; channels and rate are converted as ``convert_audio`` does.
        output_path: the `.ecdc` file, written atomically (``files.atomic_path``).
        bandwidth / use_lm / lm: as :func:`~encodec_hf.compress`.
        progress: called with the number of frames written, after each block.
        block_seconds: input read per block.

    Returns:
        An :class:`EcdcFileSummary`. The bytes equal ``compress(model, convert_audio(whole file), ...)`` but where
        the frame stream meets a near-tie (see the module's docstring).

    Raises:
        StreamingNotSupportedError: the model cannot stream (use ``compress`` on the whole audio).
        EncodecInputError / AudioFileError / FileNotFoundError: empty or unreadable input, an unknown model.
    """
    model, source = _resolve_model(model, None)
    config = model.config
    name = ecdc_model_name(config)
    enc = streaming_encoder(model, bandwidth)
    lm_model = _lm_for(_resolve_lm(lm, source, None), config, enc.num_codebooks) if use_lm else None
    info = audio_info(input_path)
    if info.frames == 0:
        raise EncodecInputError(f"Cannot compress empty audio: {os.fspath(input_path)} holds 0 samples.")
    _, blocks = iter_audio_blocks(input_path, max(1, int(block_seconds * info.samplerate)))
    converter = StreamingConverter(info.samplerate, info.channels, config.sampling_rate, config.audio_channels)
    header = EcdcHeader(name, converter.output_length(info.frames), enc.num_codebooks, use_lm)
    frame_unit = enc.unit == "frame"
    with atomic_path(output_path) as tmp, open(tmp, "wb") as f, contextlib.closing(blocks):
        f.write(header.to_bytes())
        writer = PayloadWriter(f, config.normalize, config.codebook_nbits, lm_model, enc.num_codebooks)

        def write(out) -> None:
            if frame_unit:
                codes = out[0].cpu().numpy()  # [K, f]
                writer.push(codes)
                frames = codes.shape[1]
            else:
                frames = 0
                for chunk in out:
                    scale = None if chunk.audio_scales is None else float(chunk.audio_scales.reshape(-1)[0])
                    writer.begin_chunk(scale)
                    writer.push(chunk.audio_codes[0].cpu().numpy())
                    writer.end_chunk()
                    frames += chunk.audio_codes.shape[-1]
            if progress is not None and frames:
                progress(frames)

        if frame_unit:
            writer.begin_chunk(None)  # StreamingEncoder refuses models that normalise
        for block in blocks:
            x = converter.push(block)
            if x.shape[-1]:
                write(enc.push(x[None]))
        x = converter.flush()
        if x.shape[-1]:
            write(enc.push(x[None]))
        write(enc.flush())
        if frame_unit:
            writer.end_chunk()
        f.close()
        num_bytes = len(header.to_bytes()) + writer.bytes_written
        if enc.num_samples != header.audio_length:
            # soundfile's frame count was an estimate (some compressed formats): the body holds the codes of the
            # samples actually read, so the header says that length.
            fixed = replace(header, audio_length=enc.num_samples)
            _rewrite_header(Path(tmp), len(header.to_bytes()), fixed)
            num_bytes += len(fixed.to_bytes()) - len(header.to_bytes())
    return EcdcFileSummary(enc.num_samples, config.sampling_rate, num_bytes)


def _decoded_blocks(opened, progress: Progress | None) -> Iterator[torch.Tensor]:
    """The decoded audio of an opened `.ecdc` file, `[C, n]` blocks trimmed to its length."""
    model, config, header = opened.model, opened.config, opened.header
    dec = streaming_decoder(model)
    remaining = header.audio_length

    def trimmed(audio: torch.Tensor) -> torch.Tensor:
        nonlocal remaining
        audio = audio[0, :, :remaining].float().cpu()
        remaining -= audio.shape[-1]
        return audio

    # Frame streams take one second of frames per push; chunk streams one chunk.
    block_frames = config.frame_rate if dec.unit == "frame" else max(opened.chunk_frames)
    for _, scale, codes in opened.payload(block_frames):
        codes_t = torch.from_numpy(codes)[None]  # [1, K, f]
        if dec.unit == "frame":
            yield trimmed(dec.push(codes_t))
        else:
            yield trimmed(dec.push(codes_t, None if scale is None else torch.tensor([[scale]], dtype=torch.float32)))
        if progress is not None:
            progress(codes.shape[1])
    yield trimmed(dec.flush())
    if remaining:
        raise RuntimeError(f"The decoder gave {remaining} samples fewer than the header's {header.audio_length}.")


@torch.inference_mode()
def decompress_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    model=None,
    lm=None,
    device: str | torch.device | None = None,
    rescale: bool = False,
    format: str | None = None,
    progress: Progress | None = None,
) -> EcdcFileSummary:
    """Decompresses an `.ecdc` file into a 16-bit audio file, block by block, in memory independent of its length.

    Args:
        input_path: the `.ecdc` file (read whole: it is small).
        output_path: the audio file (format from its suffix unless ``format`` is given), written atomically.
        model / lm / device: as :func:`~encodec_hf.decompress`.
        rescale: scale the whole signal by ``min(0.99 / peak, 1)`` instead of clipping to +-0.99 (two passes).
        progress: called with the number of frames decoded, after each block.

    Returns:
        An :class:`EcdcFileSummary` with the peak. The samples equal ``save_audio`` of ``decompress`` within one
        16-bit step (the streams' audio equals the offline decoder's within 1e-5).

    Raises:
        EcdcFormatError / MissingLMError: as ``decompress``; StreamingNotSupportedError for models that cannot
        stream.
    """
    data = memoryview(Path(input_path).read_bytes())
    opened = open_ecdc(data, model, lm, device)
    config = opened.config
    with atomic_path(output_path) as tmp:
        peak = save_audio_blocks(
            tmp, _decoded_blocks(opened, progress), config.sampling_rate, config.audio_channels, rescale, format
        )
    return EcdcFileSummary(opened.header.audio_length, config.sampling_rate, len(data), peak)


__all__ = ["EcdcFileSummary", "can_stream", "compress_file", "decompress_file"]
