"""EncodecFeatureExtractor: raw audio to padded `input_values` `[B, C, T]` and `padding_mask` `[B, T]`.

Same constructor, call signature and outputs as transformers' ``EncodecFeatureExtractor`` (it loads the Hub
``preprocessor_config.json`` files), with stricter input checks: integer PCM, NaN/Inf and (channels, samples)
mix-ups are refused with a message that says how to fix them instead of being passed on silently.

Every field of the feature extractor follows from the model's config (channels, rate, chunking), so a folder
without ``preprocessor_config.json`` (one written by transformers' ``EncodecModel.save_pretrained``, say) still
loads: `EncodecFeatureExtractor.from_pretrained` then derives it from ``config.json``. encodec_hf's own
``EncodecModel.save_pretrained`` writes the file beside ``config.json`` (`write_for_config`), which is what the
Auto classes need (they look for the file before they look at any class).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from transformers import BatchFeature, SequenceFeatureExtractor
from transformers.utils import PaddingStrategy, TensorType, cached_file

from .chunking import ChunkedAudioMixin, ChunkLayout
from .configuration import EncodecConfig
from .errors import EncodecInputError, SamplingRateError

logger = logging.getLogger(__name__)

PREPROCESSOR_CONFIG = "preprocessor_config.json"
# The fields a model's config decides; a saved file that disagrees on one of them belongs to another model.
_CONFIG_FIELDS = ("feature_size", "sampling_rate", "chunk_length_s", "overlap")
# from_pretrained's download arguments, which also locate config.json when the folder has no preprocessor config.
_HUB_KWARGS = ("cache_dir", "force_download", "proxies", "subfolder", "token", "local_files_only", "revision")


class EncodecFeatureExtractor(ChunkedAudioMixin, SequenceFeatureExtractor):
    r"""Pads mono or stereo audio into a batch for [`EncodecModel`].

    Args:
        feature_size (`int`, defaults to 1): audio channels, 1 (mono) or 2 (stereo).
        sampling_rate (`int`, defaults to 24000): rate the model was trained at; no resampling is done.
        padding_value (`float`, defaults to 0.0): value of padded samples.
        chunk_length_s (`float`, *optional*): chunk duration of chunked models (48 kHz: 1.0).
        overlap (`float`, *optional*): chunk overlap fraction (48 kHz: 0.01).

    For chunked models, padding goes up to a whole number of chunks and truncation down to one, as in
    transformers.
    """

    model_input_names = ["input_values", "padding_mask"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 24000,
        padding_value: float = 0.0,
        chunk_length_s: float | None = None,
        overlap: float | None = None,
        **kwargs,
    ) -> None:
        if feature_size not in (1, 2):
            raise ValueError(f"feature_size is the number of audio channels and must be 1 or 2, got {feature_size}.")
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        self.chunk_length_s = chunk_length_s
        self.overlap = overlap

    @classmethod
    def for_config(cls, config) -> EncodecFeatureExtractor:
        """The feature extractor that matches an ``EncodecConfig`` (channels, rate, chunking)."""
        return cls(
            feature_size=config.audio_channels,
            sampling_rate=config.sampling_rate,
            chunk_length_s=config.chunk_length_s,
            overlap=config.overlap,
        )

    @classmethod
    def write_for_config(cls, config, save_directory: str | os.PathLike) -> Path:
        """Writes ``preprocessor_config.json`` for ``config`` into ``save_directory`` (what
        ``EncodecModel.save_pretrained`` calls). A file already there is kept when it agrees on channels, rate and
        chunking (it may carry the user's own ``padding_value``), and replaced when it belongs to another model."""
        path = Path(save_directory) / PREPROCESSOR_CONFIG
        expected = cls.for_config(config)
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError):
                saved = None
            if isinstance(saved, dict) and all(saved.get(k) == getattr(expected, k) for k in _CONFIG_FIELDS):
                return path
        expected.save_pretrained(save_directory)
        return path

    @classmethod
    def get_feature_extractor_dict(cls, pretrained_model_name_or_path, **kwargs) -> tuple[dict, dict]:
        """transformers' lookup of ``preprocessor_config.json``, falling back to ``config.json``: a model folder or
        repo without the file gives the feature extractor of its config (`for_config`)."""
        try:
            return super().get_feature_extractor_dict(pretrained_model_name_or_path, **kwargs)
        except OSError as missing:
            hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
            try:  # transformers' config loading reads a folder without config.json as all defaults: look first
                config_file = cached_file(
                    pretrained_model_name_or_path, "config.json", _raise_exceptions_for_missing_entries=False, **hub
                )
            except OSError:
                config_file = None
            if config_file is None:
                raise missing from None
            config = EncodecConfig.from_json_file(config_file)
        for key in (*_HUB_KWARGS, "_from_pipeline", "_from_auto"):
            kwargs.pop(key, None)
        logger.info("No %s in %s: derived from its config.json.", PREPROCESSOR_CONFIG, pretrained_model_name_or_path)
        return cls.for_config(config).to_dict(), kwargs

    def _to_example(self, audio, index: int) -> np.ndarray:
        """One example as float32 `[T, C]` (the base class pads along axis 0)."""
        array = np.asarray(audio)
        if array.dtype == object:
            raise TypeError(f"raw_audio[{index}] is not a numeric array (got ragged or object data).")
        if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
            raise TypeError(
                f"raw_audio[{index}] has integer dtype {array.dtype}; EnCodec expects float audio in [-1, 1]. "
                "Scale integer PCM first, e.g. audio.astype(np.float32) / 32768 for int16."
            )
        if np.iscomplexobj(array):
            raise TypeError(f"raw_audio[{index}] is complex; pass real-valued audio.")
        array = array.astype(np.float32, copy=False)
        if array.ndim > 2:
            raise EncodecInputError(f"Expected input shape (channels, length) but got shape {array.shape}")
        if self.feature_size == 1 and array.ndim != 1:
            raise EncodecInputError(
                f"Expected mono audio of shape (length,) but raw_audio[{index}] has shape {array.shape}; "
                "average the channels first (audio.mean(axis=0) for (channels, length))."
            )
        if self.feature_size == 2 and (array.ndim != 2 or array.shape[0] != 2):
            hint = (
                " It looks like (length, channels): transpose it." if array.ndim == 2 and array.shape[-1] == 2 else ""
            )
            raise EncodecInputError(
                f"Expected stereo audio of shape (2, length) but raw_audio[{index}] has shape {array.shape}.{hint}"
            )
        if array.shape[-1] == 0:
            raise EncodecInputError(f"raw_audio[{index}] is empty.")
        if not np.isfinite(array).all():
            raise EncodecInputError(f"raw_audio[{index}] contains NaN or Inf samples; clean the audio first.")
        return array.T if array.ndim == 2 else array

    def __call__(
        self,
        raw_audio,
        padding: bool | str | PaddingStrategy | None = None,
        truncation: bool | None = False,
        max_length: int | None = None,
        return_tensors: str | TensorType | None = None,
        sampling_rate: int | None = None,
    ) -> BatchFeature:
        """Pads a clip or a batch of clips.

        Args:
            raw_audio (`np.ndarray`, `list[float]`, `list[np.ndarray]`): mono clips `(T,)` or stereo `(2, T)`,
                float in [-1, 1]; a list of them is a batch.
            padding / truncation / max_length: as in transformers (padding defaults to the longest item).
            return_tensors (`"pt"` / `"np"`, *optional*).
            sampling_rate (`int`, *optional*): the audio's rate; refused when it differs from the model's.

        Returns:
            [`BatchFeature`] with ``input_values`` `[B, C, T]` and, when padding, ``padding_mask`` `[B, T]`.
        """
        if sampling_rate is not None:
            if sampling_rate != self.sampling_rate:
                # Not the whole extractor (its repr is a page of JSON): the two rates and the fix.
                raise SamplingRateError(
                    f"Audio sampled at {sampling_rate} Hz given to a feature extractor for {self.sampling_rate} Hz "
                    f"(the model's rate): resample it first, e.g. encodec_hf.audio_io.convert_audio(audio, "
                    f"{sampling_rate}, {self.sampling_rate}, channels) for a [C, T] tensor, or "
                    f"encodec_hf.integrations.datasets.cast_audio_for_model(dataset, 'audio', "
                    f"sampling_rate={self.sampling_rate}) for a datasets column."
                )
        else:
            logger.warning(
                "It is strongly recommended to pass the `sampling_rate` argument to `%s()`. Failing to do so can "
                "result in silent errors that might be hard to debug.",
                type(self).__name__,
            )
        if padding and truncation:
            raise ValueError("Both padding and truncation were set. Make sure you only set one.")
        if padding is None:
            padding = True

        is_batched = (
            isinstance(raw_audio, list | tuple)
            and len(raw_audio) > 0
            and isinstance(raw_audio[0], np.ndarray | tuple | list)
        )
        if isinstance(raw_audio, list | tuple) and len(raw_audio) == 0:
            raise EncodecInputError("raw_audio is an empty list; pass at least one clip.")
        examples = raw_audio if is_batched else [raw_audio]
        examples = [self._to_example(a, i) for i, a in enumerate(examples)]

        padded_inputs = None
        input_values = BatchFeature({"input_values": examples})
        if self.chunk_stride is not None and self.chunk_length is not None and max_length is None:
            layout = ChunkLayout(self.chunk_length, self.chunk_stride)
            if truncation:
                max_length = layout.padded_length(min(a.shape[0] for a in examples), truncate=True)
            elif padding:
                max_length = layout.padded_length(max(a.shape[0] for a in examples))
                padding = "max_length"
            else:
                padded_inputs = input_values

        if padded_inputs is None:
            padded_inputs = self.pad(
                input_values,
                max_length=max_length,
                truncation=truncation,
                padding=padding,
                return_attention_mask=bool(padding),
            )
            if padding:
                padded_inputs["padding_mask"] = padded_inputs.pop("attention_mask")

        values = []
        for example in padded_inputs.pop("input_values"):
            example = example[None, :] if self.feature_size == 1 else example.T  # [C, T]
            values.append(example)
        padded_inputs["input_values"] = values
        if return_tensors is not None:
            padded_inputs = padded_inputs.convert_to_tensors(return_tensors)
        return padded_inputs


__all__ = ["EncodecFeatureExtractor"]
