"""How EnCodec cuts audio into chunks, blends them back, and what "the codes of a clip" are.

Everything that depends on the chunk layout lives here, so the model, the feature extractor, the streams, the
``.ecdc`` container, the codes file, the datasets helpers and the endpoint all cut and count chunks alike:

* :class:`ChunkLayout`: chunk length and stride (from the config), the spans of an input of a given length, the
  frames of each chunk, the padded length of the feature extractor. Unchunked models are one chunk of the whole
  input. Chunks start every ``stride`` samples while they start before the end (Meta's ``range(0, T, stride)``),
  each is cut at the end, and a chunk of ``L`` samples gives ``ceil(L / hop_length)`` frames;
* :func:`overlap_add_window` and :func:`linear_overlap_add`: the triangular cross-fade of decoded chunks;
* :class:`ClipCodes`: the codes of one clip, with its one validator and its one conversion from and to the
  model's :class:`~encodec_hf.EncodecEncoderOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import EncodecInputError


def chunk_length_for(chunk_length_s: float | None, sampling_rate: int) -> int | None:
    """Samples per chunk, or `None` when the whole input is one chunk."""
    return None if chunk_length_s is None else int(chunk_length_s * sampling_rate)


def chunk_stride_for(chunk_length_s: float | None, overlap: float | None, sampling_rate: int) -> int | None:
    """Samples between chunk starts (chunk length minus the overlap), or `None` without an overlap."""
    if chunk_length_s is None or overlap is None:
        return None
    return max(1, int((1.0 - overlap) * chunk_length_for(chunk_length_s, sampling_rate)))


class ChunkedAudioMixin:
    """``chunk_length`` / ``chunk_stride`` in samples, derived from ``chunk_length_s``, ``overlap`` and
    ``sampling_rate``: one definition for the config and the feature extractor, which both carry those three.

    Derived on access, so that changing ``chunk_length_s`` on the fly stays consistent.
    """

    @property
    def chunk_length(self) -> int | None:
        """Samples per chunk, or `None` when the whole input is one chunk."""
        return chunk_length_for(self.chunk_length_s, self.sampling_rate)

    @property
    def chunk_stride(self) -> int | None:
        """Samples between chunk starts (chunk_length minus the overlap), or `None`."""
        return chunk_stride_for(self.chunk_length_s, self.overlap, self.sampling_rate)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class ChunkLayout:
    """The chunk layout of a model: where chunks start and end, and how many frames each gives.

    Attributes:
        chunk_length: samples per chunk, `None` when the whole input is one chunk.
        chunk_stride: samples between chunk starts, `None` for back-to-back chunks (or no chunking).
        hop_length: samples per frame (only needed for frame counts).
    """

    chunk_length: int | None
    chunk_stride: int | None = None
    hop_length: int = 1

    @classmethod
    def from_config(cls, config) -> ChunkLayout:
        """The layout of an ``EncodecConfig`` (or anything with ``chunk_length``, ``chunk_stride``, ``hop_length``)."""
        return cls(config.chunk_length, config.chunk_stride, getattr(config, "hop_length", 1))

    @property
    def chunked(self) -> bool:
        return self.chunk_length is not None

    @property
    def stride(self) -> int | None:
        """Samples between chunk starts (the chunk length when there is no overlap), `None` unchunked."""
        return self.chunk_stride or self.chunk_length

    def span(self, index: int, length: int | None = None) -> tuple[int, int]:
        """`(start, end)` of chunk ``index`` of a chunked layout; ``end`` is cut at ``length`` when it is known
        (a stream does not know it until its end)."""
        start = index * self.stride
        end = start + self.chunk_length
        return start, end if length is None else min(end, length)

    def spans(self, length: int) -> list[tuple[int, int]]:
        """`(start, end)` of each chunk of an input of ``length`` samples, in order (one span unchunked)."""
        if self.chunk_length is None:
            return [(0, length)]
        return [self.span(k, length) for k in range(self.num_chunks(length))]

    def num_chunks(self, length: int) -> int:
        """Chunks of an input of ``length`` >= 1 samples: those starting before its end."""
        return 1 if self.chunk_length is None else _ceil_div(length, self.stride)

    def frames(self, samples: int) -> int:
        """Frames the encoder makes of ``samples`` samples: ``ceil(samples / hop_length)`` (at least 1)."""
        return max(1, _ceil_div(samples, self.hop_length))

    def chunk_frames(self, length: int) -> list[int]:
        """Frames of each chunk of an input of ``length`` samples (the last chunk may have fewer)."""
        return [self.frames(end - start) for start, end in self.spans(length)]

    def frames_per_chunk(self, length: int) -> int:
        """Frame width of a clip's codes: a full chunk's frames when chunked, else the whole input's."""
        return self.frames(self.chunk_length if self.chunk_length is not None else length)

    def padded_length(self, length: int, truncate: bool = False) -> int:
        """Length the feature extractor pads (or truncates) an input to: a whole number of chunks, as transformers.

        Only meaningful with both ``chunk_length`` and ``chunk_stride`` set (transformers pads nothing otherwise).
        """
        chunks = length // self.chunk_stride if truncate else _ceil_div(length, self.chunk_stride)
        return (chunks - 1) * self.chunk_stride + self.chunk_length


# ------------------------------------------------------------------------------------------------- overlap-add
def blend_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype chunk outputs are cross-faded in: at least float32. In bfloat16 the window's end values round to
    exactly 0 (0.5 - (0.5 - 2e-5) == 0), and the normalising division would put NaNs at the chunk edges."""
    return torch.promote_types(dtype, torch.float32)


def overlap_add_window(length: int, like: torch.Tensor) -> torch.Tensor:
    """Triangular cross-fade weights `[length]`: ``0.5 - |t - 0.5|`` on ``t = linspace(0, 1, length + 2)[1:-1]``.

    They peak mid-chunk and never reach zero, so a sample covered by one chunk keeps its value.
    """
    t = torch.linspace(0, 1, length + 2, device=like.device, dtype=like.dtype)[1:-1]
    return 0.5 - (t - 0.5).abs()


def linear_overlap_add(frames: list[torch.Tensor], stride: int) -> torch.Tensor:
    """Cross-fades chunk outputs `[..., L_k]` placed every ``stride`` samples with triangular weights: `[..., T]`.

    The weight peaks mid-chunk and never reaches zero, so a position covered by one chunk keeps its value and
    overlapping positions blend linearly. The triangle is sized on the first chunk; shorter chunks use its prefix.
    """
    if not frames:
        raise ValueError("frames cannot be an empty list.")
    first = frames[0]
    # The furthest end, not the last chunk's: a short last chunk can end before the previous one's decoded
    # overhang (e.g. 47_760 samples at 48 kHz), which makes the reference implementations crash.
    total = max(k * stride + frame.shape[-1] for k, frame in enumerate(frames))
    dtype = blend_dtype(first.dtype)
    weight = overlap_add_window(first.shape[-1], first.new_empty(0, dtype=dtype))
    out = torch.zeros(*first.shape[:-1], total, device=first.device, dtype=dtype)
    sum_weight = torch.zeros(total, device=first.device, dtype=dtype)
    for k, frame in enumerate(frames):
        n = frame.shape[-1]
        out[..., k * stride : k * stride + n] += weight[:n] * frame
        sum_weight[k * stride : k * stride + n] += weight[:n]
    return (out / sum_weight).to(first.dtype)


# ------------------------------------------------------------------------------------------------- codes of a clip
@dataclass
class ClipCodes:
    """The codes of one clip: what the datasets helpers store, the endpoint sends, ``.ecdc`` and codes files hold.

    Attributes:
        audio_codes (`torch.LongTensor` `[N, K, F]`): N chunks (1 unchunked), K codebooks, F frames: a full
            chunk's frames for chunked models (frames past a shorter chunk's end are 0), the clip's frames otherwise.
        audio_scales (`torch.FloatTensor` `[N]`, *optional*): per-chunk RMS scale of models with
            ``normalize=True``, `None` otherwise.
        num_samples (`int`): the clip's length in samples at the model's rate; decoding trims to it.
    """

    audio_codes: torch.Tensor
    audio_scales: torch.Tensor | None
    num_samples: int

    # ------------------------------------------------------------------ the validator
    @classmethod
    def checked(cls, config, audio_codes: Any, audio_scales: Any, num_samples: Any) -> ClipCodes:
        """Validates codes of one clip from anywhere (lists, arrays, tensors) against ``config``.

        ``audio_codes`` must be `[N, K, F]` with N the clip's chunk count, 1 <= K <= ``config.num_quantizers``,
        values in ``[0, codebook_size)``; F must be a full chunk's frames for chunked models and at least the
        clip's frames otherwise. ``audio_scales`` must be N finite positive numbers exactly when the model
        normalises.

        Raises:
            EncodecInputError: naming the first problem and the shape or values expected.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise EncodecInputError(f"num_samples must be a positive integer, got {num_samples!r}.")
        num_samples = int(num_samples)
        codes = _as_code_array(audio_codes)
        if codes.shape[1] > config.num_quantizers:
            raise EncodecInputError(
                f"audio_codes has {codes.shape[1]} codebooks; this model has at most {config.num_quantizers}."
            )
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= config.codebook_size:
            raise EncodecInputError(
                f"audio_codes must lie in [0, {config.codebook_size - 1}] for this model; "
                f"got values from {low} to {high}."
            )
        layout = ChunkLayout.from_config(config)
        chunks, width = layout.num_chunks(num_samples), layout.frames_per_chunk(num_samples)
        if layout.chunked:
            if codes.shape[0] != chunks or codes.shape[2] != width:
                raise EncodecInputError(
                    f"{num_samples} samples need audio_codes of shape [{chunks}, K, {width}], got {codes.shape}."
                )
        elif codes.shape[0] != 1 or codes.shape[2] < width:
            raise EncodecInputError(
                f"{num_samples} samples need audio_codes of shape [1, K, >={width}], got {codes.shape}."
            )
        scales = None
        if config.normalize:
            if audio_scales is None:
                raise EncodecInputError("This model normalises its input: audio_scales ([N] floats) are required.")
            try:
                scales = np.asarray(
                    audio_scales.cpu() if isinstance(audio_scales, torch.Tensor) else audio_scales, dtype=np.float32
                ).reshape(-1)
            except (TypeError, ValueError):
                raise EncodecInputError(f"audio_scales must be a list of {codes.shape[0]} numbers.") from None
            if scales.shape[0] != codes.shape[0] or not np.all(np.isfinite(scales)) or np.any(scales <= 0):
                raise EncodecInputError(
                    f"audio_scales must be {codes.shape[0]} finite positive numbers (one per chunk), "
                    f"got {scales.shape[0]}."
                )
            scales = torch.from_numpy(scales)
        elif audio_scales is not None:
            raise EncodecInputError("This model does not normalise its input: send audio_scales as null.")
        return cls(torch.from_numpy(codes.astype(np.int64, copy=False)), scales, num_samples)

    # ------------------------------------------------------------------ chunk by chunk (.ecdc, codes files, streams)
    def chunks(self, config) -> list[tuple[torch.Tensor, float | None]]:
        """Each chunk's valid codes `[K, F_k]` (``F_k`` = its own frames) and scale, in order."""
        frames = ChunkLayout.from_config(config).chunk_frames(self.num_samples)
        scales = [None] * len(frames) if self.audio_scales is None else [float(s) for s in self.audio_scales]
        return [(self.audio_codes[k, :, :f], scales[k]) for k, f in enumerate(frames)]

    @classmethod
    def from_chunks(cls, config, chunk_codes: list, scales: list | None, num_samples: int) -> ClipCodes:
        """Assembles a clip from per-chunk codes `[K, F_k]` (exact or full-width) and scales (floats or `None`)."""
        layout = ChunkLayout.from_config(config)
        if len(chunk_codes) != layout.num_chunks(num_samples):
            raise EncodecInputError(
                f"{num_samples} samples make {layout.num_chunks(num_samples)} chunk(s), got {len(chunk_codes)}."
            )
        tensors = [torch.as_tensor(np.asarray(c) if not isinstance(c, torch.Tensor) else c) for c in chunk_codes]
        width = max(layout.frames_per_chunk(num_samples), *(t.shape[-1] for t in tensors))
        codes = torch.zeros(len(tensors), tensors[0].shape[0], width, dtype=torch.long)
        for k, t in enumerate(tensors):
            codes[k, :, : t.shape[-1]] = t
        has_scales = scales is not None and any(s is not None for s in scales)
        return cls(
            codes, torch.tensor([float(s) for s in scales], dtype=torch.float32) if has_scales else None, num_samples
        )

    # ------------------------------------------------------------------ the model's encoder output
    @classmethod
    def from_encoder_output(cls, output, config) -> list[ClipCodes]:
        """Splits ``model.encode``'s output (``audio_codes`` `[N, B, K, F]`, ``audio_scales``, ``audio_length``)
        into one :class:`ClipCodes` per item; each equals encoding that item alone."""
        codes = output.audio_codes.detach().cpu()
        lengths = [int(n) for n in output.audio_length.tolist()]
        layout = ChunkLayout.from_config(config)
        clips = []
        for b, length in enumerate(lengths):
            n, width = layout.num_chunks(length), layout.frames_per_chunk(length)
            # Full-chunk width always, even when every item of this batch is shorter than one chunk.
            item = torch.zeros(n, codes.shape[2], width, dtype=torch.long)
            available = min(width, codes.shape[-1])
            item[..., :available] = codes[:n, b, :, :available]
            scales = None
            if config.normalize:
                scales = torch.stack([s[b].reshape(()) for s in output.audio_scales[:n]]).detach().float().cpu()
            clips.append(cls(item, scales, length))
        return clips

    @staticmethod
    def decoder_inputs(clips: list[ClipCodes], device: torch.device | str | None = None) -> dict[str, Any]:
        """``model.decode`` keyword arguments for a batch of clips (codes `[N, B, K, F]`, one `[B, 1]` scale per
        chunk, ``audio_length`` `[B]`): the inverse of :meth:`from_encoder_output`."""
        if not clips:
            raise EncodecInputError("No clips to decode.")
        chunks = max(c.audio_codes.shape[0] for c in clips)
        codebooks = {c.audio_codes.shape[1] for c in clips}
        if len(codebooks) != 1:
            raise EncodecInputError(f"Clips decoded together must have the same number of codebooks, got {codebooks}.")
        width = max(c.audio_codes.shape[-1] for c in clips)
        codes = torch.zeros(chunks, len(clips), codebooks.pop(), width, dtype=torch.long)
        scales = None if any(c.audio_scales is None for c in clips) else torch.ones(chunks, len(clips), 1)
        for b, clip in enumerate(clips):
            n, f = clip.audio_codes.shape[0], clip.audio_codes.shape[-1]
            codes[:n, b, :, :f] = clip.audio_codes
            if scales is not None:
                scales[:n, b, 0] = clip.audio_scales
        return {
            "audio_codes": codes.to(device),
            "audio_scales": [None] * chunks if scales is None else list(scales.to(device).unbind(0)),
            "audio_length": torch.tensor([c.num_samples for c in clips], dtype=torch.long),
        }


def _as_code_array(audio_codes: Any) -> np.ndarray:
    """Codes from lists, arrays or tensors as an integer array `[N, K, F]`; JSON floats that are integers pass."""
    if isinstance(audio_codes, torch.Tensor):
        audio_codes = audio_codes.detach().cpu().numpy()
    try:
        arr = np.asarray(audio_codes)
    except ValueError as err:  # ragged nested lists
        raise EncodecInputError(f"audio_codes must be a rectangular [N, K, F] array: {err}") from None
    if arr.dtype == object or arr.ndim != 3 or 0 in arr.shape:
        raise EncodecInputError(
            f"audio_codes must be a non-empty rectangular [N, K, F] integer array "
            f"(chunks, codebooks, frames), got shape {arr.shape}."
        )
    if arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0):
        arr = arr.astype(np.int64)  # JSON numbers that happen to be floats
    if arr.dtype.kind not in "iu":
        raise EncodecInputError(f"audio_codes must hold integers, got dtype {arr.dtype}.")
    return arr


__all__ = [
    "ChunkLayout",
    "ChunkedAudioMixin",
    "ClipCodes",
    "blend_dtype",
    "chunk_length_for",
    "chunk_stride_for",
    "linear_overlap_add",
    "overlap_add_window",
]
