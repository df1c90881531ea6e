"""Tiny random EnCodec models and self-written audio for the Hugging Face ecosystem tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from conftest import TINY_FIELDS

from encodec_hf import EncodecConfig, EncodecModel

# Tiny, fast configs that keep the three structural families of the real checkpoints: causal unchunked (24 kHz),
# chunked + normalised stereo non-causal (48 kHz, its preset), non-causal unchunked (32 kHz). Hop 16, 16 codes.
_SMALL = dict(TINY_FIELDS, upsampling_ratios=[4, 4], codebook_size=16, target_bandwidths=[2.0, 4.0, 8.0])
TINY = {
    "mono": lambda: EncodecConfig(**_SMALL),
    "stereo": lambda: EncodecConfig.encodec_48khz(**_SMALL, chunk_length_s=0.1),  # the preset's 1 % overlap
    "noncausal": lambda: EncodecConfig(**_SMALL, use_causal_conv=False),
}


def tiny_model(kind: str = "mono", seed: int = 0):
    """Random tiny model whose codebooks are spread over the encoder's output range (diverse codes)."""
    torch.manual_seed(seed)
    config = TINY[kind]()
    model = EncodecModel(config).eval()
    with torch.no_grad():
        # Seed each codebook with residual vectors of real encoder outputs (k-means-like init), so that
        # clips of different content get different codes in every codebook.
        t = torch.arange(4000) / config.sampling_rate
        tones = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (110, 220, 330, 440, 550, 660)])
        probe = 0.3 * tones[:, None].repeat(1, config.audio_channels, 1) + 0.1 * torch.randn(6, 1, 4000)
        residual = model.encoder(probe).transpose(1, 2).reshape(-1, config.codebook_dim)  # [B*T, D]
        for layer in model.quantizer.layers:
            picks = torch.randperm(residual.shape[0])[: config.codebook_size]
            layer.codebook.embed.copy_(residual[picks] + 1e-3 * torch.randn(config.codebook_size, config.codebook_dim))
            nearest = torch.cdist(residual, layer.codebook.embed).argmin(dim=1)
            residual = residual - layer.codebook.embed[nearest]
    return model


def save_tiny_model(path: Path, kind: str = "mono", seed: int = 0) -> Path:
    model = tiny_model(kind, seed)
    model.save_pretrained(path)
    return Path(path)


def write_clips(folder: Path, specs: list[tuple[int, int, int]], fmt: str = "wav", seed: int = 0) -> list[str]:
    """Write clips given as (num_samples, sampling_rate, channels); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, (n, rate, channels) in enumerate(specs):
        t = np.arange(n) / rate
        # A tone per channel (different per channel, so a downmix would be visible) plus a little noise.
        audio = np.stack([0.4 * np.sin(2 * np.pi * (220 + 110 * c + 30 * i) * t) for c in range(channels)], axis=1)
        audio += 0.05 * rng.standard_normal(audio.shape)
        path = folder / f"clip{i:03d}.{fmt}"
        sf.write(path, audio.astype(np.float32), rate, subtype="PCM_16")
        paths.append(str(path))
    return paths


def one_torch_thread():
    """Generator for a module fixture: tiny models run fastest on one thread, and on a busy 2-core machine
    OpenMP's spinning threads can make a tiny LSTM 100x slower. Restores the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
