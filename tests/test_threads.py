"""Thread counts of the many-small-ops loops (`encodec_hf.threads`): one thread by default, the user's explicit
choice respected, an override honoured, and the caller's count restored after every call (errors included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import encodec_hf.threads as threads_module
from encodec_hf.ecdc.lm import EncodecLM, EncodecLMConfig
from encodec_hf.errors import ThreadCountError
from encodec_hf.streaming import StreamingDecoder, StreamingEncoder
from encodec_hf.threads import ENV_VAR, resolve_num_threads, torch_threads
from tests.hf_fixtures import save_tiny_model, tiny_model, write_clips

OUTSIDE = 2  # the caller's count in these tests (set even on a 1-core machine: torch allows it)


@pytest.fixture(autouse=True)
def _clean_thread_settings(monkeypatch):
    """No thread variable set, and torch's start-up default equal to the caller's count (so it reads as "the user
    chose nothing"); the previous count is restored after the test."""
    for name in (ENV_VAR, *threads_module.USER_THREAD_ENV_VARS):
        monkeypatch.delenv(name, raising=False)
    previous = torch.get_num_threads()
    torch.set_num_threads(OUTSIDE)
    monkeypatch.setattr(threads_module, "torch_default_threads", lambda: OUTSIDE)
    yield
    torch.set_num_threads(previous)


def test_resolution_order(monkeypatch):
    assert resolve_num_threads() == 1  # nothing chosen: the small-op default
    assert resolve_num_threads(default=None) is None
    assert resolve_num_threads(3) == 3  # an argument wins over everything
    monkeypatch.setenv(ENV_VAR, "4")
    assert resolve_num_threads() == 4 and resolve_num_threads(3) == 3
    monkeypatch.setenv(ENV_VAR, "inherit")
    assert resolve_num_threads() is None
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own setting is left alone
    assert resolve_num_threads() is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    torch.set_num_threads(3)  # a torch.set_num_threads call: another count than torch's default
    assert resolve_num_threads() is None


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_bad_env_value_names_the_variable(monkeypatch, bad):
    monkeypatch.setenv(ENV_VAR, bad)
    with pytest.raises(ThreadCountError, match=ENV_VAR):
        resolve_num_threads()
    enc = StreamingEncoder(tiny_model("mono"))
    with pytest.raises(ThreadCountError, match=ENV_VAR):
        enc.push(torch.zeros(1, 1, 160))
    assert not enc.state.broken  # refused before the stream changed
    monkeypatch.delenv(ENV_VAR)
    enc.push(torch.zeros(1, 1, 160))


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_argument(bad):
    with pytest.raises(ValueError, match="num_threads"):
        resolve_num_threads(bad)


def test_scope_sets_and_restores_even_on_error():
    with torch_threads() as inside:
        assert inside == torch.get_num_threads() == 1
        with torch_threads():  # nested: leaves the outer scope's count
            assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == OUTSIDE
    with torch_threads(3):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == OUTSIDE
    with pytest.raises(RuntimeError), torch_threads():
        raise RuntimeError("inside the loop")
    assert torch.get_num_threads() == OUTSIDE


def _recording(monkeypatch, target: str, seen: list[int]):
    """Wraps `target` (a module attribute) to record the torch thread count it runs with."""
    module_name, attr = target.rsplit(".", 1)
    module = __import__(module_name, fromlist=[attr])
    original = getattr(module, attr)

    def wrapper(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, attr, wrapper)


def test_frame_streams_run_on_one_thread_and_restore(monkeypatch):
    model = tiny_model("mono")
    seen: list[int] = []
    _recording(monkeypatch, "encodec_hf.streaming.streams.stream_step", seen)
    _recording(monkeypatch, "encodec_hf.streaming.streams.stream_flush", seen)
    audio = torch.randn(1, 1, 1200, generator=torch.Generator().manual_seed(0)) * 0.1
    for num_threads, expected in ((None, 1), (3, 3)):
        seen.clear()
        enc, dec = StreamingEncoder(model, num_threads=num_threads), StreamingDecoder(model, num_threads=num_threads)
        out = torch.cat([enc.push(audio[..., i : i + 160]) for i in range(0, 1200, 160)] + [enc.flush()], -1)
        assert torch.get_num_threads() == OUTSIDE  # restored after every push / flush
        dec.push(out)
        dec.flush()
        assert seen and set(seen) == {expected}, seen
        assert torch.get_num_threads() == OUTSIDE
    # A failing push restores the count too (the stream is then broken, as documented).
    enc = StreamingEncoder(model)
    monkeypatch.setattr("encodec_hf.streaming.streams.stream_step", lambda *a: (_ for _ in ()).throw(RuntimeError))
    with pytest.raises(RuntimeError):
        enc.push(audio)
    assert torch.get_num_threads() == OUTSIDE


def test_lm_runs_on_one_thread_by_default_and_its_plan_follows(monkeypatch):
    torch.manual_seed(0)
    lm = EncodecLM(EncodecLMConfig(num_codebooks=4, past_context=20)).eval()
    codes = torch.randint(1024, (4, 30), generator=torch.Generator().manual_seed(1))
    default = [c.copy() for c in lm.iter_cdfs(codes, block_frames=8)]
    assert lm._plan.key.num_threads == 1 and torch.get_num_threads() == OUTSIDE
    state = lm.init_state()
    lm.step_cdfs(None, state, 4)
    assert lm._plan.key.num_threads == 1 and torch.get_num_threads() == OUTSIDE
    lm.num_threads = 3
    overridden = list(lm.iter_cdfs(codes, block_frames=8))
    assert lm._plan.key.num_threads == 3 and torch.get_num_threads() == OUTSIDE
    assert len(overridden) == len(default)
    # The environment variable reaches the LM loaded inside `compress` / `decompress`.
    lm.num_threads = None
    monkeypatch.setenv(ENV_VAR, "2")
    lm.step_cdfs(None, lm.init_state(), 4)
    assert lm._plan.key.num_threads == 2


def test_endpoint_workers_threads(tmp_path, monkeypatch):
    from encodec_hf.integrations.endpoint import EndpointHandler

    model_dir = save_tiny_model(tmp_path, "mono")
    monkeypatch.setattr(threads_module, "torch_default_threads", lambda: 4)
    torch.set_num_threads(4)  # torch's default in this test: nothing chosen by the user
    import encodec_hf.integrations.endpoint as endpoint_module

    monkeypatch.setattr(endpoint_module, "torch_default_threads", lambda: 4)
    assert EndpointHandler(str(model_dir), device="cpu", workers=2).num_threads == 2  # the cores / workers
    assert EndpointHandler(str(model_dir), device="cpu", workers=8).num_threads == 1
    handler = EndpointHandler(str(model_dir), device="cpu", workers=2, num_threads=3)
    seen: list[int] = []
    run = handler._run
    monkeypatch.setattr(handler, "_run", lambda request: seen.append(torch.get_num_threads()) or run(request))
    rate = handler.config.sampling_rate
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(rate // 10, dtype=np.float32) + 0.1, rate, format="WAV")
    handler({"inputs": buffer.getvalue()})
    assert seen == [3] and torch.get_num_threads() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # the user's own setting: kept
    assert EndpointHandler(str(model_dir), device="cpu", workers=2).num_threads is None
    with pytest.raises(ValueError, match="workers"):
        EndpointHandler(str(model_dir), device="cpu", workers=0)


def test_encode_dataset_batches_run_on_one_thread(tmp_path, monkeypatch):
    from pathlib import Path

    from datasets import Audio, Dataset

    from encodec_hf.integrations import encode_dataset as runner

    model_dir = save_tiny_model(tmp_path / "model", "mono")
    paths = write_clips(tmp_path / "clips", [(800, 8000, 1), (500, 8000, 1)])
    ds = Dataset.from_dict({"audio": [{"bytes": Path(p).read_bytes(), "path": p} for p in paths]})
    ds = ds.cast_column("audio", Audio(decode=False))
    seen: list[int] = []
    call = runner.EncodecMapFunction.__call__
    monkeypatch.setattr(
        runner.EncodecMapFunction, "__call__", lambda self, *a: seen.append(torch.get_num_threads()) or call(self, *a)
    )
    runner.run_encode_dataset(ds, str(model_dir), tmp_path / "out1", batch_size=1, progress=False)
    assert seen == [1, 1] and torch.get_num_threads() == OUTSIDE
    seen.clear()
    runner.run_encode_dataset(ds, str(model_dir), tmp_path / "out3", batch_size=1, progress=False, num_threads=3)
    assert seen == [3, 3] and torch.get_num_threads() == OUTSIDE
