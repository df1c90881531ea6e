"""Exception types raised at the package's boundaries.

Each subclasses the built-in exception a user would catch anyway (``ValueError``, ``EOFError``...), so
``except ValueError`` keeps working while callers who care can catch the precise type.
"""

from __future__ import annotations


class EncodecInputError(ValueError):
    """Audio, codes or scales handed to the model are unusable (shape, dtype, values)."""


class UnsupportedBandwidthError(EncodecInputError):
    """The requested bandwidth is not one of ``config.target_bandwidths``."""


class SamplingRateError(EncodecInputError):
    """Audio was given at a sampling rate the model was not trained on."""


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights do not fit its config (missing, unexpected or mis-shaped tensors)."""


class EcdcFormatError(ValueError):
    """An ``.ecdc`` byte stream is malformed, truncated or made by another model."""


class StreamingNotSupportedError(RuntimeError):
    """The model cannot stream at the requested granularity (e.g. non-causal 48 kHz below one chunk)."""


class StreamClosedError(RuntimeError):
    """A streaming encoder or decoder was used after ``close()`` or after it was marked broken."""


class MissingLMError(ValueError):
    """An ``.ecdc`` file needs the entropy-coding LM but the model folder or repository has no LM weights."""


class MetricInputError(ValueError):
    """A clip cannot be scored by a quality metric (silent, too short, shapes differ)."""


class OpusUnavailableError(RuntimeError):
    """The Opus baseline's tools (`opusenc` / `opusdec` from Debian's opus-tools) are not on PATH."""
