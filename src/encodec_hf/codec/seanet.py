"""SEANet encoder and decoder: the convolutional halves of EnCodec.

Layer indices (``layers.N``) match transformers' and Meta's ``model.N`` so checkpoints map 1:1.
"""

from __future__ import annotations

import torch
from torch import nn

from .conv import EncodecConv1d, EncodecConvTranspose1d, to_time_major
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

    def forward(self, x: torch.Tensor, time_major: bool = False) -> torch.Tensor:
        if not time_major or (torch.is_grad_enabled() and x.requires_grad):
            if time_major:
                return to_time_major(self.forward(x))
            if torch.is_grad_enabled():
                residual = x
                for layer in self.block:
                    x = layer(x)
                return self.shortcut(residual) + x
            # Reference kernels, minus two allocations: ELU in place on the fresh hidden activation (same kernel,
            # same layout, so bit-identical) and the residual sum in place (addition commutes exactly).
            elu1, conv1, _, conv2 = self.block
            y = conv2(torch.nn.functional.elu_(conv1(elu1(x))))
            return y.add_(self.shortcut(x))
        # Time-major fast path: ELU fused into the padding copy, in-place ELU on the fresh hidden activation and
        # in-place residual sum (no extra passes or allocations; element-wise identical to the layers above).
        _, conv1, _, conv2 = self.block
        hidden = conv1.forward_elu(x)
        y = conv2.forward(torch.nn.functional.elu_(hidden), time_major=True)
        shortcut = self.shortcut(x, time_major=True) if isinstance(self.shortcut, EncodecConv1d) else x
        return y.add_(shortcut)


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


def _run_layers(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """Runs a SEANet layer list in the time-major layout, fusing each ELU into the padding of the conv after it."""
    x = to_time_major(x)
    pending_elu = False
    for layer in layers:
        if isinstance(layer, nn.ELU):
            if pending_elu:
                x = torch.nn.functional.elu(x)
            pending_elu = True
            continue
        if pending_elu and isinstance(layer, (EncodecConv1d, EncodecConvTranspose1d)):
            x = layer.forward_elu(x)
        else:
            if pending_elu:
                x = torch.nn.functional.elu(x)
            x = layer(x, time_major=True)
        pending_elu = False
    return torch.nn.functional.elu(x) if pending_elu else x


def _run(layers: nn.ModuleList, x: torch.Tensor, time_major: bool) -> torch.Tensor:
    """Runs `layers` on `x` `[B, C, T]`: time-major (inference, when enabled) or one by one as transformers."""
    if time_major and not torch.is_grad_enabled():
        return _run_layers(layers, x)
    for layer in layers:
        x = layer(x)
    return x


def _split_at_lstm(
    layers: nn.ModuleList, x: torch.Tensor, time_major: bool, max_items: int | None, high_rate_first: bool
) -> torch.Tensor:
    """Runs `layers` with the audio-rate part on at most `max_items` items at a time and the frame-rate part
    (from or up to the LSTM) on the whole batch.

    The audio-rate activations of a few items are what fills memory (12 MB per layer for two 1 s chunks of 48 kHz
    audio at 32 channels); the LSTM is what gains from a large batch. Every kernel treats the batch items
    independently, so the results are those of one call on the whole batch up to the last bits a kernel may
    change with the batch size (as between a batch and its items alone; tested within 1e-5).
    """
    if max_items is None or x.shape[0] <= max_items:
        return _run(layers, x, time_major)
    cut = next(i for i, layer in enumerate(layers) if isinstance(layer, EncodecLSTM))

    def in_pieces(part: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([_run(part, piece, time_major) for piece in x.split(max_items)])

    if high_rate_first:  # encoder: audio-rate layers, then LSTM, ELU and the last conv at the frame rate
        return _run(layers[cut:], in_pieces(layers[:cut], x), time_major)
    # decoder: first conv and LSTM at the frame rate, then the audio-rate layers
    return in_pieces(layers[cut + 1 :], _run(layers[: cut + 1], x, time_major))


def default_time_major(config) -> bool:
    """Whether the encoder and decoder of `config` run the time-major layout by default (inference only).

    The layout changes the latents by float rounding (~1e-7 relative; the same order as the differences between
    transformers' results on CPUs with other instruction sets). For weight-norm models (24 kHz, 32 kHz) no code
    moved on real audio or noise at any bandwidth, and it is 1.3-1.6x faster at batch 1, so it is on. For
    GroupNorm models (48 kHz) it is about 1.4x (batch 1) to 2.3x (batch 8) faster, but codes moved: a few near-ties
    in 8 x 10 s of the real clip at 6 kbps, and 16 of 100k codes of noise at 24 kbps with the channel-major
    GroupNorm. So they keep the reference kernels unless ``model.time_major = True``. Set ``model.time_major =
    False`` for bit-identical reference numerics on any model.
    """
    return config.norm_type != "time_group_norm"


class EncodecEncoder(nn.Module):
    """Audio `[B, C, T]` to latents `[B, D, ceil(T / hop_length)]`.

    ``time_major`` runs the fast inference layout (see ``conv.is_time_major``) whenever autograd is off; ``False``
    (and always under autograd, i.e. training) runs the layers one by one exactly as transformers does (same
    kernels, bit-identical results). It defaults to ``True`` for weight-norm models and ``False`` for GroupNorm
    ones (see `default_time_major`).
    """

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
        self.time_major = default_time_major(config)

    def forward(self, x: torch.Tensor, max_items: int | None = None) -> torch.Tensor:
        """`max_items`: run the audio-rate layers on at most this many items at a time (the LSTM and what
        follows it on all of them): bounded activation memory, the same results within float rounding."""
        return _split_at_lstm(self.layers, x, self.time_major, max_items, high_rate_first=True)


class EncodecDecoder(nn.Module):
    """Latents `[B, D, F]` to audio `[B, C, F * hop_length]` (contiguous); ``time_major`` as in the encoder."""

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
        self.time_major = default_time_major(config)  # as in the encoder: audio within ~1e-7 of the reference

    def forward(self, x: torch.Tensor, max_items: int | None = None) -> torch.Tensor:
        """`max_items`: run the audio-rate layers on at most this many items at a time (the first conv and the
        LSTM on all of them): bounded activation memory, the same results within float rounding."""
        return _split_at_lstm(self.layers, x, self.time_major, max_items, high_rate_first=False).contiguous()
