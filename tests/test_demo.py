"""`make demo` (python -m encodec_hf.demo): runs on a local checkpoint and fails in one clear line offline."""

from __future__ import annotations

import soundfile as sf
from conftest import tiny_config

from encodec_hf import EncodecModel, demo


def test_demo_encodes_and_decodes_the_bundled_clip(tmp_path, capsys):
    EncodecModel(tiny_config()).save_pretrained(tmp_path / "model")
    out = tmp_path / "decoded.wav"
    assert demo.main(["--model", str(tmp_path / "model"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    for label in ("bandwidth", "SI-SNR", "real time", "wrote"):
        assert label in printed
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.frames) == (8000, 1, 4 * 8000)  # resampled from 24 kHz


def test_demo_without_hub_or_cache_says_so_in_one_line(monkeypatch, capsys):
    def unreachable(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(EncodecModel, "from_pretrained", unreachable)
    assert demo.main([]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MODEL=" in err[0] and "unreachable" in err[0]
