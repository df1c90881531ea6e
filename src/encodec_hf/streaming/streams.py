"""Streaming encode and decode: audio in, codes out, frame by frame (or chunk by chunk), with explicit state.

Two streaming units, chosen by the model's config:

* **frame** (causal, unchunked models such as ``facebook/encodec_24khz``): push blocks of any size, get the codes
  of every frame as soon as its last sample has arrived. :class:`StreamingEncoder` / :class:`StreamingDecoder`.
* **chunk** (chunked models such as ``facebook/encodec_48khz``, whose padding is centred and whose GroupNorm
  statistics span a whole chunk): the unit is the chunk (1 s, 10 ms overlap). :class:`ChunkStreamingEncoder` /
  :class:`ChunkStreamingDecoder`.

:func:`streaming_encoder` and :func:`streaming_decoder` pick the right class for a model.

Exactness (frame unit). Every layer of the SEANet stack is run incrementally from a small state:

* a padded convolution keeps the ``k_eff - stride`` input samples the next output still needs. Its reflect left
  padding needs input samples ``1..padding_total``, so each layer waits for ``padding_total + 1`` inputs before
  its first output (a one-time start-up stall, not a steady-state delay). ``flush()`` applies the same right
  ``extra`` padding as the offline path, so the last partial frame is also offline's;
* a transposed convolution keeps the ``k - stride`` overhanging output samples, bias removed, and adds them to
  the head of the next output;
* the LSTM keeps ``(h, c)``; a residual block keeps the skip-path samples its (stalled) branch has not caught up
  with.

The state is plain data (:class:`EncoderStreamState`, :class:`DecoderStreamState`), so several streams can run
side by side, a stream can be copied (``copy.deepcopy``) or reset.

Long files: :func:`encode_file` / :func:`decode_file` go from an audio file to a codes file and back in bounded
memory, through the streaming classes; the codes file format is described in :func:`encode_file`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..codec.conv import EncodecConv1d, EncodecConvTranspose1d, extra_padding_for_conv1d, pad1d
from ..codec.lstm import EncodecLSTM
from ..codec.modeling import blend_dtype, overlap_add_window
from ..codec.seanet import EncodecResnetBlock
from ..errors import (
    EncodecInputError,
    SamplingRateError,
    StreamClosedError,
    StreamingNotSupportedError,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Per-layer state
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Conv1dState:
    """State of one padded convolution.

    Attributes:
        buffer: `[B, C_in, n]` padded input not consumed yet (before the start: the raw input received so far).
        received: raw input samples received since the stream started.
        started: whether the left padding has been applied (needs ``padding_total + 1`` inputs).
    """

    buffer: torch.Tensor | None = None
    received: int = 0
    started: bool = False


@dataclass
class ConvTranspose1dState:
    """State of one transposed convolution.

    Attributes:
        partial: `[B, C_out, k - stride]` overhang of the last output, bias removed (it is added once, by the
            output that owns those positions).
        emitted: untrimmed output positions emitted or dropped so far (for the left trim).
    """

    partial: torch.Tensor | None = None
    emitted: int = 0


@dataclass
class LSTMState:
    """``(h, c)`` of the LSTM, each `[num_layers, B, C]`, or `None` before the first input."""

    hidden: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass
class ResnetBlockState:
    """State of a residual block: its branch's layer states, its shortcut's, and skip samples awaiting the branch.

    Attributes:
        branch: states of the branch layers (ELU, conv, ELU, conv).
        shortcut: state of the 1x1 shortcut conv, or `None` for an identity shortcut.
        pending: `[B, C, n]` skip-path outputs whose branch outputs have not been produced yet.
    """

    branch: list
    shortcut: Conv1dState | None
    pending: torch.Tensor | None = None


LayerState = Conv1dState | ConvTranspose1dState | LSTMState | ResnetBlockState | None


def _init_state(layer: nn.Module) -> LayerState:
    if isinstance(layer, EncodecConv1d):
        return Conv1dState()
    if isinstance(layer, EncodecConvTranspose1d):
        return ConvTranspose1dState()
    if isinstance(layer, EncodecLSTM):
        return LSTMState()
    if isinstance(layer, EncodecResnetBlock):
        shortcut = layer.shortcut
        return ResnetBlockState(
            branch=[_init_state(sub) for sub in layer.block],
            shortcut=_init_state(shortcut) if isinstance(shortcut, EncodecConv1d) else None,
        )
    return None  # stateless, pointwise (ELU, Identity)


def _check_streamable(layer: nn.Module, where: str) -> None:
    """Raises StreamingNotSupportedError for layers that cannot run incrementally with exact results."""
    if isinstance(layer, EncodecResnetBlock):
        for sub in layer.block:
            _check_streamable(sub, where)
        _check_streamable(layer.shortcut, where)
        return
    if isinstance(layer, (EncodecConv1d, EncodecConvTranspose1d)):
        if not layer.causal:
            raise StreamingNotSupportedError(
                f"{where} has non-causal (centred) convolutions, which need future samples; frame-by-frame "
                "streaming needs a causal model (use_causal_conv=True, e.g. encodec_24khz). Chunked models stream "
                "per chunk with ChunkStreamingEncoder / ChunkStreamingDecoder."
            )
        if layer.norm_type == "time_group_norm":
            raise StreamingNotSupportedError(
                f"{where} uses time_group_norm, whose statistics span the whole input; it cannot stream "
                "frame by frame."
            )
        if isinstance(layer, EncodecConv1d):
            if layer.pad_mode == "circular":
                raise StreamingNotSupportedError("circular padding wraps the end of the signal; it cannot stream.")
            if layer.stride > 1 and layer.padding_total < layer.stride:
                # The right reflect padding at flush must read only kept samples: needs k_eff >= 2 * stride.
                raise StreamingNotSupportedError(
                    f"{where}: a conv with kernel {layer.kernel_size} < 2 x stride {layer.stride} is not supported."
                )
        return
    if isinstance(layer, (EncodecLSTM, nn.ELU, nn.Identity)):
        return
    raise StreamingNotSupportedError(f"{where} contains a layer that cannot stream: {type(layer).__name__}.")


# ---------------------------------------------------------------------------------------------------------------
# Incremental layer steps. Each ``_step`` takes the new inputs `[B, C, n]` (n may be 0) and returns the outputs
# that are final; ``_flush`` ends the stream and returns what is left, exactly as the offline forward ends.
# ---------------------------------------------------------------------------------------------------------------
def _cat(a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
    if a is None or a.shape[-1] == 0:
        return b
    if b.shape[-1] == 0:
        return a
    return torch.cat([a, b], dim=-1)


def _conv_consume(conv: EncodecConv1d, state: Conv1dState, like: torch.Tensor) -> torch.Tensor:
    """Runs the conv over every complete window of the (padded) buffer and drops what no later window needs."""
    buf = state.buffer
    k, s = conv.kernel_size, conv.stride
    if buf is None or buf.shape[-1] < k:
        return like.new_empty(like.shape[0], conv.conv.out_channels, 0)
    frames = (buf.shape[-1] - k) // s + 1
    out = conv.conv_forward(buf[..., : (frames - 1) * s + k])
    state.buffer = buf[..., frames * s :].contiguous()  # copy so the old buffer is freed
    return out


def _conv_step(conv: EncodecConv1d, state: Conv1dState, x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1]:
        state.buffer = _cat(state.buffer, x)
        state.received += x.shape[-1]
    if not state.started:
        if state.received < conv.padding_total + 1:
            return x.new_empty(x.shape[0], conv.conv.out_channels, 0)
        # Offline pads [x_P, ..., x_1] on the left (reflect); now that x_1..x_P exist we can do the same.
        state.buffer = pad1d(state.buffer, (conv.padding_total, 0), conv.pad_mode)
        state.started = True
    return _conv_consume(conv, state, x)


def _conv_flush(conv: EncodecConv1d, state: Conv1dState, like: torch.Tensor) -> torch.Tensor:
    if state.buffer is None:
        return like.new_empty(like.shape[0], conv.conv.out_channels, 0)
    if not state.started:
        # Shorter than the left padding: the whole input is still here, run the offline layer on it.
        out = conv(state.buffer)
        state.buffer = None
        return out
    extra = extra_padding_for_conv1d(state.received, conv.stride)
    # The buffer holds >= padding_total >= stride > extra samples, all real input (received > padding_total),
    # so this right reflection reads the same samples as the offline one.
    state.buffer = pad1d(state.buffer, (0, extra), conv.pad_mode)
    out = _conv_consume(conv, state, like)
    state.buffer = None
    return out


def _conv_tr_step(conv: EncodecConvTranspose1d, state: ConvTranspose1dState, x: torch.Tensor) -> torch.Tensor:
    channels = conv.conv.out_channels
    if x.shape[-1] == 0:
        return x.new_empty(x.shape[0], channels, 0)
    y = conv.conv_forward(x)  # [B, C, (n - 1) * s + k], bias included once
    if state.partial is not None:
        y[..., : state.partial.shape[-1]] += state.partial
    end = x.shape[-1] * conv.stride
    bias = conv.conv.bias
    tail = y[..., end:]
    state.partial = (tail - bias[:, None]) if bias is not None else tail.clone()
    out = y[..., :end]
    left, _ = conv.trims()
    if state.emitted < left:
        drop = min(left - state.emitted, end)
        out = out[..., drop:]
    state.emitted += end
    return out


def _conv_tr_flush(conv: EncodecConvTranspose1d, state: ConvTranspose1dState, like: torch.Tensor) -> torch.Tensor:
    # Offline keeps [left, F * s + left): the first ``left`` overhang samples belong to the output.
    left, _ = conv.trims()
    out = like.new_empty(like.shape[0], conv.conv.out_channels, 0)
    if state.partial is not None and left:
        bias = conv.conv.bias
        out = state.partial[..., :left] + (bias[:, None] if bias is not None else 0)
    state.partial = None
    return out


def _step(layer: nn.Module, state: LayerState, x: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, EncodecConv1d):
        return _conv_step(layer, state, x)
    if isinstance(layer, EncodecConvTranspose1d):
        return _conv_tr_step(layer, state, x)
    if isinstance(layer, EncodecLSTM):
        if x.shape[-1] == 0:
            return x
        # oneDNN's LSTM re-packs its weights on every call (tens of ms), which dominates frame-sized steps; the
        # native kernel agrees with it to float rounding (~1e-7), as does oneDNN run step by step.
        with torch.backends.mkldnn.flags(enabled=False, deterministic=None, allow_tf32=None, fp32_precision=None):
            y, state.hidden = layer.forward_with_state(x, state.hidden)
        return y
    if isinstance(layer, EncodecResnetBlock):
        skip = _step(layer.shortcut, state.shortcut, x)
        branch = x
        for sub, sub_state in zip(layer.block, state.branch, strict=True):
            branch = _step(sub, sub_state, branch)
        return _resnet_join(state, skip, branch)
    return layer(x) if x.shape[-1] else x


def _resnet_join(state: ResnetBlockState, skip: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """Adds each branch output to the skip output of the same position; the branch lags during start-up."""
    state.pending = _cat(state.pending, skip)
    n = branch.shape[-1]
    if n == 0:
        return branch
    out = state.pending[..., :n] + branch
    state.pending = state.pending[..., n:].contiguous()
    return out


def _flush(layer: nn.Module, state: LayerState, like: torch.Tensor) -> torch.Tensor:
    """Ends the stream of one layer: `like` gives batch, dtype and device for empty results."""
    if isinstance(layer, EncodecConv1d):
        return _conv_flush(layer, state, like)
    if isinstance(layer, EncodecConvTranspose1d):
        return _conv_tr_flush(layer, state, like)
    if isinstance(layer, EncodecResnetBlock):
        skip = _run_flush([layer.shortcut], [state.shortcut], like)
        branch = _run_flush(list(layer.block), state.branch, like)
        out = _resnet_join(state, skip, branch)
        if state.pending is not None and state.pending.shape[-1]:
            raise RuntimeError("internal streaming error: residual branch and skip lengths differ at flush")
        return out
    return like[..., :0]  # pointwise and LSTM layers hold nothing back


def _run_step(layers, states, x: torch.Tensor) -> torch.Tensor:
    for layer, state in zip(layers, states, strict=True):
        x = _step(layer, state, x)
    return x


def _run_flush(layers, states, like: torch.Tensor) -> torch.Tensor:
    """Flushes a chain: each layer first takes what its predecessor flushed, then flushes itself."""
    y = None
    for layer, state in zip(layers, states, strict=True):
        if y is not None and y.shape[-1]:
            y = _step(layer, state, y)
            y = _cat(y, _flush(layer, state, y))
        else:
            y = _flush(layer, state, like if y is None else y)
    return y


# ---------------------------------------------------------------------------------------------------------------
# Public stream state
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class EncoderStreamState:
    """Everything a frame-level encoder stream carries between pushes (plain data; ``copy.deepcopy`` forks it).

    Attributes:
        layers: one state per ``model.encoder.layers`` entry.
        batch_size: fixed by the first push.
        num_samples: samples pushed so far.
        num_frames: frames of codes returned so far.
        closed: `True` after ``flush()`` / ``close()``.
        broken: `True` if a push failed midway; the stream must be ``reset()``.
    """

    layers: list = field(default_factory=list)
    batch_size: int | None = None
    num_samples: int = 0
    num_frames: int = 0
    closed: bool = False
    broken: bool = False


@dataclass
class DecoderStreamState:
    """Everything a frame-level decoder stream carries between pushes.

    Attributes:
        layers: one state per ``model.decoder.layers`` entry.
        batch_size / num_codebooks: fixed by the first push.
        num_frames: frames pushed so far; num_samples: audio samples returned so far.
        closed / broken: as in :class:`EncoderStreamState`.
    """

    layers: list = field(default_factory=list)
    batch_size: int | None = None
    num_codebooks: int | None = None
    num_frames: int = 0
    num_samples: int = 0
    closed: bool = False
    broken: bool = False


# ---------------------------------------------------------------------------------------------------------------
# Input checks shared by the stream classes
# ---------------------------------------------------------------------------------------------------------------
def _check_bandwidth(config, bandwidth) -> int:
    """Number of codebooks for ``bandwidth`` kbps (the lowest target bandwidth when `None`, as ``encode``)."""
    checked = config.check_bandwidth(bandwidth)
    return config.num_quantizers_for_bandwidth(config.target_bandwidths[0] if checked is None else checked)


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
    """Lifecycle shared by the stream classes: closed / broken flags, context manager, guarded updates."""

    state: EncoderStreamState | DecoderStreamState

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
        try:
            with torch.no_grad():
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
    right-padded audio: so the codes of push + flush are identical to ``model.encode(whole)`` for every length.
    """

    unit = "frame"

    def __init__(self, model, bandwidth: float | None = None) -> None:
        config = model.config
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
        for layer in model.encoder.layers:
            _check_streamable(layer, "The encoder")
        self.model = model
        self.num_codebooks = _check_bandwidth(config, bandwidth)
        self.hop_length = config.hop_length
        self.reset()

    def reset(self) -> None:
        """Starts a new stream (new state); the model is untouched."""
        self.state = EncoderStreamState(layers=[_init_state(layer) for layer in self.model.encoder.layers])

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
        latents = _run_step(self.model.encoder.layers, self.state.layers, x)
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
            latents = _run_flush(self.model.encoder.layers, self.state.layers, like)
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

    def __init__(self, model) -> None:
        config = model.config
        if config.chunk_length is not None:
            raise StreamingNotSupportedError(
                "This model splits audio into chunks; stream it per chunk with ChunkStreamingDecoder "
                "(or streaming_decoder(model))."
            )
        if config.normalize:
            raise StreamingNotSupportedError("This model rescales whole inputs; it cannot stream frame by frame.")
        for layer in model.decoder.layers:
            _check_streamable(layer, "The decoder")
        self.model = model
        self.hop_length = config.hop_length
        self.reset()

    def reset(self) -> None:
        """Starts a new stream (new state)."""
        self.state = DecoderStreamState(layers=[_init_state(layer) for layer in self.model.decoder.layers])

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
        audio = _run_step(self.model.decoder.layers, self.state.layers, latents)
        self.state.num_samples += audio.shape[-1]
        return audio

    def flush(self) -> torch.Tensor:
        """Ends the stream and returns the remaining audio `[B, C, n]`; the stream is then closed."""
        self._check_open()
        if self.state.batch_size is None or self.state.num_frames == 0:
            raise EncodecInputError("No frames were pushed into this stream, so there is nothing to flush.")

        def run() -> torch.Tensor:
            like = _param_like(self.model).new_empty(self.state.batch_size, self.model.config.hidden_size, 0)
            audio = _run_flush(self.model.decoder.layers, self.state.layers, like)
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
class ChunkEncoderStreamState:
    """State of a chunk-level encoder stream.

    Attributes:
        buffer: `[B, C, n]` input from the start of the next chunk on (at most one chunk plus one block).
        offset: position of ``buffer[..., 0]`` in the stream = start of the next chunk.
        batch_size / num_samples / num_chunks / closed / broken: as their names say.
    """

    buffer: torch.Tensor | None = None
    offset: int = 0
    batch_size: int | None = None
    num_samples: int = 0
    num_chunks: int = 0
    closed: bool = False
    broken: bool = False


@dataclass
class ChunkDecoderStreamState:
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
    closed: bool = False
    broken: bool = False


class ChunkStreamingEncoder(_Stream):
    """Chunk-by-chunk encoder of a chunked model (``facebook/encodec_48khz``: 1 s chunks, 10 ms overlap).

    Push blocks of any size; each push returns the list of :class:`EncodedChunk` completed by it (a chunk is
    complete once ``chunk_length`` samples from its start are in). ``flush()`` returns the trailing, shorter
    chunks. Chunks are encoded exactly as ``model.encode`` encodes them (same spans, same per-chunk RMS scale),
    so the codes and scales are identical to offline encoding of the whole signal: chunk ``k`` of the stream is
    ``encode(x).audio_codes[k]`` (without the zero frames that pad shorter chunks there).
    """

    unit = "chunk"

    def __init__(self, model, bandwidth: float | None = None) -> None:
        config = model.config
        if config.chunk_length is None:
            raise StreamingNotSupportedError(
                "This model does not split audio into chunks; use StreamingEncoder (frame by frame) for causal models."
            )
        self.model = model
        self.bandwidth = config.target_bandwidths[0] if bandwidth is None else bandwidth
        self.num_codebooks = _check_bandwidth(config, bandwidth)
        self.chunk_length = config.chunk_length
        self.chunk_stride = config.chunk_stride or config.chunk_length
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

    def _push(self, x: torch.Tensor) -> list[EncodedChunk]:
        st = self.state
        st.batch_size = x.shape[0]
        st.num_samples += x.shape[-1]
        st.buffer = _cat(st.buffer, x)
        chunks = []
        while st.buffer.shape[-1] >= self.chunk_length:
            chunks.append(self._encode(st.buffer[..., : self.chunk_length]))
            st.buffer = st.buffer[..., self.chunk_stride :]
            st.offset += self.chunk_stride
        st.buffer = st.buffer.contiguous()
        return chunks

    def flush(self) -> list[EncodedChunk]:
        """Ends the stream; returns the remaining chunks (those starting before the end, each cut at the end)."""
        self._check_open()
        st = self.state
        if st.num_samples == 0:
            raise EncodecInputError("Nothing was pushed into this stream, so there is nothing to flush.")

        def run() -> list[EncodedChunk]:
            chunks = []
            # Offline chunks start at 0, stride, 2 * stride, ... < length.
            while st.offset < st.num_samples:
                chunks.append(self._encode(st.buffer[..., : self.chunk_length]))
                st.buffer = st.buffer[..., self.chunk_stride :]
                st.offset += self.chunk_stride
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

    def __init__(self, model) -> None:
        config = model.config
        if config.chunk_length is None:
            raise StreamingNotSupportedError(
                "This model does not split audio into chunks; use StreamingDecoder (frame by frame)."
            )
        self.model = model
        self.chunk_stride = config.chunk_stride or config.chunk_length
        self.reset()

    def reset(self) -> None:
        self.state = ChunkDecoderStreamState()

    def push(self, audio_codes, audio_scales=None) -> torch.Tensor:
        """Feeds one chunk; returns audio `[B, C, n]`. Errors as :meth:`StreamingDecoder.push`, plus missing or
        malformed scales for models that normalise."""
        self._check_open()
        st = self.state
        codes = _check_code_block(self.model, audio_codes, st.batch_size, st.num_codebooks)
        frames_per_chunk = math.ceil(self.model.config.chunk_length / self.model.config.hop_length)
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
        start = st.num_chunks * self.chunk_stride
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
        return self._emit(min(st.num_chunks * self.chunk_stride, end))

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


def streaming_encoder(model, bandwidth: float | None = None) -> StreamingEncoder | ChunkStreamingEncoder:
    """The streaming encoder for ``model``: frame-level for causal unchunked models, chunk-level for chunked ones."""
    if model.config.chunk_length is not None:
        return ChunkStreamingEncoder(model, bandwidth)
    return StreamingEncoder(model, bandwidth)


def streaming_decoder(model) -> StreamingDecoder | ChunkStreamingDecoder:
    """The streaming decoder matching :func:`streaming_encoder`."""
    if model.config.chunk_length is not None:
        return ChunkStreamingDecoder(model)
    return StreamingDecoder(model)


# ---------------------------------------------------------------------------------------------------------------
# Long files: audio file <-> codes file in bounded memory
# ---------------------------------------------------------------------------------------------------------------
CODES_MAGIC = b"EHFC"
CODES_VERSION = 1
_FILE_HEADER = struct.Struct("<4sBQI")  # magic, version, num_samples, length of the JSON header
_RECORD_HEADER = struct.Struct("<If")  # frames in the record, scale (NaN when the model does not normalise)
_INCOMPLETE = 2**64 - 1  # num_samples of a file whose writer did not finish


class CodesFileError(ValueError):
    """A codes file is malformed, truncated, unfinished or made by a model with other settings."""


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


def _iter_audio_blocks(path, block_size: int, config) -> tuple[int, Iterator[torch.Tensor]]:
    import soundfile as sf

    sound = sf.SoundFile(path)
    if sound.samplerate != config.sampling_rate:
        sound.close()
        raise SamplingRateError(
            f"{path} is sampled at {sound.samplerate} Hz but the model expects {config.sampling_rate} Hz; "
            "resample it first (e.g. with torchaudio.functional.resample or ffmpeg)."
        )
    if sound.channels != config.audio_channels:
        sound.close()
        raise EncodecInputError(
            f"{path} has {sound.channels} channel(s) but the model expects {config.audio_channels}; "
            f"convert it first (e.g. ffmpeg -ac {config.audio_channels})."
        )

    def blocks() -> Iterator[torch.Tensor]:
        with sound:
            while True:
                data = sound.read(block_size, dtype="float32", always_2d=True)  # [n, C]
                if not len(data):
                    return
                yield torch.from_numpy(np.ascontiguousarray(data.T))[None]  # [1, C, n]

    return sound.frames, blocks()


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
    same as ``model.encode`` of the whole file (identical codes) while only one block, one chunk and the stream
    state are in memory.

    Codes file layout (little-endian; version 1)::

        "EHFC" | version u8 | num_samples u64 | header_len u32 | header JSON (CodesFileInfo fields but num_samples)
        then records until end of file: frames u32 | scale f32 (NaN if none) | codes u16 [frames, K] (frame-major)

    ``num_samples`` is written last (the file is first written with 2**64 - 1, read as "incomplete"), and the file
    is written under a temporary name and renamed when complete.

    Returns:
        The file's :class:`CodesFileInfo`.
    """
    config = model.config
    if config.codebook_size > 2**16:
        raise StreamingNotSupportedError("Codes files store 16-bit codes; codebook_size must be at most 65536.")
    enc = streaming_encoder(model, bandwidth)
    block_size = block_size or config.sampling_rate
    _, blocks = _iter_audio_blocks(input_path, block_size, config)
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
        bandwidth=float(config.target_bandwidths[0] if bandwidth is None else bandwidth),
    )
    tmp_path = f"{output_path}.part"

    def write(f, out) -> None:
        chunks = out if isinstance(out, list) else [EncodedChunk(out, None)]
        for chunk in chunks:
            frames = chunk.audio_codes.shape[-1]
            if frames == 0:
                continue
            scale = float("nan") if chunk.audio_scales is None else float(chunk.audio_scales.reshape(-1)[0])
            f.write(_RECORD_HEADER.pack(frames, scale))
            f.write(chunk.audio_codes[0].t().numpy().astype("<u2").tobytes())

    try:
        with open(tmp_path, "wb") as f:
            _write_header(f, info, _INCOMPLETE)
            for block in blocks:
                write(f, enc.push(block))
            write(f, enc.flush())
            info.num_samples = enc.num_samples
            f.seek(0)
            _write_header(f, info, info.num_samples)
        os.replace(tmp_path, output_path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
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
    with sf.SoundFile(output_path, "w", config.sampling_rate, config.audio_channels, subtype=subtype) as out:

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
