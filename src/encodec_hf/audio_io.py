"""Audio files in and out (soundfile), channel conversion and resampling.

Resampling is band-limited windowed-sinc interpolation (Hann window, 6 zero crossings, cut-off at 99% of
the lower Nyquist frequency), computed as a polyphase strided convolution in torch: the method and the
default parameters of `torchaudio.functional.resample`, which Meta's `encodec` command uses, so audio
prepared here matches what the original command feeds its model up to float rounding.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from collections.abc import Iterable, Iterator
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


_CLIP_LIMIT = 0.99  # the original command's: clip to +-0.99, or rescale the peak to 0.99


def _rescale_factor(peak: float) -> float:
    return min(_CLIP_LIMIT / max(peak, 1e-12), 1.0)


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
    audio = audio * _rescale_factor(peak) if rescale else audio.clamp(-_CLIP_LIMIT, _CLIP_LIMIT)
    sf.write(os.fspath(path), audio.t().numpy(), sampling_rate, subtype="PCM_16", format=format)
    return peak


def save_audio_blocks(
    path: str | os.PathLike,
    blocks: Iterable[torch.Tensor],
    sampling_rate: int,
    channels: int,
    rescale: bool = False,
    format: str | None = None,
) -> float:
    """:func:`save_audio` of audio that arrives in blocks `[C, n]`, in memory independent of its length.

    The file has the bytes ``save_audio`` writes for the concatenated blocks. Clipping works block by block;
    rescaling needs the peak of the whole signal, so the blocks first go (float32, raw) to a temporary file next
    to ``path``, and a second pass scales them into ``path``. Returns the peak before clipping or rescaling.
    """
    import soundfile as sf

    path = os.fspath(path)
    peak = 0.0
    spool = None if not rescale else os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.f32")
    try:
        with contextlib.ExitStack() as stack:
            if spool is None:
                sink = stack.enter_context(sf.SoundFile(path, "w", sampling_rate, channels, "PCM_16", format=format))
            else:
                sink = stack.enter_context(open(spool, "wb"))
            for block in blocks:
                block = block.detach().float().cpu()
                if not block.numel():
                    continue
                peak = max(peak, float(block.abs().max()))
                if spool is None:
                    sink.write(block.clamp(-_CLIP_LIMIT, _CLIP_LIMIT).t().numpy())
                else:
                    sink.write(block.t().contiguous().numpy().tobytes())
        if spool is not None:
            scale = _rescale_factor(peak)
            frames_per_read = 1 << 16
            with (
                open(spool, "rb") as src,
                sf.SoundFile(path, "w", sampling_rate, channels, "PCM_16", format=format) as f,
            ):
                while True:
                    raw = np.frombuffer(src.read(4 * channels * frames_per_read), dtype=np.float32)
                    if not raw.size:
                        break
                    f.write((torch.from_numpy(raw.copy().reshape(-1, channels)) * scale).numpy())
    finally:
        if spool is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spool)
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


# Output frames (one input period of `orig` samples each) per convolution call. The whole-signal `resample` and
# the `StreamingConverter` both cut the work on this grid, so they run the same calls on the same shapes and give
# the same bits; about 64k input samples per call keeps the im2col buffer near 10 MB whatever the length.
_RESAMPLE_BLOCK_SAMPLES = 1 << 16


def _resample_plan(orig_sr: int, target_sr: int) -> tuple[int, int, torch.Tensor, int, int]:
    """`(orig, new, kernels, width, frames_per_call)` of resampling `orig_sr` -> `target_sr` (reduced ratio)."""
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"Sampling rates must be positive, got {orig_sr} and {target_sr}.")
    gcd = math.gcd(orig_sr, target_sr)
    orig, new = orig_sr // gcd, target_sr // gcd
    kernels, width = _sinc_kernels(orig, new)
    return orig, new, kernels, width, max(1, _RESAMPLE_BLOCK_SAMPLES // orig)


def _resample_frames(padded: torch.Tensor, kernels: torch.Tensor, orig: int, width: int) -> torch.Tensor:
    """Output frames `[N, new * f]` of a zero-padded input slice `[N, 1, (f - 1) * orig + 2 * width + orig]`."""
    y = F.conv1d(padded.contiguous(), kernels.to(padded.device), stride=orig)  # [N, new, f]: one row per phase
    return y.transpose(1, 2).reshape(padded.shape[0], -1)


def resample(audio: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Resample `audio` `[..., T]` from `orig_sr` to `target_sr`; the result has `ceil(T * target / orig)` samples.

    Output frame j (``new`` samples) is the filter bank applied to input samples ``[j * orig - width,
    j * orig + width + orig)``, zeros outside the signal; :class:`StreamingConverter` gives the same bits block by
    block.
    """
    orig, new, kernels, width, per_call = _resample_plan(orig_sr, target_sr)
    if orig == new:
        return audio
    shape, length = audio.shape[:-1], audio.shape[-1]
    x = F.pad(audio.reshape(-1, 1, length).float(), (width, width + orig))
    frames = length // orig + 1
    pieces = [
        _resample_frames(
            x[..., j * orig : (min(j + per_call, frames) - 1) * orig + 2 * width + orig], kernels, orig, width
        )
        for j in range(0, frames, per_call)
    ]
    y = torch.cat(pieces, -1)
    target_length = math.ceil(new * length / orig)
    return y[..., :target_length].reshape(*shape, -1)


def _convert_channels(audio: torch.Tensor, target_channels: int) -> torch.Tensor:
    """`audio` `[C, T]` to `target_channels`: the mean for mono, mono duplicated or the first two for stereo.

    Every output sample depends on the input samples at the same time only, so blocks convert exactly.
    """
    if audio.dim() != 2:
        raise ValueError(f"audio must be [C, T], got shape {tuple(audio.shape)}.")
    if target_channels == 1:
        return audio.mean(dim=0, keepdim=True)
    if target_channels == 2:
        return audio.expand(2, -1) if audio.shape[0] == 1 else audio[:2]
    raise ValueError(f"target_channels must be 1 or 2, got {target_channels}.")


class StreamingConverter:
    """:func:`convert_audio` block by block: feed `[C, n]` blocks, get the converted samples as they are final.

    The concatenated output of ``push`` + ``flush`` is bit-identical to ``convert_audio`` of the whole signal:
    channels convert sample by sample, and the resampler computes the same output frames with the same
    convolution calls (the grid of :func:`resample`), each as soon as its input (``width`` samples past the
    frame) has arrived. Memory: one grid call of input (about 64k samples) plus the pending block.

    Args:
        sampling_rate / channels: the input's; target_sr / target_channels: the output's.
    """

    def __init__(self, sampling_rate: int, channels: int, target_sr: int, target_channels: int) -> None:
        self.target_channels = target_channels
        self.orig, self.new, self.kernels, self.width, self.per_call = _resample_plan(sampling_rate, target_sr)
        self.num_input = 0  # samples pushed
        self._frames_done = 0  # output frames computed
        self._buffer: torch.Tensor | None = None  # zero-padded input from frame `_frames_done`'s first sample on

    @property
    def resampling(self) -> bool:
        return self.orig != self.new

    def output_length(self, input_length: int) -> int:
        """Samples the conversion of `input_length` input samples gives: ``ceil(input_length * new / orig)``."""
        return math.ceil(self.new * input_length / self.orig)

    def push(self, block: torch.Tensor) -> torch.Tensor:
        """Converts a block `[C, n]`; returns `[target_channels, m]`, the output samples now final (m may be 0)."""
        x = _convert_channels(block, self.target_channels)
        self.num_input += x.shape[-1]
        if not self.resampling:
            return x
        x = x.float()[:, None]  # [N, 1, n]
        if self._buffer is None:
            self._buffer = F.pad(x, (self.width, 0))
        else:
            self._buffer = torch.cat([self._buffer, x], -1)
        # A grid call of frames [j, j + per_call) needs padded input up to (j + per_call) * orig + 2 * width.
        out = []
        while self._buffer.shape[-1] >= self.per_call * self.orig + 2 * self.width:
            out.append(self._run(self.per_call))
        return torch.cat(out, -1) if out else x.new_zeros(x.shape[0], 0)

    def _run(self, frames: int) -> torch.Tensor:
        need = (frames - 1) * self.orig + 2 * self.width + self.orig
        y = _resample_frames(self._buffer[..., :need], self.kernels, self.orig, self.width)
        self._buffer = self._buffer[..., frames * self.orig :]
        self._frames_done += frames
        return y

    def flush(self) -> torch.Tensor:
        """The remaining output `[target_channels, m]` (the signal's end, zero-padded as :func:`resample` pads)."""
        if not self.resampling or self._buffer is None:
            return torch.zeros(self.target_channels, 0)
        emitted = self._frames_done * self.new  # output samples returned by push
        self._buffer = F.pad(self._buffer, (0, self.width + self.orig))
        total = self.num_input // self.orig + 1
        out = []
        while self._frames_done < total:
            out.append(self._run(min(self.per_call, total - self._frames_done)))
        y = torch.cat(out, -1) if out else self._buffer.new_zeros(self._buffer.shape[0], 0)
        self._buffer = None
        return y[..., : self.output_length(self.num_input) - emitted]


def convert_audio(audio: torch.Tensor, sampling_rate: int, target_sr: int, target_channels: int) -> torch.Tensor:
    """Map `audio` `[C, T]` to `target_channels` and `target_sr`.

    Mono targets get the mean of all channels; a stereo target duplicates mono input and keeps the first
    two channels of multichannel input. :class:`StreamingConverter` does the same block by block.
    """
    return resample(_convert_channels(audio, target_channels), sampling_rate, target_sr)


__all__ = [
    "StreamingConverter",
    "audio_info",
    "convert_audio",
    "iter_audio_blocks",
    "load_audio",
    "read_audio",
    "resample",
    "save_audio",
]
