"""`.ecdc` files through the streams (what `encodec-hf compress` / `decompress` run): the same bytes as `compress`,
the same audio as `decompress`, block by block; the pieces they are built from; the command's progress and summary.

The models are tiny random ones named as Meta's codecs (`ecdc_model_name`), so the container accepts them: a causal
unchunked one (the 24 kHz structure, streamed frame by frame) and a chunked, normalised stereo one (the 48 kHz
structure, streamed chunk by chunk), each with a tiny LM saved beside it. Full-size parity with Meta's package is
in test_ecdc.py and test_cli.py (the command's output there equals `compress`, now through these streams).
"""

from __future__ import annotations

import io
import itertools
import re

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import random_model, tiny_chunked_config, tiny_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import encodec_hf
from encodec_hf import EncodecModel, audio_io, cli
from encodec_hf.audio_io import StreamingConverter, convert_audio, load_audio, save_audio, save_audio_blocks
from encodec_hf.ecdc.arithmetic_coding import ArithmeticEncoder
from encodec_hf.ecdc.lm import EncodecLM, EncodecLMConfig
from encodec_hf.ecdc.payload import PayloadWriter, iter_payload
from encodec_hf.ecdc.streamed import compress_file, decompress_file
from encodec_hf.integrations.hub import load_model

HYP = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KINDS = {
    "frame": lambda: tiny_config(ecdc_model_name="encodec_24khz"),
    "chunk": lambda: tiny_chunked_config(ecdc_model_name="encodec_48khz"),
}


def _tiny_lm(config, seed: int) -> EncodecLM:
    torch.manual_seed(seed)
    lm_config = EncodecLMConfig(
        num_codebooks=config.num_quantizers,
        codebook_size=config.codebook_size,
        dim=16,
        num_layers=1,
        num_heads=2,
        past_context=int(3.5 * config.frame_rate),
    )
    return EncodecLM(lm_config).eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A saved model + LM per kind, and the model as loaded from the folder (what the command runs)."""
    out = {}
    for seed, (kind, make) in enumerate(KINDS.items()):
        folder = tmp_path_factory.mktemp(kind)
        random_model(make(), seed=seed).save_pretrained(folder)
        _tiny_lm(make(), seed).save_pretrained(folder)
        out[kind] = (folder, load_model(folder))
    return out


def _write_wav(path, seconds: float, sampling_rate: int, channels: int, seed: int = 0) -> torch.Tensor:
    """Writes a 16-bit WAV (a sweep plus noise) and returns what load_audio reads back `[C, T]`."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    tone = 0.3 * np.sin(2 * np.pi * (150 + 400 * t) * t)
    data = tone[:, None] + 0.05 * rng.standard_normal((t.size, channels))
    sf.write(path, data.astype(np.float32), sampling_rate, subtype="PCM_16")
    return load_audio(path)[0]


# ---------------------------------------------------------------------------------------------- compress
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("use_lm", [False, True])
def test_cli_compress_streams_the_bytes_of_compress(folders, kind, use_lm, tmp_path):
    folder, model = folders[kind]
    config = model.config
    wav = tmp_path / "in.wav"
    audio = _write_wav(wav, 1.37, config.sampling_rate, config.audio_channels)  # 1.37 s: blocks, chunks, a tail
    out = tmp_path / "out.ecdc"
    args = ["compress", str(wav), str(out), "--model", str(folder), "-b", "12"] + (["--lm"] if use_lm else [])
    assert cli.main(args) == 0
    expected = encodec_hf.compress(model, audio, bandwidth=12.0, use_lm=use_lm, lm=folder if use_lm else None)
    assert out.read_bytes() == expected


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("use_lm", [False, True])
def test_block_size_does_not_change_the_bytes(folders, kind, use_lm, tmp_path):
    folder, model = folders[kind]
    config = model.config
    wav = tmp_path / "in.wav"
    audio = _write_wav(wav, 0.61, config.sampling_rate, config.audio_channels, seed=3)
    expected = encodec_hf.compress(model, audio, bandwidth=24.0, use_lm=use_lm, lm=folder if use_lm else None)
    for block_seconds in (0.0071, 0.05, 10.0):  # blocks shorter than a frame, than a chunk, longer than the file
        out = tmp_path / f"{block_seconds}.ecdc"
        summary = compress_file(model, wav, out, bandwidth=24.0, use_lm=use_lm, block_seconds=block_seconds)
        assert out.read_bytes() == expected
        assert summary.num_bytes == len(expected) and summary.num_samples == audio.shape[1]


@pytest.mark.parametrize("kind", list(KINDS))
def test_converted_input_streams_the_bytes_of_compress_of_convert_audio(folders, kind, tmp_path):
    """Rate and channel conversion stream too, bit-identical to convert_audio of the whole file."""
    folder, model = folders[kind]
    config = model.config
    wav = tmp_path / "in.wav"
    channels = 3 - config.audio_channels  # mono -> stereo model, stereo -> mono model
    audio = _write_wav(wav, 0.9, 11025, channels, seed=5)
    assert cli.main(["compress", str(wav), str(tmp_path / "o.ecdc"), "--model", str(folder), "-b", "6"]) == 0
    converted = convert_audio(audio, 11025, config.sampling_rate, config.audio_channels)
    assert (tmp_path / "o.ecdc").read_bytes() == encodec_hf.compress(model, converted, bandwidth=6.0)


def test_a_wrong_length_estimate_is_corrected_in_the_header(folders, tmp_path, monkeypatch):
    """Formats whose frame count soundfile only estimates: the header says the length actually read."""
    folder, model = folders["frame"]
    wav = tmp_path / "in.wav"
    audio = _write_wav(wav, 0.5, model.config.sampling_rate, 1)
    real_info = audio_io.audio_info

    class Estimated:
        def __init__(self, info, frames):
            self.samplerate, self.channels, self.frames = info.samplerate, info.channels, frames

    import encodec_hf.ecdc.streamed as streamed_module

    for wrong in (audio.shape[1] + 1000, audio.shape[1] - 7, 5):
        monkeypatch.setattr(streamed_module, "audio_info", lambda p, w=wrong: Estimated(real_info(p), w))
        out = tmp_path / f"{wrong}.ecdc"
        summary = compress_file(model, wav, out, bandwidth=6.0)
        assert out.read_bytes() == encodec_hf.compress(model, audio, bandwidth=6.0)
        assert summary.num_samples == audio.shape[1] and summary.num_bytes == out.stat().st_size


def test_empty_input_is_refused(folders, tmp_path):
    wav = tmp_path / "empty.wav"
    sf.write(wav, np.zeros((0, 1), dtype=np.float32), 8000)
    with pytest.raises(encodec_hf.errors.EncodecInputError, match="empty audio"):
        compress_file(folders["frame"][1], wav, tmp_path / "o.ecdc")
    assert not (tmp_path / "o.ecdc").exists()


# ---------------------------------------------------------------------------------------------- decompress
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("use_lm", [False, True])
@pytest.mark.parametrize("rescale", [False, True])
def test_cli_decompress_streams_the_audio_of_decompress(folders, kind, use_lm, rescale, tmp_path):
    folder, model = folders[kind]
    config = model.config
    x = convert_audio(_write_wav(tmp_path / "in.wav", 1.21, 8000, 1, seed=7), 8000, 8000, config.audio_channels)
    data = encodec_hf.compress(model, 3 * x, bandwidth=24.0, use_lm=use_lm, lm=folder if use_lm else None)
    (tmp_path / "x.ecdc").write_bytes(data)
    out = tmp_path / "x.wav"
    args = ["decompress", str(tmp_path / "x.ecdc"), str(out), "--model", str(folder)] + (["-r"] if rescale else [])
    assert cli.main(args) == 0
    audio, sr = encodec_hf.decompress(data, model=model, lm=folder if use_lm else None)
    save_audio(tmp_path / "ref.wav", audio, sr, rescale=rescale)
    ours, our_sr = sf.read(out, dtype="int16", always_2d=True)
    ref, _ = sf.read(tmp_path / "ref.wav", dtype="int16", always_2d=True)
    assert our_sr == sr and ours.shape == ref.shape == (x.shape[1], config.audio_channels)
    # The streams' audio equals the offline decoder's within 1e-5: at most one 16-bit step apart, rarely.
    diff = np.abs(ours.astype(np.int32) - ref.astype(np.int32))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "ref.wav", "x.ecdc", "x.wav"]  # no spool left


def test_wav_round_trip_through_the_command(folders, tmp_path):
    folder, model = folders["chunk"]
    _write_wav(tmp_path / "in.wav", 0.4, 8000, 2)
    assert cli.main(["compress", str(tmp_path / "in.wav"), str(tmp_path / "rt.wav"), "--model", str(folder)]) == 0
    assert sf.info(tmp_path / "rt.wav").frames == int(0.4 * 8000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "rt.wav"]  # the temporary .ecdc is gone


def test_decompress_file_summary(folders, tmp_path):
    folder, model = folders["frame"]
    x = _write_wav(tmp_path / "in.wav", 0.3, 8000, 1)
    (tmp_path / "x.ecdc").write_bytes(encodec_hf.compress(model, x, bandwidth=6.0))
    summary = decompress_file(tmp_path / "x.ecdc", tmp_path / "x.wav", model=model)
    assert summary.num_samples == x.shape[1] and summary.num_bytes == (tmp_path / "x.ecdc").stat().st_size
    assert summary.peak == pytest.approx(
        float(encodec_hf.decompress(tmp_path.joinpath("x.ecdc").read_bytes(), model=model)[0].abs().max()), abs=1e-4
    )


# ---------------------------------------------------------------------------------------------- the pieces
def _cut(total: int, sizes) -> list[tuple[int, int]]:
    spans, pos, sizes = [], 0, itertools.cycle(sizes)
    while pos < total:
        n = next(sizes)
        spans.append((pos, min(total, pos + n)))
        pos += n
    return spans


@HYP
@given(
    orig=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]),
    target=st.sampled_from([8000, 24000, 48000]),
    channels=st.sampled_from([(1, 1), (2, 1), (1, 2), (3, 2)]),
    length=st.integers(1, 70_000),
    sizes=st.lists(st.integers(1, 30_000), min_size=1, max_size=4),
)
def test_streaming_converter_is_bit_identical_to_convert_audio(orig, target, channels, length, sizes):
    x = torch.randn(channels[0], length, generator=torch.Generator().manual_seed(length))
    ref = convert_audio(x, orig, target, channels[1])
    conv = StreamingConverter(orig, channels[0], target, channels[1])
    out = torch.cat([*(conv.push(x[:, a:b]) for a, b in _cut(length, sizes)), conv.flush()], -1)
    assert out.shape == ref.shape and conv.output_length(length) == ref.shape[-1]
    assert torch.equal(out, ref)


def test_blocked_resampler_matches_one_convolution():
    """The grid of convolution calls only changes float rounding against one call over the whole signal."""
    import torch.nn.functional as F

    x = torch.randn(2, 300_000, generator=torch.Generator().manual_seed(0))
    orig, new, kernels, width, per_call = audio_io._resample_plan(44100, 24000)
    assert (x.shape[-1] // orig + 1) > 3 * per_call  # several calls
    y = F.conv1d(F.pad(x[:, None], (width, width + orig)), kernels, stride=orig).transpose(1, 2).reshape(2, -1)
    torch.testing.assert_close(
        audio_io.resample(x, 44100, 24000), y[:, : -(-x.shape[-1] * new // orig)], atol=1e-6, rtol=0
    )


@HYP
@given(
    num_codebooks=st.integers(1, 5),
    nbits=st.sampled_from([6, 10]),
    frames=st.integers(1, 300),
    sizes=st.lists(st.integers(0, 90), min_size=1, max_size=5).filter(any),
)
def test_payload_bytes_do_not_depend_on_the_blocks(num_codebooks, nbits, frames, sizes):
    codes = np.random.default_rng(frames).integers(0, 2**nbits, size=(num_codebooks, frames))
    whole, cut = io.BytesIO(), io.BytesIO()
    w = PayloadWriter(whole, False, nbits, None, num_codebooks)
    w.begin_chunk(None)
    w.push(codes)
    w.end_chunk()
    w = PayloadWriter(cut, False, nbits, None, num_codebooks)
    w.begin_chunk(None)
    for a, b in _cut(frames, [s for s in sizes if s]):
        w.push(codes[:, a:b])
    w.end_chunk()
    assert cut.getvalue() == whole.getvalue()
    for block in (1, 3, 64, 1000):
        got = list(iter_payload(whole.getvalue(), 0, [frames], num_codebooks, False, nbits, None, block))
        assert all(c.shape[1] <= max(block, 8) for _, _, c in got)
        assert np.array_equal(np.concatenate([c for _, _, c in got], axis=1), codes)


def test_lm_payload_bytes_do_not_depend_on_the_blocks():
    config = tiny_config()
    lm = _tiny_lm(config, 0)
    codes = np.random.default_rng(0).integers(0, 64, size=(3, 700))
    streams = []
    for sizes in ([700], [1, 2, 300, 5], [64]):
        out = io.BytesIO()
        w = PayloadWriter(out, True, 6, lm, 3)
        for scale, (a, b) in zip([0.5, 2.0], [(0, 650), (650, 700)], strict=True):  # two chunks, as 48 kHz files
            w.begin_chunk(scale)
            for c, d in _cut(b - a, sizes):
                w.push(codes[:, a + c : a + d])
            w.end_chunk()
        streams.append(out.getvalue())
    assert streams[0] == streams[1] == streams[2]
    ends = []
    got = list(iter_payload(streams[0], 0, [650, 50], 3, True, 6, lm, 100, ends.append))
    assert ends == [len(streams[0])] and [s for _, s, _ in got] == [0.5] * 7 + [2.0]
    assert np.array_equal(np.concatenate([c for _, _, c in got], axis=1), codes)


def test_arithmetic_encoder_drain_keeps_the_stream():
    cdf = np.cumsum(np.full(16, 2**20))
    symbols = np.random.default_rng(0).integers(0, 16, 500)
    once, drained = ArithmeticEncoder(), ArithmeticEncoder()
    parts = []
    for i, s in enumerate(symbols):
        once.push(int(s), cdf)
        drained.push(int(s), cdf)
        if i % 37 == 0:
            parts.append(drained.drain())
    assert b"".join(parts) + drained.finish() == once.finish()


@pytest.mark.parametrize("rescale", [False, True])
def test_save_audio_blocks_writes_the_bytes_of_save_audio(tmp_path, rescale):
    audio = 1.3 * torch.randn(2, 50_000, generator=torch.Generator().manual_seed(0))
    peak = save_audio(tmp_path / "a.wav", audio, 8000, rescale=rescale)
    blocks = (audio[:, a:b] for a, b in _cut(audio.shape[1], [1, 999, 20_000]))
    assert save_audio_blocks(tmp_path / "b.wav", blocks, 8000, 2, rescale=rescale) == peak
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav"]


# ---------------------------------------------------------------------------------------------- progress, summary
def _last_frame(err: str, description: str) -> str:
    """The bar's last state on screen (tqdm redraws a line after each carriage return)."""
    lines = [segment for line in err.split("\n") for segment in line.split("\r") if segment.strip()]
    return [s for s in lines if s.startswith(description)][-1]


def test_progress_reaches_the_end_and_stays_and_a_summary_is_printed(folders, tmp_path, capsys, monkeypatch):
    folder, model = folders["frame"]
    monkeypatch.setattr(cli, "PROGRESS_MIN_FRAMES", 1)
    wav = tmp_path / "in.wav"
    x = _write_wav(wav, 3.0, 8000, 1)
    frames = -(-x.shape[1] // model.config.hop_length)
    assert cli.main(["compress", str(wav), str(tmp_path / "o.ecdc"), "--model", str(folder), "-b", "6"]) == 0
    err = capsys.readouterr().err
    size = (tmp_path / "o.ecdc").stat().st_size
    bar = _last_frame(err, "compress")
    assert "100%" in bar and f"{frames}/{frames}" in bar  # the end state is what stays on screen (leave=True)
    assert err.rstrip().split("\n")[-1].strip() != ""  # tqdm did not erase its line
    summary = err.strip().split("\n")[-1]
    assert summary.startswith("Compressed 3.00 s of audio") and f"{size:,} bytes" in summary
    assert f"({8 * size / 3.0 / 1000:.2f} kbps)" in summary and str(tmp_path / "o.ecdc") in summary
    assert "Loading weights" not in err

    out = tmp_path / "o.wav"
    assert cli.main(["decompress", str(tmp_path / "o.ecdc"), str(out), "--model", str(folder)]) == 0
    err = capsys.readouterr().err
    bar = _last_frame(err, "decompress")
    assert "100%" in bar and f"{frames}/{frames}" in bar
    summary = err.strip().split("\n")[-1]
    assert summary.startswith("Decompressed 3.00 s of audio") and f"{size:,} bytes" in summary
    assert re.search(r"in \d+\.\d s: .*o\.wav$", summary)
    assert "Loading weights" not in err


def test_progress_moves_with_the_work(folders, tmp_path, monkeypatch):
    """The bar is advanced after each block, not once at the end."""
    folder, model = folders["frame"]
    wav = tmp_path / "in.wav"
    _write_wav(wav, 2.5, 8000, 1)
    steps = []
    compress_file(model, wav, tmp_path / "o.ecdc", bandwidth=6.0, progress=steps.append, block_seconds=0.5)
    assert len(steps) >= 5 and sum(steps) == 2500
    steps.clear()
    decompress_file(tmp_path / "o.ecdc", tmp_path / "o.wav", model=model, progress=steps.append)
    assert len(steps) >= 2 and sum(steps) == 2500


def test_transformers_loading_bar_is_hidden_only_while_we_load(folders, capsys):
    from transformers.utils import logging as transformers_logging

    folder, _ = folders["frame"]
    EncodecModel.from_pretrained(folder)
    assert "Loading weights" in capsys.readouterr().err  # what the command would show without the guard
    cli._load_model(str(folder), "cpu")
    load_model(folder)  # the one loader of the CLI, the demo and the server
    assert "Loading weights" not in capsys.readouterr().err
    assert transformers_logging.is_progress_bar_enabled()  # restored


# ---------------------------------------------------------------------------------------------- Meta's package
@pytest.fixture(scope="module")
def meta_pairs(tmp_path_factory):
    from reference_encodec import ConvertedPair

    return {name: ConvertedPair(name, tmp_path_factory.mktemp(name)) for name in ("encodec_24khz", "encodec_48khz")}


@pytest.mark.parametrize("name, seconds", [("encodec_24khz", 0.6), ("encodec_48khz", 1.2)])  # 48 kHz: 2 chunks
@pytest.mark.parametrize("use_lm", [False, True])
def test_cli_streams_the_bytes_of_metas_compress(meta_pairs, name, seconds, use_lm, tmp_path, monkeypatch):
    from reference_encodec import original_compress_module

    # Meta's LM runs at the process's thread count and its bits depend on it; ours at one thread unless told.
    monkeypatch.setenv("ENCODEC_HF_NUM_THREADS", "inherit")
    pair = meta_pairs[name]
    pair.patch_original_models(monkeypatch)
    original = original_compress_module()
    gen = torch.Generator().manual_seed(1)
    x = 0.1 * torch.randn(pair.original.channels, int(seconds * pair.original.sample_rate), generator=gen)
    sf.write(tmp_path / "in.wav", x.t().numpy(), pair.original.sample_rate, subtype="FLOAT")  # read back exactly
    args = ["compress", str(tmp_path / "in.wav"), str(tmp_path / "o.ecdc"), "--model", str(pair.folder)]
    assert cli.main(args + (["--lm"] if use_lm else [])) == 0
    pair.original.set_target_bandwidth(6.0)
    theirs = original.compress(pair.original, x, use_lm=use_lm)
    assert (tmp_path / "o.ecdc").read_bytes() == theirs
    assert (
        cli.main(["decompress", str(tmp_path / "o.ecdc"), str(tmp_path / "o.wav"), "--model", str(pair.folder)]) == 0
    )
    reference, _ = original.decompress(theirs)
    ours, _ = sf.read(tmp_path / "o.wav", always_2d=True)
    expected = reference.clamp(-0.99, 0.99).t().numpy()
    assert ours.shape == expected.shape and np.abs(ours - expected).max() <= 1 / 32767 + 1e-5


def test_a_model_that_cannot_stream_is_run_whole(tmp_path, capsys):
    """A non-causal unchunked model has no stream: the command says so and gives compress's bytes anyway."""
    folder = tmp_path / "model"
    model = random_model(tiny_config(ecdc_model_name="encodec_24khz", use_causal_conv=False), seed=4)
    model.save_pretrained(folder)
    x = _write_wav(tmp_path / "in.wav", 0.3, 8000, 1)
    assert cli.main(["compress", str(tmp_path / "in.wav"), str(tmp_path / "o.ecdc"), "--model", str(folder)]) == 0
    assert "cannot stream" in capsys.readouterr().err
    assert (tmp_path / "o.ecdc").read_bytes() == encodec_hf.compress(load_model(folder), x, bandwidth=6.0)
    assert cli.main(["decompress", str(tmp_path / "o.ecdc"), str(tmp_path / "o.wav"), "--model", str(folder)]) == 0
    err = capsys.readouterr().err
    assert "cannot stream" in err and err.strip().split("\n")[-1].startswith("Decompressed 0.30 s of audio")
    assert sf.info(tmp_path / "o.wav").frames == x.shape[1]


def test_summary_durations():
    assert cli._duration(3.0) == "3.00 s" and cli._duration(3600.4) == "3600.4 s (1:00:00)"
    assert cli._duration(61.0) == "61.0 s (0:01:01)"
