"""Every exception type of encodec_hf (users import them from ``encodec_hf.errors``).

Each subclasses the built-in exception a user would catch anyway (``ValueError``, ``EOFError``...), so
``except ValueError`` keeps working while callers who care can catch the precise type.
"""

from __future__ import annotations

__all__ = [
    "AudioFileError",
    "CheckpointMismatchError",
    "CliError",
    "CodesFileError",
    "EcdcFormatError",
    "EncodePlanMismatchError",
    "EncodecInputError",
    "EndpointRequestError",
    "HubUnreachableError",
    "MetricInputError",
    "MissingLMError",
    "ModelNotFoundError",
    "OpusUnavailableError",
    "SamplingRateError",
    "StreamClosedError",
    "StreamingNotSupportedError",
    "TrainingConfigError",
    "ThreadCountError",
    "TrainingDataError",
    "UnsupportedBandwidthError",
]


class EncodecInputError(ValueError):
    """Audio, codes or scales handed to the model are unusable (shape, dtype, values)."""


class AudioFileError(EncodecInputError):
    """An audio file cannot be read or decoded (not audio, a format libsndfile does not know, corrupt data)."""


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


class CodesFileError(ValueError):
    """A codes file (``.ehfc``) is malformed, truncated, unfinished or made by a model with other settings."""


class EncodePlanMismatchError(ValueError):
    """An ``encode-dataset`` output folder holds shards of a different run (other dataset, model, world size...)."""


class ThreadCountError(ValueError):
    """A torch thread count (a `num_threads` argument or ``$ENCODEC_HF_NUM_THREADS``) is not a positive integer."""


class EndpointRequestError(EncodecInputError):
    """A request the endpoint cannot serve; ``status`` is the HTTP status code to answer with (400 by default:
    413 too long or too large, 415 unsupported Content-Type)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = int(status)


class ModelNotFoundError(FileNotFoundError):
    """A model given as a local path is not a model folder: the path is missing, a file, empty, or lacks
    ``config.json`` or the weights; or a Hub id is neither a folder nor a valid repository id."""


class HubUnreachableError(ConnectionError):
    """A model given as a Hub repository id is not in the local Hugging Face cache and the Hub does not answer
    (no network, ``HF_HUB_OFFLINE=1``, a firewall)."""


class CliError(Exception):
    """A user error of the ``encodec-hf`` command line: printed as one line, exit status 1."""


class TrainingConfigError(ValueError):
    """A training option or component is configured inconsistently (unknown or missing loss names, bad weights)."""


class TrainingDataError(ValueError):
    """Training data cannot be used: bad data options, an empty folder, an unreadable file, bad labels."""


class MetricInputError(ValueError):
    """A clip cannot be scored by a quality metric (silent, too short, mismatched with its reference)."""


class OpusUnavailableError(RuntimeError):
    """The Opus baseline needs Debian's opus-tools (``opusenc`` / ``opusdec``), which are not installed."""
