"""Tokenise audio datasets with EnCodec: `datasets.map` helpers and the scale-out `encode-dataset` runner.

Recipe (one machine; see the README for GPUs and clusters)::

    from datasets import load_dataset
    from encodec_hf.hf_datasets import EncodecMapFunction, cast_audio_for_model

    ds = load_dataset("my/dataset", split="train")
    ds = cast_audio_for_model(ds, "audio", sampling_rate=24_000)  # Audio(sampling_rate=..., decode=False)
    fn = EncodecMapFunction("facebook/encodec_24khz", bandwidth=6.0)
    codes = ds.map(fn, batched=True, batch_size=16, num_proc=2, features=fn.features(ds), remove_columns=["audio"])

Why `decode=False`: `datasets` >= 4 decodes audio through torchcodec, which needs FFmpeg and has been
reported to downmix stereo to mono (huggingface/datasets#8005). The column keeps its target
`sampling_rate` in the `Audio` feature, but the bytes are decoded here with soundfile (libsndfile:
WAV, FLAC, OGG, ...; every channel kept) and resampled with `encodec_hf.audio_io.resample` when the file's
rate differs. Columns that are already decoded (torchcodec decoders or `{"array", "sampling_rate"}` dicts)
are accepted too.

Output columns: `audio_codes` (`[N, K, F]` int16: chunks, codebooks, frames), `audio_scales` (`[N]`
float32, only for models with `normalize=True` such as 48 kHz) and `num_samples` (clip length at the
model rate, needed to decode back to the exact length). Batched results equal per-item results: see
`encodec_hf.integrations.clips` for the padding rule that guarantees it.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio_io import convert_audio
from ..errors import EncodecInputError, SamplingRateError
from .clips import ClipCodes, check_bandwidth, codes_dtype, decode_clip, encode_clips, load_model

logger = logging.getLogger(__name__)

__all__ = [
    "EncodecMapFunction",
    "EncodePlanMismatchError",
    "cast_audio_for_model",
    "codes_features",
    "decode_audio_value",
    "decode_codes_example",
    "encode_audio_dataset",
    "encode_dataset_main",
    "load_encoded_shards",
    "run_encode_dataset",
]

PLAN_FILE = "encode_plan.json"
MANIFEST_FILE = "encode_manifest.json"
SHARD_FORMATS = ("parquet", "arrow")


# --------------------------------------------------------------------------------------------------
# Decoding a dataset audio value (stereo-safe) and bringing it to the model's rate and channels.
# --------------------------------------------------------------------------------------------------


def decode_audio_value(value: Any) -> tuple[np.ndarray, int]:
    """Decode one value of an audio column, keeping every channel.

    Args:
        value: `{"bytes", "path"}` (an `Audio(decode=False)` value), `{"array", "sampling_rate"}`, an
            object with `get_all_samples()` (a torchcodec `AudioDecoder`), or a file path.

    Returns:
        `(audio, sampling_rate)` with `audio` a float32 `[C, T]` array.

    Raises:
        EncodecInputError: the value is none of the above or its bytes cannot be decoded.
    """
    import soundfile as sf

    if isinstance(value, (str, os.PathLike)):
        value = {"path": os.fspath(value), "bytes": None}
    if hasattr(value, "get_all_samples"):  # torchcodec AudioDecoder from datasets' decode=True path
        samples = value.get_all_samples()
        return samples.data.float().numpy().reshape(-1, samples.data.shape[-1]), int(samples.sample_rate)
    if not isinstance(value, dict):
        raise EncodecInputError(f"Unsupported audio value of type {type(value).__name__}; expected a dict or path.")
    if value.get("array") is not None:
        if value.get("sampling_rate") is None:
            raise EncodecInputError("An audio dict with 'array' must also give its 'sampling_rate'.")
        array = np.asarray(value["array"], dtype=np.float32)
        return (array[None] if array.ndim == 1 else array), int(value["sampling_rate"])
    source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value.get("path")
    if source is None:
        raise EncodecInputError(f"Audio value has neither 'bytes' nor 'path': {value!r}.")
    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)  # [T, C]
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise EncodecInputError(f"Could not decode audio {value.get('path') or '<bytes>'}: {err}") from err
    return np.ascontiguousarray(data.T), int(rate)


def _to_model_audio(audio: np.ndarray, rate: int, config, convert_channels: bool, where: str) -> np.ndarray:
    """Resample to `config.sampling_rate` and check / convert the channel count. `[C, T]` in and out."""
    channels = audio.shape[0]
    if channels != config.audio_channels and not convert_channels:
        hint = (
            " If this column was decoded by datasets/torchcodec, it may have been downmixed "
            "(huggingface/datasets#8005): cast it with cast_audio_for_model(...) to decode it here."
            if channels == 1
            else ""
        )
        raise EncodecInputError(
            f"{where}: audio has {channels} channel(s) but the model expects {config.audio_channels}. "
            f"Pass convert_channels=True to average to mono / duplicate to stereo.{hint}"
        )
    converted = convert_audio(torch.from_numpy(audio), rate, config.sampling_rate, config.audio_channels)
    return np.ascontiguousarray(converted.numpy(), dtype=np.float32)


def cast_audio_for_model(dataset, column: str = "audio", sampling_rate: int | None = None, config=None):
    """`dataset.cast_column(column, Audio(sampling_rate=..., decode=False))`: the stereo-safe recipe.

    The target rate is recorded in the feature (as `cast_column(..., Audio(sampling_rate=...))` does) and
    `EncodecMapFunction` resamples to it; decoding stays off so torchcodec never touches the channels.
    """
    from datasets import Audio

    if sampling_rate is None:
        if config is None:
            raise ValueError("Give sampling_rate= or config= (the model's EncodecConfig).")
        sampling_rate = config.sampling_rate
    if column not in dataset.column_names:
        raise KeyError(f"Column {column!r} not in dataset columns {dataset.column_names}.")
    return dataset.cast_column(column, Audio(sampling_rate=int(sampling_rate), decode=False))


def codes_features(config, extra=None):
    """`datasets.Features` of the code columns (plus `extra`, a dict or `Features` of kept columns)."""
    from datasets import Features, List, Value

    code_type = "int16" if codes_dtype(config) == np.int16 else "int32"
    features = dict(extra or {})
    features["audio_codes"] = List(List(List(Value(code_type))))
    if config.normalize:
        features["audio_scales"] = List(Value("float32"))
    features["num_samples"] = Value("int64")
    return Features(features)


def _pick_device(device: str | None, rank: int | None) -> torch.device:
    if device not in (None, "auto"):
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device(f"cuda:{(rank or 0) % torch.cuda.device_count()}")
    return torch.device("cpu")


class EncodecMapFunction:
    """Batched `Dataset.map` function: audio column in, `audio_codes` / `audio_scales` / `num_samples` out.

    Args:
        model (`EncodecModel` or `str`): a model, or a name/path to load it from. Give a path with
            `num_proc > 1`: each worker then loads its own copy (required with spawn on GPUs).
        audio_column (`str`): the audio column, ideally cast with `cast_audio_for_model`.
        bandwidth (`float`, *optional*): kbps, one of `config.target_bandwidths`; `None` = model default.
        device (`str`, *optional*): `"auto"` (default) picks `cuda:{rank % n_gpu}` when `with_rank=True`
            and CUDA is available, else CPU.
        convert_channels (`bool`): average stereo to mono / duplicate mono to stereo instead of raising.
        num_threads (`int`, *optional*): torch CPU threads when the model is loaded. Default: unchanged in the
            calling process, 1 in `num_proc` workers (more than 1 in a forked worker can deadlock in OpenMP;
            use the spawn start method if workers need several threads).

    Call it as `fn(batch)` or, with `map(..., with_rank=True)`, `fn(batch, rank)`.
    """

    def __init__(
        self,
        model,
        audio_column: str = "audio",
        bandwidth: float | None = None,
        device: str | None = "auto",
        convert_channels: bool = False,
        num_threads: int | None = None,
    ):
        if isinstance(model, (str, os.PathLike)):
            self.model_name_or_path, self._model = os.fspath(model), None
            from ..codec.configuration import EncodecConfig

            self.config = EncodecConfig.from_pretrained(self.model_name_or_path)
        else:
            self.model_name_or_path, self._model = None, model
            self.config = model.config
        self.bandwidth = check_bandwidth(self.config, bandwidth)
        self.audio_column = audio_column
        self.device = device
        self.convert_channels = convert_channels
        self.num_threads = num_threads
        self._owner_pid = os.getpid()

    def __getstate__(self) -> dict:
        # Workers (forked or spawned) reload from the path instead of receiving pickled weights, and a
        # CUDA model is never shipped to another process.
        if self.model_name_or_path is None:
            # Weight-normed convolutions are torch parametrizations, which cannot be pickled.
            raise TypeError(
                "EncodecMapFunction built from a model object cannot be sent to other processes; with "
                "num_proc > 1 pass the model's name or path instead (each worker then loads its own copy)."
            )
        state = dict(self.__dict__)
        # Neither the loaded model nor the creating process id travels: the state stays small and its hash
        # (datasets' cache fingerprint) stays the same from one session to the next.
        state["_model"] = None
        state["_owner_pid"] = None
        return state

    def features(self, dataset=None):
        """Output features; with `dataset`, its other columns are kept (pass to `map(features=...)`)."""
        extra = None
        if dataset is not None:
            extra = {k: v for k, v in dataset.features.items() if k != self.audio_column}
        return codes_features(self.config, extra)

    def model_for(self, rank: int | None = None):
        """The model, loaded on first use on the device that `rank` selects."""
        if self._model is None:
            if self.num_threads:
                torch.set_num_threads(self.num_threads)
            elif os.getpid() != self._owner_pid:
                # A `num_proc` worker: one thread each avoids oversubscribing the cores, and a forked child
                # must not re-enter the parent's OpenMP pool (it deadlocks with GNU OpenMP).
                torch.set_num_threads(1)
            self._model = load_model(self.model_name_or_path, device=_pick_device(self.device, rank))
        elif self.device not in (None, "auto") or rank is not None:
            target = _pick_device(self.device, rank)
            if next(self._model.parameters()).device != target:
                self._model = self._model.to(target)
        return self._model

    def encode_batch(self, values: list[Any], rank: int | None = None) -> list[ClipCodes]:
        """Decode, resample and encode a list of audio-column values."""
        model = self.model_for(rank)
        clips = []
        for i, value in enumerate(values):
            audio, rate = decode_audio_value(value)
            clips.append(_to_model_audio(audio, rate, self.config, self.convert_channels, f"Row {i} of the batch"))
        return encode_clips(model, clips, self.bandwidth)

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        if self.audio_column not in batch:
            raise KeyError(f"Audio column {self.audio_column!r} not in batch columns {list(batch)}.")
        encoded = self.encode_batch(batch[self.audio_column], rank)
        out: dict[str, list] = {
            "audio_codes": [c.audio_codes for c in encoded],
            "num_samples": [c.num_samples for c in encoded],
        }
        if self.config.normalize:
            out["audio_scales"] = [c.audio_scales for c in encoded]
        return out


def encode_audio_dataset(
    dataset,
    model,
    *,
    audio_column: str = "audio",
    bandwidth: float | None = None,
    batch_size: int = 16,
    num_proc: int | None = None,
    device: str | None = "auto",
    convert_channels: bool = False,
    keep_audio: bool = False,
):
    """The whole recipe in one call: cast the audio column, then a batched `map` to code columns.

    On CUDA with `num_proc > 1` this switches `multiprocess` (the pool `datasets` uses) to the spawn start
    method (CUDA cannot be re-initialised in a forked child, huggingface/datasets#6435) and passes
    `with_rank=True`, so worker `rank` runs on `cuda:{rank % n_gpu}`. Give `model` as a name or path then,
    so that each worker loads its own copy.

    Returns:
        `datasets.Dataset` with `audio_codes`, `audio_scales` (normalised models) and `num_samples`, plus
        the other columns (and the audio column if `keep_audio`).
    """
    fn = EncodecMapFunction(
        model, audio_column=audio_column, bandwidth=bandwidth, device=device, convert_channels=convert_channels
    )
    dataset = cast_audio_for_model(dataset, audio_column, config=fn.config)
    use_cuda = _pick_device(device, 0).type == "cuda"
    multi = num_proc is not None and num_proc > 1
    if use_cuda and multi:
        import multiprocess

        if multiprocess.get_start_method(allow_none=True) != "spawn":
            logger.info("Switching multiprocess to the 'spawn' start method for CUDA workers.")
            multiprocess.set_start_method("spawn", force=True)
    features = fn.features(dataset)
    if keep_audio:
        features[audio_column] = dataset.features[audio_column]
    return dataset.map(
        fn,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        with_rank=multi or use_cuda,
        features=features,
        remove_columns=[] if keep_audio else [audio_column],
    )


def decode_codes_example(example: dict, model, output_column: str = "audio_values") -> dict:
    """Per-row `map` function that decodes `audio_codes` (+ `audio_scales`) back to `[C, T]` audio."""
    clip = ClipCodes(np.asarray(example["audio_codes"]), example.get("audio_scales"), int(example["num_samples"]))
    if clip.audio_scales is not None:
        clip.audio_scales = np.asarray(clip.audio_scales, dtype=np.float32)
    return {output_column: decode_clip(model, clip), "sampling_rate": model.config.sampling_rate}


# --------------------------------------------------------------------------------------------------
# Scale-out runner: rank share via split_dataset_by_node, resumable shards, one manifest.
# --------------------------------------------------------------------------------------------------


class EncodePlanMismatchError(ValueError):
    """The output directory holds shards of a different run (other dataset, model, world size, ...)."""


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


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
) -> list[str]:
    """Encode this rank's share of `dataset` into shard files under `output_dir`.

    The rank's share is `datasets.distributed.split_dataset_by_node(dataset, rank, world_size)` (a
    contiguous block); it is cut into shards of `shard_size` rows named by their global row range,
    `shard-{start:09d}-{stop:09d}.{fmt}`. A shard is written to a temporary file and renamed when
    complete, so after a crash the finished shards are kept and only the missing ones are encoded.

    Every output row keeps the dataset's other columns and adds `row_index` (its global row number)
    and the code columns of `codes_features`.

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
        tmp = output_dir / f".{name}.tmp-{os.getpid()}"
        writer = _open_writer(tmp, schema, fmt)
        try:
            for batch in shard.iter(batch_size=batch_size):
                out = fn(batch)
                columns = {k: batch[k] for k in ("row_index", *kept)}
                # pyarrow converts nested lists, not lists of multi-dimensional arrays.
                columns.update(
                    {k: [v.tolist() if isinstance(v, np.ndarray) else v for v in vs] for k, vs in out.items()}
                )
                encoded = features.encode_batch(columns)
                writer.write_table(pa.Table.from_pydict(encoded, schema=schema))
                bar.update(len(batch["row_index"]))
        except BaseException:
            writer.close()
            tmp.unlink(missing_ok=True)
            raise
        writer.close()
        os.replace(tmp, final)
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


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="encodec-hf encode-dataset",
        description=(
            "Tokenise an audio dataset into Parquet/Arrow shards of EnCodec codes. Resumable: re-run the same "
            "command after a crash. Runs unchanged under torchrun / accelerate launch (one share per rank)."
        ),
    )
    p.add_argument("dataset", help="Hub dataset id, a save_to_disk folder, or a Parquet/Arrow file or folder")
    p.add_argument("--model", required=True, help="EnCodec model id or local folder (save_pretrained)")
    p.add_argument("--output-dir", required=True, help="folder for the shards, the plan and the manifest")
    p.add_argument("--split", default="train")
    p.add_argument("--name", default=None, help="dataset configuration name")
    p.add_argument("--revision", default=None)
    p.add_argument("--audio-column", default="audio")
    p.add_argument("--bandwidth", type=float, default=None, help="kbps; default: the model's default")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--shard-size", type=int, default=1000, help="rows per shard file")
    p.add_argument("--format", choices=SHARD_FORMATS, default="parquet")
    p.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK if available, else cpu), cpu, cuda:0")
    p.add_argument("--convert-channels", action="store_true", help="mix to mono / duplicate to stereo as needed")
    p.add_argument("--no-progress", action="store_true")
    return p


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


def encode_dataset_main(argv: list[str] | None = None) -> int:
    """Entry point of `encodec-hf encode-dataset` (and `python -m encodec_hf encode-dataset`)."""
    import torch.distributed as dist

    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rank, world, local_rank, local_world = _distributed_env()
    device = torch.device(
        f"cuda:{local_rank % torch.cuda.device_count()}"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    if device.type == "cpu":
        # Processes on one machine share its cores; the default (all cores each) oversubscribes them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    created_group = False
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        created_group = True
    try:
        model = load_model(args.model, device=device)
        check_bandwidth(model.config, args.bandwidth)
        dataset = _load_source(args.dataset, args.split, args.name, args.revision)
        names = run_encode_dataset(
            dataset,
            model,
            args.output_dir,
            audio_column=args.audio_column,
            bandwidth=args.bandwidth,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            fmt=args.format,
            rank=rank,
            world_size=world,
            convert_channels=args.convert_channels,
            progress=not args.no_progress,
            plan_info={"dataset": args.dataset, "split": args.split, "name": args.name, "model": args.model},
        )
        all_names = [names]
        if world > 1:
            all_names = [None] * world
            dist.all_gather_object(all_names, names)  # also a barrier: every rank has finished
        if rank == 0:
            shards = sorted(n for per_rank in all_names for n in per_rank)
            manifest = {
                "shards": shards,
                "format": args.format,
                "num_rows": len(dataset),
                "world_size": world,
                "model": args.model,
                "bandwidth": args.bandwidth,
            }
            _write_json_atomic(Path(args.output_dir) / MANIFEST_FILE, manifest)
            print(f"Wrote {len(shards)} shard(s) for {len(dataset)} rows to {args.output_dir}")
    except (EncodecInputError, SamplingRateError, EncodePlanMismatchError, KeyError, FileNotFoundError) as err:
        print(f"encode-dataset: error: {err}", file=sys.stderr)
        return 2
    finally:
        if created_group:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(encode_dataset_main())
