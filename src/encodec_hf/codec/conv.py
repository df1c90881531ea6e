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
    if value == 0.0 and _fast_pad_applies(x, paddings, mode):
        # The same values as F.pad (padding is a copy), 2.5-4x faster than torch's reflection_pad1d kernel.
        return _padded_buffer(x, paddings, mode, elu=False, time_major=False)
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


def is_time_major(x: torch.Tensor) -> bool:
    """Whether `[B, C, T]` is stored time-major (memory `[B, T, C]`: ``stride(1) == 1``, ``stride(2) == C``).

    The offline encoder and decoder keep their activations in this layout: oneDNN's channels-last convolutions
    are markedly faster than the channel-major ones for EnCodec's few-channel, long-time layers.
    """
    return x.dim() == 3 and (x.shape[1] == 1 or x.stride(1) == 1) and (x.shape[2] == 1 or x.stride(2) == x.shape[1])


def to_time_major(x: torch.Tensor) -> torch.Tensor:
    """`[B, C, T]` stored time-major (a copy unless it already is)."""
    return x if _dense(x) else x.transpose(1, 2).contiguous().transpose(1, 2)


def _dense(x: torch.Tensor) -> bool:
    """Time-major and without gaps between items (so it views as a channels-last 4D tensor without a copy)."""
    batch, channels, length = x.shape
    return is_time_major(x) and (batch == 1 or x.stride(0) == channels * length)


def _as_channels_last_4d(x: torch.Tensor) -> torch.Tensor:
    """`[B, C, T]` -> `[B, C, 1, T]` in channels-last memory (free for dense time-major input)."""
    x4 = x.unsqueeze(2)
    if x4.is_contiguous(memory_format=torch.channels_last):
        return x4
    return x4.contiguous(memory_format=torch.channels_last)


def _group_norm_time_major(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """GroupNorm of a time-major `[B, C, T]` by torch's channels-last kernel, without a layout round trip.

    It sums in another order than the channel-major kernel (about 1e-5 relative). Only the time-major path of
    GroupNorm models uses it, and that path is opt-in for them (`seanet.default_time_major`): a round trip through
    the channel-major kernel kept this step's numerics but made the whole path slower than the reference.
    """
    return norm(to_time_major(x).unsqueeze(2)).squeeze(2)


def _fast_pad_applies(x: torch.Tensor, paddings: tuple[int, int], mode: str) -> bool:
    """Whether `_padded_buffer` can pad `x`: zero or reflect padding (reflect narrower than the signal), no autograd
    (its ``out=`` writes are not differentiable)."""
    if (torch.is_grad_enabled() and x.requires_grad) or torch.jit.is_tracing():  # tracing (ONNX export): F.pad
        return False
    return mode == "constant" or (mode == "reflect" and x.shape[-1] > max(paddings))


def _padded_buffer(x: torch.Tensor, paddings: tuple[int, int], mode: str, *, elu: bool, time_major: bool):
    """Copies (or ELUs) `x` `[B, C, T]` into the interior of a new `[B, C, T + left + right]` buffer, then mirrors
    (reflect) or zeroes (constant) the few border samples; the buffer is time-major or channel-major."""
    left, right = paddings
    batch, channels, length = x.shape
    if time_major:
        buf = torch.empty(batch, length + left + right, channels, dtype=x.dtype, device=x.device).transpose(1, 2)
    else:
        buf = torch.empty(batch, channels, length + left + right, dtype=x.dtype, device=x.device)
    inner = buf[..., left : left + length]
    if elu:
        # Same layout in and out keeps the vectorised ELU kernel (a layout-changing write would run it all through
        # the scalar expm1); a no-op in the encoder and decoder, which are time-major throughout.
        torch.ops.aten.elu.out(to_time_major(x) if time_major else x.contiguous(), 1.0, 1, 1, out=inner)
    else:
        inner.copy_(x)
    if mode == "reflect":
        if left:
            buf[..., :left] = buf[..., left + 1 : 2 * left + 1].flip(-1)
        if right:
            end = left + length
            buf[..., end:] = buf[..., end - 1 - right : end - 1].flip(-1)
    else:
        buf[..., :left] = 0
        buf[..., left + length :] = 0
    return buf


def pad1d_into(
    x: torch.Tensor, paddings: tuple[int, int], mode: str = "reflect", *, elu: bool = False
) -> torch.Tensor:
    """``pad1d(elu(x) if elu else x, paddings, mode)`` written straight into a new time-major buffer.

    One pass over the data instead of two (activation, then the padding copy of the reference): the activation is
    computed into the interior of the padded buffer and the few border samples are mirrored afterwards. Since ELU is
    element-wise, mirroring its output equals applying it to mirrored input. Without ``elu`` the result is
    bit-identical to ``pad1d(x, ...)``; with it, it equals ``pad1d(F.elu(x), ...)`` except that torch's ELU kernel
    evaluates the few samples at the tail of each vectorised loop with the scalar ``expm1``, which can differ in
    the last bit (the loop boundaries move with the layout).

    Args:
        x: `[B, C, T]`, any layout. Returns `[B, C, T + left + right]`, time-major.
    """
    if not _fast_pad_applies(x, paddings, mode):
        # Rare short inputs (reflect wider than the signal), other modes or autograd: the reference route.
        return to_time_major(pad1d(F.elu(x) if elu else x, paddings, mode))
    return _padded_buffer(x, paddings, mode, elu=elu, time_major=True)


class _FoldedWeight:
    """Weight-norm folding for inference.

    ``weight = g * v / ||v||`` is recomputed by the parametrization on every access; at inference it is
    computed once and reused until ``g`` or ``v`` change (in-place updates bump their version counters, moves
    and casts change their storage). Training with gradients goes through the live parametrization.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.weight: torch.Tensor | None = None
        self.derived: dict[str, tuple[tuple, torch.Tensor]] = {}

    def get_derived(self, conv: nn.Module, name: str, fn) -> torch.Tensor:
        """``fn(weight)`` (a re-laid-out copy of the weight), cached like the folded weight itself."""
        weight = self.get(conv)
        if (torch.is_grad_enabled() and weight.requires_grad) or weight.is_inference():
            return fn(weight)
        key = (id(weight), weight._version, weight.data_ptr(), weight.dtype, weight.device)
        cached = self.derived.get(name)
        if cached is None or cached[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                cached = (key, fn(weight.detach()))
            self.derived[name] = cached
        return cached[1]

    def get(self, conv: nn.Module) -> torch.Tensor:
        if not parametrize.is_parametrized(conv, "weight"):
            return conv.weight
        originals = conv.parametrizations.weight
        g, v = originals.original0, originals.original1
        if (torch.is_grad_enabled() and (g.requires_grad or v.requires_grad)) or g.is_inference() or v.is_inference():
            # Parameters created or cast under `torch.inference_mode` carry no version counter to key a cache on:
            # recompute (as the reference does on every call) rather than risk a stale weight.
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

    def conv_forward(self, x: torch.Tensor, time_major: bool = False) -> torch.Tensor:
        """The bare convolution (and norm) on an already padded input: `[B, C_in, T'] -> [B, C_out, F]`.

        With ``time_major=True`` the convolution runs channels-last (oneDNN's fast layout for few channels and long
        time axes) and the output is time-major; the values agree with the default path to float rounding
        (about 1e-7 relative), see ``tests/test_fast_paths.py``.
        """
        conv = self.conv
        if not time_major:
            x = F.conv1d(x, self._folded.get(conv), conv.bias, conv.stride, 0, conv.dilation)
            if self.norm_type == "time_group_norm":
                x = self.norm(x)
            return x
        weight = self._folded.get_derived(
            conv, "channels_last", lambda w: w.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        )
        y = F.conv2d(_as_channels_last_4d(x), weight, conv.bias, (1, conv.stride[0]), 0, (1, conv.dilation[0]))
        if self.norm_type == "time_group_norm":
            return _group_norm_time_major(self.norm, y.squeeze(2))
        return y.squeeze(2)

    def forward(self, x: torch.Tensor, time_major: bool = False) -> torch.Tensor:
        paddings = self.paddings(x.shape[-1])
        if time_major:
            # Unpadded (1x1) convs read a dense time-major input in place: no copy into a new buffer.
            padded = to_time_major(x) if paddings == (0, 0) else pad1d_into(x, paddings, self.pad_mode)
            return self.conv_forward(padded, True)
        return self.conv_forward(pad1d(x, paddings, self.pad_mode))

    def forward_elu(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(elu(x))`` in the time-major layout, with the activation fused into the padding copy."""
        paddings = self.paddings(x.shape[-1])
        if paddings == (0, 0):
            return self.conv_forward(F.elu(x), True)
        return self.conv_forward(pad1d_into(x, paddings, self.pad_mode, elu=True), True)


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

    def conv_forward(self, x: torch.Tensor, time_major: bool = False, elu: bool = False) -> torch.Tensor:
        """The transposed convolution (and norm) of ``elu(x) if elu else x``, without trimming: `[B, C_in, F] ->
        [B, C_out, (F-1)*s + k]`.

        With ``time_major=True`` it runs as a 2-tap convolution over frames (``_subpixel_conv``, EnCodec's
        ``k = 2s``, the activation fused into its padding copy) or else as one matrix product plus an overlap-add
        (``_gemm_overlap_add``), and returns a time-major tensor; the values agree with the default path to float
        rounding.
        """
        conv = self.conv
        if not time_major or (torch.is_grad_enabled() and any(t.requires_grad for t in (x, *self.parameters()))):
            x = F.conv_transpose1d(F.elu(x) if elu else x, self._folded.get(conv), conv.bias, conv.stride)
            if self.norm_type == "time_group_norm":
                x = self.norm(x)
            return to_time_major(x) if time_major else x  # training takes the differentiable reference route
        if self.kernel_size == 2 * self.stride:
            y = self._subpixel_conv(pad1d_into(x, (1, 1), "constant", elu=elu))
        else:
            y = self._gemm_overlap_add(F.elu(x) if elu else x)  # [B, C_out, L], time-major
        if self.norm_type == "time_group_norm":
            y = _group_norm_time_major(self.norm, y)
        return y

    def _subpixel_conv(self, padded: torch.Tensor) -> torch.Tensor:
        """EnCodec's transposed conv (``k = 2s``) as a 2-tap conv over frames: `[B, C_in, F + 2]` (one zero frame
        on each side) `-> [B, C_out, (F + 1) * s]`, time-major.

        Output sample ``m * s + j`` is ``x[m] @ W[:, :, j] + x[m - 1] @ W[:, :, j + s]`` (zero outside the input):
        a stride-1 conv with taps ``(x[m - 1], x[m])`` and ``s * C_out`` output channels ordered ``(j, c_out)``, so
        its time-major output `[B, F + 1, s * C_out]` already is the transposed conv's output `[B, (F+1) * s,
        C_out]`. This runs on oneDNN's channels-last convolution and writes the result once, where
        ``_gemm_overlap_add`` materialises a twice-as-large GEMM output and folds it in a second pass.
        """
        conv, stride = self.conv, self.stride

        def subpixel_weight(w: torch.Tensor) -> torch.Tensor:  # [C_in, C_out, 2s] -> [s * C_out, C_in, 1, 2]
            c_in, c_out, _ = w.shape
            taps = w.view(c_in, c_out, 2, stride).flip(2)  # [C_in, C_out, tap, j]: tap 0 = W[..., j + s]
            w4 = taps.permute(3, 1, 0, 2).reshape(stride * c_out, c_in, 1, 2)
            return w4.contiguous(memory_format=torch.channels_last)

        weight = self._folded.get_derived(conv, "subpixel", subpixel_weight)
        bias = None if conv.bias is None else conv.bias.repeat(stride)
        y = F.conv2d(_as_channels_last_4d(padded), weight, bias)  # [B, s * C_out, 1, F + 1], channels-last
        batch, _, _, frames = y.shape
        return y.permute(0, 2, 3, 1).reshape(batch, frames * stride, conv.out_channels).transpose(1, 2)

    def _gemm_overlap_add(self, x: torch.Tensor) -> torch.Tensor:
        """Transposed conv as ``X @ W`` then overlap-add: `[B, C_in, F] -> [B, C_out, (F-1)*s + k]` (time-major).

        Frame ``f`` contributes ``x_f @ W[:, :, j]`` to output sample ``f * s + j``. Grouping the taps in blocks of
        ``s`` turns this into one large GEMM `[B*F, C_in] @ [C_in, n * s * C_out]` (``n = ceil(k / s)``, 2 for
        EnCodec's ``k = 2s``) whose row ``f``, block ``b`` lands on output block ``f + b``: ``n`` shifted adds. This
        replaces oneDNN's deconvolution, which is slow for EnCodec's shapes.
        """
        stride, kernel = self.stride, self.kernel_size
        blocks = -(-kernel // stride)
        conv = self.conv

        def gemm_weight(w: torch.Tensor) -> torch.Tensor:  # [C_in, C_out, k] -> [C_in, n * s * C_out]
            w = F.pad(w, (0, blocks * stride - kernel))
            return w.permute(0, 2, 1).reshape(w.shape[0], -1).contiguous()

        out_channels = conv.out_channels
        weight = self._folded.get_derived(conv, "gemm", gemm_weight)
        bias = conv.bias if conv.bias is not None else weight.new_zeros(out_channels)
        block_bias = bias.repeat(stride)  # [s * C_out]: one output block's bias
        # The bias rides in the GEMM (beta = 1) on block 0 only, so every output sample receives it exactly once;
        # the last n - 1 output blocks get no block-0 contribution and take it explicitly below.
        gemm_bias = F.pad(block_bias, (0, (blocks - 1) * stride * out_channels))
        batch, _, frames = x.shape
        rows = to_time_major(x).transpose(1, 2).reshape(batch * frames, -1)  # [B*F, C_in]
        y = torch.addmm(gemm_bias, rows, weight).view(batch, frames, blocks, stride * out_channels)
        if blocks == 1:
            out = y[:, :, 0]
        elif blocks == 2 and frames > 1:  # EnCodec's k = 2s: one fused add, no zero-fill
            out = torch.empty(batch, frames + 1, stride * out_channels, dtype=y.dtype, device=y.device)
            out[:, 0] = y[:, 0, 0]
            torch.add(y[:, 1:, 0], y[:, :-1, 1], out=out[:, 1:frames])
            torch.add(y[:, -1, 1], block_bias, out=out[:, frames])
        else:
            out = torch.empty(batch, frames + blocks - 1, stride * out_channels, dtype=y.dtype, device=y.device)
            out[:, :frames] = y[:, :, 0]
            out[:, frames:] = block_bias
            for b in range(1, blocks):
                out[:, b : b + frames] += y[:, :, b]
        out = out.reshape(batch, -1, out_channels)[:, : (frames - 1) * stride + kernel]
        return out.transpose(1, 2)

    def _trim(self, y: torch.Tensor) -> torch.Tensor:
        left, right = self.trims()
        return y[..., left : y.shape[-1] - right]

    def forward(self, x: torch.Tensor, time_major: bool = False) -> torch.Tensor:
        return self._trim(self.conv_forward(x, time_major))

    def forward_elu(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(elu(x))`` in the time-major layout, with the activation fused into the padding copy."""
        return self._trim(self.conv_forward(x, True, elu=True))


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
