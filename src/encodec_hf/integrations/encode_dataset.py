"""The scale-out `encode-dataset` runner: each rank encodes its share of a dataset into resumable shard files.

`encode_dataset` is the whole run as `encodec-hf encode-dataset` (its command line is in `cli.py`) does it, under
`torchrun` / `accelerate launch` or alone: this rank's share via `split_dataset_by_node`, shards of
`shard_size` rows written atomically and skipped when already complete (so re-running resumes), a plan file
that refuses to mix shards of different runs, and a manifest written by rank 0 once every rank has finished.
`load_encoded_shards` reads the result back as one `datasets.Dataset`.

Threads: each batch is encoded inside `encodec_hf.threads.torch_threads(num_threads)`, one torch thread per process
by default (clip after clip of small kernels; several threads per process made a run on a shared 2-core machine
take 10-42 s instead of about 7 s), the caller's count restored after each batch. Use the cores with more ranks
(`torchrun --nproc-per-node N`), or `num_threads` / `--num-threads` / `$ENCODEC_HF_NUM_THREADS`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import EncodePlanMismatchError
from ..files import atomic_path, write_text_atomic
from ..threads import torch_threads
from .datasets import EncodecMapFunction, cast_audio_for_model, codes_features
from .hub import load_model

logger = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_FILE",
    "PLAN_FILE",
    "SHARD_FORMATS",
    "EncodePlanMismatchError",
    "encode_dataset",
    "load_encoded_shards",
    "run_encode_dataset",
]

PLAN_FILE = "encode_plan.json"
MANIFEST_FILE = "encode_manifest.json"
SHARD_FORMATS = ("parquet", "arrow")


def _write_json_atomic(path: Path, payload: dict) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True))


def _check_plan(output_dir: Path, plan: dict) -> None:
    """Record the run's plan, or refuse to mix shards with an earlier, different run."""
    path = output_dir / PLAN_FILE
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (previous.get(k), plan.get(k)) for k in set(previous) | set(plan) if previous.get(k) != plan.get(k)}
        if diff:
            details = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(diff.items()))
            raise EncodePlanMismatchError(
                f"{output_dir} holds shards of a different run ({details}). Resume with the same arguments and "
                f"number of processes, or write to a new --output-dir."
            )
        return
    _write_json_atomic(path, plan)


def _shard_rows(path: Path, fmt: str) -> int | None:
    """Row count of a finished shard file, or `None` if it is unreadable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if fmt == "parquet":
            return pq.ParquetFile(path).metadata.num_rows
        with pa.OSFile(str(path), "rb") as f:
            return pa.ipc.open_stream(f).read_all().num_rows
    except (OSError, pa.ArrowInvalid):
        return None


def _open_writer(path: Path, schema, fmt: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if fmt == "parquet":
        return pq.ParquetWriter(str(path), schema)
    return pa.ipc.new_stream(str(path), schema)


def run_encode_dataset(
    dataset,
    model,
    output_dir: str | os.PathLike,
    *,
    audio_column: str = "audio",
    bandwidth: float | None = None,
    batch_size: int = 8,
    shard_size: int = 1000,
    fmt: str = "parquet",
    rank: int = 0,
    world_size: int = 1,
    convert_channels: bool = False,
    progress: bool = True,
    plan_info: dict | None = None,
    num_threads: int | None = None,
) -> list[str]:
    """Encode this rank's share of `dataset` into shard files under `output_dir`.

    The rank's share is `datasets.distributed.split_dataset_by_node(dataset, rank, world_size)` (a
    contiguous block); it is cut into shards of `shard_size` rows named by their global row range,
    `shard-{start:09d}-{stop:09d}.{fmt}`. A shard is written to a temporary file and renamed when
    complete (`encodec_hf.files.atomic_path`), so after a crash the finished shards are kept and only the
    missing ones are encoded.

    Every output row keeps the dataset's other columns and adds `row_index` (its global row number)
    and the code columns of `codes_features`. `num_threads`: torch threads while a batch is encoded (module
    docstring; default one).

    Returns:
        `list[str]`: file names of this rank's shards (finished earlier or now), in row order.
    """
    import pyarrow as pa
    from datasets import Value
    from datasets.distributed import split_dataset_by_node
    from tqdm.auto import tqdm

    if fmt not in SHARD_FORMATS:
        raise ValueError(f"fmt must be one of {SHARD_FORMATS}, got {fmt!r}.")
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}.")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}.")
    if audio_column not in dataset.column_names:
        raise KeyError(f"Audio column {audio_column!r} not in dataset columns {dataset.column_names}.")
    fn = EncodecMapFunction(model, audio_column=audio_column, bandwidth=bandwidth, convert_channels=convert_channels)
    config = fn.config
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    dataset = cast_audio_for_model(dataset, audio_column, config=config)
    dataset = dataset.add_column("row_index", list(range(len(dataset))))
    plan = {
        "num_rows": len(dataset),
        "world_size": world_size,
        "shard_size": shard_size,
        "format": fmt,
        "audio_column": audio_column,
        "bandwidth": fn.bandwidth,
        "columns": sorted(dataset.column_names),
        "sampling_rate": config.sampling_rate,
        **(plan_info or {}),
    }
    _check_plan(output_dir, plan)

    part = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    kept = {k: v for k, v in dataset.features.items() if k not in (audio_column, "row_index")}
    features = codes_features(config, {"row_index": Value("int64"), **kept})
    schema = features.arrow_schema

    starts = list(range(0, len(part), shard_size))
    bar = tqdm(total=len(part), desc=f"encode rank {rank}/{world_size}", unit="clip", disable=not progress)
    names = []
    for start in starts:
        shard = part.select(range(start, min(start + shard_size, len(part))))
        first, last = shard[0]["row_index"], shard[len(shard) - 1]["row_index"]
        name = f"shard-{first:09d}-{last + 1:09d}.{fmt}"
        names.append(name)
        final = output_dir / name
        if final.exists() and _shard_rows(final, fmt) == len(shard):
            logger.info("Shard %s already complete; skipping.", name)
            bar.update(len(shard))
            continue
        with atomic_path(final) as tmp:
            writer = _open_writer(tmp, schema, fmt)
            try:
                for batch in shard.iter(batch_size=batch_size):
                    with torch_threads(num_threads):
                        out = fn(batch)
                    columns = {k: batch[k] for k in ("row_index", *kept)}
                    # pyarrow converts nested lists, not lists of multi-dimensional arrays.
                    columns.update(
                        {k: [v.tolist() if isinstance(v, np.ndarray) else v for v in vs] for k, vs in out.items()}
                    )
                    encoded = features.encode_batch(columns)
                    writer.write_table(pa.Table.from_pydict(encoded, schema=schema))
                    bar.update(len(batch["row_index"]))
            finally:
                writer.close()
    bar.close()
    return names


def load_encoded_shards(output_dir: str | os.PathLike):
    """Load a finished `encode-dataset` output as one `datasets.Dataset`, rows in original order."""
    from datasets import Dataset, concatenate_datasets

    output_dir = Path(output_dir)
    manifest_path = output_dir / MANIFEST_FILE
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path} is missing: the run has not finished (re-run it to resume).")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    files = [str(output_dir / name) for name in manifest["shards"]]
    if manifest["format"] == "parquet":
        return Dataset.from_parquet(files)
    return concatenate_datasets([_arrow_stream(f) for f in files])


def _arrow_stream(path: str):
    import pyarrow as pa
    from datasets import Dataset

    with pa.OSFile(path, "rb") as f:
        return Dataset(pa.ipc.open_stream(f).read_all())


def _load_source(dataset: str, split: str, config_name: str | None, revision: str | None):
    """A Hub id, a `save_to_disk` folder, or data files / a folder that `load_dataset` understands."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    path = Path(dataset).expanduser()
    if not path.exists() and (path.is_absolute() or dataset.startswith((".", "~"))):
        raise FileNotFoundError(f"No dataset at {dataset}: give an existing folder/file or a Hub dataset id.")
    if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        loaded = load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            if split not in loaded:
                raise KeyError(f"Split {split!r} not in {dataset} (splits: {list(loaded)}).")
            loaded = loaded[split]
        return loaded
    if path.is_file() and path.suffix in (".parquet", ".arrow", ".csv", ".json", ".jsonl"):
        builder = {".jsonl": "json"}.get(path.suffix, path.suffix[1:])
        return load_dataset(builder, data_files={split: str(path)}, split=split)
    return load_dataset(dataset, config_name, split=split, revision=revision)


def _distributed_env() -> tuple[int, int, int, int]:
    """(rank, world_size, local_rank, local_world_size) from torchrun / accelerate launch variables."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    return (
        int(env.get("RANK", "0")),
        world,
        int(env.get("LOCAL_RANK", "0")),
        int(env.get("LOCAL_WORLD_SIZE", str(world))),
    )


def encode_dataset(
    dataset: str,
    model: str,
    output_dir: str | os.PathLike,
    *,
    split: str = "train",
    name: str | None = None,
    revision: str | None = None,
    audio_column: str = "audio",
    bandwidth: float | None = None,
    batch_size: int = 8,
    shard_size: int = 1000,
    fmt: str = "parquet",
    device: str = "auto",
    convert_channels: bool = False,
    progress: bool = True,
    num_threads: int | None = None,
) -> dict | None:
    """The whole `encode-dataset` run of this process: its rank's shards, then (rank 0) the manifest.

    Rank and world size come from the `torchrun` / `accelerate launch` environment (`RANK`, `WORLD_SIZE`,
    `LOCAL_RANK`, `LOCAL_WORLD_SIZE`; one process otherwise); with several ranks a gloo/NCCL process group is
    created for the final gather and destroyed afterwards.

    Args:
        dataset: a Hub dataset id, a `save_to_disk` folder, or a Parquet/Arrow/CSV/JSON file or folder.
        model: an EnCodec model id or local folder.
        device: `"auto"` (`cuda:LOCAL_RANK` when CUDA is available, else CPU), or a torch device.
        The others: as in `run_encode_dataset`.

    Returns:
        The manifest written (rank 0), `None` on other ranks.
    """
    import torch.distributed as dist

    rank, world, local_rank, local_world = _distributed_env()
    torch_device = torch.device(
        f"cuda:{local_rank % torch.cuda.device_count()}"
        if device == "auto" and torch.cuda.is_available()
        else ("cpu" if device == "auto" else device)
    )
    created_group = False
    if world > 1 and not dist.is_initialized():
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
        created_group = True
    try:
        codec = load_model(model, device=torch_device)
        codec.config.resolve_bandwidth(bandwidth)  # refuse a bad bandwidth before reading any data
        source = _load_source(dataset, split, name, revision)
        names = run_encode_dataset(
            source,
            codec,
            output_dir,
            audio_column=audio_column,
            bandwidth=bandwidth,
            batch_size=batch_size,
            shard_size=shard_size,
            fmt=fmt,
            rank=rank,
            world_size=world,
            convert_channels=convert_channels,
            progress=progress,
            plan_info={"dataset": dataset, "split": split, "name": name, "model": model},
            num_threads=num_threads,
        )
        all_names = [names]
        if world > 1:
            all_names = [None] * world
            dist.all_gather_object(all_names, names)  # also a barrier: every rank has finished
        if rank != 0:
            return None
        manifest = {
            "shards": sorted(n for per_rank in all_names for n in per_rank),
            "format": fmt,
            "num_rows": len(source),
            "world_size": world,
            "model": model,
            "bandwidth": bandwidth,
        }
        _write_json_atomic(Path(output_dir) / MANIFEST_FILE, manifest)
        return manifest
    finally:
        if created_group:
            dist.destroy_process_group()
