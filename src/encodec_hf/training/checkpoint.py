"""Checkpoints that resume a run exactly, and the exported model folder.

A checkpoint is a folder ``<output_dir>/checkpoints/step_<N>/`` holding ``state.pt`` (codec and discriminator
weights with the codebook buffers, both optimizers, the balancers' EMAs, the weights EMA, the step, the config)
and one ``rng_rank<r>.pt`` per process (Python, NumPy and torch generator states). The data position needs no
file: batches are a pure function of (seed, step) (see ``encodec_hf.training.data``). A checkpoint is written
under a temporary name and renamed when complete, so a run killed mid-save resumes from the previous one.

The exported folder (``export_model``) is what ``EncodecModel.from_pretrained`` loads (``config.json``,
``model.safetensors``), plus ``preprocessor_config.json`` for ``EncodecFeatureExtractor.from_pretrained`` and
the adversary as ``discriminator.safetensors`` + ``discriminator_config.json`` (``load_discriminator``), so a
later run can fine-tune from both.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import TrainingConfigError

CHECKPOINTS = "checkpoints"
DISCRIMINATOR_WEIGHTS = "discriminator.safetensors"
DISCRIMINATOR_CONFIG = "discriminator_config.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step_{step:08d}"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first, as (step, folder)."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and (path / "state.pt").is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint(
    output_dir: str | Path, step: int, state: dict[str, Any], rank: int, world_size: int, keep: int, barrier
) -> Path:
    """Writes the checkpoint of ``step``: rank 0 writes ``state.pt``, every rank its RNG states; ``barrier()``
    synchronises the processes so that the folder is renamed only once all files are there."""
    final = checkpoint_dir(output_dir, step)
    partial = final.with_name(final.name + ".partial")
    if rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    barrier()
    torch.save(rng_state(), partial / f"rng_rank{rank}.pt")
    if rank == 0:
        torch.save({**state, "world_size": world_size}, partial / "state.pt")
    barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for _, old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load_checkpoint(folder: Path, rank: int, world_size: int) -> dict[str, Any]:
    """The state of a checkpoint folder; restores this rank's RNG states."""
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=False)
    if state.get("world_size", 1) != world_size:
        raise TrainingConfigError(
            f"Checkpoint {folder} was written by {state.get('world_size')} process(es) but this run has {world_size}; "
            "resume with the same number of processes (the data order and random streams are per process)."
        )
    rng_file = folder / f"rng_rank{rank}.pt"
    if not rng_file.is_file():
        raise TrainingConfigError(f"Checkpoint {folder} lacks {rng_file.name}; it is incomplete.")
    set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    return state


def export_model(model, discriminator, discriminator_config: dict[str, Any], folder: str | Path) -> None:
    """Saves ``model`` (``save_pretrained``), its feature extractor config and the discriminator to ``folder``."""
    from safetensors.torch import save_file
    from transformers.utils import logging as hf_logging


    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a one-file "Writing model shards" bar at every save clutters the log
    try:
        model.save_pretrained(folder)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    weights = {k: v.detach().cpu().contiguous() for k, v in discriminator.state_dict().items()}
    save_file(weights, folder / DISCRIMINATOR_WEIGHTS)
    (folder / DISCRIMINATOR_CONFIG).write_text(json.dumps(discriminator_config, indent=2) + "\n", encoding="utf-8")


def load_discriminator(folder: str | Path):
    """The ``MultiScaleSTFTDiscriminator`` saved by ``export_model`` in ``folder``."""
    from safetensors.torch import load_file

    from .discriminator import MultiScaleSTFTDiscriminator

    folder = Path(folder)
    config_file, weights_file = folder / DISCRIMINATOR_CONFIG, folder / DISCRIMINATOR_WEIGHTS
    if not config_file.is_file() or not weights_file.is_file():
        raise TrainingConfigError(
            f"{folder} has no saved discriminator ({DISCRIMINATOR_CONFIG} and {DISCRIMINATOR_WEIGHTS}); "
            "set discriminator.pretrained to null to start the adversary from scratch."
        )
    discriminator = MultiScaleSTFTDiscriminator(**json.loads(config_file.read_text(encoding="utf-8")))
    discriminator.load_state_dict(load_file(weights_file))
    return discriminator


__all__ = [
    "checkpoint_dir",
    "export_model",
    "list_checkpoints",
    "load_checkpoint",
    "load_discriminator",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]
