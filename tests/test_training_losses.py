"""Training losses: values from their definitions (paper section 3.4), independent references, bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from encodec_hf.errors import EncodecInputError, TrainingConfigError
from encodec_hf.training.losses import (
    MultiScaleMelLoss,
    commitment_loss,
    discriminator_adversarial_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    time_l1_loss,
    time_relative_mse_loss,
)


def test_time_relative_mse_is_the_error_energy_over_the_target_energy():
    x, y = torch.randn(2, 1, 50), torch.randn(2, 1, 50)
    expected = ((x - y) ** 2).sum() / (y**2).sum()
    assert time_relative_mse_loss(x, y).item() == pytest.approx(expected.item(), rel=1e-6)
    assert time_relative_mse_loss(torch.zeros_like(y), y).item() == pytest.approx(1.0)  # silence scores 1
    assert time_relative_mse_loss(y, y).item() == 0.0
    assert time_relative_mse_loss(3 * x, 3 * y).item() == pytest.approx(expected.item(), rel=1e-5)  # scale-free
    decoded = torch.zeros_like(y, requires_grad=True)
    time_relative_mse_loss(decoded, y).backward()
    torch.testing.assert_close(decoded.grad, -2 * y / (y**2).sum())  # proportional to the error, unlike L1
    with pytest.raises(EncodecInputError, match="differ in shape"):
        time_relative_mse_loss(x, y[..., :49])


def test_time_l1_is_the_mean_absolute_error():
    x, y = torch.randn(2, 1, 50), torch.randn(2, 1, 50)
    assert time_l1_loss(x, y).item() == pytest.approx((x - y).abs().mean().item(), rel=1e-6)
    with pytest.raises(EncodecInputError, match="differ in shape"):
        time_l1_loss(x, y[..., :49])
    with pytest.raises(EncodecInputError, match=r"\[batch, channels, time\]"):
        time_l1_loss(x[0], y[0])


def _htk_filterbank(n_freqs: int, n_mels: int, sampling_rate: int) -> np.ndarray:
    """torchaudio's ``melscale_fbanks`` (HTK, no norm, 0..sr/2), written out from its definition: [F, M]."""

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    all_freqs = np.linspace(0, sampling_rate // 2, n_freqs)
    f_pts = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sampling_rate / 2), n_mels + 2))
    bank = np.zeros((n_freqs, n_mels))
    for m in range(n_mels):
        lower, center, upper = f_pts[m], f_pts[m + 1], f_pts[m + 2]
        rising = (all_freqs - lower) / (center - lower)
        falling = (upper - all_freqs) / (upper - center)
        bank[:, m] = np.maximum(0.0, np.minimum(rising, falling))
    return bank


def _reference_mel(audio: np.ndarray, n_fft: int, fbank: np.ndarray, power: float) -> np.ndarray:
    """Mel spectrogram of one signal [T] by explicit frames: reflect-pad n_fft/2, periodic hann, rfft, window-energy
    normalisation, |.|^power, filterbank. Returns [M, frames]."""
    hop = n_fft // 4
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    padded = np.pad(audio, n_fft // 2, mode="reflect")
    frames = [padded[i * hop : i * hop + n_fft] * window for i in range(1 + len(audio) // hop)]
    spectra = np.abs(np.fft.rfft(np.stack(frames), axis=-1)) / np.sqrt(np.sum(window**2))
    return (spectra**power @ fbank).T


def test_mel_spectrograms_match_an_explicit_reference():
    sampling_rate = 24_000
    loss = MultiScaleMelLoss(sampling_rate)
    assert loss.n_ffts == [32, 64, 128, 256, 512, 1024, 2048]  # 2^5 .. 2^11
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((2, 1, 3000))
    mels = loss.mel_spectrograms(torch.from_numpy(audio).float())
    for n_fft, mel in zip(loss.n_ffts, mels, strict=True):
        fbank = _htk_filterbank(n_fft // 2 + 1, 64, sampling_rate)
        np.testing.assert_allclose(getattr(loss, f"mel_{n_fft}").numpy(), fbank, rtol=1e-5, atol=1e-6)
        assert mel.shape == (2, 1, 64, 1 + 3000 // (n_fft // 4))
        for b in range(2):
            expected = _reference_mel(audio[b, 0], n_fft, fbank, power=2.0)
            np.testing.assert_allclose(mel[b, 0].numpy(), expected, rtol=1e-4, atol=1e-5 * expected.max())


def test_mel_loss_is_l1_plus_alpha_l2_averaged_over_scales():
    torch.manual_seed(0)
    x, y = torch.randn(2, 2, 1500), torch.randn(2, 2, 1500)
    loss = MultiScaleMelLoss(16_000, alpha=0.5)
    expected = sum(
        (a - b).abs().mean() + 0.5 * (a - b).square().mean()
        for a, b in zip(loss.mel_spectrograms(x), loss.mel_spectrograms(y), strict=True)
    ) / len(loss.n_ffts)
    assert loss(x, y).item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss(x, x).item() == 0.0
    # Channels are transformed separately: the stereo loss is the mean of the two mono ones.
    per_channel = [loss(x[:, c : c + 1], y[:, c : c + 1]).item() for c in range(2)]
    assert loss(x, y).item() == pytest.approx(sum(per_channel) / 2, rel=1e-5)


def test_mel_loss_gradient_is_finite_and_decreases_the_loss():
    torch.manual_seed(0)
    target = torch.randn(1, 1, 2000)
    decoded = (target + 0.3 * torch.randn_like(target)).requires_grad_(True)
    loss = MultiScaleMelLoss(24_000)
    value = loss(decoded, target)
    value.backward()
    assert torch.isfinite(decoded.grad).all() and decoded.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = decoded - 1e-3 * decoded.grad / decoded.grad.norm()
    assert loss(stepped, target) < value


def test_mel_loss_bad_inputs():
    loss = MultiScaleMelLoss(24_000)
    with pytest.raises(EncodecInputError, match="at least 1025 samples"):
        loss(torch.randn(1, 1, 1000), torch.randn(1, 1, 1000))
    with pytest.raises(EncodecInputError, match="differ in shape"):
        loss(torch.randn(1, 1, 2000), torch.randn(1, 2, 2000))
    with pytest.raises(TrainingConfigError, match="f_max"):
        MultiScaleMelLoss(24_000, f_max=20_000)
    with pytest.raises(TrainingConfigError, match="min_exponent"):
        MultiScaleMelLoss(24_000, min_exponent=8, max_exponent=6)


def test_hinge_losses_from_their_definitions():
    scale_a = torch.tensor([[2.0, 0.5, -1.0]])  # relu(1 - x) = [0, 0.5, 2]; relu(1 + x) = [3, 1.5, 0]
    scale_b = torch.tensor([[0.0, 0.0]])  # relu(1 -+ x) = [1, 1]
    gen = generator_adversarial_loss([scale_a, scale_b])
    assert gen.item() == pytest.approx((2.5 / 3 + 1.0) / 2)
    disc = discriminator_adversarial_loss(logits_real=[scale_a, scale_b], logits_fake=[scale_a, scale_b])
    assert disc.item() == pytest.approx(((2.5 / 3 + 4.5 / 3) + (1.0 + 1.0)) / 2)
    with pytest.raises(EncodecInputError, match="scales"):
        discriminator_adversarial_loss([scale_a], [scale_a, scale_b])
    with pytest.raises(EncodecInputError, match="empty"):
        generator_adversarial_loss([])


def test_feature_matching_is_relative_and_only_trains_the_fake_side():
    torch.manual_seed(0)
    real = [[torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 2)], [torch.randn(2, 4, 6, 5)]]
    fake = [[(r + torch.randn_like(r)).requires_grad_(True) for r in layers] for layers in real]
    real = [[r.requires_grad_(True) for r in layers] for layers in real]
    value = feature_matching_loss(real, fake)
    pairs = [(r, f) for rl, fl in zip(real, fake, strict=True) for r, f in zip(rl, fl, strict=True)]
    expected = [(f - r).abs().mean() / r.abs().mean() for r, f in pairs]
    assert value.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-6)  # mean over (k, l) pairs
    # Scaling a layer's real and fake features together leaves the loss unchanged (the division by mean|real|).
    scaled_real = [[r * 10.0 for r in real[0]], real[1]]
    scaled_fake = [[f * 10.0 for f in fake[0]], fake[1]]
    assert feature_matching_loss(scaled_real, scaled_fake).item() == pytest.approx(value.item(), rel=1e-5)
    value.backward()
    assert all(r.grad is None for layers in real for r in layers)
    assert all(f.grad is not None for layers in fake for f in layers)


def test_feature_matching_bad_inputs():
    a = [[torch.zeros(1, 2, 3, 4)]]
    with pytest.raises(EncodecInputError, match="feature maps"):
        feature_matching_loss(a, [[torch.zeros(1, 2, 3, 5)]])
    with pytest.raises(EncodecInputError, match="layers"):
        feature_matching_loss(a, [[torch.zeros(1, 2, 3, 4)] * 2])
    with pytest.raises(EncodecInputError, match="scales"):
        feature_matching_loss(a, [])
    # An all-zero real feature map divides by the floor, not by zero.
    assert math.isfinite(feature_matching_loss(a, [[torch.ones(1, 2, 3, 4)]]).item())


def test_commitment_loss_mean_or_sum_over_layers_and_gradient_to_residuals_only():
    torch.manual_seed(0)
    residuals = [torch.randn(2, 8, 5, requires_grad=True) for _ in range(3)]
    quantized = [torch.randn(2, 8, 5, requires_grad=True) for _ in range(3)]
    per_layer = [(r - q).square().mean() for r, q in zip(residuals, quantized, strict=True)]
    mean = commitment_loss(residuals, quantized)
    assert mean.item() == pytest.approx(torch.stack(per_layer).mean().item(), rel=1e-6)
    total = commitment_loss(residuals, quantized, layer_reduction="sum")
    assert total.item() == pytest.approx(torch.stack(per_layer).sum().item(), rel=1e-6)
    mean.backward()
    assert all(q.grad is None for q in quantized) and all(r.grad is not None for r in residuals)
    with pytest.raises(TrainingConfigError, match="layer_reduction"):
        commitment_loss(residuals, quantized, layer_reduction="max")
    with pytest.raises(EncodecInputError, match="one pair"):
        commitment_loss(residuals, quantized[:2])
    with pytest.raises(EncodecInputError, match="layer 0"):
        commitment_loss([torch.zeros(1, 8, 5)], [torch.zeros(1, 8, 4)])


def test_mel_loss_stays_float32_under_autocast_and_for_half_inputs():
    torch.manual_seed(0)
    x, y = torch.randn(1, 1, 1500), torch.randn(1, 1, 1500)
    loss = MultiScaleMelLoss(24_000)
    reference = loss(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = loss(x, y)
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == pytest.approx(reference.item(), rel=1e-6)
    half = loss(x.bfloat16(), y.bfloat16())
    assert half.dtype == torch.float32 and half.item() == pytest.approx(reference.item(), rel=0.05)
