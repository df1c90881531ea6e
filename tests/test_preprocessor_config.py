"""A folder written by `EncodecModel.save_pretrained` gives its feature extractor, through every loader."""

from __future__ import annotations

import json

import pytest
import transformers
from conftest import random_model, reference_from_config, tiny_chunked_config, tiny_config
from transformers import AutoFeatureExtractor, AutoProcessor

import encodec_hf
from encodec_hf import EncodecFeatureExtractor, EncodecModel

FIELDS = ("feature_size", "sampling_rate", "chunk_length_s", "overlap", "padding_value")


def _fields(fe) -> tuple:
    return tuple(getattr(fe, k) for k in FIELDS)


@pytest.fixture
def registered():
    encodec_hf.register()
    try:
        yield
    finally:
        encodec_hf.unregister()


@pytest.mark.parametrize("make_config", [tiny_config, tiny_chunked_config])
def test_save_pretrained_writes_the_preprocessor_config_every_loader_reads(make_config, tmp_path):
    config = make_config()
    random_model(config).save_pretrained(tmp_path)
    expected = _fields(EncodecFeatureExtractor.for_config(config))
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["feature_extractor_type"] == "EncodecFeatureExtractor" and saved["sampling_rate"] == 8000
    ours = EncodecFeatureExtractor.from_pretrained(tmp_path)
    assert type(ours) is EncodecFeatureExtractor and _fields(ours) == expected
    # Without register(): transformers' own class, the same fields (plain transformers reads the folder too).
    for loader in (AutoFeatureExtractor, AutoProcessor):
        theirs = loader.from_pretrained(tmp_path)
        assert type(theirs) is transformers.EncodecFeatureExtractor and _fields(theirs) == expected


@pytest.mark.parametrize("make_config", [tiny_config, tiny_chunked_config])
def test_auto_classes_give_encodec_hf_feature_extractor_after_register(make_config, tmp_path, registered):
    config = make_config()
    random_model(config).save_pretrained(tmp_path)
    for loader in (AutoFeatureExtractor, AutoProcessor):
        fe = loader.from_pretrained(tmp_path)
        assert type(fe) is EncodecFeatureExtractor
        assert _fields(fe) == _fields(EncodecFeatureExtractor.for_config(config))


def test_a_folder_without_preprocessor_config_derives_it_from_config_json(tmp_path):
    config = tiny_chunked_config()
    reference_from_config(config).save_pretrained(tmp_path)  # transformers' save: no preprocessor_config.json
    assert not (tmp_path / "preprocessor_config.json").exists()
    fe = EncodecFeatureExtractor.from_pretrained(tmp_path)
    assert _fields(fe) == _fields(EncodecFeatureExtractor.for_config(config))
    assert EncodecFeatureExtractor.from_pretrained(tmp_path, padding_value=0.5).padding_value == 0.5  # overrides
    assert _fields(EncodecFeatureExtractor.from_pretrained(str(tmp_path), local_files_only=True)) == _fields(fe)


def test_a_folder_with_neither_file_keeps_transformers_error(tmp_path):
    with pytest.raises(OSError, match="preprocessor_config.json"):
        EncodecFeatureExtractor.from_pretrained(tmp_path)


def test_an_existing_preprocessor_config_is_kept_when_it_fits_and_replaced_when_not(tmp_path):
    config = tiny_config()
    EncodecFeatureExtractor.for_config(config).__class__(sampling_rate=8000, padding_value=0.25).save_pretrained(
        tmp_path
    )
    random_model(config).save_pretrained(tmp_path)
    assert EncodecFeatureExtractor.from_pretrained(tmp_path).padding_value == 0.25  # the user's own value stays
    EncodecFeatureExtractor(sampling_rate=24000).save_pretrained(tmp_path)  # another model's file
    random_model(config).save_pretrained(tmp_path)
    assert EncodecFeatureExtractor.from_pretrained(tmp_path).sampling_rate == 8000


def test_save_pretrained_with_push_to_hub_uploads_the_finished_folder(tmp_path, monkeypatch):
    model = random_model(tiny_config())
    pushed = {}

    def fake_push(self, **kwargs):  # PreTrainedModel.push_to_hub saves afresh through save_pretrained
        pushed.update(kwargs, has_preprocessor=(tmp_path / "out" / "preprocessor_config.json").is_file())

    monkeypatch.setattr(EncodecModel, "push_to_hub", fake_push)
    model.save_pretrained(tmp_path / "out", push_to_hub=True, commit_message="first", token="t")
    assert pushed == dict(repo_id="out", commit_message="first", token="t", has_preprocessor=True)
    pushed.clear()
    model.save_pretrained(tmp_path / "out", push_to_hub=True, repo_id="me/codec")
    assert pushed["repo_id"] == "me/codec"
