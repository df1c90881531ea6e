"""`.ecdc` files of the real 48 kHz clip byte-identical to Meta's `encodec` 0.1.1, for several random weights.

The only float in a file is each chunk's float32 scale (RMS of the mono mix + 1e-8). Its last bit depends on the
shape the reduction runs on when torch uses several threads (one long row is split across the threads, a stack
of rows is not), so stacking a clip's 1 s chunks into one batch used to move the scale of some chunks by one ulp:
of the 2 s prefix, the second chunk; of the 7.3 s prefix, the second and fifth. These tests run with two threads
or more, where that happens, on the clip shipped in tests/data (Meta's MIT-licensed test_48k.wav, unchanged).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from reference_encodec import ConvertedPair, original_compress_module

import encodec_hf
from encodec_hf.audio_io import load_audio

CLIP_48K = Path(__file__).resolve().parent / "data" / "test_48k.wav"
SEEDS = (1, 2, 3)  # weights drawn otherwise than the rest of the suite (seed 0)


@pytest.fixture(autouse=True)
def _lm_threads_as_the_original(monkeypatch):
    """Meta's LM runs at the process's thread count and its bits depend on it; ours runs at one thread unless told
    otherwise (`encodec_hf.threads`). Comparing bits, both sides run at the process's count."""
    monkeypatch.setenv("ENCODEC_HF_NUM_THREADS", "inherit")


@pytest.fixture(scope="module")
def clip_48k() -> torch.Tensor:
    """The real stereo clip `[2, 720_000]` (15 s at 48 kHz), float32 in [-1, 1]."""
    audio, sampling_rate = load_audio(CLIP_48K)
    assert sampling_rate == 48_000 and audio.shape == (2, 720_000)
    return audio


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Factory: seed -> the original 48 kHz model + LM with random weights and their conversion, built once."""
    cache: dict[int, ConvertedPair] = {}

    def get(seed: int) -> ConvertedPair:
        if seed not in cache:
            cache[seed] = ConvertedPair("encodec_48khz", tmp_path_factory.mktemp(f"seed{seed}"), seed=seed)
        return cache[seed]

    return get


@pytest.fixture
def threads(request):
    previous = torch.get_num_threads()
    torch.set_num_threads(getattr(request, "param", 2))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _check_identical(pair: ConvertedPair, audio: torch.Tensor, use_lm: bool, monkeypatch) -> None:
    original = original_compress_module()
    pair.patch_original_models(monkeypatch)
    pair.original.set_target_bandwidth(6.0)
    theirs = original.compress(pair.original, audio, use_lm=use_lm)
    ours = encodec_hf.compress(pair.model, audio, bandwidth=6.0, use_lm=use_lm, lm=pair.folder if use_lm else None)
    differing = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b]
    assert len(ours) == len(theirs) and not differing, f"lengths {len(ours)} / {len(theirs)}, bytes {differing[:8]}"
    if not use_lm:  # and Meta's package decodes the same audio from it as we do
        reference, _ = original.decompress(ours)
        decoded, _ = encodec_hf.decompress(ours, model=pair.model)
        assert (decoded - reference).abs().max() <= 1e-5


# 0.5 s and 1.0 s: one full chunk and a short one (or none); 1.01 s: a full and a 1 s one; 2 s, 3 s, 7.3 s: several
# full chunks, the ones whose scales moved. Every seed at the lengths that tell, the rest once.
WITHOUT_LM = [(seed, seconds) for seed in SEEDS for seconds in (0.5, 1.01, 2.0, 3.0)]
WITHOUT_LM += [(1, 1.0), pytest.param(2, 7.3, marks=pytest.mark.slow)]


@pytest.mark.parametrize("seed, seconds", WITHOUT_LM)
def test_without_lm_byte_identical(pairs, clip_48k, threads, seed, seconds, monkeypatch):
    _check_identical(pairs(seed), clip_48k[:, : int(seconds * 48_000)], False, monkeypatch)


@pytest.mark.parametrize("threads", [3], indirect=True)
def test_without_lm_byte_identical_on_three_threads(pairs, clip_48k, threads, monkeypatch):
    _check_identical(pairs(1), clip_48k[:, : 2 * 48_000], False, monkeypatch)


# Meta's LM recomputes its whole past at every frame (150 frames per second): one length per seed.
@pytest.mark.parametrize(
    "seed, seconds", [(1, 0.5), (2, 1.01), pytest.param(3, 2.0, marks=pytest.mark.slow)], ids=["0.5s", "1.01s", "2s"]
)
def test_with_lm_byte_identical(pairs, clip_48k, threads, seed, seconds, monkeypatch):
    _check_identical(pairs(seed), clip_48k[:, : int(seconds * 48_000)], True, monkeypatch)
