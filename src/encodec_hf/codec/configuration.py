"""EncodecConfig: the single source of EnCodec hyper-parameters.

Field names are those of transformers' ``EncodecConfig`` so the Hub ``config.json`` files of
``facebook/encodec_24khz``, ``facebook/encodec_32khz`` and ``facebook/encodec_48khz`` load 1:1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

from transformers import PreTrainedConfig

from .chunking import ChunkedAudioMixin
from .errors import UnsupportedBandwidthError

NORM_TYPES = ("weight_norm", "time_group_norm")


PAD_MODES = ("reflect", "constant", "replicate", "circular")


@dataclass(repr=False)
class EncodecConfig(ChunkedAudioMixin, PreTrainedConfig):
    r"""Configuration of an [`EncodecModel`].

    Args:
        target_bandwidths (`list[float]`, defaults to `[1.5, 3.0, 6.0, 12.0, 24.0]`):
            Bandwidths in kbps the model can encode at; the last one fixes the number of codebooks.
        sampling_rate (`int`, defaults to 24000): audio sampling rate in Hz.
        audio_channels (`int`, defaults to 1): 1 (mono) or 2 (stereo).
        normalize (`bool`, defaults to `False`): divide each chunk by its RMS (the "scale") before encoding.
        chunk_length_s (`float`, *optional*): chunk duration in seconds (1.0 for the 48 kHz model); `None`
            encodes the whole input as one chunk.
        overlap (`float`, *optional*): fraction of a chunk shared with the next one (0.01 = 10 ms at 1 s).
        hidden_size (`int`, defaults to 128): latent dimension D.
        num_filters (`int`, defaults to 32): channels of the first convolution; doubled at every stride.
        num_residual_layers (`int`, defaults to 1): residual blocks per resolution.
        upsampling_ratios (`list[int]`, defaults to `[8, 5, 4, 2]`): decoder strides; the encoder uses them
            reversed. Their product is `hop_length`.
        norm_type (`str`, defaults to `"weight_norm"`): `"weight_norm"` or `"time_group_norm"`.
        kernel_size / last_kernel_size / residual_kernel_size (`int`, defaults to 7 / 7 / 3).
        dilation_growth_rate (`int`, defaults to 2): dilation multiplier between residual layers.
        use_causal_conv (`bool`, defaults to `True`): causal (streamable) or centred padding.
        pad_mode (`str`, defaults to `"reflect"`): padding mode of the convolutions.
        compress (`int`, defaults to 2): channel reduction inside residual blocks.
        num_lstm_layers (`int`, defaults to 2): LSTM layers after the encoder / before the decoder.
        trim_right_ratio (`float`, defaults to 1.0): share of transposed-conv trimming done on the right
            (causal models only).
        codebook_size (`int`, defaults to 1024): entries per codebook, a power of two.
        codebook_dim (`int`, *optional*): codebook vector size; defaults to `hidden_size`.
        use_conv_shortcut (`bool`, defaults to `True`): 1x1 convolution (else identity) on the residual skip.

    Example:

    ```python
    >>> from encodec_hf import EncodecConfig, EncodecModel
    >>> config = EncodecConfig.encodec_48khz()
    >>> config.chunk_length, config.chunk_stride, config.num_quantizers
    (48000, 47520, 16)
    >>> model = EncodecModel(config)  # random weights
    ```
    """

    model_type = "encodec"

    target_bandwidths: list[float] | tuple[float, ...] = (1.5, 3.0, 6.0, 12.0, 24.0)
    sampling_rate: int = 24_000
    audio_channels: int = 1
    normalize: bool = False
    chunk_length_s: int | float | None = None
    overlap: float | None = None
    hidden_size: int = 128
    num_filters: int = 32
    num_residual_layers: int = 1
    upsampling_ratios: list[int] | tuple[int, ...] = (8, 5, 4, 2)
    norm_type: str = "weight_norm"
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    use_causal_conv: bool = True
    pad_mode: str = "reflect"
    compress: int = 2
    num_lstm_layers: int = 2
    trim_right_ratio: float = 1.0
    codebook_size: int = 1024
    codebook_dim: int | None = None
    use_conv_shortcut: bool = True

    def __post_init__(self, **kwargs):
        if self.codebook_dim is None:
            self.codebook_dim = self.hidden_size
        # JSON gives lists; keep them lists so save/load round trips compare equal.
        self.target_bandwidths = [float(b) for b in self.target_bandwidths]
        self.upsampling_ratios = [int(r) for r in self.upsampling_ratios]
        super().__post_init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        if self.norm_type not in NORM_TYPES:
            raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {self.norm_type!r}.")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}.")
        if self.audio_channels not in (1, 2):
            raise ValueError(f"audio_channels must be 1 (mono) or 2 (stereo), got {self.audio_channels}.")
        if self.codebook_size < 2 or self.codebook_size & (self.codebook_size - 1):
            raise ValueError(f"codebook_size must be a power of 2, got {self.codebook_size}.")
        if not self.target_bandwidths or any(b <= 0 for b in self.target_bandwidths):
            raise ValueError(f"target_bandwidths must be positive kbps values, got {self.target_bandwidths}.")
        if not self.upsampling_ratios or any(r < 1 for r in self.upsampling_ratios):
            raise ValueError(f"upsampling_ratios must be positive integers, got {self.upsampling_ratios}.")
        if self.trim_right_ratio != 1.0 and not self.use_causal_conv:
            raise ValueError("trim_right_ratio != 1.0 is only supported with use_causal_conv=True.")
        if self.chunk_length_s is not None and self.chunk_length_s <= 0:
            raise ValueError(f"chunk_length_s must be positive or None, got {self.chunk_length_s}.")
        if self.overlap is not None and not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}.")
        if self.num_quantizers < 1:
            raise ValueError(
                f"target_bandwidths[-1]={self.target_bandwidths[-1]} kbps is below one codebook "
                f"({self.frame_rate * self.codebook_nbits / 1000} kbps at this frame rate)."
            )

    # Derived values are properties so that changing a field on the fly stays consistent (chunk_length and
    # chunk_stride come from ChunkedAudioMixin).
    @property
    def hop_length(self) -> int:
        """Samples per latent frame (product of the strides)."""
        return int(math.prod(self.upsampling_ratios))

    @property
    def codebook_nbits(self) -> int:
        return math.ceil(math.log2(self.codebook_size))

    @property
    def frame_rate(self) -> int:
        """Latent frames per second."""
        return math.ceil(self.sampling_rate / self.hop_length)

    @property
    def num_quantizers(self) -> int:
        """Codebooks in the residual quantizer (used at the highest bandwidth)."""
        return int(1000 * self.target_bandwidths[-1] // (self.frame_rate * self.codebook_nbits))

    def num_quantizers_for_bandwidth(self, bandwidth: float | None) -> int:
        """Codebooks used at `bandwidth` kbps; all of them for `None` or a non-positive value."""
        if bandwidth is None or bandwidth <= 0:
            return self.num_quantizers
        bits_per_codebook_per_s = self.codebook_nbits * self.frame_rate
        return max(1, int(math.floor(bandwidth * 1000 / bits_per_codebook_per_s)))

    def resolve_bandwidth(self, bandwidth) -> float:
        """The bandwidth rule, for every entry point: a bandwidth in kbps, or `None` for the default.

        The default is the lowest of ``target_bandwidths``, as in transformers' ``EncodecModel.encode``; every
        encodec_hf entry point that takes ``bandwidth=None`` (``model.encode``, the streams, ``encode_file``,
        ``compress``, the datasets helpers, the endpoint) means this. Only the ``encodec-hf`` command line has
        its own default, Meta's ``encodec`` command's ``-b 6``, which it passes explicitly.

        Returns:
            `float`: the bandwidth to encode at, one of ``target_bandwidths``.

        Raises:
            TypeError: not a number. UnsupportedBandwidthError: not one of ``target_bandwidths``.
        """
        if bandwidth is None:
            return self.target_bandwidths[0]
        if isinstance(bandwidth, bool) or not isinstance(bandwidth, Real):
            raise TypeError(f"bandwidth must be a number in kbps, one of {self.target_bandwidths}; got {bandwidth!r}.")
        if float(bandwidth) not in self.target_bandwidths:
            raise UnsupportedBandwidthError(
                f"This model doesn't support the bandwidth {bandwidth}. Select one of {self.target_bandwidths} (kbps)."
            )
        return float(bandwidth)

    # Presets of the three Hub checkpoints.
    @classmethod
    def encodec_24khz(cls, **kwargs) -> EncodecConfig:
        """`facebook/encodec_24khz`: 24 kHz mono, causal, weight norm, 1.5-24 kbps."""
        return cls(**kwargs)

    @classmethod
    def encodec_48khz(cls, **kwargs) -> EncodecConfig:
        """`facebook/encodec_48khz`: 48 kHz stereo, non-causal, time group norm, 1 s chunks, 3-24 kbps."""
        preset = dict(
            target_bandwidths=[3.0, 6.0, 12.0, 24.0],
            sampling_rate=48_000,
            audio_channels=2,
            normalize=True,
            chunk_length_s=1.0,
            overlap=0.01,
            norm_type="time_group_norm",
            use_causal_conv=False,
        )
        return cls(**{**preset, **kwargs})

    @classmethod
    def encodec_32khz(cls, **kwargs) -> EncodecConfig:
        """`facebook/encodec_32khz`: the MusicGen codec, 32 kHz mono, non-causal, 4 codebooks of 2048."""
        preset = dict(
            target_bandwidths=[2.2],
            sampling_rate=32_000,
            num_filters=64,
            upsampling_ratios=[8, 5, 4, 4],
            use_causal_conv=False,
            codebook_size=2048,
            use_conv_shortcut=False,
        )
        return cls(**{**preset, **kwargs})


__all__ = ["EncodecConfig"]
