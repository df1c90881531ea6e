"""Loading and saving checkpoints: Hub key layouts, file formats, the offline Hub cache, mismatch errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import audio, random_model, tiny_chunked_config, tiny_config
from safetensors.torch import load_file, save_file

from encodec_hf import EncodecConfig, EncodecFeatureExtractor, EncodecLM, EncodecLMConfig, EncodecModel
from encodec_hf.errors import CheckpointMismatchError

ROOT = Path(__file__).resolve().parents[1]

# config.json of facebook/encodec_24khz as stored on the Hub (saved with transformers 4.31).
HUB_24KHZ_CONFIG = {
    "architectures": ["EncodecModel"],
    "audio_channels": 1,
    "chunk_length_s": None,
    "codebook_dim": 128,
    "codebook_size": 1024,
    "compress": 2,
    "dilation_growth_rate": 2,
    "hidden_size": 128,
    "kernel_size": 7,
    "last_kernel_size": 7,
    "model_type": "encodec",
    "norm_type": "weight_norm",
    "normalize": False,
    "num_filters": 32,
    "num_lstm_layers": 2,
    "num_residual_layers": 1,
    "overlap": None,
    "pad_mode": "reflect",
    "residual_kernel_size": 3,
    "sampling_rate": 24000,
    "target_bandwidths": [1.5, 3.0, 6.0, 12.0, 24.0],
    "torch_dtype": "float32",
    "transformers_version": "4.31.0.dev0",
    "trim_right_ratio": 1.0,
    "upsampling_ratios": [8, 5, 4, 2],
    "use_causal_conv": True,
}
HUB_24KHZ_PREPROCESSOR = {
    "chunk_length_s": None,
    "feature_extractor_type": "EncodecFeatureExtractor",
    "feature_size": 1,
    "overlap": None,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": True,
    "sampling_rate": 24000,
}


def _legacy_state_dict(folder: str) -> dict[str, torch.Tensor]:
    """The state dict with weight norm stored as ``weight_g``/``weight_v``, as the Hub files have it."""
    renamed = {}
    for key, value in load_file(os.path.join(folder, "model.safetensors")).items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g")
        key = key.replace(".parametrizations.weight.original1", ".weight_v")
        renamed[key] = value.contiguous()
    return renamed


def _outputs(model, x):
    with torch.inference_mode():
        enc = model.encode(x, bandwidth=model.config.target_bandwidths[-1])
        return enc.audio_codes, model.decode(**enc).audio_values


def test_hub_config_json_loads_with_all_fields(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(HUB_24KHZ_CONFIG))
    config = EncodecConfig.from_pretrained(tmp_path)
    assert config.model_type == "encodec"
    assert (config.hop_length, config.frame_rate, config.num_quantizers, config.codebook_nbits) == (320, 75, 32, 10)
    assert config.codebook_dim == 128 and config.use_conv_shortcut


@pytest.mark.parametrize("file_format", ["safetensors", "bin"])
def test_legacy_weight_norm_names_load(saved_reference, tmp_path, file_format):
    reference, folder = saved_reference("tiny")
    shutil.copy(os.path.join(folder, "config.json"), tmp_path / "config.json")
    state = _legacy_state_dict(folder)
    assert any(k.endswith(".weight_g") for k in state)
    if file_format == "safetensors":
        save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    else:
        torch.save(state, tmp_path / "pytorch_model.bin")
    model = EncodecModel.from_pretrained(tmp_path).eval()
    x = audio(2, 1, 333)
    codes, values = _outputs(model, x)
    with torch.inference_mode():
        ref = reference.encode(x, bandwidth=model.config.target_bandwidths[-1])
        ref_values = reference.decode(ref.audio_codes, ref.audio_scales, torch.ones(2, 333)).audio_values
    assert torch.equal(codes, ref.audio_codes)
    torch.testing.assert_close(values, ref_values, atol=1e-5, rtol=0)


def test_save_pretrained_round_trip_writes_safetensors(model_pair, tmp_path):
    _, model = model_pair("tiny_chunked")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not (tmp_path / "pytorch_model.bin").exists()
    reloaded = EncodecModel.from_pretrained(tmp_path).eval()
    x = audio(1, 2, 2000)
    for a, b in zip(_outputs(model, x), _outputs(reloaded, x), strict=True):
        assert torch.equal(a, b)


def test_feature_extractor_loads_hub_preprocessor_config(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(HUB_24KHZ_PREPROCESSOR))
    fe = EncodecFeatureExtractor.from_pretrained(tmp_path)
    assert (fe.feature_size, fe.sampling_rate, fe.chunk_length, fe.padding_side) == (1, 24000, None, "right")


def _lay_out_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> str:
    """Writes ``models--org--name/{blobs,refs/main,snapshots/<commit>}`` the way huggingface_hub does."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return commit


def test_from_pretrained_by_repo_id_from_offline_hub_cache(saved_reference, tmp_path):
    """`from_pretrained("facebook/encodec_24khz")` resolved from a Hub cache on disk, with HF_HUB_OFFLINE=1."""
    reference, folder = saved_reference("tiny")
    state = _legacy_state_dict(folder)
    weights = tmp_path / "w.safetensors"
    save_file(state, weights, metadata={"format": "pt"})
    config = json.loads(Path(folder, "config.json").read_text())
    preprocessor = dict(HUB_24KHZ_PREPROCESSOR, sampling_rate=config["sampling_rate"])
    cache = tmp_path / "hub"
    _lay_out_hub_cache(
        cache,
        "facebook/encodec_24khz",
        {
            "config.json": json.dumps(config).encode(),
            "preprocessor_config.json": json.dumps(preprocessor).encode(),
            "model.safetensors": weights.read_bytes(),
        },
    )
    x = audio(1, 1, 500)
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent(
        f"""
        import torch
        from encodec_hf import EncodecFeatureExtractor, EncodecModel
        model = EncodecModel.from_pretrained("facebook/encodec_24khz").eval()
        fe = EncodecFeatureExtractor.from_pretrained("facebook/encodec_24khz")
        assert fe.sampling_rate == model.config.sampling_rate
        x = torch.load({str(tmp_path / "x.pt")!r})
        with torch.inference_mode():
            codes = model.encode(x, bandwidth=12.0).audio_codes
        torch.save(codes, {str(tmp_path / "codes.pt")!r})
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "home"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with torch.inference_mode():
        expected = reference.encode(x, bandwidth=12.0).audio_codes
    assert torch.equal(torch.load(tmp_path / "codes.pt"), expected)


# ------------------------------------------------------------------ model sources: paths, the cache, no Hub
def _bad_model_folder(root: Path, kind: str) -> Path:
    """A path that is not a model folder, of the given kind."""
    path = root / kind
    if kind in ("empty", "weights only", "config only"):
        path.mkdir()
    if kind == "a file":
        path.write_bytes(b"x")
    if kind == "weights only":
        (path / "model.safetensors").write_bytes(b"x")
    if kind == "config only":
        (path / "config.json").write_text("{}")
    return root / "a" / "b" if kind == "nested missing" else path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "Model folder {path} does not exist"),
        ("nested missing", "Model folder {path} does not exist"),
        ("empty", "Model folder {path} is empty"),
        ("a file", "Model path {path} is a file, not a folder"),
        ("weights only", "Model folder {path} has no config.json (it holds model.safetensors)"),
        ("config only", "Model folder {path} has config.json but no weights"),
    ],
)
def test_a_path_that_is_not_a_model_folder_says_what_is_missing(tmp_path, kind, message):
    from encodec_hf.errors import ModelNotFoundError
    from encodec_hf.integrations.hub import load_model

    path = _bad_model_folder(tmp_path, kind)
    with pytest.raises(ModelNotFoundError) as info:
        load_model(str(path))
    assert str(info.value).startswith(message.format(path=path))
    assert isinstance(info.value, FileNotFoundError)  # `except OSError` callers keep working


@pytest.mark.parametrize("source", ["/nonexistent/encodec", "./nope", "~/no-such-model-folder", "nope/a/b"])
def test_path_like_strings_never_reach_the_hub(source):
    """The Hub's "Repo id must be in the form 'repo_name'" never answers a mistyped path."""
    from encodec_hf.errors import ModelNotFoundError
    from encodec_hf.integrations.hub import load_model, looks_like_path

    assert looks_like_path(source)
    with pytest.raises(ModelNotFoundError, match=f"Model folder {source} does not exist"):
        load_model(source)


def test_hub_ids_and_folders_are_told_apart(tmp_path, monkeypatch):
    from encodec_hf.errors import ModelNotFoundError
    from encodec_hf.integrations.hub import load_model, looks_like_path

    assert not looks_like_path("facebook/encodec_24khz") and not looks_like_path("encodec")
    EncodecModel(tiny_config()).save_pretrained(tmp_path / "org" / "name")
    monkeypatch.chdir(tmp_path)
    assert looks_like_path("org/name")  # an existing relative folder wins, as in transformers
    assert load_model("org/name").config.sampling_rate == tiny_config().sampling_rate
    with pytest.raises(ModelNotFoundError, match="neither a local folder .* nor a Hub repository id"):
        load_model("not a repo!")


OFFLINE_SCRIPT = """
import contextlib, io, json, sys, time
import torch
from encodec_hf import cli
from encodec_hf.errors import HubUnreachableError
from encodec_hf import EncodecLM
from encodec_hf.integrations.hub import load_model

model = load_model("org/cached")  # from the cache: the Hub is unreachable or HF_HUB_OFFLINE=1
lm = EncodecLM.from_pretrained("org/cached")  # the LM of an --lm .ecdc file: the same lookup
assert lm.config.dim == 16
with torch.inference_mode():
    codes = model.encode(torch.load(sys.argv[1]), bandwidth=model.config.target_bandwidths[-1]).audio_codes
torch.save(codes, sys.argv[2])
start = time.monotonic()
try:
    load_model("facebook/encodec_24khz")
except HubUnreachableError as err:
    message = str(err)
elapsed = time.monotonic() - start
stderr = io.StringIO()
with contextlib.redirect_stderr(stderr):
    status = cli.main(["compress", sys.argv[3], sys.argv[3] + ".ecdc"])  # no --model: the Hub's 24 kHz model
print(json.dumps({"message": message, "elapsed": elapsed, "status": status, "cli": stderr.getvalue()}))
"""


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE=1", "unreachable HF_ENDPOINT"])
def test_hub_ids_come_from_the_cache_or_fail_fast_naming_the_fix(tmp_path, offline):
    """A repo id in a Hub cache on disk loads without the Hub; one that is not cached fails at once (no retries)
    with a message that names --model PATH, MODEL=, HF_HOME and HF_HUB_OFFLINE, in the library and the CLI."""
    import socket

    import numpy as np
    import soundfile as sf

    model = random_model(tiny_config())
    model.save_pretrained(tmp_path / "saved")
    config = model.config
    lm_config = EncodecLMConfig(
        num_codebooks=config.num_quantizers, codebook_size=config.codebook_size, dim=16, num_layers=1, num_heads=2
    )
    EncodecLM(lm_config).save_pretrained(tmp_path / "saved")
    names = ("config.json", "model.safetensors", "lm.safetensors")
    files = {name: (tmp_path / "saved" / name).read_bytes() for name in names}
    _lay_out_hub_cache(tmp_path / "home" / "hub", "org/cached", files)
    x = audio(1, 1, 400)
    torch.save(x, tmp_path / "x.pt")
    sf.write(tmp_path / "in.wav", np.zeros(800, dtype=np.float32), 8000)
    with socket.socket() as s:  # a port nothing listens on: connections are refused at once
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE")}
    env.update(HF_HOME=str(tmp_path / "home"), HF_ENDPOINT=f"http://127.0.0.1:{closed_port}")
    if offline == "HF_HUB_OFFLINE=1":
        env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-c", OFFLINE_SCRIPT, str(tmp_path / "x.pt"), str(tmp_path / "codes.pt")]
    result = subprocess.run([*command, str(tmp_path / "in.wav")], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with torch.inference_mode():
        expected = model.encode(x, bandwidth=model.config.target_bandwidths[-1]).audio_codes
    assert torch.equal(torch.load(tmp_path / "codes.pt"), expected)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    message = report["message"]
    assert message.startswith(
        "Cannot load 'facebook/encodec_24khz': no such local folder, the Hugging Face Hub at http://127.0.0.1:"
    )
    for fix in ("--model PATH", "MODEL=PATH", "HF_HOME", "HF_HUB_OFFLINE=1", str(tmp_path / "home" / "hub")):
        assert fix in message
    assert report["elapsed"] < 20  # a hang guard: huggingface_hub's retries alone sleep 23 s
    assert "Retrying" not in result.stderr
    assert report["status"] == 1 and report["cli"] == f"error: {message}\n"
    assert not (tmp_path / "in.wav.ecdc").exists()


@pytest.mark.parametrize(
    "change,message",
    [
        ({"use_conv_shortcut": False}, "unexpected"),  # weights have shortcut convs the config does not
        ({"target_bandwidths": [6.0, 12.0, 48.0]}, "missing"),  # config wants more codebooks than stored
        ({"num_filters": 8}, "config"),  # every conv has the wrong shape
    ],
)
def test_checkpoint_whose_config_and_weights_disagree_is_refused(saved_reference, tmp_path, change, message):
    _, folder = saved_reference("tiny")
    shutil.copy(os.path.join(folder, "model.safetensors"), tmp_path / "model.safetensors")
    config = json.loads(Path(folder, "config.json").read_text())
    config.update(change)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError, match=message):
        EncodecModel.from_pretrained(tmp_path)


def test_training_mode_gradients_reach_weight_norm_parameters():
    model = EncodecModel(tiny_config()).train()
    x = audio(1, 1, 160)
    model.encoder(x).pow(2).mean().backward()
    g = model.encoder.layers[0].conv.parametrizations.weight.original0
    assert g.grad is not None and g.grad.abs().sum() > 0


def test_chunked_tiny_config_round_trips_through_transformers(saved_reference, tmp_path):
    """A folder saved by encodec_hf loads in transformers with identical outputs (the other direction)."""
    import transformers

    model = random_model(tiny_chunked_config())
    model.save_pretrained(tmp_path)
    theirs = transformers.EncodecModel.from_pretrained(tmp_path).eval()
    x = audio(1, 2, 1234)
    with torch.inference_mode():
        a = model.encode(x, bandwidth=12.0)
        b = theirs.encode(x, bandwidth=12.0)
    assert torch.equal(a.audio_codes, b.audio_codes)


def _folder_with_config_change(saved_reference, tmp_path, change: dict) -> Path:
    """The tiny reference checkpoint with its config.json edited (the weights left as they are)."""
    _, folder = saved_reference("tiny")
    shutil.copy(os.path.join(folder, "model.safetensors"), tmp_path / "model.safetensors")
    config = json.loads(Path(folder, "config.json").read_text())
    config.update(change)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_mismatch_error_says_how_to_load_anyway(saved_reference, tmp_path):
    folder = _folder_with_config_change(saved_reference, tmp_path, {"target_bandwidths": [6.0, 12.0, 48.0]})
    with pytest.raises(CheckpointMismatchError, match="output_loading_info=True"):
        EncodecModel.from_pretrained(folder)


def test_output_loading_info_reports_missing_keys_instead_of_raising(saved_reference, tmp_path):
    """transformers' contract: the caller who asks for the report gets the model, fresh where the file is silent."""
    reference, _ = saved_reference("tiny")
    folder = _folder_with_config_change(saved_reference, tmp_path, {"target_bandwidths": [6.0, 12.0, 48.0]})
    model, info = EncodecModel.from_pretrained(folder, output_loading_info=True)
    stored = len(reference.quantizer.layers)
    extra = range(stored, len(model.quantizer.layers))
    assert len(extra) > 0
    expected = {
        f"quantizer.layers.{i}.codebook.{b}" for i in extra for b in ("inited", "cluster_size", "embed", "embed_avg")
    }
    assert set(info["missing_keys"]) == expected
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    for i in range(stored):  # what the file holds is loaded ...
        assert torch.equal(model.quantizer.layers[i].codebook.embed, reference.quantizer.layers[i].codebook.embed)
    for i in extra:  # ... and what it lacks is a fresh, untrained codebook
        codebook = model.quantizer.layers[i].codebook
        assert not codebook.embed.any() and codebook.inited.item() == 0
    assert torch.equal(model.encoder.layers[0].conv.weight, reference.encoder.layers[0].conv.weight)


def test_output_loading_info_reports_unexpected_keys(saved_reference, tmp_path):
    folder = _folder_with_config_change(saved_reference, tmp_path, {"use_conv_shortcut": False})
    _, info = EncodecModel.from_pretrained(folder, output_loading_info=True)
    assert info["unexpected_keys"] and all(".shortcut." in k for k in info["unexpected_keys"])
    assert not info["missing_keys"]


def test_ignore_mismatched_sizes_reports_them_instead_of_raising(saved_reference, tmp_path):
    folder = _folder_with_config_change(saved_reference, tmp_path, {"codebook_size": 32})
    with pytest.raises(CheckpointMismatchError):
        EncodecModel.from_pretrained(folder)
    model, info = EncodecModel.from_pretrained(folder, ignore_mismatched_sizes=True, output_loading_info=True)
    mismatched = {str(entry[0] if isinstance(entry, tuple) else entry) for entry in info["mismatched_keys"]}
    assert any("codebook.embed" in k for k in mismatched)
    assert model.quantizer.layers[0].codebook.embed.shape == (32, model.config.codebook_dim)
    assert EncodecModel.from_pretrained(folder, ignore_mismatched_sizes=True).config.codebook_size == 32


def test_partial_state_dict_loads_what_it_has(saved_reference):
    """``from_pretrained(None, config=..., state_dict=partial)``: given tensors loaded, the rest initialised."""
    reference, folder = saved_reference("tiny")
    full = reference.state_dict()
    partial = {k: v for k, v in full.items() if k.startswith("quantizer.")}
    config = EncodecConfig.from_pretrained(folder)
    model = EncodecModel.from_pretrained(None, config=config, state_dict=partial)
    ours = model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in partial.items())
    conv = model.encoder.layers[0].conv
    assert conv.bias.any() and not torch.equal(conv.bias, reference.encoder.layers[0].conv.bias)
    assert torch.isfinite(torch.cat([p.flatten() for p in model.parameters()])).all()
