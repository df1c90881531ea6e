"""The inference plan: an encoder or decoder turned into the steps `EncodecModel.encode` / `decode` run without
autograd, and the limits on how much goes through them at once.

The layers in ``conv.py``, ``lstm.py`` and ``seanet.py`` compute what transformers computes, one layer at a time;
training and autograd go through them. At inference `EncodecModel` runs an `InferencePlan` built from those layers
instead. With ``model.fast_inference`` on (`fast_inference_default`), its steps are:

* **time-major activations**: `[B, C, T]` tensors stored as `[B, T, C]`, so every convolution runs through oneDNN's
  channels-last kernels, much faster than the channel-major ones for EnCodec's few-channel, long layers;
* **ELU fused into padding**: an ELU before a padded conv writes straight into the interior of the conv's padded
  input buffer, whose few border samples are mirrored afterwards (one pass instead of two);
* **sub-pixel transposed convs**: EnCodec's transposed convs (``kernel = 2 * stride``) as 2-tap stride-1 convs over
  frames whose time-major output already is the upsampled signal (oneDNN's deconvolution is slow for these shapes);
* **folded weights**: weight norm computed once and the weights re-laid out once, when the plan is built.

These agree with the reference layers to float rounding (~1e-7 relative), so codes differ from the reference
layers' only at near-ties, where two codewords are within rounding of the latent (docs/performance.md, "What
identical codes means": a few frames in a thousand on real speech). With the flag off the steps are the
reference layers themselves, bit-identical to transformers on the same machine and thread count. Either way the
plan is **split at the LSTM**: the audio-rate layers (before the LSTM in the encoder, after it in the decoder) run
on a few items at a time, because their activations are what fills memory, while the LSTM, which gains most from
a large batch, sees the whole batch.

A plan depends on the values of the parameters it folded. It records each parameter with its version counter
(bumped by every in-place write: optimizer steps, ``load_state_dict``'s copies, ``p.mul_(2)`` under
``torch.no_grad()``), dtype and device; `InferencePlan.is_current` compares them, and the model rebuilds a plan that
is not current. Replacing a parameter's ``.data`` bumps nothing: call ``model.invalidate_inference_plan()`` then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .conv import EncodecConv1d, EncodecConvTranspose1d, pad1d
from .lstm import EncodecLSTM
from .seanet import EncodecDecoder, EncodecEncoder, EncodecResnetBlock

Step = Callable[[torch.Tensor], torch.Tensor]


def fast_inference_default(config) -> bool:
    """Whether models of `config` run the fast inference steps by default.

    The fast steps change the latents by float rounding (~1e-7 relative; the order of the differences between
    transformers' own results on CPUs with other instruction sets). For weight-norm models (24 kHz, 32 kHz) no code
    moved on real audio or noise at any bandwidth, and they are 1.5-1.8x faster at batch 1, so they are on. For
    GroupNorm models (48 kHz) they are about 1.4x (batch 1) to 2.3x (batch 8) faster, but codes moved (a few
    near-ties in 8 x 10 s of the real clip at 6 kbps), so those keep the reference layers unless
    ``model.fast_inference = True``.
    """
    return config.norm_type != "time_group_norm"


@dataclass(frozen=True)
class BatchLimits:
    """How much `EncodecModel.encode` / `decode` put through the network at once (``model.batch_limits``).

    Chunks (or, for unchunked models, items) of one length go through the network together, at most
    ``chunks_per_call`` of them and ``samples_per_call`` samples per channel in all, so the frame-rate layers (the
    LSTM above all) run on a large batch while their tensors stay small. Inside a call, the audio-rate layers take
    at most ``audio_rate_samples`` samples per channel at a time (at least one chunk). The results are those of one
    call on the whole group to float rounding, so codes can differ only at near-ties (docs/performance.md).
    """

    chunks_per_call: int = 16
    samples_per_call: int = 1_536_000
    audio_rate_samples: int = 48_000

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BatchLimits.{field.name} must be a positive int, got {value!r}.")

    def chunks_in_call(self, samples: int) -> int:
        """How many chunks of `samples` samples go through the network in one call."""
        return max(1, min(self.chunks_per_call, self.samples_per_call // max(samples, 1)))

    def items_in_piece(self, samples: int) -> int:
        """How many items of `samples` samples the audio-rate layers take at a time."""
        return max(1, self.audio_rate_samples // max(samples, 1))


# ---------------------------------------------------------------------------------------------------------- layout
def is_time_major(x: torch.Tensor) -> bool:
    """Whether `[B, C, T]` is stored time-major (memory `[B, T, C]`: ``stride(1) == 1``, ``stride(2) == C``)."""
    return x.dim() == 3 and (x.shape[1] == 1 or x.stride(1) == 1) and (x.shape[2] == 1 or x.stride(2) == x.shape[1])


def to_time_major(x: torch.Tensor) -> torch.Tensor:
    """`[B, C, T]` stored time-major and without gaps between items (a copy unless it already is)."""
    batch, channels, length = x.shape
    if is_time_major(x) and (batch == 1 or x.stride(0) == channels * length):
        return x
    return x.transpose(1, 2).contiguous().transpose(1, 2)


def _as_channels_last_4d(x: torch.Tensor) -> torch.Tensor:
    """`[B, C, T]` -> `[B, C, 1, T]` in channels-last memory (free for dense time-major input)."""
    x4 = x.unsqueeze(2)
    return (
        x4 if x4.is_contiguous(memory_format=torch.channels_last) else x4.contiguous(memory_format=torch.channels_last)
    )


def pad_time_major(x: torch.Tensor, paddings: tuple[int, int], mode: str, *, elu: bool = False) -> torch.Tensor:
    """``pad1d(elu(x) if elu else x, paddings, mode)`` written into a new time-major buffer.

    The activation (or copy) is computed into the interior of the padded buffer and the few border samples are
    mirrored (reflect) or zeroed (constant) afterwards; since ELU is element-wise, mirroring its output equals
    applying it to mirrored input. Without ``elu`` the values are bit-identical to ``pad1d``'s; with it they equal
    ``pad1d(F.elu(x))`` except that torch's ELU evaluates the few samples at the tail of each vectorised loop with
    the scalar ``expm1``, which can differ in the last bit (the loop boundaries move with the layout).

    Args:
        x: `[B, C, T]`, any layout. Returns `[B, C, T + left + right]`, time-major.
    """
    left, right = paddings
    batch, channels, length = x.shape
    if mode not in ("constant", "reflect") or (mode == "reflect" and length <= max(left, right)):
        # Other modes and reflections wider than the signal (inputs of a few samples): the reference route.
        return to_time_major(pad1d(F.elu(x) if elu else x, paddings, mode))
    buf = torch.empty(batch, length + left + right, channels, dtype=x.dtype, device=x.device).transpose(1, 2)
    inner = buf[..., left : left + length]
    if elu:
        # The same layout in and out keeps torch's vectorised ELU kernel (a layout-changing write would run it all
        # through the scalar expm1).
        torch.ops.aten.elu.out(to_time_major(x), 1.0, 1, 1, out=inner)
    else:
        inner.copy_(x)
    end = left + length
    if mode == "reflect":
        if left:
            buf[..., :left] = buf[..., left + 1 : 2 * left + 1].flip(-1)
        if right:
            buf[..., end:] = buf[..., end - 1 - right : end - 1].flip(-1)
    else:
        buf[..., :left] = 0
        buf[..., end:] = 0
    return buf


def _group_norm_time_major(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """GroupNorm of `[B, C, T]` by torch's channels-last kernel, time-major in and out.

    It sums in another order than the channel-major kernel (about 1e-5 relative); a round trip through the
    channel-major kernel kept the reference's numerics but made the whole fast path slower than the reference.
    """
    return norm(to_time_major(x).unsqueeze(2)).squeeze(2)


def _folded_weight(layer: EncodecConv1d | EncodecConvTranspose1d) -> torch.Tensor:
    """The conv's effective weight, weight norm applied once (``g * v / ||v||``, as the parametrization computes)."""
    return layer.conv.weight.detach()


# ----------------------------------------------------------------------------------------------------------- steps
class _Conv1dStep:
    """`EncodecConv1d` (after an ELU when ``elu``) on time-major activations: `[B, C_in, T] -> [B, C_out, F]`."""

    def __init__(self, layer: EncodecConv1d, elu: bool) -> None:
        conv = layer.conv
        self.layer, self.elu = layer, elu
        self.weight = _folded_weight(layer).unsqueeze(2).contiguous(memory_format=torch.channels_last)
        self.bias = None if conv.bias is None else conv.bias.detach()
        self.stride, self.dilation = (1, conv.stride[0]), (1, conv.dilation[0])
        self.norm = layer.norm if layer.norm_type == "time_group_norm" else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        paddings = self.layer.paddings(x.shape[-1])
        if paddings == (0, 0):  # 1x1 convs read a dense time-major input in place, without a copy
            padded = F.elu(x) if self.elu else x
        else:
            padded = pad_time_major(x, paddings, self.layer.pad_mode, elu=self.elu)
        y = F.conv2d(_as_channels_last_4d(padded), self.weight, self.bias, self.stride, 0, self.dilation).squeeze(2)
        return y if self.norm is None else _group_norm_time_major(self.norm, y)


class _SubpixelConvTranspose1dStep:
    """`EncodecConvTranspose1d` with ``kernel = 2 * stride`` (after an ELU when ``elu``) as a 2-tap conv over
    frames: `[B, C_in, F] -> [B, C_out, F * s]`, time-major.

    Untrimmed output sample ``m * s + j`` is ``x[m] @ W[:, :, j] + x[m - 1] @ W[:, :, j + s]`` (zero outside the
    input): a stride-1 conv with taps ``(x[m - 1], x[m])`` over the input padded by one zero frame on each side,
    with ``s * C_out`` output channels ordered ``(j, c_out)``. Its time-major output `[B, F + 1, s * C_out]` already
    is the transposed conv's `[B, (F + 1) * s, C_out]`, written once by oneDNN's channels-last convolution.
    """

    def __init__(self, layer: EncodecConvTranspose1d, elu: bool) -> None:
        stride, conv = layer.stride, layer.conv
        weight = _folded_weight(layer)  # [C_in, C_out, 2s]
        c_in, c_out, _ = weight.shape
        taps = weight.view(c_in, c_out, 2, stride).flip(2)  # [C_in, C_out, tap, j]: tap 0 is W[..., j + s]
        self.weight = taps.permute(3, 1, 0, 2).reshape(stride * c_out, c_in, 1, 2)
        self.weight = self.weight.contiguous(memory_format=torch.channels_last)  # [s * C_out, C_in, 1, 2]
        self.bias = None if conv.bias is None else conv.bias.detach().repeat(stride)
        self.stride, self.out_channels, self.elu = stride, c_out, elu
        self.trims = layer.trims()
        self.norm = layer.norm if layer.norm_type == "time_group_norm" else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        padded = pad_time_major(x, (1, 1), "constant", elu=self.elu)
        y = F.conv2d(_as_channels_last_4d(padded), self.weight, self.bias)  # [B, s * C_out, 1, F + 1]
        batch, _, _, frames = y.shape
        y = y.permute(0, 2, 3, 1).reshape(batch, frames * self.stride, self.out_channels).transpose(1, 2)
        if self.norm is not None:
            y = _group_norm_time_major(self.norm, y)
        left, right = self.trims
        return y[..., left : y.shape[-1] - right]


class _ResnetStep:
    """`EncodecResnetBlock` on time-major activations, the hidden ELU and the residual sum in place (both act on
    fresh activations no one else holds, so this equals the block's forward element for element)."""

    def __init__(self, block: EncodecResnetBlock) -> None:
        _, conv1, _, conv2 = block.block  # [ELU, conv_k, ELU, conv_1x1]
        self.conv1, self.conv2 = _Conv1dStep(conv1, elu=True), _Conv1dStep(conv2, elu=False)
        self.shortcut = _Conv1dStep(block.shortcut, elu=False) if isinstance(block.shortcut, EncodecConv1d) else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.elu_(self.conv1(x)))
        return y.add_(x if self.shortcut is None else self.shortcut(x))


def fast_steps(layers: Sequence[nn.Module]) -> list[Step]:
    """The fast inference steps of a run of reference layers; `run_steps` on them equals running the layers one by
    one, to float rounding. Each ELU is fused into the conv after it; layers without a fast step run as they are."""
    steps: list[Step] = []
    elu: nn.ELU | None = None  # an ELU waiting to be fused into the next layer
    for layer in layers:
        if isinstance(layer, nn.ELU) and elu is None and layer.alpha == 1.0:
            elu = layer
            continue
        if isinstance(layer, EncodecConv1d):
            steps.append(_Conv1dStep(layer, elu is not None))
        elif isinstance(layer, EncodecConvTranspose1d) and layer.kernel_size == 2 * layer.stride:
            steps.append(_SubpixelConvTranspose1dStep(layer, elu is not None))
        elif isinstance(layer, EncodecResnetBlock) and elu is None:
            steps.append(_ResnetStep(layer))
        else:
            steps += [elu, layer] if elu is not None else [layer]
        elu = None
    return steps + [elu] if elu is not None else steps


def run_steps(steps: Sequence[Step], x: torch.Tensor) -> torch.Tensor:
    for step in steps:
        x = step(x)
    return x


# ------------------------------------------------------------------------------------------------------------ plan
def _parameter_versions(parameters: Sequence[nn.Parameter]) -> tuple | None:
    """What a plan's folded weights depend on: each parameter's version counter, dtype and device; `None` when a
    parameter was made under ``torch.inference_mode`` (such tensors have no version counter to compare)."""
    if any(p.is_inference() for p in parameters):
        return None
    return tuple((p._version, p.dtype, p.device) for p in parameters)


@dataclass
class InferencePlan:
    """The steps of one encoder or decoder, split at the LSTM; call it as ``plan(x, max_items)``.

    Build it with `InferencePlan.build`. ``audio_rate`` are the steps before the LSTM (encoder) or after it
    (decoder), ``frame_rate`` the others; ``parameters`` and ``versions`` record what the steps were built from.
    """

    source: EncodecEncoder | EncodecDecoder
    fast: bool
    audio_rate: list[Step]
    frame_rate: list[Step]
    parameters: tuple[nn.Parameter, ...]
    versions: tuple | None

    @classmethod
    def build(cls, half: EncodecEncoder | EncodecDecoder, *, fast: bool) -> InferencePlan:
        """The plan of `half`: the fast steps (``fast=True``) or the reference layers themselves."""
        layers = list(half.layers)
        cut = next((i for i, layer in enumerate(layers) if isinstance(layer, EncodecLSTM)), None)
        if cut is None:  # nothing to split at: all of it is one part
            audio_rate, frame_rate = [], layers
        elif isinstance(half, EncodecEncoder):  # audio-rate layers, then the LSTM, ELU and last conv
            audio_rate, frame_rate = layers[:cut], layers[cut:]
        else:  # first conv and LSTM, then the audio-rate layers
            audio_rate, frame_rate = layers[cut + 1 :], layers[: cut + 1]
        parameters = tuple(half.parameters())
        if fast:
            # Built outside inference mode, so the folded weights are ordinary tensors usable in any later call.
            with torch.inference_mode(False), torch.no_grad():
                audio_rate, frame_rate = fast_steps(audio_rate), fast_steps(frame_rate)
        return cls(half, fast, audio_rate, frame_rate, parameters, _parameter_versions(parameters))

    def is_current(self, half: nn.Module, fast: bool) -> bool:
        """Whether this plan still computes `half` as it is now, in the mode ``fast`` asks for."""
        if self.source is not half or self.fast != fast or self.versions is None:
            return False
        parameters = tuple(half.parameters())
        if len(parameters) != len(self.parameters) or any(
            a is not b for a, b in zip(parameters, self.parameters, strict=True)
        ):
            return False  # a parameter was replaced (or added, removed)
        return _parameter_versions(parameters) == self.versions

    def __call__(self, x: torch.Tensor, max_items: int | None = None) -> torch.Tensor:
        """`x` `[B, C, T]` through the half, its audio-rate part on at most `max_items` items at a time.

        Every kernel treats batch items independently, so the result is that of one pass over the whole batch up to
        the last bits a kernel may change with the batch size. The decoder's audio comes back contiguous.
        """

        def audio_rate(x: torch.Tensor) -> torch.Tensor:
            if max_items is None or x.shape[0] <= max_items:
                return run_steps(self.audio_rate, x)
            return torch.cat([run_steps(self.audio_rate, piece) for piece in x.split(max_items)])

        if isinstance(self.source, EncodecEncoder):
            return run_steps(self.frame_rate, audio_rate(x))
        return audio_rate(run_steps(self.frame_rate, x)).contiguous()


__all__ = [
    "BatchLimits",
    "InferencePlan",
    "fast_inference_default",
    "fast_steps",
    "is_time_major",
    "pad_time_major",
    "run_steps",
    "to_time_major",
]
