"""The multi-scale STFT (MS-STFT) discriminator of EnCodec (paper section 3.4; Meta's ``encodec/msstftd.py``).

Public API::

    MultiScaleSTFTDiscriminator(
        filters: int = 32, in_channels: int = 1, out_channels: int = 1,
        n_ffts: Sequence[int] = (2048, 1024, 512, 256, 128),
        hop_lengths: Sequence[int] | None = None,   # default n_fft // 4
        win_lengths: Sequence[int] | None = None,   # default n_fft
        negative_slope: float = 0.2,
    )
    .forward(audio [B, C, T]) -> (logits: list[Tensor [B, out, frames_k, bins_k]],
                                  feature_maps: list[list[Tensor [B, filters, frames_k, bins_k,l]]])
    .min_length -> int          # shortest T accepted (the largest window)
    DiscriminatorSTFT(filters, in_channels, out_channels, n_fft, hop_length, win_length, ...)  # one scale

Each scale takes a complex STFT (hann window, ``center=False``, normalised by the window's energy as torchaudio's
``Spectrogram(normalized=True)`` does), stacks real and imaginary parts as channels ``[re_0..re_C-1, im_0..im_C-1]``,
arranges them ``[B, 2C, frames, bins]`` and runs five 2-D convs with LeakyReLU (the five feature maps) and a final
``conv_post`` giving the logits. The first conv has no weight norm; the others do, as in Meta's code.

The defaults are the paper's five scales (windows 2048...128, hop = window / 4, 32 filters). Meta's repository
default is three scales (``n_ffts=[1024, 2048, 512]``); pass those lists to reproduce it.

State dicts: the module names follow Meta's (``discriminators.{k}.convs.{l}.conv.*``, ``...conv_post.conv.*``), weight
norm uses ``torch.nn.utils.parametrizations`` (keys ``parametrizations.weight.original0/1``), and a load hook also
accepts Meta's legacy ``weight_g`` / ``weight_v`` keys and drops its ``spec_transform.window`` buffers, so a state
dict of ``encodec.msstftd.MultiScaleSTFTDiscriminator`` loads directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from ..errors import EncodecInputError, TrainingConfigError

__all__ = ["DiscriminatorSTFT", "MultiScaleSTFTDiscriminator"]

_LEGACY_WEIGHT_NORM_KEYS = {
    "weight_g": "parametrizations.weight.original0",
    "weight_v": "parametrizations.weight.original1",
}


def _same_padding(kernel_size: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    return ((kernel_size[0] - 1) * dilation[0] // 2, (kernel_size[1] - 1) * dilation[1] // 2)


class _NormConv2d(nn.Module):
    """``Conv2d`` under the attribute ``conv`` (Meta's ``NormConv2d`` layout), optionally weight-normalised."""

    def __init__(self, *args, use_weight_norm: bool = True, **kwargs) -> None:
        super().__init__()
        conv = nn.Conv2d(*args, **kwargs)
        self.conv = weight_norm(conv) if use_weight_norm else conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DiscriminatorSTFT(nn.Module):
    """One scale of the MS-STFT discriminator.

    Input audio ``[B, C_in, T]`` with ``T >= n_fft``; output ``(logits [B, out_channels, frames, bins'],
    feature_maps)`` with five feature maps ``[B, filters, frames, bins_l]``, where
    ``frames = 1 + (T - n_fft) // hop_length`` and the frequency axis
    (``n_fft // 2 + 1`` bins) is halved (rounding up) by each of the three strided convs.
    """

    def __init__(
        self,
        filters: int = 32,
        in_channels: int = 1,
        out_channels: int = 1,
        n_fft: int = 1024,
        hop_length: int = 256,
        win_length: int = 1024,
        kernel_size: tuple[int, int] = (3, 9),
        dilations: Sequence[int] = (1, 2, 4),
        stride: tuple[int, int] = (1, 2),
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        for name, value in (("filters", filters), ("in_channels", in_channels), ("out_channels", out_channels)):
            if value < 1:
                raise TrainingConfigError(f"{name} must be a positive integer, got {value}.")
        if not (hop_length > 0 and 0 < win_length <= n_fft):
            raise TrainingConfigError(
                f"Need hop_length > 0 and 0 < win_length <= n_fft, got n_fft={n_fft}, hop_length={hop_length}, "
                f"win_length={win_length}."
            )
        self.in_channels = in_channels
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length
        # torch.hann_window is periodic, like torchaudio's `window_fn=torch.hann_window`. Not persistent: it is a
        # function of win_length, not a learned or resumable state.
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        self.activation = nn.LeakyReLU(negative_slope)
        kernel_size, stride = tuple(kernel_size), tuple(stride)
        square = (kernel_size[0], kernel_size[0])
        first = _NormConv2d(
            2 * in_channels, filters, kernel_size, padding=_same_padding(kernel_size), use_weight_norm=False
        )
        self.convs = nn.ModuleList([first])
        for dilation in dilations:
            self.convs.append(
                _NormConv2d(
                    filters,
                    filters,
                    kernel_size,
                    stride=stride,
                    dilation=(dilation, 1),
                    padding=_same_padding(kernel_size, (dilation, 1)),
                )
            )
        self.convs.append(_NormConv2d(filters, filters, square, padding=_same_padding(square)))
        self.conv_post = _NormConv2d(filters, out_channels, square, padding=_same_padding(square))
        self.register_load_state_dict_pre_hook(_accept_meta_keys)

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """Complex STFT ``[B, C, T]`` -> real ``[B, 2C, frames, n_fft // 2 + 1]`` (real parts, then imaginary)."""
        batch, channels, length = audio.shape
        if audio.dtype not in (torch.float32, torch.float64):
            # torch.stft has no half-precision kernels on CPU and loses accuracy in them on GPU.
            audio = audio.float()
        spec = torch.stft(
            audio.reshape(batch * channels, length),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.to(audio.dtype),
            center=False,
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        # torchaudio's `normalized=True` divides by the window's L2 norm (torch.stft's own flag would divide by
        # sqrt(n_fft) instead, which differs by sqrt(3/8) for a hann window).
        spec = spec / self.window.to(audio.dtype).pow(2).sum().sqrt()
        spec = spec.reshape(batch, channels, *spec.shape[-2:])  # [B, C, bins, frames]
        return torch.cat([spec.real, spec.imag], dim=1).transpose(2, 3)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z = self.spectrogram(audio)
        feature_maps = []
        for layer in self.convs:
            z = self.activation(layer(z))
            feature_maps.append(z)
        return self.conv_post(z), feature_maps


class MultiScaleSTFTDiscriminator(nn.Module):
    """MS-STFT discriminator: one :class:`DiscriminatorSTFT` per STFT scale.

    Input audio ``[B, C, T]`` (``C == in_channels``, ``T >= max(win_lengths)``). Returns ``(logits, feature_maps)``:
    ``logits[k]`` is ``[B, out_channels, frames_k, bins_k]`` and ``feature_maps[k]`` a list of five
    ``[B, filters, frames_k, bins_k_l]`` tensors, for each scale ``k``.
    """

    def __init__(
        self,
        filters: int = 32,
        in_channels: int = 1,
        out_channels: int = 1,
        n_ffts: Sequence[int] = (2048, 1024, 512, 256, 128),
        hop_lengths: Sequence[int] | None = None,
        win_lengths: Sequence[int] | None = None,
        negative_slope: float = 0.2,
        kernel_size: tuple[int, int] = (3, 9),
        dilations: Sequence[int] = (1, 2, 4),
        stride: tuple[int, int] = (1, 2),
    ) -> None:
        super().__init__()
        n_ffts = list(n_ffts)
        hop_lengths = [n // 4 for n in n_ffts] if hop_lengths is None else list(hop_lengths)
        win_lengths = list(n_ffts) if win_lengths is None else list(win_lengths)
        if not n_ffts or not len(n_ffts) == len(hop_lengths) == len(win_lengths):
            raise TrainingConfigError(
                f"n_ffts, hop_lengths and win_lengths need one entry per scale and the same length; got "
                f"{n_ffts}, {hop_lengths}, {win_lengths}."
            )
        self.in_channels = in_channels
        self.discriminators = nn.ModuleList(
            DiscriminatorSTFT(
                filters,
                in_channels,
                out_channels,
                n_fft=n_fft,
                hop_length=hop,
                win_length=win,
                kernel_size=kernel_size,
                dilations=dilations,
                stride=stride,
                negative_slope=negative_slope,
            )
            for n_fft, hop, win in zip(n_ffts, hop_lengths, win_lengths, strict=True)
        )

    @property
    def num_discriminators(self) -> int:
        return len(self.discriminators)

    @property
    def min_length(self) -> int:
        """The shortest audio accepted: the largest STFT window (frames are not padded, ``center=False``)."""
        return max(d.n_fft for d in self.discriminators)

    def forward(self, audio: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        if audio.dim() != 3 or audio.shape[1] != self.in_channels:
            raise EncodecInputError(
                f"The discriminator takes audio shaped [batch, {self.in_channels}, time]; got {tuple(audio.shape)}."
            )
        if audio.shape[-1] < self.min_length:
            raise EncodecInputError(
                f"The discriminator needs at least {self.min_length} samples (its largest STFT window); got "
                f"{audio.shape[-1]}. Train on longer segments."
            )
        if not audio.is_floating_point():
            raise EncodecInputError(f"The discriminator takes floating-point audio; got {audio.dtype}.")
        logits, feature_maps = [], []
        for discriminator in self.discriminators:
            logit, fmap = discriminator(audio)
            logits.append(logit)
            feature_maps.append(fmap)
        return logits, feature_maps


def _accept_meta_keys(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Rename Meta's legacy weight-norm keys and drop torchaudio's window buffer before loading one scale."""
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        local = key[len(prefix) :]
        if local == "spec_transform.window":
            del state_dict[key]
            continue
        head, _, leaf = local.rpartition(".")
        if leaf in _LEGACY_WEIGHT_NORM_KEYS:
            state_dict[f"{prefix}{head}.{_LEGACY_WEIGHT_NORM_KEYS[leaf]}"] = state_dict.pop(key)
