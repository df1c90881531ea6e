"""Tokenise audio datasets with EnCodec: the `datasets.map` helpers (the scale-out runner: `encode_dataset.py`).

Recipe (one machine; see the README for GPUs and clusters)::

    from datasets import load_dataset
    from encodec_hf.integrations.datasets import EncodecMapFunction, cast_audio_for_model

    ds = load_dataset("my/dataset", split="train")
    ds = cast_audio_for_model(ds, "audio", sampling_rate=24_000)  # Audio(sampling_rate=..., decode=False)
    fn = EncodecMapFunction("facebook/encodec_24khz", bandwidth=6.0)
    codes = ds.map(fn, batched=True, batch_size=16, num_proc=2, features=fn.features(ds), remove_columns=["audio"],
                   with_indices=True)  # optional: errors then name the dataset row

Why `decode=False`: `datasets` >= 4 decodes audio through torchcodec, which needs FFmpeg and has been
reported to downmix stereo to mono (huggingface/datasets#8005). The column keeps its target
`sampling_rate` in the `Audio` feature, but the bytes are decoded here with soundfile (libsndfile:
WAV, FLAC, OGG, ...; every channel kept) and resampled with `encodec_hf.audio_io.resample` when the file's
rate differs. Columns that are already decoded (torchcodec decoders or `{"array", "sampling_rate"}` dicts)
are accepted too.

Output columns: `audio_codes` (`[N, K, F]` int16: chunks, codebooks, frames), `audio_scales` (`[N]`
float32, only for models with `normalize=True` such as 48 kHz) and `num_samples` (clip length at the
model rate, needed to decode back to the exact length): the columns of `encodec_hf.codec.chunking.ClipCodes`.
Batched results equal per-item results: `model.encode` with a `padding_mask` encodes every item of a batch at its
own length, as it would be encoded alone (up to near-tie codes, docs/performance.md "What identical codes means").
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

from ..audio_io import convert_audio, read_audio
from ..codec.chunking import ClipCodes
from ..errors import AudioFileError, EncodecInputError
from .hub import load_config, load_model

logger = logging.getLogger(__name__)

__all__ = [
    "EncodecMapFunction",
    "cast_audio_for_model",
    "codes_dtype",
    "codes_features",
    "decode_audio_value",
    "decode_clip",
    "decode_codes_example",
    "encode_audio_dataset",
    "encode_clips",
]

# The runner's public names (`load_encoded_shards`, `run_encode_dataset`, ...) stay importable from here; they are
# looked up on first use, not imported at the top, because encode_dataset.py imports this module.
_RUNNER_NAMES = ("EncodePlanMismatchError", "MANIFEST_FILE", "load_encoded_shards", "run_encode_dataset")


def __getattr__(name: str):
    if name in _RUNNER_NAMES:
        from . import encode_dataset

        return getattr(encode_dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------------
# Clips <-> codes: one padded batch in, one ClipCodes per clip out.
# --------------------------------------------------------------------------------------------------


def codes_dtype(config) -> np.dtype:
    """Smallest integer dtype that holds every code (int16 for the 1024/2048-entry codebooks)."""
    return np.dtype(np.int16) if config.codebook_size <= 2**15 else np.dtype(np.int32)


def _check_clip(config, clip: np.ndarray, where: str) -> np.ndarray:
    """`clip` as float32 `[C, T]`, or `EncodecInputError` naming it by `where` ("Clip 3", "Dataset row 1041")."""
    clip = np.asarray(clip)
    if clip.ndim == 1:
        clip = clip[None]
    if clip.ndim != 2 or clip.shape[0] != config.audio_channels:
        raise EncodecInputError(
            f"{where} has shape {tuple(clip.shape)}; this model expects [C, T] audio with "
            f"C={config.audio_channels} channel(s)."
        )
    if clip.shape[1] == 0:
        raise EncodecInputError(f"{where} is empty (0 samples); drop empty clips before encoding.")
    if not np.issubdtype(clip.dtype, np.floating):
        raise EncodecInputError(f"{where} has dtype {clip.dtype}; expected float samples in [-1, 1].")
    return clip.astype(np.float32, copy=False)


@torch.no_grad()
def encode_clips(
    model, clips: list[np.ndarray], bandwidth: float | None = None, feature_extractor=None
) -> list[ClipCodes]:
    """Encodes clips of any lengths in one batch; each clip's codes equal encoding it alone.

    Args:
        model (`EncodecModel`): the codec, already on its device.
        clips (`list[np.ndarray]`): each `[C, T_i]` float audio at `model.config.sampling_rate` (`[T_i]` for mono).
        bandwidth (`float`, *optional*): kbps, one of `config.target_bandwidths`; `None` = the lowest.
        feature_extractor (`EncodecFeatureExtractor`, *optional*): built from the config if omitted.

    Returns:
        `list[ClipCodes]`, one per clip (codes `[N, K, F]`, scales `[N]` or `None`, `num_samples`).
    """
    from ..codec.feature_extraction import EncodecFeatureExtractor

    config = model.config
    bandwidth = config.resolve_bandwidth(bandwidth)
    clips = [_check_clip(config, clip, f"Clip {i}") for i, clip in enumerate(clips)]
    fe = feature_extractor if feature_extractor is not None else EncodecFeatureExtractor.for_config(config)
    # The feature extractor takes mono as [T] and stereo as [C, T]; its padding_mask marks each clip's length.
    raw = [clip[0] if config.audio_channels == 1 else clip for clip in clips]
    inputs = fe(raw, sampling_rate=config.sampling_rate, padding=True, return_tensors="pt")
    device = next(model.parameters()).device
    out = model.encode(
        inputs["input_values"].to(device), inputs["padding_mask"].to(device), bandwidth=bandwidth, return_dict=True
    )
    return ClipCodes.from_encoder_output(out, config)


@torch.no_grad()
def decode_clip(model, clip: ClipCodes) -> np.ndarray:
    """Decodes one clip's codes back to audio: float32 `[C, num_samples]`."""
    inputs = ClipCodes.decoder_inputs([clip], next(model.parameters()).device)
    audio = model.decode(**inputs, return_dict=True).audio_values  # [1, C, T]
    return audio[0, :, : clip.num_samples].float().cpu().numpy()


# --------------------------------------------------------------------------------------------------
# Decoding a dataset audio value (stereo-safe) and bringing it to the model's rate and channels.
# --------------------------------------------------------------------------------------------------


def decode_audio_value(value: Any) -> tuple[np.ndarray, int]:
    """Decode one value of an audio column, keeping every channel.

    Args:
        value: `{"bytes", "path"}` (an `Audio(decode=False)` value), `{"array", "sampling_rate"}`, an
            object with `get_all_samples()` (a torchcodec `AudioDecoder`), or a file path.

    Returns:
        `(audio, sampling_rate)` with `audio` a float32 `[C, T]` array.

    Raises:
        EncodecInputError: the value is none of the above; AudioFileError (one) its bytes cannot be decoded.
    """
    if isinstance(value, (str, os.PathLike)):
        value = {"path": os.fspath(value), "bytes": None}
    if hasattr(value, "get_all_samples"):  # torchcodec AudioDecoder from datasets' decode=True path
        samples = value.get_all_samples()
        return samples.data.float().numpy().reshape(-1, samples.data.shape[-1]), int(samples.sample_rate)
    if not isinstance(value, dict):
        raise EncodecInputError(f"Unsupported audio value of type {type(value).__name__}; expected a dict or path.")
    if value.get("array") is not None:
        if value.get("sampling_rate") is None:
            raise EncodecInputError("An audio dict with 'array' must also give its 'sampling_rate'.")
        array = np.asarray(value["array"], dtype=np.float32)
        return (array[None] if array.ndim == 1 else array), int(value["sampling_rate"])
    source = value["bytes"] if value.get("bytes") is not None else value.get("path")
    if source is None:
        raise EncodecInputError(f"Audio value has neither 'bytes' nor 'path': {value!r}.")
    try:
        audio, rate = read_audio(source)
    except FileNotFoundError as err:
        raise AudioFileError(str(err)) from None
    return audio.numpy(), rate


def _to_model_audio(audio: np.ndarray, rate: int, config, convert_channels: bool, where: str) -> np.ndarray:
    """Resample to `config.sampling_rate` and check / convert the channel count. `[C, T]` in and out."""
    channels = audio.shape[0]
    if channels != config.audio_channels and not convert_channels:
        hint = (
            " If this column was decoded by datasets/torchcodec, it may have been downmixed "
            "(huggingface/datasets#8005): cast it with cast_audio_for_model(...) to decode it here."
            if channels == 1
            else ""
        )
        raise EncodecInputError(
            f"{where}: audio has {channels} channel(s) but the model expects {config.audio_channels}. "
            f"Pass convert_channels=True to average to mono / duplicate to stereo.{hint}"
        )
    converted = convert_audio(torch.from_numpy(audio), rate, config.sampling_rate, config.audio_channels)
    return np.ascontiguousarray(converted.numpy(), dtype=np.float32)


def cast_audio_for_model(dataset, column: str = "audio", sampling_rate: int | None = None, config=None):
    """`dataset.cast_column(column, Audio(sampling_rate=..., decode=False))`: the stereo-safe recipe.

    The target rate is recorded in the feature (as `cast_column(..., Audio(sampling_rate=...))` does) and
    `EncodecMapFunction` resamples to it; decoding stays off so torchcodec never touches the channels.
    """
    from datasets import Audio

    if sampling_rate is None:
        if config is None:
            raise ValueError("Give sampling_rate= or config= (the model's EncodecConfig).")
        sampling_rate = config.sampling_rate
    if column not in dataset.column_names:
        raise KeyError(f"Column {column!r} not in dataset columns {dataset.column_names}.")
    return dataset.cast_column(column, Audio(sampling_rate=int(sampling_rate), decode=False))


def codes_features(config, extra=None):
    """`datasets.Features` of the code columns (plus `extra`, a dict or `Features` of kept columns)."""
    from datasets import Features, List, Value

    code_type = "int16" if codes_dtype(config) == np.int16 else "int32"
    features = dict(extra or {})
    features["audio_codes"] = List(List(List(Value(code_type))))
    if config.normalize:
        features["audio_scales"] = List(Value("float32"))
    features["num_samples"] = Value("int64")
    return Features(features)


def _pick_device(device: str | None, rank: int | None) -> torch.device:
    if device not in (None, "auto"):
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device(f"cuda:{(rank or 0) % torch.cuda.device_count()}")
    return torch.device("cpu")


class EncodecMapFunction:
    """Batched `Dataset.map` function: audio column in, `audio_codes` / `audio_scales` / `num_samples` out.

    Args:
        model (`EncodecModel` or `str`): a model, or a name/path to load it from. Give a path with
            `num_proc > 1`: each worker then loads its own copy (required with spawn on GPUs).
        audio_column (`str`): the audio column, ideally cast with `cast_audio_for_model`.
        bandwidth (`float`, *optional*): kbps, one of `config.target_bandwidths`; `None` = the lowest.
        device (`str`, *optional*): `"auto"` (default) picks `cuda:{rank % n_gpu}` when `with_rank=True`
            and CUDA is available, else CPU.
        convert_channels (`bool`): average stereo to mono / duplicate mono to stereo instead of raising.
        num_threads (`int`, *optional*): torch CPU threads when the model is loaded. Default: unchanged in the
            calling process, 1 in `num_proc` workers (more than 1 in a forked worker can deadlock in OpenMP;
            use the spawn start method if workers need several threads).

    Call it as `fn(batch)`, or as `map` does with `with_indices=True` and / or `with_rank=True`:
    `fn(batch, indices)`, `fn(batch, rank)`, `fn(batch, indices, rank)`. An error in a clip names its dataset row:
    from `indices` (`with_indices=True`), else from a `row_index` column (the `encode-dataset` runner adds one),
    else only its place in the batch.
    """

    def __init__(
        self,
        model,
        audio_column: str = "audio",
        bandwidth: float | None = None,
        device: str | None = "auto",
        convert_channels: bool = False,
        num_threads: int | None = None,
    ):
        if isinstance(model, (str, os.PathLike)):
            self.model_name_or_path, self._model = os.fspath(model), None
            self.config = load_config(self.model_name_or_path)  # a wrong path or no Hub fails here, at once
        else:
            self.model_name_or_path, self._model = None, model
            self.config = model.config
        self.bandwidth = self.config.resolve_bandwidth(bandwidth)
        self.audio_column = audio_column
        self.device = device
        self.convert_channels = convert_channels
        self.num_threads = num_threads
        self._owner_pid = os.getpid()

    def __getstate__(self) -> dict:
        # Workers (forked or spawned) reload from the path instead of receiving pickled weights, and a
        # CUDA model is never shipped to another process.
        if self.model_name_or_path is None:
            # Weight-normed convolutions are torch parametrizations, which cannot be pickled.
            raise TypeError(
                "EncodecMapFunction built from a model object cannot be sent to other processes; with "
                "num_proc > 1 pass the model's name or path instead (each worker then loads its own copy)."
            )
        state = dict(self.__dict__)
        # Neither the loaded model nor the creating process id travels: the state stays small and its hash
        # (datasets' cache fingerprint) stays the same from one session to the next.
        state["_model"] = None
        state["_owner_pid"] = None
        return state

    def features(self, dataset=None):
        """Output features; with `dataset`, its other columns are kept (pass to `map(features=...)`)."""
        extra = None
        if dataset is not None:
            extra = {k: v for k, v in dataset.features.items() if k != self.audio_column}
        return codes_features(self.config, extra)

    def model_for(self, rank: int | None = None):
        """The model, loaded on first use on the device that `rank` selects."""
        if self._model is None:
            if self.num_threads:
                torch.set_num_threads(self.num_threads)
            elif os.getpid() != self._owner_pid:
                # A `num_proc` worker: one thread each avoids oversubscribing the cores, and a forked child
                # must not re-enter the parent's OpenMP pool (it deadlocks with GNU OpenMP).
                torch.set_num_threads(1)
            self._model = load_model(self.model_name_or_path, device=_pick_device(self.device, rank))
        elif self.device not in (None, "auto") or rank is not None:
            target = _pick_device(self.device, rank)
            if next(self._model.parameters()).device != target:
                self._model = self._model.to(target)
        return self._model

    def encode_batch(
        self, values: list[Any], rank: int | None = None, rows: list[int] | None = None
    ) -> list[ClipCodes]:
        """Decode, resample and encode a list of audio-column values; `rows` (their dataset row numbers) name
        the clip in an error."""
        model = self.model_for(rank)
        clips = []
        for i, value in enumerate(values):
            where = f"Dataset row {rows[i]}" if rows is not None else f"Item {i} of the batch"
            try:
                audio, rate = decode_audio_value(value)
                clip = _to_model_audio(audio, rate, self.config, self.convert_channels, where)
                clips.append(_check_clip(self.config, clip, where))
            except EncodecInputError as err:
                if str(err).startswith(where):
                    raise
                raise type(err)(f"{where}: {err}") from err
        return encode_clips(model, clips, self.bandwidth)

    def __call__(self, batch: dict[str, list], *indices_and_rank) -> dict[str, list]:
        if self.audio_column not in batch:
            raise KeyError(f"Audio column {self.audio_column!r} not in batch columns {list(batch)}.")
        # map passes (indices), (rank) or (indices, rank): the indices are a list, the rank an int.
        rows, rank = None, None
        for extra in indices_and_rank:
            if isinstance(extra, (list, tuple, range)):
                rows = [int(i) for i in extra]
            else:
                rank = extra
        if rows is None and "row_index" in batch:
            rows = [int(i) for i in batch["row_index"]]
        encoded = self.encode_batch(batch[self.audio_column], rank, rows)
        dtype = codes_dtype(self.config)
        out: dict[str, list] = {
            "audio_codes": [c.audio_codes.numpy().astype(dtype) for c in encoded],
            "num_samples": [c.num_samples for c in encoded],
        }
        if self.config.normalize:
            out["audio_scales"] = [c.audio_scales.numpy() for c in encoded]
        return out


def encode_audio_dataset(
    dataset,
    model,
    *,
    audio_column: str = "audio",
    bandwidth: float | None = None,
    batch_size: int = 16,
    num_proc: int | None = None,
    device: str | None = "auto",
    convert_channels: bool = False,
    keep_audio: bool = False,
):
    """The whole recipe in one call: cast the audio column, then a batched `map` to code columns.

    On CUDA with `num_proc > 1` this switches `multiprocess` (the pool `datasets` uses) to the spawn start
    method (CUDA cannot be re-initialised in a forked child, huggingface/datasets#6435) and passes
    `with_rank=True`, so worker `rank` runs on `cuda:{rank % n_gpu}`. Give `model` as a name or path then,
    so that each worker loads its own copy.

    Returns:
        `datasets.Dataset` with `audio_codes`, `audio_scales` (normalised models) and `num_samples`, plus
        the other columns (and the audio column if `keep_audio`).
    """
    fn = EncodecMapFunction(
        model, audio_column=audio_column, bandwidth=bandwidth, device=device, convert_channels=convert_channels
    )
    dataset = cast_audio_for_model(dataset, audio_column, config=fn.config)
    use_cuda = _pick_device(device, 0).type == "cuda"
    multi = num_proc is not None and num_proc > 1
    if use_cuda and multi:
        import multiprocess

        if multiprocess.get_start_method(allow_none=True) != "spawn":
            logger.info("Switching multiprocess to the 'spawn' start method for CUDA workers.")
            multiprocess.set_start_method("spawn", force=True)
    features = fn.features(dataset)
    if keep_audio:
        features[audio_column] = dataset.features[audio_column]
    return dataset.map(
        fn,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        with_rank=multi or use_cuda,
        with_indices=True,  # an error names the dataset row, not the place in a worker's batch
        features=features,
        remove_columns=[] if keep_audio else [audio_column],
    )


def decode_codes_example(example: dict, model, output_column: str = "audio_values") -> dict:
    """Per-row `map` function that decodes `audio_codes` (+ `audio_scales`) back to `[C, T]` audio."""
    clip = ClipCodes.checked(model.config, example["audio_codes"], example.get("audio_scales"), example["num_samples"])
    return {output_column: decode_clip(model, clip), "sampling_rate": model.config.sampling_rate}
