"""The README's Quick start and each model card's example run as written: verbatim, on a local model and audio.

The blocks are read from README.md at test time, so the README cannot drift from what runs. Only the inputs are
swapped, each substitution checked to have happened: the Hub model id for a folder written by
`EncodecModel.save_pretrained` (random weights), audio file names for a wav this test writes, and a
`load_dataset(...)` call for a local Parquet file of wav clips with an `Audio` column, the form Hub datasets
are stored in. (`load_dataset("audiofolder", ...)` cannot stand in: with datasets 5 building it encodes every
file through torchcodec.) It runs with
the Hub offline and its caches in the test's folder, and without torchcodec (not installed in the test env).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import random_model, tiny_chunked_config, tiny_config

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_ID = "facebook/encodec_24khz"
AUDIO_FILE = re.compile(r"""(["'])[^"'\s]+\.(?:wav|flac|ogg)\1""")
LOAD_DATASET = re.compile(r"load_dataset\([^\n]*\)")


def quick_start_blocks(readme: Path) -> list[str]:
    """The ```python blocks of the README's "## Quick start" section, in order."""
    text = readme.read_text(encoding="utf-8")
    match = re.search(r"^## Quick start\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, f"{readme} has no '## Quick start' section"
    blocks = re.findall(r"^```python\n(.*?)^```", match.group(1), flags=re.S | re.M)
    assert blocks, "the Quick start section has no ```python block"
    return blocks


def localise(code: str, model_folder: Path, wav: Path, parquet: Path) -> str:
    """Swap the Hub model id, audio file names and `load_dataset(...)` calls for local ones (only those)."""
    assert MODEL_ID in code, f"the Quick start no longer loads {MODEL_ID}: update this test's substitutions"
    code = code.replace(f'"{MODEL_ID}"', repr(str(model_folder)))
    code = AUDIO_FILE.sub(repr(str(wav)), code)
    code = LOAD_DATASET.sub(f'load_dataset("parquet", data_files={str(parquet)!r}, split="train")', code)
    return code


def write_inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A random-weight model folder, a 16 kHz speech-like wav and a Parquet dataset of two such clips."""
    from datasets import Audio, Dataset, Features, Value

    model_folder = tmp_path / "model"
    random_model(tiny_config()).save_pretrained(model_folder)  # 8 kHz mono: the snippets must resample
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    speech = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    wav = tmp_path / "speech.wav"
    sf.write(wav, speech, 16000)
    rows = []
    for i in range(2):
        buffer = io.BytesIO()
        sf.write(buffer, np.roll(speech, 1000 * i), 16000, format="WAV")
        rows.append({"bytes": buffer.getvalue(), "path": f"clip_{i}.wav"})
    # Built as plain structs and cast: datasets 5 encodes `Audio` values through torchcodec, casting does not.
    raw = Features({"audio": {"bytes": Value("binary"), "path": Value("string")}})
    parquet = tmp_path / "dataset" / "train.parquet"
    Dataset.from_dict({"audio": rows}, features=raw).cast(Features({"audio": Audio()})).to_parquet(parquet)
    return model_folder, wav, parquet


def test_readme_quick_start_runs_verbatim(tmp_path, monkeypatch):
    model_folder, wav, parquet = write_inputs(tmp_path)
    code = "\n".join(quick_start_blocks(REPO_ROOT / "README.md"))
    script = localise(code, model_folder, wav, parquet)
    assert MODEL_ID not in script
    # Offline, with the caches in tmp_path: the first session of a user without the Hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets_cache")
    namespace: dict = {"__name__": "__quickstart__"}
    exec(compile(script, "README.md (Quick start)", "exec"), namespace)  # noqa: S102 - the README's own code
    audio_values, codes = namespace["audio_values"], namespace["encoder_outputs"].audio_codes
    assert audio_values.shape[:2] == (1, 1) and audio_values.shape[2] > 0
    assert codes.shape[:3] == (1, 1, 1)  # 6 kbps on the tiny model: one codebook


def test_localise_swaps_only_inputs(tmp_path):
    code = (
        f'm = M.from_pretrained("{MODEL_ID}")\na, sr = load_audio("speech.wav")\n'
        'ds = load_dataset("hf-internal-testing/librispeech_asr_dummy", "clean", split="validation")\n'
    )
    out = localise(code, Path("/m"), Path("/a/x.wav"), Path("/d/train.parquet"))
    assert out == (
        "m = M.from_pretrained('/m')\na, sr = load_audio('/a/x.wav')\n"
        'ds = load_dataset("parquet", data_files=\'/d/train.parquet\', split="train")\n'
    )


# Each Hub card's "Use with encodec_hf" block, on a tiny model of the card's structure and bandwidths.
CARD_CONFIGS = {
    "encodec_24khz": tiny_config,
    "encodec_48khz": tiny_chunked_config,  # stereo, chunked, normalised
    "encodec_32khz": lambda: tiny_config(sampling_rate=400, codebook_size=2048, target_bandwidths=[2.2]),  # 50 fps
}


@pytest.mark.parametrize("card", sorted(CARD_CONFIGS))
def test_model_card_example_runs_verbatim(card, tmp_path, monkeypatch):
    text = (REPO_ROOT / "model_cards" / f"{card}.md").read_text(encoding="utf-8")
    section = re.search(r"^## Use with encodec_hf\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert section, f"{card}.md has no '## Use with encodec_hf' section"
    (code,) = re.findall(r"^```python\n(.*?)^```", section.group(1), flags=re.S | re.M)
    folder = tmp_path / "card_model"  # write_inputs writes its own tiny model to tmp_path / "model"
    random_model(CARD_CONFIGS[card]()).save_pretrained(folder)
    _, wav, _ = write_inputs(tmp_path)
    assert "{repo_id}" in code
    script = AUDIO_FILE.sub(repr(str(wav)), code.replace('"{repo_id}"', repr(str(folder))))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict = {"__name__": "__model_card__"}
    exec(compile(script, f"{card}.md", "exec"), namespace)  # noqa: S102 - the card's own code
    config = namespace["model"].config
    assert namespace["audio_values"].shape[:2] == (1, config.audio_channels)
