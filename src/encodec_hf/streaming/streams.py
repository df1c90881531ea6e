"""Streaming encode and decode: audio in, codes out, frame by frame (or chunk by chunk), with explicit state.

Two streaming units, chosen by the model's config:

* **frame** (causal, unchunked models such as ``facebook/encodec_24khz``): push blocks of any size, get the codes
  of every frame as soon as its last sample has arrived. :class:`StreamingEncoder` / :class:`StreamingDecoder`.
* **chunk** (chunked models such as ``facebook/encodec_48khz``, whose padding is centred and whose GroupNorm
  statistics span a whole chunk): the unit is the chunk (1 s, 10 ms overlap). :class:`ChunkStreamingEncoder` /
  :class:`ChunkStreamingDecoder`.

:func:`streaming_encoder` and :func:`streaming_decoder` pick the right class for a model.

Exactness (frame unit). Every layer of the SEANet stack is run incrementally from a small state, by the
streaming steps that sit beside the layers (the "Streaming steps" sections of ``codec/conv.py``, ``codec/lstm.py``
and ``codec/seanet.py``; ``seanet.STREAM_STEPPERS`` says how each layer type is stepped): a padded convolution
keeps the input samples its next output still needs (and waits for its reflect padding once, at the start), a
transposed convolution keeps its overhang, the LSTM its ``(h, c)``, a residual block the skip samples its branch
has not caught up with. ``flush()`` ends every layer as the offline forward ends, so push + flush gives the
offline codes for every length.

The state is plain data (:class:`EncoderStreamState`, :class:`DecoderStreamState`), so several streams can run
side by side, a stream can be copied (``copy.deepcopy``) or reset.

Long files (an audio file to a codes file and back in bounded memory, through these streams): ``codes_file.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..codec.chunking import ChunkLayout, blend_dtype, overlap_add_window
from ..codec.conv import time_cat
from ..codec.seanet import stream_check, stream_flush, stream_init, stream_step
from ..errors import EncodecInputError, StreamClosedError, StreamingNotSupportedError
from ..threads import SMALL_OP_THREADS, torch_threads


# ---------------------------------------------------------------------------------------------------------------
# Public stream state
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class StreamStatus:
    """The lifecycle flags every stream state carries.

    Attributes:
        closed: `True` after ``flush()`` / ``close()``.
        broken: `True` if a push failed midway; the stream must be ``reset()``.
    """

    closed: bool = False
    broken: bool = False


@dataclass
class EncoderStreamState(StreamStatus):
    """Everything a frame-level encoder stream carries between pushes (plain data; ``copy.deepcopy`` forks it).

    Attributes:
        layers: one state per ``model.encoder.layers`` entry.
        batch_size: fixed by the first push.
        num_samples: samples pushed so far.
        num_frames: frames of codes returned so far.
        closed / broken: see :class:`StreamStatus`.
    """

    layers: list = field(default_factory=list)
    batch_size: int | None = None
    num_samples: int = 0
    num_frames: int = 0


@dataclass
class DecoderStreamState(StreamStatus):
    """Everything a frame-level decoder stream carries between pushes.

    Attributes:
        layers: one state per ``model.decoder.layers`` entry.
        batch_size / num_codebooks: fixed by the first push.
        num_frames: frames pushed so far; num_samples: audio samples returned so far.
        closed / broken: see :class:`StreamStatus`.
    """

    layers: list = field(default_factory=list)
    batch_size: int | None = None
    num_codebooks: int | None = None
    num_frames: int = 0
    num_samples: int = 0


# ---------------------------------------------------------------------------------------------------------------
# Input checks shared by the stream classes
# ---------------------------------------------------------------------------------------------------------------
def _param_like(model: nn.Module) -> torch.Tensor:
    return next(model.parameters())


def _check_block(model, block, batch_size: int | None) -> torch.Tensor:
    """Validates an audio block `[B, C, n]` (or `[C, n]` for B = 1) before it touches any state."""
    channels = model.config.audio_channels
    if isinstance(block, np.ndarray):
        block = torch.from_numpy(block)
    if not isinstance(block, torch.Tensor):
        raise TypeError(f"An audio block must be a torch.Tensor or numpy array [B, C, n], got {type(block).__name__}.")
    if not block.is_floating_point():
        raise TypeError(
            f"Audio blocks must be floating point, got dtype {block.dtype}. Scale integer PCM to [-1, 1] first, "
            "e.g. block.float() / 32768 for int16."
        )
    if block.ndim == 2:
        block = block[None]
    if block.ndim != 3:
        raise EncodecInputError(
            f"An audio block must have shape [batch, channels, samples] (or [channels, samples]), got "
            f"{tuple(block.shape)}."
        )
    if block.shape[1] != channels:
        raise EncodecInputError(
            f"This model expects {channels} audio channel(s) but the block has {block.shape[1]} (shape "
            f"{tuple(block.shape)}, read as [batch, channels, samples])."
        )
    if batch_size is not None and block.shape[0] != batch_size:
        raise EncodecInputError(
            f"This stream carries {batch_size} item(s) but the block has batch size {block.shape[0]}; open one "
            "stream per batch size (or reset() this one)."
        )
    if block.shape[0] == 0:
        raise EncodecInputError("An audio block must hold at least one item (batch size 0 given).")
    if block.shape[-1] and not bool(torch.isfinite(block).all()):
        raise EncodecInputError(
            "The audio block contains NaN or Inf samples; clean it (e.g. torch.nan_to_num) before pushing. "
            "The stream was not changed."
        )
    like = _param_like(model)
    return block.to(device=like.device, dtype=like.dtype)


def _check_code_block(model, codes, batch_size: int | None, num_codebooks: int | None) -> torch.Tensor:
    """Validates codes `[B, K, F]` (or `[K, F]` for B = 1) before they touch any state."""
    config = model.config
    if isinstance(codes, np.ndarray):
        codes = torch.from_numpy(codes)
    if not isinstance(codes, torch.Tensor):
        raise TypeError(f"Codes must be a torch.Tensor [B, K, F], got {type(codes).__name__}.")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise TypeError(f"Codes must be an integer tensor, got dtype {codes.dtype}.")
    if codes.ndim == 2:
        codes = codes[None]
    if codes.ndim != 3:
        raise EncodecInputError(f"Codes must have shape [batch, codebooks, frames], got {tuple(codes.shape)}.")
    if batch_size is not None and codes.shape[0] != batch_size:
        raise EncodecInputError(f"This stream carries {batch_size} item(s) but the codes have batch {codes.shape[0]}.")
    k = codes.shape[1]
    if num_codebooks is not None and k != num_codebooks:
        raise EncodecInputError(
            f"This stream decodes {num_codebooks} codebooks (fixed by its first frames) but got {k}; every frame of "
            "a stream must use the same bandwidth."
        )
    if not 1 <= k <= config.num_quantizers:
        raise EncodecInputError(f"Codes must have 1 to {config.num_quantizers} codebooks, got {k}.")
    if codes.numel():
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= config.codebook_size:
            raise EncodecInputError(f"Codes must lie in [0, {config.codebook_size}); got values from {low} to {high}.")
    return codes.to(device=_param_like(model).device, dtype=torch.long)


class _Stream:
    """Lifecycle shared by the stream classes: closed / broken flags, context manager, guarded updates (each inside
    ``encodec_hf.threads.torch_threads``: one torch thread for frame streams, the process's count for chunk ones)."""

    state: EncoderStreamState | DecoderStreamState
    num_threads: int | None = None
    _default_threads: int | None = SMALL_OP_THREADS

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Ends the stream without computing its tail (use ``flush()`` to get it); ``reset()`` reopens it."""
        self.state.closed = True

    @property
    def closed(self) -> bool:
        return self.state.closed

    def _check_open(self) -> None:
        if self.state.broken:
            raise StreamClosedError(
                "This stream is broken: an earlier push failed midway, so its state is inconsistent. Call reset()."
            )
        if self.state.closed:
            raise StreamClosedError("This stream is closed (flush() or close() was called); call reset() to reuse it.")

    def _guarded(self, fn, *args):
        """Runs a state update; an exception midway marks the stream broken (inputs were validated before)."""
        with torch.no_grad(), torch_threads(self.num_threads, self._default_threads):
            try:
                return fn(*args)
            except Exception:
                self.state.broken = True
                raise


# ---------------------------------------------------------------------------------------------------------------
# Frame-level (causal) streams
# ---------------------------------------------------------------------------------------------------------------
class StreamingEncoder(_Stream):
    """Frame-by-frame encoder of a causal model: audio blocks in, codes out as soon as each frame is complete.

    Args:
        model: an :class:`~encodec_hf.EncodecModel` with causal convolutions, weight norm and no chunking
            (``facebook/encodec_24khz``).
        bandwidth: kbps, one of ``config.target_bandwidths``; defaults to the lowest, as ``encode`` does.
        num_threads: torch threads for each push / flush; default one (``encodec_hf.threads``), the caller's count
            restored after each call.

    Example:

    ```python
    >>> enc = StreamingEncoder(model, bandwidth=6.0)
    >>> codes = [enc.push(block) for block in blocks]  # each [B, K, frames_ready], frames_ready may be 0
    >>> codes.append(enc.flush())                        # the last partial frame; the stream is now closed
    >>> torch.equal(torch.cat(codes, -1), model.encode(torch.cat(blocks, -1), bandwidth=6.0).audio_codes[0])
    True
    ```

    ``push`` returns `[B, K, F]` int64 codes; every frame whose ``hop_length`` samples have all been pushed is
    returned, except during the start-up stall (the reflect left padding of the latent-rate convolution needs
    ``last_kernel_size`` frames: the first codes come once 7 frames are in, then one per frame). ``flush()``
    returns the remaining frames, including the last partial frame, which the offline ``encode`` computes from
    right-padded audio: so the codes of push + flush are ``model.encode(whole)``'s for every length, up to
    near-ties (the steps round the latents differently: docs/performance.md, "What identical codes means").
    """

    unit = "frame"

    def __init__(self, model, bandwidth: float | None = None, num_threads: int | None = None) -> None:
        config = model.config
        self.num_threads = num_threads
        if config.chunk_length is not None:
            raise StreamingNotSupportedError(
                "This model splits audio into chunks; stream it per chunk with ChunkStreamingEncoder "
                "(or streaming_encoder(model))."
            )
        if config.normalize:
            raise StreamingNotSupportedError(
                "This model normalises the whole input by its RMS before encoding, which needs the whole input; "
                "it cannot stream frame by frame."
            )
        stream_check(model.encoder.layers, "The encoder")
        self.model = model
        self.bandwidth = config.resolve_bandwidth(bandwidth)
        self.num_codebooks = config.num_quantizers_for_bandwidth(self.bandwidth)
        self.hop_length = config.hop_length
        self.reset()

    def reset(self) -> None:
        """Starts a new stream (new state); the model is untouched."""
        self.state = EncoderStreamState(layers=stream_init(self.model.encoder.layers))

    @property
    def num_samples(self) -> int:
        """Samples pushed so far (pass it to the decoder side to trim the output to the input's length)."""
        return self.state.num_samples

    def push(self, block) -> torch.Tensor:
        """Feeds audio `[B, C, n]` (any n >= 0; `[C, n]` means B = 1); returns the codes `[B, K, F]` now complete.

        Raises:
            StreamClosedError: after ``flush()`` / ``close()`` or after a failed push.
            TypeError / EncodecInputError: wrong type, dtype, shape, channel count, batch size or non-finite
                samples. The stream is left unchanged and stays usable.
        """
        self._check_open()
        x = _check_block(self.model, block, self.state.batch_size)
        return self._guarded(self._push, x)

    def _push(self, x: torch.Tensor) -> torch.Tensor:
        self.state.batch_size = x.shape[0]
        self.state.num_samples += x.shape[-1]
        latents = stream_step(self.model.encoder.layers, self.state.layers, x)
        return self._quantize(latents)

    def _quantize(self, latents: torch.Tensor) -> torch.Tensor:
        self.state.num_frames += latents.shape[-1]
        if latents.shape[-1] == 0:
            return torch.zeros(latents.shape[0], self.num_codebooks, 0, dtype=torch.long, device=latents.device)
        return self.model.quantizer.encode(latents, self.num_codebooks)

    def flush(self) -> torch.Tensor:
        """Ends the stream and returns the remaining codes `[B, K, F]` (the last partial frame and any frames held
        by the start-up stall). Afterwards the stream is closed; ``reset()`` starts a new one."""
        self._check_open()
        if self.state.batch_size is None or self.state.num_samples == 0:
            raise EncodecInputError("Nothing was pushed into this stream, so there is nothing to flush.")

        def run() -> torch.Tensor:
            like = _param_like(self.model).new_empty(self.state.batch_size, self.model.config.audio_channels, 0)
            latents = stream_flush(self.model.encoder.layers, self.state.layers, like)
            return self._quantize(latents)

        codes = self._guarded(run)
        self.state.closed = True
        return codes


class StreamingDecoder(_Stream):
    """Frame-by-frame decoder of a causal model: frames of codes in, audio out as it becomes final.

    ``push(codes)`` takes `[B, K, F]` (any F >= 0) and returns audio `[B, C, n]`. After a start-up stall (the reflect
    left padding of the first, latent-rate convolution needs ``kernel_size`` = 7 frames) every pushed frame gives
    ``hop_length`` samples at once. The concatenated output equals ``model.decode`` of all frames (all
    ``F * hop_length`` samples) within float rounding (< 1e-5); trim it to the encoder's ``num_samples`` to get
    ``decode(**encode(x))``.
    """

    unit = "frame"

    def __init__(self, model, num_threads: int | None = None) -> None:
        config = model.config
        self.num_threads = num_threads
        if config.chunk_length is not None:
            raise StreamingNotSupportedError(
                "This model splits audio into chunks; stream it per chunk with ChunkStreamingDecoder "
                "(or streaming_decoder(model))."
            )
        if config.normalize:
            raise StreamingNotSupportedError("This model rescales whole inputs; it cannot stream frame by frame.")
        stream_check(model.decoder.layers, "The decoder")
        self.model = model
        self.hop_length = config.hop_length
        self.reset()

    def reset(self) -> None:
        """Starts a new stream (new state)."""
        self.state = DecoderStreamState(layers=stream_init(self.model.decoder.layers))

    def push(self, codes) -> torch.Tensor:
        """Feeds codes `[B, K, F]` (or `[K, F]`); returns the audio `[B, C, n]` that is now final.

        Raises:
            StreamClosedError: after ``flush()`` / ``close()`` or after a failed push.
            TypeError / EncodecInputError: non-integer codes, wrong shape, batch size, number of codebooks (it is
                fixed by the first push) or out-of-range values. The stream is left unchanged.
        """
        self._check_open()
        codes = _check_code_block(self.model, codes, self.state.batch_size, self.state.num_codebooks)
        return self._guarded(self._push, codes)

    def _push(self, codes: torch.Tensor) -> torch.Tensor:
        self.state.batch_size, self.state.num_codebooks = codes.shape[0], codes.shape[1]
        self.state.num_frames += codes.shape[-1]
        if codes.shape[-1] == 0:
            like = _param_like(self.model)
            return like.new_empty(codes.shape[0], self.model.config.audio_channels, 0)
        latents = self.model.quantizer.decode(codes, _param_like(self.model).dtype)
        audio = stream_step(self.model.decoder.layers, self.state.layers, latents)
        self.state.num_samples += audio.shape[-1]
        return audio

    def flush(self) -> torch.Tensor:
        """Ends the stream and returns the remaining audio `[B, C, n]`; the stream is then closed."""
        self._check_open()
        if self.state.batch_size is None or self.state.num_frames == 0:
            raise EncodecInputError("No frames were pushed into this stream, so there is nothing to flush.")

        def run() -> torch.Tensor:
            like = _param_like(self.model).new_empty(self.state.batch_size, self.model.config.hidden_size, 0)
            audio = stream_flush(self.model.decoder.layers, self.state.layers, like)
            self.state.num_samples += audio.shape[-1]
            return audio

        audio = self._guarded(run)
        self.state.closed = True
        return audio


# ---------------------------------------------------------------------------------------------------------------
# Chunk-level streams (48 kHz)
# ---------------------------------------------------------------------------------------------------------------
class EncodedChunk(NamedTuple):
    """One chunk of a chunked stream: ``audio_codes`` `[B, K, F]` and ``audio_scales`` `[B, 1]` (or `None`)."""

    audio_codes: torch.Tensor
    audio_scales: torch.Tensor | None


@dataclass
class ChunkEncoderStreamState(StreamStatus):
    """State of a chunk-level encoder stream.

    Attributes:
        buffer: `[B, C, n]` input from the start of the next chunk on (at most one chunk plus one block).
        offset: position of ``buffer[..., 0]`` in the stream = start of the next chunk (``ChunkLayout.span``).
        batch_size / num_samples / num_chunks / closed / broken: as their names say.
    """

    buffer: torch.Tensor | None = None
    offset: int = 0
    batch_size: int | None = None
    num_samples: int = 0
    num_chunks: int = 0


@dataclass
class ChunkDecoderStreamState(StreamStatus):
    """State of a chunk-level decoder stream: the overlap-add accumulators of the positions not final yet.

    Attributes:
        acc / weight_acc: `[B, C, n]` / `[n]` sums of ``w * audio`` and ``w`` from position ``acc_start`` on.
        weight: the triangular window, sized on the first chunk (as the offline overlap-add does).
        num_chunks / num_samples / batch_size / num_codebooks / closed / broken: as their names say.
    """

    acc: torch.Tensor | None = None
    weight_acc: torch.Tensor | None = None
    acc_start: int = 0
    weight: torch.Tensor | None = None
    num_chunks: int = 0
    num_samples: int = 0
    batch_size: int | None = None
    num_codebooks: int | None = None


class ChunkStreamingEncoder(_Stream):
    """Chunk-by-chunk encoder of a chunked model (``facebook/encodec_48khz``: 1 s chunks, 10 ms overlap).

    Push blocks of any size; each push returns the list of :class:`EncodedChunk` completed by it (a chunk is
    complete once ``chunk_length`` samples from its start are in). ``flush()`` returns the trailing, shorter
    chunks. Chunks are encoded as ``model.encode`` encodes them (same spans, same per-chunk RMS scale, the same
    layers), so chunk ``k`` of the stream is ``encode(x).audio_codes[k]`` (without the zero frames that pad shorter
    chunks there): scales bit-identical, codes identical in every measurement but, since ``encode`` runs full
    chunks as one batch and the stream one at a time, guaranteed only up to near-ties (docs/performance.md).
    """

    unit = "chunk"
    _default_threads = None  # whole 1 s chunks through the offline model: not small kernels

    def __init__(self, model, bandwidth: float | None = None, num_threads: int | None = None) -> None:
        config = model.config
        self.num_threads = num_threads
        if config.chunk_length is None:
            raise StreamingNotSupportedError(
                "This model does not split audio into chunks; use StreamingEncoder (frame by frame) for causal models."
            )
        self.model = model
        self.bandwidth = config.resolve_bandwidth(bandwidth)
        self.num_codebooks = config.num_quantizers_for_bandwidth(self.bandwidth)
        self.layout = ChunkLayout.from_config(config)
        self.reset()

    def reset(self) -> None:
        self.state = ChunkEncoderStreamState()

    @property
    def num_samples(self) -> int:
        return self.state.num_samples

    def push(self, block) -> list[EncodedChunk]:
        """Feeds audio `[B, C, n]`; returns the chunks completed by it (often none). Errors as
        :meth:`StreamingEncoder.push`."""
        self._check_open()
        x = _check_block(self.model, block, self.state.batch_size)
        return self._guarded(self._push, x)

    def _encode(self, chunk: torch.Tensor) -> EncodedChunk:
        out = self.model.encode(chunk, bandwidth=self.bandwidth)
        self.state.num_chunks += 1
        return EncodedChunk(out.audio_codes[0], out.audio_scales[0])

    def _take_chunk(self, length: int | None = None) -> EncodedChunk:
        """Encodes the next chunk of the layout (cut at ``length`` at the end) and drops the input before the
        chunk after it."""
        st = self.state
        start, end = self.layout.span(st.num_chunks, length)
        chunk = self._encode(st.buffer[..., start - st.offset : end - st.offset])
        next_start = self.layout.span(st.num_chunks)[0]
        st.buffer = st.buffer[..., next_start - st.offset :]
        st.offset = next_start
        return chunk

    def _push(self, x: torch.Tensor) -> list[EncodedChunk]:
        st = self.state
        st.batch_size = x.shape[0]
        st.num_samples += x.shape[-1]
        st.buffer = time_cat(st.buffer, x)
        chunks = []
        while self.layout.span(st.num_chunks)[1] <= st.num_samples:  # the next chunk is complete
            chunks.append(self._take_chunk())
        st.buffer = st.buffer.contiguous()
        return chunks

    def flush(self) -> list[EncodedChunk]:
        """Ends the stream; returns the remaining chunks (those starting before the end, each cut at the end)."""
        self._check_open()
        st = self.state
        if st.num_samples == 0:
            raise EncodecInputError("Nothing was pushed into this stream, so there is nothing to flush.")

        def run() -> list[EncodedChunk]:
            remaining = self.layout.num_chunks(st.num_samples) - st.num_chunks
            chunks = [self._take_chunk(st.num_samples) for _ in range(remaining)]
            st.buffer = None
            return chunks

        chunks = self._guarded(run)
        st.closed = True
        return chunks


class ChunkStreamingDecoder(_Stream):
    """Chunk-by-chunk decoder of a chunked model, with the offline decoder's overlap-add.

    ``push(audio_codes, audio_scales)`` takes one chunk (`[B, K, F]` codes and its `[B, 1]` scale) and returns the
    audio that no later chunk overlaps (``chunk_stride`` samples per full chunk, the first one included; the
    overlap of the last pushed chunk waits for the next one). ``flush()`` returns the rest. The result equals
    ``model.decode`` of all chunks within float rounding; trim it to the encoder's ``num_samples``.
    """

    unit = "chunk"
    _default_threads = None

    def __init__(self, model, num_threads: int | None = None) -> None:
        config = model.config
        self.num_threads = num_threads
        if config.chunk_length is None:
            raise StreamingNotSupportedError(
                "This model does not split audio into chunks; use StreamingDecoder (frame by frame)."
            )
        self.model = model
        self.layout = ChunkLayout.from_config(config)
        self.reset()

    def reset(self) -> None:
        self.state = ChunkDecoderStreamState()

    def push(self, audio_codes, audio_scales=None) -> torch.Tensor:
        """Feeds one chunk; returns audio `[B, C, n]`. Errors as :meth:`StreamingDecoder.push`, plus missing or
        malformed scales for models that normalise."""
        self._check_open()
        st = self.state
        codes = _check_code_block(self.model, audio_codes, st.batch_size, st.num_codebooks)
        frames_per_chunk = self.layout.frames_per_chunk(0)
        if codes.shape[-1] == 0 or codes.shape[-1] > frames_per_chunk:
            raise EncodecInputError(
                f"A chunk must have 1 to {frames_per_chunk} frames, got {codes.shape[-1]}; push one chunk per call."
            )
        # Reuse the model's checks of scales (shape, positivity) before any state changes.
        scales = self.model._check_scales([audio_scales], 1, codes.shape[0])
        return self._guarded(self._push, codes, scales)

    def _push(self, codes: torch.Tensor, scales: torch.Tensor | None) -> torch.Tensor:
        st = self.state
        st.batch_size, st.num_codebooks = codes.shape[0], codes.shape[1]
        audio = self.model.decode(codes[None], [None if scales is None else scales[0]]).audio_values
        if st.weight is None:
            st.weight = overlap_add_window(audio.shape[-1], audio.new_empty(0, dtype=blend_dtype(audio.dtype)))
        start = self.layout.span(st.num_chunks)[0]
        end = start + audio.shape[-1]
        acc_end = st.acc_start + (0 if st.acc is None else st.acc.shape[-1])
        if end > acc_end:  # grow the accumulators with zeros, as the offline buffers start at zero
            grow = end - acc_end
            new_acc = st.weight.new_zeros(*audio.shape[:2], grow)
            new_w = st.weight.new_zeros(grow)
            st.acc = new_acc if st.acc is None else torch.cat([st.acc, new_acc], -1)
            st.weight_acc = new_w if st.weight_acc is None else torch.cat([st.weight_acc, new_w], -1)
        w = st.weight[: audio.shape[-1]]
        lo = start - st.acc_start
        st.acc[..., lo : lo + audio.shape[-1]] += w * audio
        st.weight_acc[lo : lo + audio.shape[-1]] += w
        st.num_chunks += 1
        # Positions before the next chunk's start are final.
        return self._emit(min(self.layout.span(st.num_chunks)[0], end))

    def _emit(self, upto: int) -> torch.Tensor:
        st = self.state
        n = upto - st.acc_start
        out = (st.acc[..., :n] / st.weight_acc[:n]).to(_param_like(self.model).dtype)
        st.acc, st.weight_acc = st.acc[..., n:].contiguous(), st.weight_acc[n:].contiguous()
        st.acc_start = upto
        st.num_samples += n
        return out

    def flush(self) -> torch.Tensor:
        """Ends the stream; returns the audio still held back (the last chunk's overlap)."""
        self._check_open()
        st = self.state
        if st.num_chunks == 0:
            raise EncodecInputError("No chunks were pushed into this stream, so there is nothing to flush.")
        out = self._guarded(lambda: self._emit(st.acc_start + st.acc.shape[-1]))
        st.closed = True
        return out


def streaming_encoder(
    model, bandwidth: float | None = None, num_threads: int | None = None
) -> StreamingEncoder | ChunkStreamingEncoder:
    """The streaming encoder for ``model``: frame-level for causal unchunked models, chunk-level for chunked ones."""
    cls = ChunkStreamingEncoder if model.config.chunk_length is not None else StreamingEncoder
    return cls(model, bandwidth, num_threads)


def streaming_decoder(model, num_threads: int | None = None) -> StreamingDecoder | ChunkStreamingDecoder:
    """The streaming decoder matching :func:`streaming_encoder`."""
    cls = ChunkStreamingDecoder if model.config.chunk_length is not None else StreamingDecoder
    return cls(model, num_threads)
