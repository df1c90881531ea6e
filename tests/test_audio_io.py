import math

import numpy as np
import pytest
import soundfile as sf
import torch

from encodec_hf.audio_io import convert_audio, load_audio, resample, save_audio


def test_resample_preserves_a_band_limited_tone_and_length():
    sr = 44100
    t = torch.arange(sr) / sr
    tone = torch.sin(2 * math.pi * 440 * t)[None]
    out = resample(tone, sr, 24000)
    assert out.shape == (1, 24000)  # ceil(T * new / orig)
    t2 = torch.arange(24000) / 24000
    assert (out[0, 200:-200] - torch.sin(2 * math.pi * 440 * t2[200:-200])).abs().max() < 2e-3
    assert resample(tone, sr, sr) is tone
    assert resample(torch.zeros(2, 3, 100), 16000, 48000).shape == (2, 3, 300)
    with pytest.raises(ValueError, match="positive"):
        resample(tone, 0, 24000)


def test_resample_removes_content_above_the_new_nyquist():
    sr = 48000
    t = torch.arange(sr) / sr
    high = torch.sin(2 * math.pi * 15000 * t)[None]  # above 12 kHz, the Nyquist of 24 kHz
    assert resample(high, sr, 24000)[0, 500:-500].abs().max() < 0.01


def test_convert_audio_channels():
    stereo = torch.stack([torch.ones(10), -torch.ones(10)])
    assert torch.equal(convert_audio(stereo, 8000, 8000, 1), torch.zeros(1, 10))
    mono = torch.arange(10.0)[None]
    assert torch.equal(convert_audio(mono, 8000, 8000, 2), mono.expand(2, -1))
    assert convert_audio(torch.randn(6, 10), 8000, 8000, 2).shape == (2, 10)
    with pytest.raises(ValueError, match="1 or 2"):
        convert_audio(mono, 8000, 8000, 3)
    with pytest.raises(ValueError, match=r"\[C, T\]"):
        convert_audio(torch.zeros(10), 8000, 8000, 1)


def test_save_load_round_trip_clipping_and_rescale(tmp_path):
    audio = torch.tensor([[0.5, -0.25, 1.5, -2.0]])
    peak = save_audio(tmp_path / "a.wav", audio, 16000)
    assert peak == 2.0
    loaded, sr = load_audio(tmp_path / "a.wav")
    assert sr == 16000 and loaded.shape == (1, 4)
    assert np.allclose(loaded[0].numpy(), [0.5, -0.25, 0.99, -0.99], atol=1 / 32767)
    save_audio(tmp_path / "b.wav", audio, 16000, rescale=True)
    loaded, _ = load_audio(tmp_path / "b.wav")
    assert np.allclose(loaded[0].numpy(), (audio[0] * 0.99 / 2).numpy(), atol=1 / 32767)
    assert sf.info(tmp_path / "b.wav").subtype == "PCM_16"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"junk")
    with pytest.raises(ValueError, match="Cannot read"):
        load_audio(tmp_path / "junk.wav")
