"""The model that ships inside the package: `encodec_hf_small_24khz`, a small 24 kHz mono EnCodec trained by
encodec_hf's own trainer (`recipes/encodec_hf_small_24khz.yaml`). It is NOT Meta's `facebook/encodec_24khz`:
same interface (24 kHz mono, 75 frames/s, 1024-code books, 1.5-24 kbps), far fewer weights and far less
training, so far lower quality. It exists so that the demo and the tests work on a machine without the
Hugging Face Hub; its model card is `assets/encodec_hf_small_24khz/README.md`.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_MODEL_NAME = "encodec_hf_small_24khz"
BUNDLED_MODEL_DIR = Path(__file__).parent / "assets" / BUNDLED_MODEL_NAME
_FILES = ("config.json", "model.safetensors")


def bundled_model_path() -> Path:
    """The folder of the bundled model (`config.json`, `model.safetensors`, the model card), for
    `EncodecModel.from_pretrained`, `encodec-hf compress --model` or `make demo MODEL=...`.

    Raises:
        FileNotFoundError: the installation lacks the model's files (a broken or stripped install).
    """
    folder = BUNDLED_MODEL_DIR
    missing = [name for name in _FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"The bundled model is incomplete: {', '.join(missing)} missing in {folder}. "
            "Reinstall encodec-hf (pip install --force-reinstall encodec-hf)."
        )
    return folder


def load_bundled_model():
    """The bundled `EncodecModel`, in eval mode, on CPU."""
    from . import EncodecModel

    return EncodecModel.from_pretrained(bundled_model_path()).eval()


__all__ = ["BUNDLED_MODEL_DIR", "BUNDLED_MODEL_NAME", "bundled_model_path", "load_bundled_model"]
