"""ONNX export of the encoder and decoder, and onnxruntime-backed stand-ins for them (optional, opt-in).

`export_onnx(model, directory)` writes ``encoder.onnx`` (audio `[B, C, T]` -> latents `[B, D, ceil(T / hop)]`) and
``decoder.onnx`` (latents `[B, D, F]` -> audio `[B, C, F * hop]`), both with dynamic batch and length, from the
reference layers (weight norm folded). `use_onnxruntime(model, directory)` swaps ``model.encoder`` and
``model.decoder`` for onnxruntime sessions of those files, so ``encode`` / ``decode`` keep their chunking, scales,
padding masks and quantizer (the quantizer stays in PyTorch). Needs ``pip install onnx onnxruntime``
(``encodec_hf[onnx]``).

Numerics: onnxruntime's kernels round differently, about 1e-7 relative for the weight-norm models and ~1e-4 for
the GroupNorm (48 kHz) model, so codes are not guaranteed to be identical to the PyTorch path.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..files import atomic_path

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
# The exported graph pads by reflection with fixed slices, which need every layer's input longer than its padding (the
# PyTorch layers zero-extend shorter inputs first, a data-dependent branch a graph cannot hold). Inputs shorter
# than this many frames run on the PyTorch layers instead.
MIN_FRAMES = 16


def _require_onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:  # pragma: no cover - exercised only without the optional dependency
        raise ImportError(
            "The ONNX path needs onnxruntime (and onnx to export): pip install 'encodec_hf[onnx]'."
        ) from err
    return onnxruntime


def _plain_halves(model) -> tuple[nn.Module, nn.Module]:
    """Copies of ``model``'s encoder and decoder with weight norm folded into plain weights (what ONNX holds)."""
    plain = type(model)(model.config).eval()
    plain.load_state_dict(model.state_dict())  # the reference layers: plain conv / LSTM ops, standard ONNX nodes
    for module in list(plain.modules()):  # a list: removing parametrizations edits the module tree
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return plain.encoder, plain.decoder


def _export(module: nn.Module, example: torch.Tensor, path: Path, names: tuple[str, str], axes: tuple[str, str]):
    """Traces `module` on `example` into `path`, written to a temporary file first so nothing partial is left."""
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints: the lengths are traced via size()
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            dynamo=False,
            input_names=[names[0]],
            output_names=[names[1]],
            dynamic_axes={names[0]: {0: "batch", 2: axes[0]}, names[1]: {0: "batch", 2: axes[1]}},
            opset_version=17,
        )


def export_onnx(model, directory: str | os.PathLike) -> dict[str, Path]:
    """Writes ``encoder.onnx`` and ``decoder.onnx`` for ``model`` (an `EncodecModel`) into ``directory``.

    Returns:
        ``{"encoder": path, "decoder": path}``.
    """
    from ..codec.modeling import EncodecModel

    if not isinstance(model, EncodecModel):
        raise TypeError(f"export_onnx takes an encodec_hf EncodecModel, got {type(model).__name__}.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    encoder, decoder = _plain_halves(model)
    config = model.config
    example = 0.1 * torch.randn(1, config.audio_channels, MIN_FRAMES * config.hop_length)
    paths = {"encoder": directory / ENCODER_FILE, "decoder": directory / DECODER_FILE}
    _export(encoder, example, paths["encoder"], ("audio", "latents"), ("time", "frames"))
    with torch.no_grad():
        latents = encoder(example)
    _export(decoder, latents, paths["decoder"], ("latents", "audio"), ("frames", "time"))
    return paths


class OnnxRuntimeModule(nn.Module):
    """One exported half run by onnxruntime: `[B, C_in, L] -> [B, C_out, L']`, float32 on CPU.

    Inputs shorter than ``min_length`` (see `MIN_FRAMES`) run on ``fallback``, the PyTorch module it replaces,
    which also keeps serving streaming (``layers``) and training.
    """

    def __init__(self, path: str | os.PathLike, fallback: nn.Module, min_length: int, threads: int | None = None):
        super().__init__()
        ort = _require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.fallback = fallback
        self.min_length = min_length

    @property
    def layers(self) -> nn.ModuleList:
        return self.fallback.layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Runs the whole batch in one session call (short inputs and autograd on ``fallback``)."""
        if x.shape[-1] < self.min_length or (torch.is_grad_enabled() and x.requires_grad):
            return self.fallback(x)
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


def use_onnxruntime(model, directory: str | os.PathLike, threads: int | None = None):
    """Runs ``model``'s encoder and decoder with onnxruntime from the files `export_onnx` wrote (in place).

    Returns ``model``. ``model.encoder.fallback`` / ``model.decoder.fallback`` are the original PyTorch modules.

    Raises:
        FileNotFoundError: ``directory`` lacks ``encoder.onnx`` or ``decoder.onnx`` (run `export_onnx` first).
    """
    directory = Path(directory)
    for name in (ENCODER_FILE, DECODER_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} does not exist; write it with export_onnx(model, directory).")
    if model.dtype != torch.float32:
        raise ValueError(f"The ONNX graphs are float32; this model is {model.dtype}. Call model.float() first.")
    encoder = model.encoder.fallback if isinstance(model.encoder, OnnxRuntimeModule) else model.encoder
    decoder = model.decoder.fallback if isinstance(model.decoder, OnnxRuntimeModule) else model.decoder
    hop = model.config.hop_length
    model.encoder = OnnxRuntimeModule(directory / ENCODER_FILE, encoder, MIN_FRAMES * hop, threads)
    model.decoder = OnnxRuntimeModule(directory / DECODER_FILE, decoder, MIN_FRAMES, threads)
    return model


__all__ = ["DECODER_FILE", "ENCODER_FILE", "MIN_FRAMES", "OnnxRuntimeModule", "export_onnx", "use_onnxruntime"]
