"""The LSTM block between the convolutional stack and the latent space."""

from __future__ import annotations

import torch
from torch import nn


class EncodecLSTM(nn.Module):
    """Multi-layer LSTM with a skip connection: `[B, C, T] -> [B, C, T]`.

    The state starts at zero on every call; streaming carries ``(h, c)`` across calls with `forward_with_state`.
    """

    def __init__(self, dimension: int, num_layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dimension, dimension, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_state(x)[0]

    def forward_with_state(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Runs from ``state`` (zeros if `None`); returns the output `[B, C, T]` and the final `(h, c)`,
        each `[num_layers, B, C]`."""
        x = x.permute(2, 0, 1)  # [T, B, C]: nn.LSTM is sequence-first, as the checkpoints were trained
        y, new_state = self.lstm(x, state)
        return (y + x).permute(1, 2, 0), new_state


# ---------------------------------------------------------------------------------------------------------------
# Streaming steps (used by ``encodec_hf.streaming``): the LSTM carries ``(h, c)`` across calls. The state is a
# plain dataclass outside the module; the imports sit here so that this section stays separate from the layer.
# ---------------------------------------------------------------------------------------------------------------
from dataclasses import dataclass  # noqa: E402


@dataclass
class LSTMState:
    """``(h, c)`` of the LSTM, each `[num_layers, B, C]`, or `None` before the first input."""

    hidden: tuple[torch.Tensor, torch.Tensor] | None = None


def lstm_step(layer: EncodecLSTM, state: LSTMState, x: torch.Tensor) -> torch.Tensor:
    """New frames `[B, C, n]` -> their outputs `[B, C, n]` (an LSTM holds nothing back)."""
    if x.shape[-1] == 0:
        return x
    # oneDNN's LSTM re-packs its weights on every call (tens of ms), which dominates frame-sized steps; the
    # native kernel agrees with it to float rounding (~1e-7), as does oneDNN run step by step.
    with torch.backends.mkldnn.flags(enabled=False, deterministic=None, allow_tf32=None, fp32_precision=None):
        y, state.hidden = layer.forward_with_state(x, state.hidden)
    return y
