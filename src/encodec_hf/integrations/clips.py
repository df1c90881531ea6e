"""Per-clip encode / decode on top of `EncodecModel`, for datasets, the encode-dataset runner and the endpoint.

`model.encode` with a `padding_mask` already encodes every item of a batch at its own length, so a clip's
codes are exactly what encoding it alone gives, whatever else shares its batch. This module only turns a list
of clips into one padded batch and splits the result back into one record per clip:

Codes of one clip are `[N, K, F]` (chunks, codebooks, frames per chunk; `N == 1` without chunking, and for
chunked models `F` is the frames of a full chunk, the last chunk's unused frames being 0), scales are `[N]`
floats for models with `normalize=True` and `None` otherwise, and `num_samples` is the clip length, which
decoding needs to cut the output back to the input length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import EncodecInputError

if TYPE_CHECKING:
    from ..codec.configuration import EncodecConfig

__all__ = [
    "ClipCodes",
    "check_bandwidth",
    "codes_dtype",
    "decode_clip",
    "encode_clips",
    "feature_extractor_for",
    "load_model",
]


@dataclass
class ClipCodes:
    """Codes of one clip.

    Attributes:
        audio_codes (`np.ndarray` of shape `[N, K, F]`): N chunks, K codebooks, F frames per chunk.
        audio_scales (`np.ndarray` of shape `[N]`, *optional*): per-chunk RMS scale (models with
            `normalize=True`), `None` otherwise.
        num_samples (`int`): length of the clip in samples at the model's rate.
    """

    audio_codes: np.ndarray
    audio_scales: np.ndarray | None
    num_samples: int


def _model_classes():
    # Imported lazily: the modeling module pulls in the whole network definition, and the
    # request-parsing half of the endpoint (and its tests) must stay importable without it.
    from ..codec.feature_extraction import EncodecFeatureExtractor
    from ..codec.modeling import EncodecModel

    return EncodecModel, EncodecFeatureExtractor


def load_model(name_or_path: str, device: str | torch.device = "cpu", **kwargs: Any):
    """`EncodecModel.from_pretrained(name_or_path)` in eval mode on `device`."""
    model_cls, _ = _model_classes()
    model = model_cls.from_pretrained(name_or_path, **kwargs)
    return model.to(device).eval()


def feature_extractor_for(config: EncodecConfig):
    """The `EncodecFeatureExtractor` that matches `config` (channels, rate, chunking)."""
    _, fe_cls = _model_classes()
    return fe_cls(
        feature_size=config.audio_channels,
        sampling_rate=config.sampling_rate,
        chunk_length_s=config.chunk_length_s,
        overlap=config.overlap,
    )


def codes_dtype(config: EncodecConfig) -> np.dtype:
    """Smallest integer dtype that holds every code (int16 for the 1024/2048-entry codebooks)."""
    return np.dtype(np.int16) if config.codebook_size <= 2**15 else np.dtype(np.int32)


def check_bandwidth(config: EncodecConfig, bandwidth: float | None) -> float | None:
    """Validate `bandwidth` (kbps) against `config.target_bandwidths`; `None` means the model's default."""
    return config.check_bandwidth(bandwidth)


def num_chunks(config: EncodecConfig, num_samples: int) -> int:
    """Chunks a clip of `num_samples` owns: those holding at least one of its samples (1 unchunked)."""
    if config.chunk_length is None:
        return 1
    return max(1, math.ceil(num_samples / config.chunk_stride))


def num_frames(config: EncodecConfig, num_samples: int) -> int:
    """Frames of an unchunked clip: `ceil(num_samples / hop_length)`, as `model.encode` gives."""
    return max(1, math.ceil(num_samples / config.hop_length))


def _check_clip(config: EncodecConfig, clip: np.ndarray, index: int) -> np.ndarray:
    clip = np.asarray(clip)
    if clip.ndim == 1:
        clip = clip[None]
    if clip.ndim != 2 or clip.shape[0] != config.audio_channels:
        raise EncodecInputError(
            f"Clip {index} has shape {tuple(clip.shape)}; this model expects [C, T] audio with "
            f"C={config.audio_channels} channel(s)."
        )
    if clip.shape[1] == 0:
        raise EncodecInputError(f"Clip {index} is empty (0 samples); drop empty clips before encoding.")
    if not np.issubdtype(clip.dtype, np.floating):
        raise EncodecInputError(f"Clip {index} has dtype {clip.dtype}; expected float samples in [-1, 1].")
    return clip.astype(np.float32, copy=False)


@torch.no_grad()
def encode_clips(
    model,
    clips: list[np.ndarray],
    bandwidth: float | None = None,
    feature_extractor=None,
) -> list[ClipCodes]:
    """Encode clips of any lengths in one batch; each clip's codes equal encoding it alone.

    Args:
        model (`EncodecModel`): the codec, already on its device.
        clips (`list[np.ndarray]`): each `[C, T_i]` float audio at `model.config.sampling_rate`
            (`[T_i]` is accepted for mono).
        bandwidth (`float`, *optional*): kbps, one of `config.target_bandwidths`; `None` = model default.
        feature_extractor (`EncodecFeatureExtractor`, *optional*): built from the config if omitted.

    Returns:
        `list[ClipCodes]`, one per clip, equal to what encoding that clip alone returns.
    """
    config = model.config
    bandwidth = check_bandwidth(config, bandwidth)
    clips = [_check_clip(config, clip, i) for i, clip in enumerate(clips)]
    fe = feature_extractor if feature_extractor is not None else feature_extractor_for(config)
    # The feature extractor takes mono as [T] and stereo as [C, T]; its padding_mask marks each clip's length,
    # which is all `model.encode` needs to encode every clip exactly as it would be encoded alone.
    raw = [clip[0] if config.audio_channels == 1 else clip for clip in clips]
    inputs = fe(raw, sampling_rate=config.sampling_rate, padding=True, return_tensors="pt")
    device = next(model.parameters()).device
    out = model.encode(
        inputs["input_values"].to(device), inputs["padding_mask"].to(device), bandwidth=bandwidth, return_dict=True
    )
    codes = out.audio_codes.cpu()  # [chunks, B, K, F]
    dtype = codes_dtype(config)
    results = []
    for b, clip in enumerate(clips):
        length = clip.shape[1]
        n = num_chunks(config, length)
        if config.chunk_length is None:
            item_codes = codes[:1, b, :, : num_frames(config, length)]
        else:  # always full-chunk width, even when every clip of this batch is shorter than a chunk
            item_codes = torch.zeros(
                n, codes.shape[2], math.ceil(config.chunk_length / config.hop_length), dtype=codes.dtype
            )
            item_codes[..., : codes.shape[-1]] = codes[:n, b]
        item_scales = None
        if config.normalize:
            item_scales = np.array([float(s[b, 0]) for s in out.audio_scales[:n]], dtype=np.float32)
        results.append(ClipCodes(item_codes.numpy().astype(dtype), item_scales, length))
    return results


def check_codes(config: EncodecConfig, codes: Any, scales: Any, num_samples: Any) -> ClipCodes:
    """Validate user-supplied codes of one clip and return them as a `ClipCodes`.

    Raises:
        EncodecInputError: wrong rank, ragged lists, non-integer or out-of-range codes, too many
            codebooks, a chunk count that does not match `num_samples`, or missing/extra scales.
    """
    try:
        arr = np.asarray(codes)
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
    if arr.min() < 0 or arr.max() >= config.codebook_size:
        raise EncodecInputError(
            f"audio_codes must lie in [0, {config.codebook_size - 1}] for this model; "
            f"got values from {arr.min()} to {arr.max()}."
        )
    if arr.shape[1] > config.num_quantizers:
        raise EncodecInputError(
            f"audio_codes has {arr.shape[1]} codebooks; this model has at most {config.num_quantizers}."
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise EncodecInputError(f"num_samples must be a positive integer, got {num_samples!r}.")
    n_expected = num_chunks(config, int(num_samples))
    if config.chunk_length is None:
        frames_needed = math.ceil(num_samples / config.hop_length)
        if arr.shape[0] != 1 or arr.shape[2] < frames_needed:
            raise EncodecInputError(
                f"{num_samples} samples need audio_codes of shape [1, K, >={frames_needed}], got {arr.shape}."
            )
    elif arr.shape[0] != n_expected or arr.shape[2] != config.chunk_length // config.hop_length:
        raise EncodecInputError(
            f"{num_samples} samples need audio_codes of shape "
            f"[{n_expected}, K, {config.chunk_length // config.hop_length}], got {arr.shape}."
        )
    scale_arr = None
    if config.normalize:
        if scales is None:
            raise EncodecInputError("This model normalises its input: audio_scales ([N] floats) are required.")
        try:
            scale_arr = np.asarray(scales, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise EncodecInputError(f"audio_scales must be a list of {arr.shape[0]} numbers.") from None
        if scale_arr.shape[0] != arr.shape[0] or not np.all(np.isfinite(scale_arr)):
            raise EncodecInputError(
                f"audio_scales must be {arr.shape[0]} finite numbers (one per chunk), got {scale_arr.shape[0]}."
            )
    elif scales is not None:
        raise EncodecInputError("This model does not normalise its input: send audio_scales as null.")
    return ClipCodes(arr.astype(np.int64), scale_arr, int(num_samples))


@torch.no_grad()
def decode_clip(model, clip: ClipCodes) -> np.ndarray:
    """Decode one clip's codes back to audio.

    Returns:
        `np.ndarray` of shape `[C, num_samples]`, float32.
    """
    device = next(model.parameters()).device
    codes = torch.as_tensor(np.asarray(clip.audio_codes), dtype=torch.long, device=device)[:, None]  # [N, 1, K, F]
    if clip.audio_scales is None:
        scales = [None] * codes.shape[0]
    else:
        scales = [torch.tensor([[float(s)]], device=device) for s in clip.audio_scales]  # N x [1, 1]
    padding_mask = torch.ones(1, clip.num_samples, dtype=torch.long, device=device)
    audio = model.decode(codes, scales, padding_mask, return_dict=True).audio_values  # [1, C, T']
    return audio[0, :, : clip.num_samples].float().cpu().numpy()
