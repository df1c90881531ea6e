"""The one chunk layout and the one codes type (`encodec_hf.codec.chunking`): spans equal the model's and Meta's
for edge lengths, and `ClipCodes` round-trips through the model, the datasets helpers, the endpoint, `.ecdc` and
the codes file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from code_compare import assert_codes_match, encoder_latents
from conftest import audio, random_model, tiny_chunked_config, tiny_config
from reference_encodec import build_original_model

import encodec_hf
from encodec_hf import EncodecConfig
from encodec_hf.codec.chunking import ChunkLayout, ClipCodes
from encodec_hf.errors import EncodecInputError
from encodec_hf.integrations.datasets import EncodecMapFunction, decode_clip, decode_codes_example, encode_clips
from encodec_hf.integrations.endpoint import parse_request
from encodec_hf.streaming import encode_file, read_clip_codes

# 48 kHz: chunk 48_000, stride 47_520. Lengths at and around one sample, one frame, one stride, one chunk, two.
EDGE_LENGTHS_48K = [1, 319, 320, 321, 47_519, 47_520, 47_521, 47_999, 48_000, 48_001, 95_040, 95_041, 95_520, 95_521]


def _meta_spans(original, length: int) -> list[tuple[int, int]]:
    """The (start, end) of the chunks Meta's `EncodecModel.encode` cuts, recorded from its own loop."""
    seen = []

    def record(frame):
        first = int(frame[0, 0, 0])
        seen.append((first, first + frame.shape[-1]))
        return None

    original._encode_frame = record  # the loop in `encode` decides the spans; nothing is really encoded
    original.encode(torch.arange(length, dtype=torch.float64).expand(1, original.channels, length))
    return seen


@pytest.fixture(scope="module")
def meta_48k():
    return build_original_model("encodec_48khz")


@pytest.mark.parametrize("length", EDGE_LENGTHS_48K)
def test_spans_equal_metas(meta_48k, length):
    layout = ChunkLayout.from_config(EncodecConfig.encodec_48khz())
    assert (layout.chunk_length, layout.stride) == (meta_48k.segment_length, meta_48k.segment_stride)
    assert layout.spans(length) == _meta_spans(meta_48k, length)
    assert layout.num_chunks(length) == len(layout.spans(length))
    # Meta's decompress counts ceil(L * frame_rate / sampling_rate) frames per chunk.
    expected = [-(-(end - start) * meta_48k.frame_rate // meta_48k.sample_rate) for start, end in layout.spans(length)]
    assert layout.chunk_frames(length) == expected


def test_spans_unchunked_and_feature_extractor_padding():
    layout = ChunkLayout.from_config(EncodecConfig.encodec_24khz())
    assert layout.spans(1234) == [(0, 1234)] and layout.num_chunks(1234) == 1
    assert layout.chunk_frames(1234) == [4] and layout.frames_per_chunk(1234) == 4  # ceil(1234 / 320)
    chunked = ChunkLayout.from_config(EncodecConfig.encodec_48khz())
    # transformers pads to (ceil(T / stride) - 1) * stride + chunk and truncates with floor.
    assert chunked.padded_length(48_001) == 47_520 + 48_000
    assert chunked.padded_length(95_039, truncate=True) == 48_000


@pytest.mark.parametrize("length", [1, 7, 8, 9, 719, 720, 721, 799, 800, 801, 1440, 1441, 1521])
def test_spans_equal_the_models(length):
    """`model.encode` makes one code chunk per span, each of its span's frames (chunk 800, stride 720, hop 8)."""
    model = random_model(tiny_chunked_config())
    out = model.encode(audio(1, 2, length), bandwidth=24.0)
    layout = model.chunk_layout
    frames = layout.chunk_frames(length)
    assert out.audio_codes.shape[0] == len(layout.spans(length)) == len(frames)
    assert out.audio_codes.shape[-1] - out.last_frame_pad_length == frames[-1]
    (clip,) = ClipCodes.from_encoder_output(out, model.config)
    assert [codes.shape[-1] for codes, _ in clip.chunks(model.config)] == frames
    assert clip.audio_codes.shape == (len(frames), 4, layout.frames_per_chunk(length))


@pytest.mark.parametrize("chunked", [False, True])
def test_encoder_output_round_trip(chunked):
    """from_encoder_output splits a padded batch into clips equal to encoding each alone; decoder_inputs is the
    inverse: decoding the clips as one batch gives each clip's own decode."""
    config = tiny_chunked_config() if chunked else tiny_config()
    model = random_model(config)
    channels = config.audio_channels
    lengths = [1500, 37, 801]
    clips_audio = [audio(1, channels, n, seed=n)[0] for n in lengths]
    batch = torch.zeros(len(lengths), channels, max(lengths))
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
    for i, (x, n) in enumerate(zip(clips_audio, lengths, strict=True)):
        batch[i, :, :n], mask[i, :n] = x, True
    clips = ClipCodes.from_encoder_output(model.encode(batch, mask, bandwidth=12.0), config)
    for x, clip in zip(clips_audio, clips, strict=True):
        (alone,) = ClipCodes.from_encoder_output(model.encode(x[None], bandwidth=12.0), config)
        latents = encoder_latents(model, x[None])[:, 0]  # [N, D, F]; batch vs item: near-ties only
        latents = torch.nn.functional.pad(latents, (0, alone.audio_codes.shape[-1] - latents.shape[-1]))  # chunk width
        assert_codes_match(clip.audio_codes, alone.audio_codes, model, latents)
        assert clip.num_samples == alone.num_samples
        if chunked:
            assert torch.equal(clip.audio_scales, alone.audio_scales)
        else:
            assert clip.audio_scales is None
    together = model.decode(**ClipCodes.decoder_inputs(clips)).audio_values
    for i, clip in enumerate(clips):
        one = model.decode(**ClipCodes.decoder_inputs([clip])).audio_values[0]
        assert one.shape[-1] == clip.num_samples
        torch.testing.assert_close(together[i, :, : clip.num_samples], one, rtol=0, atol=1e-6)


def test_checked_refuses_what_does_not_fit():
    config = tiny_chunked_config()  # 1441 samples: 3 chunks of 100 frames, scales required
    good = np.zeros((3, 2, 100), dtype=np.int64)
    clip = ClipCodes.checked(config, good.tolist(), [0.1, 0.2, 0.3], 1441)
    assert clip.audio_codes.dtype == torch.long and clip.audio_scales.shape == (3,)
    bad = [
        ((good[:2], [0.1, 0.2], 1441), r"shape \[3, K, 100\]"),
        ((good[..., :99], [0.1, 0.2, 0.3], 1441), r"shape \[3, K, 100\]"),
        ((np.zeros((3, 5, 100)), [0.1, 0.2, 0.3], 1441), "at most 4"),
        ((good + 64, [0.1, 0.2, 0.3], 1441), r"\[0, 63\]"),
        ((good, None, 1441), "audio_scales"),
        ((good, [0.1, float("nan"), 0.3], 1441), "finite positive"),
        ((good, [0.1, 0.2, 0.3], 0), "positive integer"),
        (([[[1, 2], [3]]], None, 10), "rectangular"),
    ]
    for args, message in bad:
        with pytest.raises(EncodecInputError, match=message):
            ClipCodes.checked(config, *args)
    with pytest.raises(EncodecInputError, match="null"):
        ClipCodes.checked(tiny_config(), np.zeros((1, 1, 5)), [1.0], 40)


@pytest.fixture(scope="module")
def chunked_model():
    model = random_model(tiny_chunked_config(target_bandwidths=[6.0, 12.0]))
    model.config.ecdc_model_name = "encodec_48khz"  # lets the tiny model write .ecdc files
    return model


@pytest.fixture(scope="module")
def clip_audio():
    return audio(1, 2, 1521, seed=3)[0]  # 3 chunks, the last one short


def test_round_trip_datasets_and_endpoint(chunked_model, clip_audio):
    config = chunked_model.config
    (expected,) = encode_clips(chunked_model, [clip_audio.numpy()])  # bandwidth None: the lowest
    row = EncodecMapFunction(chunked_model)({"audio": [{"array": clip_audio.numpy(), "sampling_rate": 8000}]})
    stored = ClipCodes.checked(config, row["audio_codes"][0], row["audio_scales"][0], row["num_samples"][0])
    assert torch.equal(stored.audio_codes, expected.audio_codes)
    assert torch.equal(stored.audio_scales, expected.audio_scales)
    decoded = decode_codes_example({k: v[0] for k, v in row.items()}, chunked_model)["audio_values"]
    np.testing.assert_array_equal(decoded, decode_clip(chunked_model, expected))

    payload = {
        "audio_codes": expected.audio_codes.tolist(),
        "audio_scales": expected.audio_scales.tolist(),
        "num_samples": expected.num_samples,
    }
    request = parse_request({"inputs": payload}, config)
    assert request.task == "decode" and request.bandwidth == 6.0
    assert torch.equal(request.codes.audio_codes, expected.audio_codes)
    assert torch.equal(request.codes.audio_scales, expected.audio_scales)


def test_round_trip_ecdc(chunked_model, clip_audio):
    (expected,) = encode_clips(chunked_model, [clip_audio.numpy()], 12.0)
    data = encodec_hf.compress(chunked_model, clip_audio, bandwidth=12.0)
    decoded, rate = encodec_hf.decompress(data, model=chunked_model)
    assert rate == 8000 and decoded.shape == clip_audio.shape
    # .ecdc stores float32 scales, exactly what ClipCodes holds: the decode is the same to the bit.
    torch.testing.assert_close(decoded, torch.from_numpy(decode_clip(chunked_model, expected)), rtol=0, atol=0)


@pytest.mark.parametrize("chunked", [False, True])
def test_round_trip_codes_file(tmp_path, chunked):
    model = random_model(tiny_chunked_config() if chunked else tiny_config())
    x = audio(1, model.config.audio_channels, 1521, seed=5)[0]
    wav = tmp_path / "in.wav"
    sf.write(wav, x.T.numpy(), 8000, subtype="FLOAT")
    encode_file(model, wav, tmp_path / "codes.ehfc", bandwidth=12.0)
    info, clip = read_clip_codes(tmp_path / "codes.ehfc")
    (expected,) = ClipCodes.from_encoder_output(model.encode(x[None], bandwidth=12.0), model.config)
    assert info.num_samples == clip.num_samples == 1521
    assert torch.equal(clip.audio_codes, expected.audio_codes)
    if chunked:
        assert torch.equal(clip.audio_scales, expected.audio_scales)
    else:
        assert clip.audio_scales is None
