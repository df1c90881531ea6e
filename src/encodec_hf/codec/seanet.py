"""SEANet encoder and decoder: the convolutional halves of EnCodec.

Layer indices (``layers.N``) match transformers' and Meta's ``model.N`` so checkpoints map 1:1. These modules are
the reference computation, run layer by layer as transformers does (training and autograd go through them);
`EncodecModel` runs inference through the plan ``inference_plan.py`` builds from their layers.
"""

from __future__ import annotations

import torch
from torch import nn

from .conv import EncodecConv1d, EncodecConvTranspose1d
from .lstm import EncodecLSTM


class EncodecResnetBlock(nn.Module):
    """``shortcut(x) + conv1x1(elu(conv_k(elu(x))))``: `[B, D, T] -> [B, D, T]`."""

    def __init__(
        self,
        dim: int,
        *,
        kernel_size: int,
        dilations: tuple[int, int],
        compress: int,
        use_conv_shortcut: bool,
        conv_kwargs: dict,
    ) -> None:
        super().__init__()
        hidden = dim // compress
        self.block = nn.ModuleList(
            [
                nn.ELU(),
                EncodecConv1d(dim, hidden, kernel_size, dilation=dilations[0], **conv_kwargs),
                nn.ELU(),
                EncodecConv1d(hidden, dim, 1, dilation=dilations[1], **conv_kwargs),
            ]
        )
        self.shortcut = EncodecConv1d(dim, dim, 1, **conv_kwargs) if use_conv_shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        for layer in self.block:
            x = layer(x)
        return self.shortcut(residual) + x


def _conv_kwargs(config) -> dict:
    return dict(causal=config.use_causal_conv, norm_type=config.norm_type, pad_mode=config.pad_mode)


def _resnet_blocks(config, dim: int) -> list[nn.Module]:
    return [
        EncodecResnetBlock(
            dim,
            kernel_size=config.residual_kernel_size,
            dilations=(config.dilation_growth_rate**j, 1),
            compress=config.compress,
            use_conv_shortcut=config.use_conv_shortcut,
            conv_kwargs=_conv_kwargs(config),
        )
        for j in range(config.num_residual_layers)
    ]


class EncodecEncoder(nn.Module):
    """Audio `[B, C, T]` to latents `[B, D, ceil(T / hop_length)]`."""

    def __init__(self, config) -> None:
        super().__init__()
        kw = _conv_kwargs(config)
        nf = config.num_filters
        layers: list[nn.Module] = [EncodecConv1d(config.audio_channels, nf, config.kernel_size, **kw)]
        scaling = 1
        for ratio in reversed(config.upsampling_ratios):
            dim = scaling * nf
            layers += _resnet_blocks(config, dim)
            layers += [nn.ELU(), EncodecConv1d(dim, dim * 2, kernel_size=ratio * 2, stride=ratio, **kw)]
            scaling *= 2
        layers += [
            EncodecLSTM(scaling * nf, config.num_lstm_layers),
            nn.ELU(),
            EncodecConv1d(scaling * nf, config.hidden_size, config.last_kernel_size, **kw),
        ]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class EncodecDecoder(nn.Module):
    """Latents `[B, D, F]` to audio `[B, C, F * hop_length]`."""

    def __init__(self, config) -> None:
        super().__init__()
        kw = _conv_kwargs(config)
        nf = config.num_filters
        scaling = 2 ** len(config.upsampling_ratios)
        layers: list[nn.Module] = [
            EncodecConv1d(config.hidden_size, scaling * nf, config.kernel_size, **kw),
            EncodecLSTM(scaling * nf, config.num_lstm_layers),
        ]
        for ratio in config.upsampling_ratios:
            dim = scaling * nf
            layers += [
                nn.ELU(),
                EncodecConvTranspose1d(
                    dim,
                    dim // 2,
                    kernel_size=ratio * 2,
                    stride=ratio,
                    causal=config.use_causal_conv,
                    norm_type=config.norm_type,
                    trim_right_ratio=config.trim_right_ratio,
                ),
            ]
            layers += _resnet_blocks(config, dim // 2)
            scaling //= 2
        layers += [nn.ELU(), EncodecConv1d(nf, config.audio_channels, config.last_kernel_size, **kw)]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


# ---------------------------------------------------------------------------------------------------------------
# Streaming steps (used by ``encodec_hf.streaming``): a residual block keeps the skip-path samples its (stalled)
# branch has not caught up with, and ``STREAM_STEPPERS`` says, once per layer type, how each layer of the SEANet
# stack is stepped. The states are plain data outside the modules; the imports sit here so that this section
# stays separate from the layers above.
# ---------------------------------------------------------------------------------------------------------------
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any, NamedTuple  # noqa: E402

from .conv import (  # noqa: E402
    Conv1dState,
    ConvTranspose1dState,
    check_streamable_conv,
    conv1d_flush,
    conv1d_step,
    conv_transpose1d_flush,
    conv_transpose1d_step,
    time_cat,
)
from .errors import StreamingNotSupportedError  # noqa: E402
from .lstm import LSTMState, lstm_step  # noqa: E402


class LayerStepper(NamedTuple):
    """How one layer type streams: a fresh state, a streamability check, a step and a flush.

    ``step(layer, state, x [B, C, n]) -> [B, C', m]`` returns the outputs now final; ``flush(layer, state, like)``
    ends the stream and returns the rest (``like`` gives batch, dtype and device for empty results).
    """

    init: Callable[[nn.Module], Any]
    check: Callable[[nn.Module, str], None]
    step: Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]
    flush: Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]


@dataclass
class ResnetBlockState:
    """State of a residual block: its branch's layer states, its shortcut's, and skip samples awaiting the branch.

    Attributes:
        branch: states of the branch layers (ELU, conv, ELU, conv).
        shortcut: state of the shortcut (a 1x1 conv's, or `None` for an identity shortcut).
        pending: `[B, C, n]` skip-path outputs whose branch outputs have not been produced yet.
    """

    branch: list
    shortcut: Any
    pending: torch.Tensor | None = None


def _resnet_join(state: ResnetBlockState, skip: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """Adds each branch output to the skip output of the same position; the branch lags during start-up."""
    state.pending = time_cat(state.pending, skip)
    n = branch.shape[-1]
    if n == 0:
        return branch
    out = state.pending[..., :n] + branch
    state.pending = state.pending[..., n:].contiguous()
    return out


def _resnet_block_check(block: EncodecResnetBlock, where: str) -> None:
    stream_check([*block.block, block.shortcut], where)


def _resnet_block_step(block: EncodecResnetBlock, state: ResnetBlockState, x: torch.Tensor) -> torch.Tensor:
    skip = stream_step([block.shortcut], [state.shortcut], x)
    return _resnet_join(state, skip, stream_step(block.block, state.branch, x))


def _resnet_block_flush(block: EncodecResnetBlock, state: ResnetBlockState, like: torch.Tensor) -> torch.Tensor:
    skip = stream_flush([block.shortcut], [state.shortcut], like)
    out = _resnet_join(state, skip, stream_flush(block.block, state.branch, like))
    if state.pending is not None and state.pending.shape[-1]:
        raise RuntimeError("internal streaming error: residual branch and skip lengths differ at flush")
    return out


def _no_check(layer: nn.Module, where: str) -> None:
    """Layers that stream as they are (pointwise activations, the LSTM)."""


def _holds_nothing(layer: nn.Module, state: Any, like: torch.Tensor) -> torch.Tensor:
    """Flush of layers that hold nothing back (pointwise activations, the LSTM)."""
    return like[..., :0]


_POINTWISE = LayerStepper(
    init=lambda layer: None,
    check=_no_check,
    step=lambda layer, state, x: layer(x) if x.shape[-1] else x,
    flush=_holds_nothing,
)

# One entry per streamable layer type (exact types: a subclass may change what its forward computes).
STREAM_STEPPERS: dict[type[nn.Module], LayerStepper] = {
    EncodecConv1d: LayerStepper(lambda layer: Conv1dState(), check_streamable_conv, conv1d_step, conv1d_flush),
    EncodecConvTranspose1d: LayerStepper(
        lambda layer: ConvTranspose1dState(), check_streamable_conv, conv_transpose1d_step, conv_transpose1d_flush
    ),
    EncodecLSTM: LayerStepper(lambda layer: LSTMState(), _no_check, lstm_step, _holds_nothing),
    EncodecResnetBlock: LayerStepper(
        lambda block: ResnetBlockState(stream_init(block.block), stream_init([block.shortcut])[0]),
        _resnet_block_check,
        _resnet_block_step,
        _resnet_block_flush,
    ),
    nn.ELU: _POINTWISE,
    nn.Identity: _POINTWISE,
}


def _stepper(layer: nn.Module, where: str = "The model") -> LayerStepper:
    stepper = STREAM_STEPPERS.get(type(layer))
    if stepper is None:
        raise StreamingNotSupportedError(f"{where} contains a layer that cannot stream: {type(layer).__name__}.")
    return stepper


def stream_check(layers, where: str) -> None:
    """Raises StreamingNotSupportedError unless every layer can run incrementally with the offline results."""
    for layer in layers:
        stepper = _stepper(layer, where)
        stepper.check(layer, where)


def stream_init(layers) -> list:
    """Fresh streaming states, one per layer."""
    return [_stepper(layer).init(layer) for layer in layers]


def stream_step(layers, states: list, x: torch.Tensor) -> torch.Tensor:
    """Steps a chain of layers on new inputs `[B, C, n]`; returns the chain's outputs now final."""
    for layer, state in zip(layers, states, strict=True):
        x = _stepper(layer).step(layer, state, x)
    return x


def stream_flush(layers, states: list, like: torch.Tensor) -> torch.Tensor:
    """Flushes a chain: each layer first takes what its predecessor flushed, then flushes itself."""
    y = None
    for layer, state in zip(layers, states, strict=True):
        stepper = _stepper(layer)
        if y is not None and y.shape[-1]:
            y = stepper.step(layer, state, y)
            y = time_cat(y, stepper.flush(layer, state, y))
        else:
            y = stepper.flush(layer, state, like if y is None else y)
    return y
