"""`encode-dataset` runner: shards, resume after a crash, plan checks, and a 2-process torchrun (gloo) run."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Audio, Dataset

from encodec_hf import cli
from encodec_hf.errors import EncodePlanMismatchError
from encodec_hf.integrations import datasets as hf_datasets
from encodec_hf.integrations.encode_dataset import MANIFEST_FILE, load_encoded_shards, run_encode_dataset
from tests.hf_fixtures import one_torch_thread, save_tiny_model, tiny_model, write_clips


def _encode_dataset_command(argv: list[str]) -> int:
    """`encodec-hf encode-dataset ARGV` in this process."""
    return cli.main(["encode-dataset", *argv])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_torch_thread()


SPECS = [(3000, 16000, 2), (1203, 8000, 2), (5000, 22050, 2), (40, 8000, 2), (2377, 8000, 2), (900, 8000, 2)]
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A stereo model and a save_to_disk dataset (audio bytes embedded, plus id/text columns)."""
    root = tmp_path_factory.mktemp("encode_dataset")
    save_tiny_model(root / "model", "stereo")
    paths = write_clips(root / "clips", SPECS, fmt="flac")
    rows = {
        "audio": [{"bytes": Path(p).read_bytes(), "path": Path(p).name} for p in paths],
        "id": [f"utt{i}" for i in range(len(paths))],
        "text": [f"clip number {i}" for i in range(len(paths))],
    }
    ds = Dataset.from_dict(rows).cast_column("audio", Audio(decode=False))
    ds.save_to_disk(root / "dataset")
    ds.to_parquet(root / "dataset.parquet")
    return root


def _args(workdir: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(workdir / "dataset"),
        "--model",
        str(workdir / "model"),
        "--output-dir",
        str(out),
        "--bandwidth",
        "4",
        "--batch-size",
        "2",
        "--shard-size",
        "2",
        "--no-progress",
        *extra,
    ]


def _read_union(out: Path, fmt: str = "parquet") -> pa.Table:
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    tables = []
    for name in manifest["shards"]:
        if fmt == "parquet":
            tables.append(pq.read_table(out / name))
        else:
            with pa.OSFile(str(out / name), "rb") as f:
                tables.append(pa.ipc.open_stream(f).read_all())
    return pa.concat_tables(tables)


@pytest.fixture(scope="module")
def single_run(workdir):
    out = workdir / "single"
    assert _encode_dataset_command(_args(workdir, out)) == 0
    return out


def test_single_process_run_writes_shards_and_manifest(workdir, single_run):
    manifest = json.loads((single_run / MANIFEST_FILE).read_text())
    assert manifest["shards"] == [
        "shard-000000000-000000002.parquet",
        "shard-000000002-000000004.parquet",
        "shard-000000004-000000006.parquet",
    ]
    table = _read_union(single_run)
    assert table.column("row_index").to_pylist() == list(range(len(SPECS)))
    assert table.column("id").to_pylist() == [f"utt{i}" for i in range(len(SPECS))]
    assert table.schema.field("audio_codes").type == pa.list_(pa.list_(pa.list_(pa.int16())))
    assert "audio_scales" in table.column_names and "audio" not in table.column_names
    # The shards reload through datasets with their features (int16 codes) intact.
    loaded = load_encoded_shards(single_run)
    assert loaded.features["audio_codes"].feature.feature.feature.dtype == "int16"
    assert loaded["num_samples"] == [math.ceil(n * 8000 / rate) for n, rate, _ in SPECS]
    # Codes equal the in-memory datasets recipe (the runner adds sharding only).
    ds = Dataset.load_from_disk(str(workdir / "dataset"))
    fn = hf_datasets.EncodecMapFunction(str(workdir / "model"), bandwidth=4.0)
    mapped = hf_datasets.cast_audio_for_model(ds, config=fn.config).map(fn, batched=True, batch_size=3)
    assert table.column("audio_codes").to_pylist() == mapped["audio_codes"]


def test_two_process_torchrun_equals_single_process(workdir, single_run):
    out = workdir / "torchrun"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # GLOO_SOCKET_IFNAME=lo keeps the ranks' traffic on loopback whatever the hostname resolves to.
    env = dict(
        os.environ, GLOO_SOCKET_IFNAME="lo", PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={port}",
        "-m",
        "encodec_hf",
        "encode-dataset",
        *_args(workdir, out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["world_size"] == 2
    # split_dataset_by_node gives rank 0 rows 0-2 and rank 1 rows 3-5; each cuts its share into 2-row shards.
    assert manifest["shards"] == [
        "shard-000000000-000000002.parquet",
        "shard-000000002-000000003.parquet",
        "shard-000000003-000000005.parquet",
        "shard-000000005-000000006.parquet",
    ]
    assert _read_union(out).to_pylist() == _read_union(single_run).to_pylist()


def test_resume_after_crash_skips_finished_shards(workdir, single_run, monkeypatch):
    out = workdir / "resume"
    model = tiny_model("stereo")
    model.load_state_dict(type(model).from_pretrained(str(workdir / "model")).state_dict())
    ds = Dataset.load_from_disk(str(workdir / "dataset"))
    calls = []
    original = hf_datasets.EncodecMapFunction.__call__

    def crash_on_third_batch(self, batch, rank=None):
        calls.append(list(batch["row_index"]))
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return original(self, batch, rank)

    monkeypatch.setattr(hf_datasets.EncodecMapFunction, "__call__", crash_on_third_batch)
    kwargs = dict(bandwidth=4.0, batch_size=2, shard_size=2, progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_encode_dataset(ds, model, out, **kwargs)
    done = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert done == ["encode_plan.json", "shard-000000000-000000002.parquet", "shard-000000002-000000004.parquet"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the interrupted shard left no partial file
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")}

    calls.clear()
    monkeypatch.setattr(hf_datasets.EncodecMapFunction, "__call__", original)
    counting = []
    monkeypatch.setattr(
        hf_datasets.EncodecMapFunction,
        "__call__",
        lambda self, batch, rank=None: counting.append(list(batch["row_index"])) or original(self, batch, rank),
    )
    names = run_encode_dataset(ds, model, out, **kwargs)
    assert counting == [[4, 5]]  # only the missing shard was encoded
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*") if p.name in mtimes} == mtimes
    tables = pa.concat_tables([pq.read_table(out / n) for n in names])
    assert tables.to_pylist() == _read_union(single_run).to_pylist()


def test_changed_arguments_are_refused(workdir, single_run, capsys):
    args = _args(workdir, single_run)
    args[args.index("--bandwidth") + 1] = "8"
    assert _encode_dataset_command(args) == 2
    err = capsys.readouterr().err
    assert "holds shards of a different run" in err and "bandwidth: 4.0 -> 8.0" in err
    with pytest.raises(EncodePlanMismatchError, match="new --output-dir"):
        run_encode_dataset(
            Dataset.load_from_disk(str(workdir / "dataset")), tiny_model("stereo"), single_run, shard_size=3
        )


def test_arrow_format_and_parquet_source(workdir, single_run):
    out = workdir / "arrow"
    args = _args(workdir, out, "--format", "arrow")
    args[0] = str(workdir / "dataset.parquet")
    assert _encode_dataset_command(args) == 0
    assert _read_union(out, "arrow").to_pylist() == _read_union(single_run).to_pylist()
    assert load_encoded_shards(out)["row_index"] == list(range(len(SPECS)))


def test_bad_arguments(workdir, tmp_path, capsys):
    args = _args(workdir, tmp_path / "o", "--audio-column", "speech")
    assert _encode_dataset_command(args) == 2
    assert "Audio column 'speech' not in dataset columns" in capsys.readouterr().err
    args = _args(workdir, tmp_path / "o2")
    args[args.index("--bandwidth") + 1] = "5"
    assert _encode_dataset_command(args) == 2
    assert "Select one of [2.0, 4.0, 8.0]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _encode_dataset_command(["x", "--model", "m", "--output-dir", "o", "--format", "csv"])
    with pytest.raises(FileNotFoundError, match="has not finished"):
        load_encoded_shards(tmp_path / "o2")
    missing = _args(workdir, tmp_path / "o3")
    missing[0] = str(tmp_path / "no_such_dataset")
    assert _encode_dataset_command(missing) == 2
    assert "No dataset at" in capsys.readouterr().err
