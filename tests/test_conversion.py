"""conversion/convert_original_checkpoint.py against Meta's original models (random weights)."""

import json
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conversion"))

import convert_original_checkpoint as conv  # noqa: E402
from reference_encodec import ConvertedPair, import_reference  # noqa: E402

from encodec_hf.ecdc.lm import EncodecLM  # noqa: E402
from encodec_hf.errors import CheckpointMismatchError  # noqa: E402


@pytest.fixture(scope="module", params=["encodec_24khz", "encodec_48khz"])
def pair(request, tmp_path_factory):
    return ConvertedPair(request.param, tmp_path_factory.mktemp(request.param))


def _original_codes_and_audio(original, x, bandwidth):
    original.set_target_bandwidth(bandwidth)
    with torch.no_grad():
        frames = original.encode(x)
        audio = original.decode(frames)[..., : x.shape[-1]]
    return [codes for codes, _ in frames], [scale for _, scale in frames], audio


def test_codes_and_audio_match_original_for_every_bandwidth(pair):
    torch.manual_seed(5)
    # 1.3 s: two chunks (one partial) for the 48 kHz model.
    x = 0.1 * torch.randn(1, pair.original.channels, int(1.3 * pair.original.sample_rate))
    for bandwidth in pair.original.target_bandwidths:
        codes, scales, audio = _original_codes_and_audio(pair.original, x, bandwidth)
        with torch.no_grad():
            enc = pair.model.encode(x, bandwidth=bandwidth)
            ours = pair.model.decode(
                enc.audio_codes, enc.audio_scales, last_frame_pad_length=enc.last_frame_pad_length
            ).audio_values[..., : x.shape[-1]]
        assert enc.audio_codes.shape[0] == len(codes)
        for i, expected in enumerate(codes):
            got = enc.audio_codes[i][..., : expected.shape[-1]]
            assert torch.equal(got, expected), f"{pair.name} {bandwidth} kbps chunk {i}"
            if scales[i] is not None:
                assert torch.equal(enc.audio_scales[i].view(-1), scales[i].view(-1))
        assert (ours - audio).abs().max() <= 1e-5


def test_output_folder(pair):
    files = {p.name for p in pair.folder.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "lm.safetensors", "README.md"} <= files
    config = json.loads((pair.folder / "config.json").read_text())
    assert config["ecdc_model_name"] == pair.name and config["model_type"] == "encodec"
    pre = json.loads((pair.folder / "preprocessor_config.json").read_text())
    assert pre["sampling_rate"] == pair.original.sample_rate and pre["feature_size"] == pair.original.channels
    lm = EncodecLM.from_pretrained(pair.folder)
    for key, value in pair.original_lm.state_dict().items():
        assert torch.equal(lm.state_dict()[key], value)
    card = (pair.folder / "README.md").read_text()
    header = card.split("---")[1]
    for field in ("license:", "library_name: encodec_hf", "pipeline_tag: audio-to-audio", "tags:"):
        assert field in header
    for fact in ("MUSHRA", "ViSQOL", "25-40%", "1.9 kbps", "Lyra-v2", "kbps", pair.checkpoint.name):
        assert fact in card
    assert "$" not in card.split("```bibtex")[0].replace("$ ", "")  # every placeholder substituted


def test_hash_prefix_is_enforced(pair, tmp_path):
    forged = tmp_path / f"{pair.name}-00000000.th"
    shutil.copy(pair.checkpoint, forged)
    with pytest.raises(conv.HashMismatchError, match="no-verify-hash"):
        conv.convert(forged, tmp_path / "out")
    assert conv.main(["--checkpoint", str(forged), "--output-dir", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out" / "model.safetensors").exists()
    conv.convert(forged, tmp_path / "forced", verify_hashes=False)
    assert (tmp_path / "forced" / "model.safetensors").exists()


def test_model_name_inference_and_mismatch(pair, tmp_path):
    assert conv.infer_model_name(pair.checkpoint) == pair.name
    assert conv.infer_model_name(Path("compression_state_dict.bin")) == "encodec_32khz"
    unnamed = tmp_path / "weights.th"
    shutil.copy(pair.checkpoint, unnamed)
    with pytest.raises(ValueError, match="--model-name"):
        conv.convert(unnamed, tmp_path / "out")
    other = "encodec_48khz" if pair.name == "encodec_24khz" else "encodec_24khz"
    with pytest.raises(CheckpointMismatchError, match="does not fit"):
        conv.convert(unnamed, tmp_path / "out", model_name=other)
    with pytest.raises(CheckpointMismatchError, match="is it an encodec_lm"):
        conv.convert(pair.checkpoint, tmp_path / "out", lm_checkpoint=pair.checkpoint)


class _NotATensor:
    pass


def test_refuses_pickled_code(tmp_path):
    path = tmp_path / "encodec_24khz.th"
    torch.save({"x": _NotATensor()}, path)
    with pytest.raises(pickle.UnpicklingError):
        conv.convert(path, tmp_path / "out")


def test_musicgen_compression_state_dict(tmp_path):
    """audiocraft's 32 kHz codec: `best_state`, identity shortcuts, 4 codebooks of 2048."""
    encodec = import_reference()
    torch.manual_seed(0)
    kwargs = dict(channels=1, n_filters=64, ratios=[8, 5, 4, 4], causal=False, norm="weight_norm", true_skip=True)
    encoder = encodec.modules.SEANetEncoder(**kwargs)
    decoder = encodec.modules.SEANetDecoder(**kwargs)
    quantizer = encodec.quantization.ResidualVectorQuantizer(dimension=128, n_q=4, bins=2048)
    original = encodec.model.EncodecModel(encoder, decoder, quantizer, [2.2], 32_000, 1).eval()
    state = original.state_dict()
    for key in state:
        if key.endswith("_codebook.embed"):
            state[key].copy_(torch.randn_like(state[key]))
    torch.save({"best_state": state, "xp.cfg": "a config string"}, tmp_path / "compression_state_dict.bin")
    folder = conv.convert(tmp_path / "compression_state_dict.bin", tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    assert config["sampling_rate"] == 32_000 and config["codebook_size"] == 2048
    assert "ecdc_model_name" not in config
    assert "cc-by-nc-4.0" in (folder / "README.md").read_text()
    from encodec_hf.ecdc.container import load_model

    model = load_model(folder)
    x = 0.1 * torch.randn(1, 1, 6400)
    with torch.no_grad():
        expected = original.encode(x)[0][0]
        got = model.encode(x, bandwidth=2.2).audio_codes[0]
    assert torch.equal(got, expected)


def test_transformers_loads_the_folder_too(pair):
    import transformers

    hf = transformers.EncodecModel.from_pretrained(pair.folder).eval()
    x = 0.1 * torch.randn(1, pair.original.channels, pair.original.sample_rate // 2)
    bandwidth = pair.original.target_bandwidths[1]
    with torch.no_grad():
        ours = pair.model.encode(x, bandwidth=bandwidth).audio_codes
        theirs = hf.encode(x, bandwidth=bandwidth).audio_codes
    assert type(pair.model).__module__.startswith("encodec_hf")
    assert torch.equal(ours, theirs)
