"""Export a training run of `recipes/encodec_hf_small_24khz.yaml` as the package's bundled model.

Usage::

    python conversion/export_bundled_model.py runs/encodec_hf_small_24khz/checkpoints/step_XXXXXXXX [--out DIR]

RUN is an `encodec-hf train` output folder (its exported `config.json` + `model.safetensors`, written at every
checkpoint) or one of its `checkpoints/step_*` folders. The export keeps what inference needs: `config.json` (with
`ecdc_model_name` set to this model's own name, so `.ecdc` files never claim to come from Meta's
`encodec_24khz`), `model.safetensors` (float32, codebooks included), `preprocessor_config.json` and the resolved
`training_config.yaml`; the discriminator stays out (the recipe trains none). It refuses a model over the
issue's limits: 5 M numbers (parameters and codebook buffers together) or 20 MB of safetensors.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from encodec_hf import EncodecModel  # noqa: E402
from encodec_hf.bundled import BUNDLED_MODEL_NAME  # noqa: E402

MAX_NUMBERS = 5_000_000
MAX_BYTES = 20 * 1024 * 1024
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "encodec_hf" / "assets" / BUNDLED_MODEL_NAME


def load_run(run: Path) -> EncodecModel:
    """The model of an `encodec-hf train` output folder or of one of its checkpoints."""
    if (run / "config.json").is_file() and (run / "model.safetensors").is_file():
        return EncodecModel.from_pretrained(run)
    from encodec_hf.training.checkpoint import load_checkpoint
    from encodec_hf.training.config import TrainingConfig
    from encodec_hf.training.trainer import build_model

    state = load_checkpoint(run, 0, 1)
    model = build_model(TrainingConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    return model


def export(run: Path, out: Path) -> dict[str, float]:
    model = load_run(run).eval()
    model.config.ecdc_model_name = BUNDLED_MODEL_NAME
    model.config.name_or_path = BUNDLED_MODEL_NAME
    numbers = sum(t.numel() for t in model.state_dict().values())
    parameters = sum(p.numel() for p in model.parameters())
    if numbers > MAX_NUMBERS:
        raise SystemExit(f"{numbers:,} numbers in the state dict: over the {MAX_NUMBERS:,} limit.")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for folder in (run, run.parent.parent):  # the run folder, or the run of a checkpoints/step_* folder
        if (folder / "training_config.yaml").is_file():
            shutil.copyfile(folder / "training_config.yaml", out / "training_config.yaml")
            break
    size = (out / "model.safetensors").stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"model.safetensors is {size / 1e6:.1f} MB: over the 20 MiB limit.")
    return {"parameters": parameters, "numbers": numbers, "safetensors_bytes": size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="an encodec-hf train output folder or its checkpoints/step_* folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    stats = export(args.run, args.out)
    print(
        f"Exported {args.run} to {args.out}: {stats['parameters']:,} parameters, {stats['numbers']:,} numbers with "
        f"the codebooks, model.safetensors {stats['safetensors_bytes'] / 1e6:.2f} MB."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
