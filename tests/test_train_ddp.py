"""Two-process data-parallel training (``torchrun``, gloo on loopback): weights, codebooks, the adversary and the
balancer stay identical across ranks, while each rank trains on its own crops.

The test launches this file under ``python -m torch.distributed.run --nproc_per_node 2``; run as a script it is
the worker: it trains the tiny config for a few steps and writes what it holds to ``<output>/rank<r>.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def worker(data: str, output: str) -> None:
    sys.path.insert(0, str(HERE))
    from test_trainer import tiny_training_config

    from encodec_hf.training.config import TrainingConfig
    from encodec_hf.training.trainer import Trainer

    torch.set_num_threads(1)
    values = tiny_training_config(Path(data), Path(output), run={"steps": 4, "batch_size": 4, "save_every": 2})
    trainer = Trainer(TrainingConfig.from_dict(values))
    assert (trainer.world, trainer.micro_batch) == (2, 2), trainer.accelerator.distributed_type
    first_batch = next(iter(trainer._build_dataloader(0)))
    metrics = trainer.train()
    model = trainer.model.state_dict()
    codebooks = {k: v for k, v in model.items() if k.startswith("quantizer.")}
    report = {
        "rank": trainer.rank,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "weights": _digest({k: v for k, v in model.items() if not k.startswith("quantizer.")}),
        "codebooks": _digest(codebooks),
        "inited": [float(layer.codebook.inited) for layer in trainer.model.quantizer.layers],
        "discriminator": _digest(trainer.accelerator.unwrap_model(trainer.discriminator).state_dict()),
        "balancer": trainer.balancer.state_dict()["ema_sums"],
        "first_batch": _digest({"x": first_batch}),
        "mel": metrics["loss/mel"],
    }
    (Path(output) / f"rank{trainer.rank}.json").write_text(json.dumps(report))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_keep_identical_weights_and_codebooks(tmp_path):
    from test_trainer import write_clips

    data = write_clips(tmp_path / "data")
    output = tmp_path / "run"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), str(HERE), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        __file__,
        str(data),
        str(output),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = [json.loads((output / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["distributed_type"].endswith("MULTI_CPU") for r in reports)  # DDP over gloo, not two solo runs
    for key in ("weights", "codebooks", "inited", "discriminator", "balancer"):
        assert reports[0][key] == reports[1][key], key
    assert all(v == 1.0 for v in reports[0]["inited"])
    # The ranks trained on different crops (so identical state is the synchronisation's doing).
    assert reports[0]["first_batch"] != reports[1]["first_batch"]
    # The checkpoint holds one RNG file per rank, and the exported folder loads.
    from encodec_hf import EncodecModel

    assert sorted(p.name for p in (output / "checkpoints" / "step_00000004").glob("rng_rank*.pt")) == [
        "rng_rank0.pt",
        "rng_rank1.pt",
    ]
    EncodecModel.from_pretrained(output)


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
