"""Shared fixtures: tiny random configs, and transformers reference models saved to disk.

Reference models come from transformers' own ``EncodecModel`` with random weights (its codebooks start at zero,
so we fill them with noise), saved with ``save_pretrained`` and loaded by encodec_hf from that folder: the same
path a user takes with a Hub checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch
import transformers

from encodec_hf import EncodecConfig, EncodecModel

CONFIG_FIELDS = set(transformers.EncodecConfig().to_dict())
# Real clips shipped with the tests (origin in tests/data/README.md).
DATA_DIR = Path(__file__).resolve().parent / "data"


# The size of tiny_config: hop 8, up to 4 codebooks of 64 (6 bits at 1000 frames/s for 6, 12, 24 kbps).
TINY_FIELDS = dict(
    num_filters=4,
    hidden_size=8,
    codebook_dim=8,
    upsampling_ratios=[4, 2],
    num_lstm_layers=1,
    codebook_size=64,
    sampling_rate=8000,
    target_bandwidths=[6.0, 12.0, 24.0],
)


def tiny_config(**overrides) -> EncodecConfig:
    """A causal 24 kHz-like model small enough for property tests (hop 8, up to 4 codebooks of 64)."""
    return EncodecConfig(**{**TINY_FIELDS, **overrides})


def tiny_chunked_config(**overrides) -> EncodecConfig:
    """The 48 kHz preset's structure (stereo, normalised, non-causal, time group norm) at tiny_config's size, with
    0.1 s chunks and 10 % overlap."""
    return EncodecConfig.encodec_48khz(**{**TINY_FIELDS, "chunk_length_s": 0.1, "overlap": 0.1, **overrides})


def reference_from_config(config: EncodecConfig, seed: int = 0) -> transformers.EncodecModel:
    """transformers' EncodecModel with the same hyper-parameters and random weights (codebooks included)."""
    torch.manual_seed(seed)
    fields = {k: v for k, v in config.to_dict().items() if k in CONFIG_FIELDS}
    model = transformers.EncodecModel(transformers.EncodecConfig(**fields)).eval()
    with torch.no_grad():
        for layer in model.quantizer.layers:
            layer.codebook.embed.normal_()
        # Non-trivial group-norm affine parameters, so a wrong norm placement cannot go unnoticed.
        for name, param in model.named_parameters():
            if ".norm." in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


# Length of the probe signal random_model draws its codebooks' scale from (a few frames of every tiny config).
PROBE_SAMPLES = 4000


def random_model(config: EncodecConfig, seed: int = 0) -> EncodecModel:
    """An encodec_hf model with random weights and random, initialised codebooks (a fresh model's are zero and
    wait for k-means on the first training batch), in eval mode.

    Each codebook is drawn around the residual it quantizes on a probe signal (`audio`, normalised where the
    model normalises): per dimension, that residual's mean plus noise of its standard deviation over frames.
    Unit-variance codebooks around a random encoder's small latents (std ~0.1) would put every frame on the same
    one or two codes, and codes could not tell a right path from a wrong one.
    """
    from encodec_hf.codec.modeling import chunk_scale

    torch.manual_seed(seed)
    model = EncodecModel(config).eval()
    with torch.no_grad():
        probe = audio(1, config.audio_channels, PROBE_SAMPLES, seed=seed)
        if config.normalize:
            probe = probe / chunk_scale(probe)
        residual = model.encoder(probe)[0].t()  # [F, D]
        for layer in model.quantizer.layers:
            book = layer.codebook
            book.embed.copy_(residual.mean(0) + torch.randn_like(book.embed) * residual.std(0))
            book.inited.fill_(1.0)
            residual = residual - book.decode(book.encode(residual))
    return model


@pytest.fixture(scope="session")
def saved_reference(tmp_path_factory):
    """Factory: (preset name) -> (transformers model, folder it was saved to), built once per session."""
    cache: dict[str, tuple[transformers.EncodecModel, str]] = {}
    presets = {
        "24khz": EncodecConfig.encodec_24khz,
        "48khz": EncodecConfig.encodec_48khz,
        "32khz": EncodecConfig.encodec_32khz,
        "tiny": tiny_config,
        "tiny_chunked": tiny_chunked_config,
    }

    def get(name: str):
        if name not in cache:
            reference = reference_from_config(presets[name]())
            folder = tmp_path_factory.mktemp(f"ref_{name}")
            reference.save_pretrained(folder)
            cache[name] = (reference, str(folder))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def model_pair(saved_reference):
    """Factory: (preset name) -> (transformers model, encodec_hf model) holding identical weights."""
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            reference, folder = saved_reference(name)
            cache[name] = (reference, EncodecModel.from_pretrained(folder).eval())
        return cache[name]

    return get


def audio(batch: int, channels: int, length: int, seed: int = 0) -> torch.Tensor:
    """Smooth-ish random audio in [-1, 1]: noise plus a sine, so scales and codes vary along time."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 1000.0
    x = 0.1 * torch.randn(batch, channels, length, generator=g) + 0.3 * torch.sin(2 * torch.pi * 3 * t)
    return x.clamp(-1, 1)


@pytest.fixture(scope="session")
def real_clip():
    """Factory: (file name in tests/data, frames=None) -> (audio `[C, T]` float32, sampling rate).

    ``test_24k.wav`` (24 kHz mono, 20 s) and ``test_48k.wav`` (48 kHz stereo, 15 s) from Meta's encodec repository.
    """

    def load(name: str, frames: int | None = None) -> tuple[torch.Tensor, int]:
        data, rate = sf.read(DATA_DIR / name, dtype="float32", frames=-1 if frames is None else frames, always_2d=True)
        return torch.from_numpy(data.T.copy()), rate

    return load
