"""The measuring parts of the benchmark scripts that are not timings: what they count must be right.

No timing is asserted here; `make bench` measures speed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import random_model, tiny_chunked_config, tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_codec  # noqa: E402

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


@needs_onednn
def test_onednn_seconds_counts_the_primitives_a_call_runs(tmp_path, capfd):
    x, weight = torch.randn(1, 16, 4000), torch.randn(32, 16, 7)
    with torch.inference_mode():
        seconds, y = bench_codec.onednn_seconds(lambda: torch.nn.functional.conv1d(x, weight), tmp_path)
    assert y.shape == (1, 32, 3994)  # the call's own result comes back
    assert seconds.get("convolution", 0.0) > 0.0
    assert set(seconds) <= {"convolution", "reorder"}
    # The verbose lines went to the log, not to the terminal, and stdout works again afterwards.
    print("after")
    assert "onednn_verbose" not in capfd.readouterr().out
    assert (tmp_path / "onednn_verbose.log").read_text().count(",exec,") >= 1


@needs_onednn
def test_kernel_floor_is_reported_for_the_reference_layout_only(tmp_path):
    model = random_model(tiny_chunked_config())
    audio = 0.1 * torch.randn(1, 2, 2400)
    assert not model.fast_inference
    floor = bench_codec.kernel_floor(model, audio, tmp_path)
    assert floor is not None
    assert floor["encode_floor_s"] > 0.0 and floor["decode_floor_s"] > 0.0
    assert floor["encode_onednn_s"]["convolution"] > 0.0
    # Reorders are layout copies, not part of the floor.
    compute = sum(floor["encode_onednn_s"].get(k, 0.0) for k in bench_codec.ONEDNN_COMPUTE_PRIMITIVES)
    assert floor["encode_floor_s"] == pytest.approx(compute)
    assert floor["encode_floor_with_reorders_s"] >= floor["encode_floor_s"]

    fast = random_model(tiny_config())
    fast.fast_inference = True
    assert bench_codec.kernel_floor(fast, 0.1 * torch.randn(1, 1, 800), tmp_path) is None
