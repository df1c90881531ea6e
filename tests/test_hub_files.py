"""Hub repos: save_for_hub / push_to_hub write weights, configs, model card, remote code and endpoint files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

import encodec_hf
from encodec_hf.integrations.hub import REQUIRED_CARD_FIELDS, load_model_card, push_to_hub, save_for_hub
from tests.hf_fixtures import one_torch_thread, tiny_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_torch_thread()


REPO_ROOT = Path(__file__).resolve().parents[1]
CARDS = REPO_ROOT / "model_cards"


class LocalHubApi:
    """Stands in for huggingface_hub.HfApi: the 'Hub' is a local folder (no machine here reaches the Hub)."""

    def __init__(self, root: Path):
        self.root = root
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", dict(repo_id=repo_id, **kwargs)))
        (self.root / repo_id).mkdir(parents=True, exist_ok=True)

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        self.calls.append(("upload_folder", dict(repo_id=repo_id, **kwargs)))
        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)
        return f"local://{repo_id}"


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz", "encodec_32khz"])
def test_model_cards_have_required_header(name):
    card = load_model_card(CARDS / f"{name}.md", repo_id="me/x")
    meta = card.data.to_dict()
    assert meta["license"] == "mit" and meta["pipeline_tag"] == "feature-extraction"
    assert meta["base_model"] == f"facebook/{name}" and "encodec_hf" in meta["tags"]
    assert "{repo_id}" not in card.text and 'from_pretrained("me/x"' in card.text


def test_push_to_hub_writes_complete_repo(tmp_path):
    model = tiny_model("stereo")
    api = LocalHubApi(tmp_path / "hub")
    assert push_to_hub(model, "me/encodec_48khz", model_card=CARDS / "encodec_48khz.md", api=api) == (
        "local://me/encodec_48khz"
    )
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    repo = tmp_path / "hub" / "me" / "encodec_48khz"
    files = sorted(p.name for p in repo.iterdir())
    for expected in (
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "handler.py",
        "requirements.txt",
        "configuration.py",
        "modeling.py",
        "feature_extraction.py",
    ):
        assert expected in files, files
    config = json.loads((repo / "config.json").read_text())
    assert config["model_type"] == "encodec" and config["audio_channels"] == 2
    assert config["auto_map"] == {"AutoConfig": "configuration.EncodecConfig", "AutoModel": "modeling.EncodecModel"}
    pre = json.loads((repo / "preprocessor_config.json").read_text())
    assert pre["feature_size"] == 2 and pre["auto_map"] == {
        "AutoFeatureExtractor": "feature_extraction.EncodecFeatureExtractor"
    }
    weights = load_file(repo / "model.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(weights[key], value), key
    card = ModelCard.load(repo / "README.md")
    assert all(card.data.to_dict().get(f) for f in REQUIRED_CARD_FIELDS)
    assert 'from_pretrained("me/encodec_48khz"' in card.text
    assert "from encodec_hf.integrations.endpoint import EndpointHandler" in (repo / "handler.py").read_text()
    # Saving did not leave the classes marked for auto_map export, nor auto_map on the live config.
    assert "_auto_class" not in encodec_hf.EncodecModel.__dict__
    assert getattr(model.config, "auto_map", None) is None
    reloaded = encodec_hf.EncodecModel.from_pretrained(repo)
    x = torch.randn(1, 2, 1600)
    assert torch.equal(reloaded.encode(x).audio_codes, model.encode(x).audio_codes)


def test_trust_remote_code_loads_pushed_repo_in_plain_transformers(tmp_path):
    """A fresh interpreter in which encodec_hf cannot be imported loads the repo through auto_map."""
    model = tiny_model("mono")
    repo = tmp_path / "repo"
    save_for_hub(model, repo, model_card=CARDS / "encodec_24khz.md", repo_id="me/encodec_24khz")
    x = torch.randn(1, 1, 800)
    torch.save({"x": x, "codes": model.encode(x, bandwidth=8.0).audio_codes}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.modules["encodec_hf"] = None  # block the package, installed or not: only the repo's code may be used
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel
        model = AutoModel.from_pretrained({str(repo)!r}, trust_remote_code=True)
        fe = AutoFeatureExtractor.from_pretrained({str(repo)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(fe).__module__.startswith("transformers_modules"), type(fe).__module__
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        assert torch.equal(model.encode(expected["x"], bandwidth=8.0).audio_codes, expected["codes"])
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_card_without_required_fields_is_refused(tmp_path):
    card = tmp_path / "card.md"
    card.write_text("---\nlicense: mit\ntags: [audio]\n---\n# A card\n")
    with pytest.raises(
        ValueError, match=r"lacks YAML header field\(s\) \['library_name', 'pipeline_tag', 'base_model'\]"
    ):
        save_for_hub(tiny_model("mono"), tmp_path / "out", model_card=card)
    with pytest.raises(FileNotFoundError, match="model_cards"):
        save_for_hub(tiny_model("mono"), tmp_path / "out", model_card=tmp_path / "missing.md")
