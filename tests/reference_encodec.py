"""Test-time access to Meta's original ``encodec`` package (0.1.1, CC-BY-NC; never shipped, never imported by src/).

Its import pulls ``torchaudio``, which has no CPU wheel here. `import_reference()` puts a minimal stand-in
module into ``sys.modules`` only while ``encodec`` is being imported (the package only touches torchaudio in
file I/O helpers, which the tests never call, and in the discriminator's ``Spectrogram``, which the stand-in
provides), then removes it again so that no other test can mistake the stand-in for the real library.

The builders create the original 24 kHz / 48 kHz models and LMs with random weights, codebooks included
(the original initialises them to zeros for k-means, which would make every code 0).
"""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path

import torch

ORIGINAL_PRESETS = {
    "encodec_24khz": dict(
        target_bandwidths=[1.5, 3.0, 6.0, 12.0, 24.0],
        sample_rate=24_000,
        channels=1,
        causal=True,
        model_norm="weight_norm",
        audio_normalize=False,
        segment=None,
    ),
    "encodec_48khz": dict(
        target_bandwidths=[3.0, 6.0, 12.0, 24.0],
        sample_rate=48_000,
        channels=2,
        causal=False,
        model_norm="time_group_norm",
        audio_normalize=True,
        segment=1.0,
    ),
}


class _SpectrogramStandIn(torch.nn.Module):
    """torchaudio's ``transforms.Spectrogram`` for the arguments Meta's ``msstftd`` passes, written with torch.stft.

    Follows ``torchaudio.functional.spectrogram``: the window is a (persistent) buffer; ``normalized=True`` means
    dividing by the window's L2 norm; ``power=None`` returns the complex STFT; leading dims are flattened and
    restored, so ``[B, C, T]`` gives ``[B, C, n_fft // 2 + 1, frames]``.
    """

    def __init__(self, n_fft, win_length, hop_length, window_fn, normalized, center, pad_mode=None, power=None):
        super().__init__()
        if normalized is not True or center is not False or power is not None:
            raise NotImplementedError("The stand-in covers only normalized=True, center=False, power=None.")
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.register_buffer("window", window_fn(win_length))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        shape = waveform.shape
        spec = torch.stft(
            waveform.reshape(-1, shape[-1]),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=False,
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        spec = spec.reshape(shape[:-1] + spec.shape[-2:])
        return spec / self.window.pow(2.0).sum().sqrt()


def import_reference() -> types.ModuleType:
    """Import and return the original ``encodec`` package, with a temporary torchaudio stand-in."""
    if "encodec" in sys.modules:
        return sys.modules["encodec"]
    inserted = False
    if "torchaudio" not in sys.modules:
        try:
            import torchaudio  # noqa: F401  (a real install needs no stand-in)
        except ImportError:
            fake = types.ModuleType("torchaudio")
            fake.transforms = types.ModuleType("torchaudio.transforms")
            fake.__doc__ = "Stand-in inserted by tests/reference_encodec.py while importing encodec."
            fake.transforms.Spectrogram = _SpectrogramStandIn
            sys.modules["torchaudio"] = fake
            sys.modules["torchaudio.transforms"] = fake.transforms
            inserted = True
    try:
        import encodec
        import encodec.compress  # noqa: F401
        import encodec.model  # noqa: F401
        import encodec.msstftd  # noqa: F401  (binds the stand-in's Spectrogram for the discriminator tests)
    finally:
        if inserted:
            del sys.modules["torchaudio"], sys.modules["torchaudio.transforms"]
    return encodec


def build_original_model(name: str, seed: int = 0):
    """The original `encodec.EncodecModel` for `name` with random weights and random codebooks, in eval mode."""
    encodec = import_reference()
    torch.manual_seed(seed)
    model = encodec.model.EncodecModel._get_model(**ORIGINAL_PRESETS[name], name=name)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if key.endswith("_codebook.embed"):
                tensor.copy_(torch.randn_like(tensor))
            elif key.endswith("_codebook.inited"):
                tensor.fill_(1.0)
            elif ".norm." in key and key.endswith("weight"):  # GroupNorm affine: off its 1/0 default
                tensor.copy_(1.0 + 0.1 * torch.randn_like(tensor))
            elif ".norm." in key and key.endswith("bias"):
                tensor.copy_(0.1 * torch.randn_like(tensor))
    return model.eval()


def build_original_lm(model, seed: int = 0):
    """The original `LMModel` matching `model` (5 layers, dim 200, past context 3.5 s), random weights."""
    encodec = import_reference()
    torch.manual_seed(seed)
    lm = encodec.model.LMModel(
        model.quantizer.n_q,
        model.quantizer.bins,
        num_layers=5,
        dim=200,
        past_context=int(3.5 * model.frame_rate),
    )
    return lm.eval()


def save_original_checkpoint(state_dict: dict, directory: Path, stem: str) -> Path:
    """Save `state_dict` as `<stem>-<sha256[:8]>.th`, the naming scheme of Meta's release."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f"{stem}.tmp"
    torch.save(state_dict, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    path = directory / f"{stem}-{digest}.th"
    tmp.rename(path)
    return path


class ConvertedPair:
    """An original model + LM with random weights and their conversion (folder, loaded model)."""

    def __init__(self, name: str, root: Path, seed: int = 0):
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conversion"))
        from convert_original_checkpoint import convert

        from encodec_hf.ecdc.container import load_model

        self.name = name
        self.original = build_original_model(name, seed)
        self.original_lm = build_original_lm(self.original, seed + 1)
        self.checkpoint = save_original_checkpoint(self.original.state_dict(), root, name)
        self.lm_checkpoint = save_original_checkpoint(
            self.original_lm.state_dict(), root, name.replace("encodec_", "encodec_lm_")
        )
        self.folder = convert(self.checkpoint, root / f"{name}_converted", lm_checkpoint=self.lm_checkpoint)
        self.model = load_model(self.folder)
        # The original fetches its pretrained LM and models by name; serve the random ones instead.
        self.original.get_lm_model = lambda: self.original_lm

    def patch_original_models(self, monkeypatch) -> None:
        """Make the original `decompress` load this model for `self.name`."""
        compress_module = sys.modules["encodec.compress"]
        monkeypatch.setitem(compress_module.MODELS, self.name, lambda: self.original)


def original_compress_module():
    import_reference()
    return sys.modules["encodec.compress"]
