"""Audio files in and out (soundfile), channel conversion and resampling.

Resampling is band-limited windowed-sinc interpolation (Hann window, 6 zero crossings, cut-off at 99% of
the lower Nyquist frequency), computed as a polyphase strided convolution in torch: the method and the
default parameters of `torchaudio.functional.resample`, which Meta's `encodec` command uses, so audio
prepared here matches what the original command feeds its model up to float rounding.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

from .errors import AudioFileError

logger = logging.getLogger(__name__)


AudioSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


def _opened(source: AudioSource) -> tuple[str | BinaryIO, str]:
    """What soundfile reads (a path or a file object) and how messages name it."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"Input file {os.fspath(source)} does not exist.")
        return os.fspath(source), os.fspath(source)
    return source, getattr(source, "name", "<file>")


def audio_info(source: AudioSource):
    """soundfile's ``info`` of an audio file or its bytes (format, rate, channels, frames), read from its header.

    Raises:
        FileNotFoundError: a path that does not exist.
        AudioFileError: not audio that libsndfile reads (an `EncodecInputError`, so a `ValueError`).
    """
    import soundfile as sf

    opened, name = _opened(source)
    try:
        return sf.info(opened)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioFileError(f"Cannot read {name} as audio: {err}") from err


def read_audio(source: AudioSource) -> tuple[torch.Tensor, int]:
    """Decodes an audio file, its bytes or a file object, every channel kept: float32 `[C, T]` in [-1, 1] and
    its sampling rate. Anything libsndfile reads (WAV, FLAC, OGG, ...).

    This is the package's one audio decoder: the command line, the datasets helpers, the endpoint and the codes
    file writer all read audio through it (or :func:`iter_audio_blocks` for long files).

    Raises:
        FileNotFoundError: a path that does not exist.
        AudioFileError: not audio that libsndfile reads (an `EncodecInputError`, so a `ValueError`).
    """
    import soundfile as sf

    opened, name = _opened(source)
    try:
        data, sampling_rate = sf.read(opened, dtype="float32", always_2d=True)  # [T, C]
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioFileError(f"Cannot read {name} as audio: {err}") from err
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sampling_rate)


def load_audio(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Reads an audio file as float32 `[C, T]` in [-1, 1] and its rate (:func:`read_audio` of a path)."""
    return read_audio(path)


def iter_audio_blocks(path: str | os.PathLike, block_size: int) -> tuple[object, Iterator[torch.Tensor]]:
    """Opens an audio file for reading ``block_size`` samples at a time, in memory independent of its length.

    Returns:
        soundfile's info of the file (``samplerate``, ``channels``, ``frames``) and an iterator over float32
        blocks `[C, n]` (n = ``block_size`` but for the last); the file closes when the iterator ends or is closed.
    """
    import soundfile as sf

    info = audio_info(path)
    sound = sf.SoundFile(os.fspath(path))

    def blocks() -> Iterator[torch.Tensor]:
        with sound:
            while True:
                data = sound.read(block_size, dtype="float32", always_2d=True)  # [n, C]
                if not len(data):
                    return
                yield torch.from_numpy(np.ascontiguousarray(data.T))

    return info, blocks()


def save_audio(
    path: str | os.PathLike, audio: torch.Tensor, sampling_rate: int, rescale: bool = False, format: str | None = None
) -> float:
    """Write `audio` `[C, T]` as 16-bit PCM (format from the file suffix unless `format` is given).

    As the original command: without `rescale` samples are clipped to +-0.99, with it the whole signal is
    scaled by `min(0.99 / peak, 1)`. Returns the peak before clipping or rescaling.
    """
    import soundfile as sf

    audio = audio.detach().float().cpu()
    peak = float(audio.abs().max()) if audio.numel() else 0.0
    limit = 0.99
    audio = audio * min(limit / max(peak, 1e-12), 1.0) if rescale else audio.clamp(-limit, limit)
    sf.write(os.fspath(path), audio.t().numpy(), sampling_rate, subtype="PCM_16", format=format)
    return peak


def _sinc_kernels(
    orig: int, new: int, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> tuple[torch.Tensor, int]:
    """Polyphase filter bank `[new, 1, 2 * width + orig]` for resampling by `new / orig` (reduced ratio)."""
    base_freq = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx  # phase of each output
    t = (t * base_freq).clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2  # Hann window
    t = t * math.pi
    scale = base_freq / orig
    kernels = torch.where(t == 0, torch.tensor(1.0, dtype=torch.float64), torch.sin(t) / t) * window * scale
    return kernels.to(torch.float32), width


def resample(audio: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Resample `audio` `[..., T]` from `orig_sr` to `target_sr`; the result has `ceil(T * target / orig)` samples."""
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"Sampling rates must be positive, got {orig_sr} and {target_sr}.")
    if orig_sr == target_sr:
        return audio
    gcd = math.gcd(orig_sr, target_sr)
    orig, new = orig_sr // gcd, target_sr // gcd
    kernels, width = _sinc_kernels(orig, new)
    shape, length = audio.shape[:-1], audio.shape[-1]
    x = audio.reshape(-1, 1, length).float()
    x = F.pad(x, (width, width + orig))
    y = F.conv1d(x, kernels.to(x.device), stride=orig)  # [N, new, frames]: one row per output phase
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    target_length = math.ceil(new * length / orig)
    return y[..., :target_length].reshape(*shape, -1)


def convert_audio(audio: torch.Tensor, sampling_rate: int, target_sr: int, target_channels: int) -> torch.Tensor:
    """Map `audio` `[C, T]` to `target_channels` and `target_sr`.

    Mono targets get the mean of all channels; a stereo target duplicates mono input and keeps the first
    two channels of multichannel input.
    """
    if audio.dim() != 2:
        raise ValueError(f"audio must be [C, T], got shape {tuple(audio.shape)}.")
    channels = audio.shape[0]
    if target_channels == 1:
        audio = audio.mean(dim=0, keepdim=True)
    elif target_channels == 2:
        audio = audio.expand(2, -1) if channels == 1 else audio[:2]
    else:
        raise ValueError(f"target_channels must be 1 or 2, got {target_channels}.")
    return resample(audio, sampling_rate, target_sr)


__all__ = ["audio_info", "convert_audio", "iter_audio_blocks", "load_audio", "read_audio", "resample", "save_audio"]
