"""encodec_hf.register(): Auto classes resolve "encodec" to encodec_hf, offline, from disk and from a Hub cache."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

import encodec_hf
from encodec_hf.integrations.auto import is_registered
from tests.hf_fixtures import one_torch_thread, tiny_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_torch_thread()


COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def registered():
    encodec_hf.register()
    try:
        yield
    finally:
        encodec_hf.unregister()


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory):
    """A model folder as save_pretrained writes it (config, weights, preprocessor config)."""
    folder = tmp_path_factory.mktemp("repo")
    model = tiny_model("mono")
    model.save_pretrained(folder)
    encodec_hf.EncodecFeatureExtractor.for_config(model.config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hub_cache(repo_dir, tmp_path_factory):
    """A Hub cache laid out as huggingface_hub does: refs/main -> snapshots/<commit>/ -> blobs."""
    cache = tmp_path_factory.mktemp("hub_cache")
    repo = cache / "models--facebook--encodec_24khz"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for i, src in enumerate(sorted(repo_dir.iterdir())):
        blob = repo / "blobs" / f"{i:040x}"
        blob.write_bytes(src.read_bytes())
        (snapshot / src.name).symlink_to(os.path.relpath(blob, snapshot))
    return cache


def test_not_registered_on_import():
    assert not is_registered()
    config = AutoConfig.for_model("encodec")
    assert type(config) is transformers.EncodecConfig


def test_register_resolves_auto_classes_from_disk(registered, repo_dir):
    config = AutoConfig.from_pretrained(repo_dir)
    assert type(config) is encodec_hf.EncodecConfig
    model = AutoModel.from_pretrained(repo_dir)
    assert type(model) is encodec_hf.EncodecModel
    fe = AutoFeatureExtractor.from_pretrained(repo_dir)
    assert type(fe) is encodec_hf.EncodecFeatureExtractor
    assert type(AutoModel.from_config(encodec_hf.EncodecConfig())) is encodec_hf.EncodecModel
    # transformers' own config objects keep mapping to transformers' model.
    assert type(AutoModel.from_config(transformers.EncodecConfig(num_filters=4))) is transformers.EncodecModel
    reference = encodec_hf.EncodecModel.from_pretrained(repo_dir)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_register_resolves_from_offline_hub_cache(registered, hub_cache):
    kwargs = dict(cache_dir=hub_cache, local_files_only=True)
    model = AutoModel.from_pretrained("facebook/encodec_24khz", **kwargs)
    assert type(model) is encodec_hf.EncodecModel
    fe = AutoFeatureExtractor.from_pretrained("facebook/encodec_24khz", **kwargs)
    assert type(fe) is encodec_hf.EncodecFeatureExtractor and fe.sampling_rate == 8000


def test_unregister_restores_transformers_classes(repo_dir):
    encodec_hf.register()
    encodec_hf.register()  # idempotent
    encodec_hf.unregister()
    encodec_hf.unregister()
    assert type(AutoConfig.from_pretrained(repo_dir)) is transformers.EncodecConfig
    assert type(AutoFeatureExtractor.from_pretrained(repo_dir)) is transformers.EncodecFeatureExtractor


def test_register_in_fresh_process_and_no_import_side_effect(hub_cache):
    """A new interpreter: importing encodec_hf changes nothing; register() switches; offline env vars."""
    script = textwrap.dedent(
        f"""
        import transformers
        from transformers import AutoModel
        import encodec_hf
        kw = dict(cache_dir={str(hub_cache)!r})
        assert type(AutoModel.from_pretrained("facebook/encodec_24khz", **kw)) is transformers.EncodecModel
        encodec_hf.register()
        assert type(AutoModel.from_pretrained("facebook/encodec_24khz", **kw)) is encodec_hf.EncodecModel
        print("ok")
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT / "src"))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
