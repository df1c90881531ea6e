"""Padded convolutions of EnCodec: pure integer padding arithmetic plus the conv modules.

The padding rules are those of Meta's ``SConv1d`` / ``SConvTranspose1d`` (and transformers' port):

* a conv with effective kernel ``k`` and stride ``s`` needs ``padding_total = k - s`` samples of padding;
  causal layers put all of it on the left, centred layers split it (``right = total // 2``);
* ``extra`` right padding makes the length a multiple of the stride, so ``T`` samples give ``ceil(T / s)``
  frames and no input sample is dropped;
* transposed convs trim ``k - s`` samples from their output (causal: ``trim_right_ratio`` of it on the right).

Everything that depends only on integers lives in small functions so the offline and streaming paths
(``streaming.py``) share one definition.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
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
    """``F.pad`` over the last dim that also accepts reflect padding wider than the input.

    Reflect padding needs ``T > pad``; for shorter inputs the reference zero-extends on the right first, reflects,
    then drops the zeros again, which we reproduce so inputs as short as one sample work.

    Args:
        x: `[B, C, T]`.
    """
    left, right = paddings
    if mode != "reflect":
        return F.pad(x, (left, right), mode, value) if mode == "constant" else F.pad(x, (left, right), mode)
    length = x.shape[-1]
    max_pad = max(left, right)
    extra_zeros = 0
    if length <= max_pad:
        extra_zeros = max_pad - length + 1
        x = F.pad(x, (0, extra_zeros))
    padded = F.pad(x, (left, right), "reflect")
    return padded[..., : padded.shape[-1] - extra_zeros] if extra_zeros else padded


class _FoldedWeight:
    """Weight-norm folding for inference.

    ``weight = g * v / ||v||`` is recomputed by the parametrization on every access; at inference it is
    computed once and reused until ``g`` or ``v`` change (in-place updates bump their version counters, moves
    and casts change their storage). Training with gradients goes through the live parametrization.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.weight: torch.Tensor | None = None

    def get(self, conv: nn.Module) -> torch.Tensor:
        if not parametrize.is_parametrized(conv, "weight"):
            return conv.weight
        originals = conv.parametrizations.weight
        g, v = originals.original0, originals.original1
        if torch.is_grad_enabled() and (g.requires_grad or v.requires_grad):
            return conv.weight
        key = (g._version, v._version, g.data_ptr(), v.data_ptr(), g.dtype, g.device)
        if key != self.key:
            # Built outside inference mode so the cached tensor is usable in any later autograd context.
            with torch.inference_mode(False), torch.no_grad():
                self.weight = conv.weight.detach().clone()
            self.key = key
        return self.weight


class EncodecConv1d(nn.Module):
    """Conv1d with EnCodec's padding and normalisation.

    State-dict layout matches transformers: ``conv`` (weight-normed via parametrizations when
    ``norm_type="weight_norm"``) and, for ``"time_group_norm"``, ``norm`` = ``GroupNorm(1, out_channels)``.

    Input `[B, C_in, T]`, output `[B, C_out, ceil(T / stride)]`.
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
        super().__init__()
        self.causal = causal
        self.pad_mode = pad_mode
        self.stride = stride
        self.kernel_size = effective_kernel_size(kernel_size, dilation)
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation)
        if norm_type == "weight_norm":
            self.conv = weight_norm(self.conv)
        elif norm_type == "time_group_norm":
            self.norm = nn.GroupNorm(1, out_channels)
        self.norm_type = norm_type
        self._folded = _FoldedWeight()

    @property
    def padding_total(self) -> int:
        return self.kernel_size - self.stride

    def paddings(self, length: int) -> tuple[int, int]:
        return conv1d_paddings(length, self.kernel_size, self.stride, self.causal)

    def conv_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The bare convolution (and norm) on an already padded input: `[B, C_in, T'] -> [B, C_out, F]`."""
        conv = self.conv
        x = F.conv1d(x, self._folded.get(conv), conv.bias, conv.stride, 0, conv.dilation)
        if self.norm_type == "time_group_norm":
            x = self.norm(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_forward(pad1d(x, self.paddings(x.shape[-1]), self.pad_mode))


class EncodecConvTranspose1d(nn.Module):
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
        super().__init__()
        self.causal = causal
        self.stride = stride
        self.kernel_size = kernel_size
        self.trim_right_ratio = trim_right_ratio
        self.conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride)
        if norm_type == "weight_norm":
            self.conv = weight_norm(self.conv)
        elif norm_type == "time_group_norm":
            self.norm = nn.GroupNorm(1, out_channels)
        self.norm_type = norm_type
        self._folded = _FoldedWeight()

    def trims(self) -> tuple[int, int]:
        return conv_transpose1d_trims(self.kernel_size, self.stride, self.causal, self.trim_right_ratio)

    def conv_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The transposed convolution (and norm) without trimming: `[B, C_in, F] -> [B, C_out, (F-1)*s + k]`."""
        conv = self.conv
        x = F.conv_transpose1d(x, self._folded.get(conv), conv.bias, conv.stride)
        if self.norm_type == "time_group_norm":
            x = self.norm(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_forward(x)
        left, right = self.trims()
        return y[..., left : y.shape[-1] - right]
