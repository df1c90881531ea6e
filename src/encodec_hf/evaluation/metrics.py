"""Audio quality metrics: pure functions of a reference and a decoded signal.

Signal metrics work on torch tensors `[B, C, T]` (or `[C, T]`, `[T]`) and return one value per item `[B]` (a
0-d tensor for unbatched input), so the trainer can use the same spectral distances as its losses:

- `si_snr`: scale-invariant SNR in dB (zero-mean signals, projection on the reference), mean over channels.
- `mel_distance`: EnCodec's multi-scale mel reconstruction loss (paper section 3.4, `l_f`), per item: the
  trainer's `encodec_hf.training.losses.MultiScaleMelLoss` with its defaults (windows 2^5..2^11, hop window/4,
  64-bin HTK mel power spectrogram of the STFT normalised by the window's L2 norm, centred with reflect padding,
  per scale `mean|S(x) - S(y)| + mean((S(x) - S(y))^2)`, averaged over scales; see that module for why), one
  instance per (sampling rate, device). A validation number and an evaluation number are the same quantity.
- `stft_distance`: multi-resolution STFT distance of Parallel WaveGAN (and auraloss' default): spectral
  convergence `||S(y) - S(x)||_F / ||S(x)||_F` plus `mean|log S(y) - log S(x)|`, averaged over (FFT, hop, window)
  = (1024, 120, 600), (2048, 240, 1200), (512, 50, 240).

Perceptual metrics wrap the field's packages on numpy mono signals (channels averaged) and resample to the
rate each was built for with `encodec_hf.audio_io.resample` (windowed sinc, torchaudio's method):

- `visqol`: visqol-python, audio mode at 48 kHz (music / general audio, MOS-LQO 1..~4.73) or speech mode at
  16 kHz (with the lattice mapper when `ai-edge-litert` is installed, as Google's C++ default).
- `stoi`: pystoi (it resamples to 10 kHz itself).
- `pesq`: the `pesq` package, wide band at 16 kHz.

Each raises `encodec_hf.errors.MetricInputError` naming the problem (silent reference, too short, shapes
differ) instead of returning a meaningless number, and `ImportError` with the install line when its package
is missing.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import warnings

import numpy as np
import torch

from ..audio_io import resample
from ..errors import MetricInputError
from ..training.losses import MultiScaleMelLoss, stft_magnitude

STFT_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))  # (n_fft, hop, window)
VISQOL_RATES = {"audio": 48_000, "speech": 16_000}
PESQ_RATE = 16_000
# Shortest input each perceptual metric accepts, in seconds (found by trying the packages: below it they fail).
MIN_SECONDS = {"visqol_audio": 1.0, "visqol_speech": 1.0, "stoi": 0.5, "pesq": 0.25}
SILENCE_RMS = 1e-6


def _batched(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """`[T]`, `[C, T]` or `[B, C, T]` -> `[B, C, T]` float32 and whether the input had a batch axis."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.dim() == 1:
        return x[None, None].float(), False
    if x.dim() == 2:
        return x[None].float(), False
    if x.dim() == 3:
        return x.float(), True
    raise MetricInputError(f"Audio must be [T], [C, T] or [B, C, T]; got shape {tuple(x.shape)}.")


def _pair(reference, estimate, min_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor, bool]:
    ref, batched = _batched(reference)
    est, _ = _batched(estimate)
    if ref.shape != est.shape:
        raise MetricInputError(
            f"Reference {tuple(ref.shape)} and decoded {tuple(est.shape)} audio differ in shape: "
            "trim both to the same length and channels first."
        )
    if ref.shape[-1] < min_samples:
        raise MetricInputError(f"Audio of {ref.shape[-1]} samples is too short: this metric needs {min_samples}.")
    return ref, est.to(ref.device), batched


def _check_not_silent(reference: torch.Tensor) -> None:
    rms = reference.pow(2).mean(dim=(-2, -1)).sqrt()
    if bool((rms < SILENCE_RMS).any()):
        raise MetricInputError(
            "The reference audio is silent (RMS below 1e-6): signal-to-noise and perceptual metrics are undefined."
        )


def si_snr(estimate, reference, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant signal-to-noise ratio in dB, `[B]` (mean over channels); identical signals give ~80+ dB.

    `10 log10(|s_t|^2 / |e - s_t|^2)` with `s_t = <e, s> s / |s|^2` on zero-mean `e` (estimate), `s` (reference).

    Raises:
        MetricInputError: shapes differ, or the reference is silent.
    """
    ref, est, batched = _pair(reference, estimate)
    _check_not_silent(ref)
    ref = ref.double() - ref.double().mean(dim=-1, keepdim=True)
    est = est.double() - est.double().mean(dim=-1, keepdim=True)
    projection = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps) * ref
    noise = est - projection
    ratio = projection.pow(2).sum(-1) / (noise.pow(2).sum(-1) + eps)
    value = (10 * torch.log10(ratio + eps)).mean(dim=-1).float()  # [B]
    return value if batched else value[0]


@functools.lru_cache(maxsize=8)
def _mel_loss(sampling_rate: int, device: torch.device) -> MultiScaleMelLoss:
    """The trainer's l_f module for ``sampling_rate`` with its buffers on ``device`` (built once per pair)."""
    return MultiScaleMelLoss(sampling_rate).to(device)


def mel_distance(estimate, reference, sampling_rate: int) -> torch.Tensor:
    """EnCodec's multi-scale mel distance `[B]` (0 for identical signals); see the module docstring.

    Differentiable in `estimate` (the training loss `l_f` is its mean over the batch).

    Raises:
        MetricInputError: shapes differ, or the audio is not longer than half the largest window (1024 samples).
    """
    ref, est, batched = _pair(reference, estimate)
    loss = _mel_loss(sampling_rate, ref.device)
    if ref.shape[-1] < loss.min_length:
        raise MetricInputError(f"Audio of {ref.shape[-1]} samples is too short: this metric needs {loss.min_length}.")
    value = loss.distance(est, ref)
    return value if batched else value[0]


def stft_distance(estimate, reference, resolutions=STFT_RESOLUTIONS, eps: float = 1e-7) -> torch.Tensor:
    """Multi-resolution STFT distance `[B]`: spectral convergence + log-magnitude L1, averaged over resolutions.

    Raises:
        MetricInputError: shapes differ, or the audio is shorter than half the largest FFT.
    """
    ref, est, batched = _pair(reference, estimate, min_samples=max(r[0] for r in resolutions) // 2 + 1)
    batch, channels, length = ref.shape
    total = 0.0
    for n_fft, hop, window in resolutions:
        hann = torch.hann_window(window, device=ref.device)
        x = stft_magnitude(ref.reshape(-1, length), n_fft, hop, hann).clamp_min(eps)
        y = stft_magnitude(est.reshape(-1, length), n_fft, hop, hann).clamp_min(eps)
        x, y = x.reshape(batch, -1), y.reshape(batch, -1)
        convergence = (y - x).norm(dim=-1) / x.norm(dim=-1).clamp_min(eps)
        log_l1 = (y.log() - x.log()).abs().mean(dim=-1)
        total = total + convergence + log_l1
    value = total / len(resolutions)
    return value if batched else value[0]


# ------------------------------------------------------------------------------------------ perceptual
def _mono_at(audio, sampling_rate: int, target_rate: int) -> np.ndarray:
    """`[C, T]` (or `[T]`) -> mono float64 numpy at `target_rate`."""
    x, _ = _batched(audio)
    mono = x[0].mean(dim=0)
    return resample(mono, sampling_rate, target_rate).double().numpy()


def _check_perceptual(reference, estimate, sampling_rate: int, name: str) -> None:
    ref, _, _ = _pair(reference, estimate)
    _check_not_silent(ref)
    seconds = ref.shape[-1] / sampling_rate
    if seconds < MIN_SECONDS[name]:
        raise MetricInputError(f"{name} needs at least {MIN_SECONDS[name]} s of audio; this clip has {seconds:.3f} s.")


def resampling_note(metric: str, sampling_rate: int) -> str:
    """One line saying how `metric` sees audio at `sampling_rate` (for the report)."""
    target = {"visqol_audio": 48_000, "visqol_speech": 16_000, "pesq": PESQ_RATE, "stoi": sampling_rate}[metric]
    how = (
        "no resampling here"
        if target == sampling_rate
        else f"resampled {sampling_rate} -> {target} Hz with encodec_hf.audio_io.resample (windowed sinc)"
    )
    extra = " (pystoi then resamples to 10 kHz itself)" if metric == "stoi" else ""
    return f"{metric}: channels averaged to mono, {how}{extra}."


@functools.lru_cache(maxsize=2)
def _visqol_api(mode: str):
    try:
        from visqol import VisqolApi
    except ImportError as err:
        raise ImportError("ViSQOL needs visqol-python: pip install 'encodec-hf[eval]'.") from err
    import logging

    logging.getLogger("visqol").setLevel(logging.ERROR)  # its lattice-runtime notice is not per clip news
    api = VisqolApi()
    with _native_stderr_silenced():  # the TFLite runtime of the speech model prints an INFO line from C++
        api.create(mode=mode)
    return api


@contextlib.contextmanager
def _native_stderr_silenced():
    """Points file descriptor 2 at /dev/null for the block (output written by native code bypasses Python)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def visqol(estimate, reference, sampling_rate: int, mode: str = "audio") -> float:
    """ViSQOL MOS-LQO of `estimate` against `reference` (`[C, T]` at `sampling_rate`).

    Args:
        mode: "audio" (48 kHz, music and general audio; identical signals give 4.732) or "speech" (16 kHz).
    Raises:
        MetricInputError: silent or too short (under 1 s) reference, unknown mode.
        ImportError: visqol-python is not installed.
    """
    if mode not in VISQOL_RATES:
        raise MetricInputError(f"ViSQOL mode must be 'audio' or 'speech', got {mode!r}.")
    _check_perceptual(reference, estimate, sampling_rate, f"visqol_{mode}")
    rate = VISQOL_RATES[mode]
    ref, est = _mono_at(reference, sampling_rate, rate), _mono_at(estimate, sampling_rate, rate)
    try:
        score = _visqol_api(mode).measure_from_arrays(ref, est, rate).moslqo
    except (ValueError, IndexError) as err:  # visqol-python's way of saying the clip is too short or empty
        raise MetricInputError(f"ViSQOL ({mode} mode) cannot score this clip: {err}") from err
    if not math.isfinite(score):
        raise MetricInputError(f"ViSQOL ({mode} mode) returned {score}: the clip has too little signal.")
    return float(score)


def stoi(estimate, reference, sampling_rate: int, extended: bool = False) -> float:
    """Short-time objective intelligibility (pystoi), 0..1, for speech.

    Raises:
        MetricInputError: silent or too short reference (fewer than 30 non-silent STFT frames).
        ImportError: pystoi is not installed.
    """
    try:
        from pystoi import stoi as pystoi_stoi
    except ImportError as err:
        raise ImportError("STOI needs pystoi: pip install 'encodec-hf[eval]'.") from err
    _check_perceptual(reference, estimate, sampling_rate, "stoi")
    ref, est = _mono_at(reference, sampling_rate, sampling_rate), _mono_at(estimate, sampling_rate, sampling_rate)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = pystoi_stoi(ref, est, sampling_rate, extended=extended)
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise MetricInputError(
            "STOI needs at least 30 non-silent STFT frames (~0.4 s of speech); this clip has fewer."
        )
    return float(score)


def pesq(estimate, reference, sampling_rate: int) -> float:
    """Wide-band PESQ MOS-LQO (the `pesq` package) at 16 kHz, for speech.

    Raises:
        MetricInputError: the clip is silent, too short or has no utterance PESQ can find.
        ImportError: the optional `pesq` package is not installed.
    """
    try:
        from pesq import PesqError
        from pesq import pesq as pesq_score
    except ImportError as err:
        raise ImportError(
            "PESQ needs the optional `pesq` package (it compiles from source): pip install 'encodec-hf[pesq]'."
        ) from err
    _check_perceptual(reference, estimate, sampling_rate, "pesq")
    ref, est = _mono_at(reference, sampling_rate, PESQ_RATE), _mono_at(estimate, sampling_rate, PESQ_RATE)
    try:
        return float(pesq_score(PESQ_RATE, ref, est, "wb"))
    except PesqError as err:
        raise MetricInputError(f"PESQ cannot score this clip: {err}") from err


def pesq_available() -> bool:
    """Whether the optional `pesq` package imports here."""
    try:
        import pesq  # noqa: F401
    except ImportError:
        return False
    return True


__all__ = [
    "STFT_RESOLUTIONS",
    "mel_distance",
    "pesq",
    "pesq_available",
    "resampling_note",
    "si_snr",
    "stft_distance",
    "stoi",
    "visqol",
]
