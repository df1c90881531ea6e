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
