"""Weight initialisation of a codec trained from scratch.

``"torch"`` keeps the layers' own initialisation, as Meta's and transformers' models are built. Its convolutions
(Kaiming-uniform with ``a = sqrt(5)``: variance ``1 / (3 fan_in)``) shrink the signal at every layer that is not
residual, so the gradient that reaches the encoder's first convolution of a from-scratch 24 kHz model is about
1e-8 of the decoder's last one (measured at full size and at ``num_filters=8``), below Adam's epsilon: the network
sits for thousands of steps in the "output silence" plateau. ``"variance_preserving"`` draws every convolution's
weight-norm direction ``v`` with standard deviation ``1 / sqrt(fan_in)`` (``fan_in`` of a transposed convolution:
input channels x kernel / stride, the taps that reach one output sample), sets the magnitude ``g = ||v||`` so the
initial weight equals ``v``, and zeroes the biases; the last convolution of every residual branch then has its
magnitude scaled by ``RESIDUAL_BRANCH_SCALE`` (SkipInit, De & Smith 2020), so that each residual block starts as
its shortcut and the variance does not grow with depth. The LSTMs keep PyTorch's initialisation. With it the
encoder's first-layer gradient is within two orders of magnitude of the last layer's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..codec.conv import EncodecConv1d
from ..codec.seanet import EncodecResnetBlock

WEIGHT_INITS = ("torch", "variance_preserving")
RESIDUAL_BRANCH_SCALE = 1e-3


def _fan_in(conv: nn.Module, direction: torch.Tensor) -> float:
    if isinstance(conv, nn.ConvTranspose1d):  # weight [in, out, k]: in * k / stride taps reach an output sample
        return direction.shape[0] * direction.shape[2] / conv.stride[0]
    return direction.shape[1] * direction.shape[2]  # weight [out, in, k]


@torch.no_grad()
def initialize_weights(model: nn.Module, scheme: str, generator: torch.Generator | None = None) -> None:
    """Applies ``scheme`` (one of ``WEIGHT_INITS``) in place to every weight-normed convolution of ``model``."""
    if scheme not in WEIGHT_INITS:
        raise ValueError(f"Unknown weight initialisation {scheme!r}; expected one of {WEIGHT_INITS}.")
    if scheme == "torch":
        return
    for module in model.modules():
        if not isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
            continue
        parametrizations = getattr(module, "parametrizations", None)
        if parametrizations is None or "weight" not in parametrizations:
            raise ValueError(f"{type(module).__name__} without weight norm: {scheme!r} expects EnCodec's layers.")
        magnitude, direction = parametrizations.weight.original0, parametrizations.weight.original1
        direction.normal_(0.0, 1.0 / math.sqrt(_fan_in(module, direction)), generator=generator)
        # torch's weight_norm normalises over every dimension but 0, for convolutions and transposed ones alike.
        magnitude.copy_(direction.norm(dim=tuple(range(1, direction.dim())), keepdim=True))
        if module.bias is not None:
            module.bias.zero_()
    for block in model.modules():
        if isinstance(block, EncodecResnetBlock):
            last = [layer for layer in block.block if isinstance(layer, EncodecConv1d)][-1]
            last.conv.parametrizations.weight.original0.mul_(RESIDUAL_BRANCH_SCALE)
