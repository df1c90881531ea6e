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
