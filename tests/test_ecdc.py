"""`.ecdc` interoperability with Meta's `encodec` (random weights, same machine) and bad-input handling."""

import json
import shutil
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_encodec import ConvertedPair, original_compress_module

import encodec_hf
from encodec_hf.ecdc.container import EcdcHeader, read_header
from encodec_hf.errors import EcdcFormatError, MissingLMError, UnsupportedBandwidthError

DURATIONS = {"encodec_24khz": 0.6, "encodec_48khz": 1.2}  # 48 kHz: a full and a partial chunk


@pytest.fixture(autouse=True)
def _lm_threads_as_the_original(monkeypatch):
    """Meta's LM runs at the process's thread count and its bits depend on it; ours runs at one thread unless told
    otherwise (`encodec_hf.threads`). Comparing bits, both sides run at the process's count."""
    monkeypatch.setenv("ENCODEC_HF_NUM_THREADS", "inherit")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return {name: ConvertedPair(name, tmp_path_factory.mktemp(name)) for name in DURATIONS}


def _audio(pair, seconds=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    seconds = DURATIONS[pair.name] if seconds is None else seconds
    return 0.1 * torch.randn(pair.original.channels, int(seconds * pair.original.sample_rate), generator=gen)


@pytest.mark.parametrize("name", list(DURATIONS))
@pytest.mark.parametrize("use_lm", [False, True])
def test_interop_both_directions(pairs, name, use_lm, monkeypatch):
    pair = pairs[name]
    pair.patch_original_models(monkeypatch)
    original = original_compress_module()
    x = _audio(pair)
    pair.original.set_target_bandwidth(6.0)
    theirs = original.compress(pair.original, x, use_lm=use_lm)
    ours = encodec_hf.compress(pair.model, x, bandwidth=6.0, use_lm=use_lm)  # LM from the model's folder
    assert ours == theirs
    header, _ = read_header(ours)
    assert header == EcdcHeader(name, x.shape[1], 4 if name == "encodec_48khz" else 8, use_lm)
    reference_audio, sr = original.decompress(theirs)
    our_audio, our_sr = encodec_hf.decompress(theirs, model=pair.model)
    their_decode_of_ours, _ = original.decompress(ours)
    assert our_sr == sr == pair.original.sample_rate
    assert our_audio.shape == reference_audio.shape == x.shape
    assert (our_audio - reference_audio).abs().max() <= 1e-5
    assert (their_decode_of_ours - reference_audio).abs().max() <= 1e-5


@pytest.mark.parametrize("name", list(DURATIONS))
def test_every_bandwidth_without_lm(pairs, name):
    pair = pairs[name]
    original = original_compress_module()
    x = _audio(pair, seconds=0.3, seed=1)
    for bandwidth in pair.original.target_bandwidths:
        pair.original.set_target_bandwidth(bandwidth)
        assert encodec_hf.compress(pair.model, x, bandwidth=bandwidth) == original.compress(pair.original, x)


def test_header_bytes_and_file_variants(pairs, tmp_path):
    assert EcdcHeader("encodec_24khz", 24000, 8, False).to_bytes() == bytes.fromhex("454344430000000039") + (
        b'{"m": "encodec_24khz", "al": 24000, "nc": 8, "lm": false}'
    )
    pair = pairs["encodec_24khz"]
    x = _audio(pair, 0.2)
    path = tmp_path / "a.ecdc"
    encodec_hf.compress_to_file(pair.model, x, path)
    assert path.read_bytes() == encodec_hf.compress(pair.model, x)
    audio, sr = encodec_hf.decompress_from_file(path, model=pair.folder)
    assert audio.shape == x.shape and sr == 24000


def _forge(header: dict | bytes, body: bytes = b"", version: int = 0, magic: bytes = b"ECDC", size=None) -> bytes:
    meta = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("!4sBI", magic, version, len(meta) if size is None else size) + meta + body


GOOD = {"m": "encodec_24khz", "al": 320, "nc": 2, "lm": False}


@pytest.mark.parametrize(
    "data, message",
    [
        (b"ECD", "header alone"),
        (_forge(GOOD, magic=b"RIFF"), "Not an .ecdc file"),
        (_forge(GOOD, version=1), "Unsupported .ecdc version 1"),
        (_forge(GOOD, size=10**9), "announces 1000000000 bytes"),
        (_forge(b"{not json"), "not UTF-8 JSON"),
        (_forge(b"\xff\xfe"), "not UTF-8 JSON"),
        (_forge([1, 2]), "expected an object"),
        (_forge({"m": "encodec_24khz", "al": 320}), "expected an object"),
        (_forge({**GOOD, "al": -5}), "'al' must be a positive integer"),
        (_forge({**GOOD, "al": True}), "'al' must be a positive integer"),
        (_forge({**GOOD, "nc": 2.5}), "'nc' must be a positive integer"),
        (_forge({**GOOD, "lm": "yes"}), "'lm' must be true or false"),
        (_forge({**GOOD, "m": 3}), "must be a string"),
        (_forge({**GOOD, "m": "encodec_96khz"}), "unknown model 'encodec_96khz'"),
        (_forge({**GOOD, "nc": 64}, b"\x00" * 100), "claims 64 codebooks"),
        (_forge({**GOOD, "al": 2**62}, b"\x00" * 100), "more than max_duration_s"),
        (_forge({**GOOD, "al": 10**7}, b"\x00" * 100), "need at least"),
        (_forge({**GOOD, "al": 5 * 10**8, "lm": True}, b"\x00" * 20), "need at least"),
        (_forge(GOOD, b"\x00" * 2), "need at least 3 bytes"),  # codes past the end
    ],
)
def test_malformed_files_raise_clear_errors(pairs, data, message):
    with pytest.raises(EcdcFormatError, match=message):
        encodec_hf.decompress(data, model=pairs["encodec_24khz"].model)


def test_model_mismatch_missing_lm_and_bad_arguments(pairs, tmp_path):
    p24, p48 = pairs["encodec_24khz"], pairs["encodec_48khz"]
    stereo = encodec_hf.compress(p48.model, _audio(p48, 0.1))
    with pytest.raises(EcdcFormatError, match="made by encodec_48khz but the model is encodec_24khz"):
        encodec_hf.decompress(stereo, model=p24.model)
    no_lm = tmp_path / "no_lm"
    shutil.copytree(p24.folder, no_lm)
    (no_lm / "lm.safetensors").unlink()
    lm_file = encodec_hf.compress(p24.model, _audio(p24, 0.05), use_lm=True)
    with pytest.raises(MissingLMError, match="No LM weights"):
        encodec_hf.decompress(lm_file, model=no_lm)
    with pytest.raises(MissingLMError, match="No LM weights"):
        encodec_hf.compress(no_lm, _audio(p24, 0.05), use_lm=True)
    with pytest.raises(ValueError, match="belongs to another model"):
        encodec_hf.decompress(lm_file, model=p24.model, lm=p48.folder)
    with pytest.raises(UnsupportedBandwidthError, match=r"Select one of \[3.0"):
        encodec_hf.compress(p48.model, _audio(p48, 0.1), bandwidth=1.5)
    with pytest.raises(ValueError, match="takes 2 channel"):
        encodec_hf.compress(p48.model, _audio(p24, 0.1))
    with pytest.raises(ValueError, match="empty"):
        encodec_hf.compress(p24.model, torch.zeros(1, 0))
    with pytest.raises(TypeError, match="floating point"):
        encodec_hf.compress(p24.model, torch.zeros(1, 100, dtype=torch.int16))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=200), st.binary(max_size=200).map(lambda b: b"ECDC\x00" + b)))
def test_random_bytes_raise_only_format_errors(pairs, data):
    with pytest.raises(EcdcFormatError):
        encodec_hf.decompress(data, model=pairs["encodec_24khz"].model)


@pytest.fixture(scope="module")
def real_files(pairs):
    out = {}
    # A module fixture is built before the autouse one above sets the LM's threads: set them here too, or these
    # files would be written at one thread and decoded at the process's count (different LM bits).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENCODEC_HF_NUM_THREADS", "inherit")
        for name, pair in pairs.items():
            x = _audio(pair, 0.15 if name == "encodec_24khz" else 1.02, seed=7)
            out[(name, False)] = encodec_hf.compress(pair.model, x)
            out[(name, True)] = encodec_hf.compress(pair.model, x, use_lm=True)
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from(
        [("encodec_24khz", False), ("encodec_24khz", True), ("encodec_48khz", False), ("encodec_48khz", True)]
    ),
    fraction=st.floats(0, 1, exclude_max=True),
)
def test_truncated_real_files(pairs, real_files, key, fraction):
    data = real_files[key]
    cut = data[: int(fraction * len(data))]
    pair = pairs[key[0]]
    try:
        audio, _ = encodec_hf.decompress(cut, model=pair.model)
    except EcdcFormatError:
        return
    # Only the LM coder may not need the last bits of its final byte; without the LM every byte is needed.
    assert key[1] and len(cut) >= len(data) - 1
    assert audio.shape[0] == pair.original.channels


def test_lengths_the_original_0_1_1_decoder_miscounts(pairs, monkeypatch):
    """0.1.1 counts frames as ceil(L / sr * fr) (fixed upstream in eff3a46): 6720 samples give 22, not 21.

    Its files for such lengths are still right (the encoder writes the frames it made); we count exactly.
    """
    pair = pairs["encodec_24khz"]
    pair.patch_original_models(monkeypatch)
    original = original_compress_module()
    x = 0.1 * torch.randn(1, 6720, generator=torch.Generator().manual_seed(2))
    pair.original.set_target_bandwidth(6.0)
    theirs = original.compress(pair.original, x)
    assert encodec_hf.compress(pair.model, x, bandwidth=6.0) == theirs
    audio, _ = encodec_hf.decompress(theirs, model=pair.model)
    with torch.no_grad():
        expected = pair.original.decode(pair.original.encode(x[None]))[0, :, :6720]
    assert (audio - expected).abs().max() <= 1e-5
    with pytest.raises(EOFError):  # the reference's own decoder fails on its own file
        original.decompress(theirs)
