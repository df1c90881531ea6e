"""Quality metrics on signals with known answers, and their errors on unusable clips."""

import warnings

import numpy as np
import pytest
import torch

from encodec_hf.errors import MetricInputError
from encodec_hf.evaluation import metrics as M

SR = 16_000


def speech_like(seconds: float = 2.0, sr: int = SR, seed: int = 0) -> torch.Tensor:
    """A harmonic tone (120 Hz and 12 harmonics) under a 4 Hz syllable envelope, plus a little noise: `[1, T]`."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    pitch = 120 * (1 + 0.05 * torch.sin(2 * torch.pi * 0.7 * t))
    phase = 2 * torch.pi * torch.cumsum(pitch, 0) / sr
    voice = sum(torch.sin(k * phase) / k for k in range(1, 13))
    envelope = torch.sin(torch.pi * 4 * t).abs() ** 2
    x = 0.3 * voice * envelope + 0.003 * torch.randn(t.shape, generator=g, dtype=torch.float64)
    return (x / x.abs().max() * 0.5).float()[None]


def with_noise(x: torch.Tensor, snr_db: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    x64 = x.double() - x.double().mean()
    noise = noise - noise.mean()
    noise = noise * (x64.pow(2).sum() / noise.pow(2).sum() / 10 ** (snr_db / 10)).sqrt()
    return (x.double() + noise).float()


def test_si_snr_identical_is_very_large_and_scale_invariant():
    x = speech_like()
    assert float(M.si_snr(x, x)) > 60
    noisy = with_noise(x, 5.0)
    base = float(M.si_snr(noisy, x))
    for scale in (0.1, 3.0, -2.0):
        assert float(M.si_snr(scale * noisy, x)) == pytest.approx(base, abs=1e-3)
    assert float(M.si_snr(0.25 * x, x)) > 60


@pytest.mark.parametrize("snr_db", [10.0, 0.0, 20.0])
def test_si_snr_of_white_noise_at_known_snr(snr_db):
    x = speech_like(seconds=4.0)
    assert float(M.si_snr(with_noise(x, snr_db), x)) == pytest.approx(snr_db, abs=0.1)


def test_si_snr_batched_is_per_item_and_mean_over_channels():
    x = torch.cat([speech_like(seed=0), speech_like(seed=1)])  # [2, T] = two channels
    y = torch.cat([with_noise(x[:1], 10.0), with_noise(x[1:], 20.0, seed=2)])
    per_channel = [float(M.si_snr(y[c], x[c])) for c in range(2)]
    assert float(M.si_snr(y, x)) == pytest.approx(np.mean(per_channel), abs=1e-4)
    batch = M.si_snr(torch.stack([y, x]), torch.stack([x, x]))
    assert batch.shape == (2,) and float(batch[0]) == pytest.approx(np.mean(per_channel), abs=1e-4)


def test_spectral_distances_are_zero_for_identical_and_grow_with_noise():
    x = speech_like()
    assert float(M.mel_distance(x, x, SR)) == 0.0
    assert float(M.stft_distance(x, x)) == pytest.approx(0.0, abs=1e-6)
    mel = [float(M.mel_distance(with_noise(x, snr), x, SR)) for snr in (30.0, 10.0, 0.0)]
    stft = [float(M.stft_distance(with_noise(x, snr), x)) for snr in (30.0, 10.0, 0.0)]
    assert 0 < mel[0] < mel[1] < mel[2]
    assert 0 < stft[0] < stft[1] < stft[2]


def test_mel_distance_is_the_papers_multiscale_l1_plus_l2():
    """Scales 2^5..2^11, 64 HTK mel bins, hop window/4, mel power spectrogram of the STFT divided by the window's
    L2 norm (torchaudio's normalized=True, as the trainer's l_f), per scale mean L1 + mean L2, averaged."""
    from transformers.audio_utils import mel_filter_bank

    x = speech_like(seconds=0.5)
    y = with_noise(x, 10.0)
    expected = 0.0
    for exponent in range(5, 12):
        n_fft = 2**exponent
        window = torch.hann_window(n_fft)
        spec = [
            (torch.stft(s, n_fft, n_fft // 4, window=window, return_complex=True).abs() / window.norm()) ** 2
            for s in (y, x)
        ]
        with warnings.catch_warnings():  # the small windows have empty filters
            warnings.simplefilter("ignore", UserWarning)
            bank = mel_filter_bank(n_fft // 2 + 1, 64, 0.0, SR / 2, SR, norm=None, mel_scale="htk")
        mels = [torch.from_numpy(bank).float().T @ s[0] for s in spec]  # [64, frames]
        assert mels[0].shape[0] == 64 and mels[0].shape[1] == x.shape[-1] // (n_fft // 4) + 1
        diff = mels[0] - mels[1]
        expected += float(diff.abs().mean() + diff.pow(2).mean())
    assert float(M.mel_distance(y, x, SR)) == pytest.approx(expected / 7, rel=1e-5)


def test_mel_distance_is_the_training_loss():
    """One definition: the batch mean of mel_distance is the trainer's MultiScaleMelLoss, value and gradient."""
    from encodec_hf.training.losses import MultiScaleMelLoss

    x = torch.stack([speech_like(0.5, seed=0), speech_like(0.5, seed=3)])  # [2, 1, T]
    y = (x + 0.01 * torch.randn_like(x)).requires_grad_()
    metric = M.mel_distance(y, x, SR).mean()
    (grad_metric,) = torch.autograd.grad(metric, y)
    loss = MultiScaleMelLoss(SR)(y, x)
    (grad_loss,) = torch.autograd.grad(loss, y)
    assert float(metric.detach()) == pytest.approx(float(loss.detach()), rel=1e-6)
    torch.testing.assert_close(grad_metric, grad_loss)


def test_mel_filters_follow_the_htk_formula():
    from encodec_hf.training.losses import MultiScaleMelLoss

    bank = MultiScaleMelLoss(24_000).mel_2048  # [1025, 64]
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = np.linspace(mel(0), mel(12_000), 66)
    centres = 700 * (10 ** (edges[1:-1] / 2595) - 1)
    peaks = bank.argmax(dim=0).numpy() * 24_000 / 2048
    assert np.allclose(peaks, centres, atol=24_000 / 2048)


def test_mel_distance_is_differentiable_and_batched():
    x = torch.stack([speech_like(0.5, seed=0), speech_like(0.5, seed=3)])  # [2, 1, T]
    y = (x + 0.01 * torch.randn_like(x)).requires_grad_()
    value = M.mel_distance(y, x, SR)
    assert value.shape == (2,)
    assert float(value[1].detach()) == pytest.approx(float(M.mel_distance(y[1].detach(), x[1], SR)), rel=1e-5)
    value.mean().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_visqol_identical_is_at_its_maximum():
    x = speech_like(seconds=2.0, sr=24_000)
    best = M.visqol(x, x, 24_000, mode="audio")
    assert best == pytest.approx(4.7321, abs=1e-3)  # the SVR model's ceiling (Google's identity conformance case)
    assert M.visqol(with_noise(x, 10.0), x, 24_000, mode="audio") < best - 0.5


def test_visqol_speech_mode_prefers_the_clean_signal():
    x = speech_like(seconds=2.0)
    clean = M.visqol(x, x, SR, mode="speech")
    assert clean > M.visqol(with_noise(x, 5.0), x, SR, mode="speech") + 0.3


def test_stoi_and_pesq_of_identical_speech():
    x = speech_like(seconds=2.0)
    assert M.stoi(x, x, SR) == pytest.approx(1.0, abs=1e-6)
    assert M.stoi(with_noise(x, -5.0), x, SR) < 0.95
    assert M.pesq(x, x, SR) == pytest.approx(4.64, abs=0.01)  # PESQ-WB's ceiling
    assert M.pesq(with_noise(x, 5.0), x, SR) < 3.0


@pytest.mark.parametrize(
    "metric",
    [
        lambda d, r: M.si_snr(d, r),
        lambda d, r: M.visqol(d, r, SR, "audio"),
        lambda d, r: M.visqol(d, r, SR, "speech"),
        lambda d, r: M.stoi(d, r, SR),
        lambda d, r: M.pesq(d, r, SR),
    ],
    ids=["si_snr", "visqol_audio", "visqol_speech", "stoi", "pesq"],
)
def test_silent_reference_is_a_clear_error(metric):
    silent = torch.zeros(1, 2 * SR)
    with pytest.raises(MetricInputError, match="silent"):
        metric(silent, silent)


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        (lambda d, r: M.mel_distance(d, r, SR), "too short"),
        (lambda d, r: M.stft_distance(d, r), "too short"),
        (lambda d, r: M.visqol(d, r, SR, "audio"), "at least 1.0 s"),
        (lambda d, r: M.stoi(d, r, SR), "at least 0.5 s"),
        (lambda d, r: M.pesq(d, r, SR), "at least 0.25 s"),
    ],
    ids=["mel", "stft", "visqol", "stoi", "pesq"],
)
def test_too_short_clip_is_a_clear_error(metric, message):
    short = speech_like(seconds=0.05)
    with pytest.raises(MetricInputError, match=message):
        metric(short, short)


def test_shape_mismatch_is_a_clear_error():
    x = speech_like()
    with pytest.raises(MetricInputError, match="differ in shape"):
        M.si_snr(x[..., :-1], x)
