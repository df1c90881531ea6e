"""Padded convolutions of EnCodec: pure integer padding arithmetic plus the two conv modules.

The padding rules are those of Meta's ``SConv1d`` / ``SConvTranspose1d`` (and transformers' port):

* a conv with effective kernel ``k`` and stride ``s`` needs ``padding_total = k - s`` samples of padding;
  causal layers put all of it on the left, centred layers split it (``right = total // 2``);
* ``extra`` right padding makes the length a multiple of the stride, so ``T`` samples give ``ceil(T / s)``
  frames and no input sample is dropped;
* transposed convs trim ``k - s`` samples from their output (causal: ``trim_right_ratio`` of it on the right).

Everything that depends only on integers lives in small functions so the offline, streaming and inference-plan
paths share one definition. The modules are the reference computation (what transformers computes, and what
training differentiates); ``inference_plan.py`` turns them into the faster inference steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def effective_kernel_size(kernel_size: int, dilation: int = 1) -> int:
    """Span of a dilated kernel in samples."""
    return (kernel_size - 1) * dilation + 1


def extra_padding_for_conv1d(length: int, stride: int) -> int:
    """Right padding that makes ``length`` a multiple of ``stride``.

    This is the integer form of the reference's ``ceil((L - k + padding_total) / s + 1)`` frame count: since
    ``padding_total = k - s``, the ideal padded length is ``ceil(L / s) * s``. Integer maths avoids the float
    rounding that made the reference drop frames for some lengths.
    """
    return -length % stride


def conv1d_paddings(length: int, kernel_size: int, stride: int, causal: bool) -> tuple[int, int]:
    """(left, right) padding of a conv with effective kernel ``kernel_size`` over ``length`` samples."""
    padding_total = kernel_size - stride
    extra = extra_padding_for_conv1d(length, stride)
    if causal:
        return padding_total, extra
    right = padding_total // 2
    return padding_total - right, right + extra


def conv_transpose1d_trims(
    kernel_size: int, stride: int, causal: bool, trim_right_ratio: float = 1.0
) -> tuple[int, int]:
    """(left, right) samples to trim from a transposed conv's output."""
    padding_total = kernel_size - stride
    right = math.ceil(padding_total * trim_right_ratio) if causal else padding_total // 2
    return padding_total - right, right


def pad1d(x: torch.Tensor, paddings: tuple[int, int], mode: str = "constant", value: float = 0.0) -> torch.Tensor:
    """``F.pad`` over the last dim of `x` `[B, C, T]` that also accepts reflect padding wider than the input.

    Reflect padding needs ``T > pad``; for shorter inputs the reference zero-extends on the right first, reflects,
    then drops the zeros again, which we reproduce so inputs as short as one sample work.
    """
    left, right = paddings
    length = x.shape[-1]
    if mode == "constant":
        return F.pad(x, (left, right), mode, value)
    if mode != "reflect":
        return F.pad(x, (left, right), mode)
    if length > max(left, right):
        # Reflection is a copy, so one concatenation gives F.pad's values (and gradients) bit for bit, several
        # times faster than torch's reflection_pad1d CPU kernel. The slices are relative to the ends, so a traced
        # (ONNX) graph stays valid for any length.
        return torch.cat([x[..., 1 : left + 1].flip(-1), x, x[..., -right - 1 : -1].flip(-1)], dim=-1)
    extra_zeros = max(left, right) - length + 1
    padded = F.pad(F.pad(x, (0, extra_zeros)), (left, right), "reflect")
    return padded[..., : padded.shape[-1] - extra_zeros]


class _NormConv(nn.Module):
    """A torch conv with EnCodec's normalisation: weight norm (a parametrization of ``conv.weight``) or a
    one-group GroupNorm ``norm`` over the conv's output. The attribute names are transformers' state-dict keys."""

    def __init__(self, conv: nn.Conv1d | nn.ConvTranspose1d, norm_type: str) -> None:
        super().__init__()
        self.norm_type = norm_type
        self.conv = weight_norm(conv) if norm_type == "weight_norm" else conv
        if norm_type == "time_group_norm":
            self.norm = nn.GroupNorm(1, conv.out_channels)

    def conv_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The bare (transposed) convolution and norm, no padding or trimming: `[B, C_in, T] -> [B, C_out, T']`."""
        y = self.conv(x)
        return self.norm(y) if self.norm_type == "time_group_norm" else y


class EncodecConv1d(_NormConv):
    """Conv1d with EnCodec's padding and normalisation: `[B, C_in, T] -> [B, C_out, ceil(T / stride)]`.

    State-dict layout matches transformers: ``conv`` (weight-normed via parametrizations when
    ``norm_type="weight_norm"``) and, for ``"time_group_norm"``, ``norm`` = ``GroupNorm(1, out_channels)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        *,
        causal: bool = True,
        norm_type: str = "weight_norm",
        pad_mode: str = "reflect",
    ) -> None:
        super().__init__(nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation), norm_type)
        self.causal = causal
        self.pad_mode = pad_mode
        self.stride = stride
        self.kernel_size = effective_kernel_size(kernel_size, dilation)

    @property
    def padding_total(self) -> int:
        return self.kernel_size - self.stride

    def paddings(self, length: int) -> tuple[int, int]:
        """(left, right) padding of an input of ``length`` samples."""
        return conv1d_paddings(length, self.kernel_size, self.stride, self.causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_forward(pad1d(x, self.paddings(x.shape[-1]), self.pad_mode))


class EncodecConvTranspose1d(_NormConv):
    """ConvTranspose1d that trims its ``kernel_size - stride`` overhang: `[B, C_in, F] -> [B, C_out, F * stride]`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        causal: bool = True,
        norm_type: str = "weight_norm",
        trim_right_ratio: float = 1.0,
    ) -> None:
        super().__init__(nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride), norm_type)
        self.causal = causal
        self.stride = stride
        self.kernel_size = kernel_size
        self.trim_right_ratio = trim_right_ratio

    def trims(self) -> tuple[int, int]:
        """(left, right) samples trimmed from the untrimmed output `[B, C_out, (F - 1) * stride + kernel_size]`."""
        return conv_transpose1d_trims(self.kernel_size, self.stride, self.causal, self.trim_right_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_forward(x)
        left, right = self.trims()
        return y[..., left : y.shape[-1] - right]


# ---------------------------------------------------------------------------------------------------------------
# Streaming steps (used by ``encodec_hf.streaming``): the convolutions run incrementally from explicit state.
# Each ``*_step`` takes the new inputs `[B, C, n]` (n may be 0) and returns the outputs that are final; each
# ``*_flush`` ends the stream and returns what is left, exactly as the offline ``forward`` ends. The states are
# plain dataclasses outside the modules, so streams can be copied (``copy.deepcopy``) and run side by side.
# The imports sit here so that this section stays separate from the layers above.
# ---------------------------------------------------------------------------------------------------------------
from dataclasses import dataclass  # noqa: E402

from .errors import StreamingNotSupportedError  # noqa: E402


def time_cat(a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
    """``a`` then ``b`` along time (`[..., n]`); skips empty pieces so nothing is copied needlessly."""
    if a is None or a.shape[-1] == 0:
        return b
    if b.shape[-1] == 0:
        return a
    return torch.cat([a, b], dim=-1)


def check_streamable_conv(layer: EncodecConv1d | EncodecConvTranspose1d, where: str) -> None:
    """Raises StreamingNotSupportedError unless ``layer`` can run incrementally with the offline results."""
    if not layer.causal:
        raise StreamingNotSupportedError(
            f"{where} has non-causal (centred) convolutions, which need future samples; frame-by-frame "
            "streaming needs a causal model (use_causal_conv=True, e.g. encodec_24khz). Chunked models stream "
            "per chunk with ChunkStreamingEncoder / ChunkStreamingDecoder."
        )
    if layer.norm_type == "time_group_norm":
        raise StreamingNotSupportedError(
            f"{where} uses time_group_norm, whose statistics span the whole input; it cannot stream frame by frame."
        )
    if isinstance(layer, EncodecConv1d):
        if layer.pad_mode == "circular":
            raise StreamingNotSupportedError("circular padding wraps the end of the signal; it cannot stream.")
        if layer.stride > 1 and layer.padding_total < layer.stride:
            # The right reflect padding at flush must read only kept samples: needs k_eff >= 2 * stride.
            raise StreamingNotSupportedError(
                f"{where}: a conv with kernel {layer.kernel_size} < 2 x stride {layer.stride} is not supported."
            )


@dataclass
class Conv1dState:
    """State of one padded convolution.

    A padded convolution keeps the ``k_eff - stride`` input samples the next output still needs. Its reflect left
    padding needs input samples ``1..padding_total``, so it waits for ``padding_total + 1`` inputs before its first
    output (a one-time start-up stall, not a steady-state delay).

    Attributes:
        buffer: `[B, C_in, n]` padded input not consumed yet (before the start: the raw input received so far).
        received: raw input samples received since the stream started.
        started: whether the left padding has been applied.
    """

    buffer: torch.Tensor | None = None
    received: int = 0
    started: bool = False


def _conv1d_consume(conv: EncodecConv1d, state: Conv1dState, like: torch.Tensor) -> torch.Tensor:
    """Runs the conv over every complete window of the (padded) buffer and drops what no later window needs."""
    buf = state.buffer
    k, s = conv.kernel_size, conv.stride
    if buf is None or buf.shape[-1] < k:
        return like.new_empty(like.shape[0], conv.conv.out_channels, 0)
    frames = (buf.shape[-1] - k) // s + 1
    out = conv.conv_forward(buf[..., : (frames - 1) * s + k])
    state.buffer = buf[..., frames * s :].contiguous()  # copy so the old buffer is freed
    return out


def conv1d_step(conv: EncodecConv1d, state: Conv1dState, x: torch.Tensor) -> torch.Tensor:
    """New inputs `[B, C_in, n]` -> the outputs `[B, C_out, m]` they complete."""
    if x.shape[-1]:
        state.buffer = time_cat(state.buffer, x)
        state.received += x.shape[-1]
    if not state.started:
        if state.received < conv.padding_total + 1:
            return x.new_empty(x.shape[0], conv.conv.out_channels, 0)
        # Offline pads [x_P, ..., x_1] on the left (reflect); now that x_1..x_P exist we can do the same.
        state.buffer = pad1d(state.buffer, (conv.padding_total, 0), conv.pad_mode)
        state.started = True
    return _conv1d_consume(conv, state, x)


def conv1d_flush(conv: EncodecConv1d, state: Conv1dState, like: torch.Tensor) -> torch.Tensor:
    """Ends the stream: the last outputs, with the offline path's right ``extra`` padding (so the last partial
    frame is offline's too). ``like`` gives batch, dtype and device for an empty result."""
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
    out = _conv1d_consume(conv, state, like)
    state.buffer = None
    return out


@dataclass
class ConvTranspose1dState:
    """State of one transposed convolution: it keeps the ``k - stride`` overhanging output samples, bias removed,
    and adds them to the head of the next output.

    Attributes:
        partial: `[B, C_out, k - stride]` overhang of the last output, bias removed (it is added once, by the
            output that owns those positions).
        emitted: untrimmed output positions emitted or dropped so far (for the left trim).
    """

    partial: torch.Tensor | None = None
    emitted: int = 0


def conv_transpose1d_step(conv: EncodecConvTranspose1d, state: ConvTranspose1dState, x: torch.Tensor) -> torch.Tensor:
    """New frames `[B, C_in, n]` -> the `[B, C_out, n * stride]` outputs now final (minus the left trim)."""
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


def conv_transpose1d_flush(
    conv: EncodecConvTranspose1d, state: ConvTranspose1dState, like: torch.Tensor
) -> torch.Tensor:
    """Ends the stream: offline keeps ``[left, F * s + left)``, so the first ``left`` overhang samples are output."""
    left, _ = conv.trims()
    out = like.new_empty(like.shape[0], conv.conv.out_channels, 0)
    if state.partial is not None and left:
        bias = conv.conv.bias
        out = state.partial[..., :left] + (bias[:, None] if bias is not None else 0)
    state.partial = None
    return out
