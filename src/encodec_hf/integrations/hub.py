"""Hub repositories of converted models: weights, configs, model card, remote code and endpoint handler.

`save_for_hub` writes a folder that is a complete Hub model repo:

* `config.json`, `model.safetensors`, `preprocessor_config.json` (`save_pretrained`);
* `auto_map` entries in both JSON files plus copies of the encodec_hf modules they name, so plain
  transformers loads the repo with `AutoModel.from_pretrained(repo, trust_remote_code=True)`;
* `README.md`, the model card from `model_cards/` (its YAML header is checked for `license`,
  `library_name`, `pipeline_tag`, `tags` and `base_model`);
* the Inference Endpoints files that sit next to the card (`handler.py`, `requirements.txt`).

`push_to_hub` saves that folder to a temporary directory and uploads it with `huggingface_hub.HfApi`;
`load_model` is the package's one way to load a model from a Hub repository or a local folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["REQUIRED_CARD_FIELDS", "load_model", "load_model_card", "push_to_hub", "save_for_hub"]

REQUIRED_CARD_FIELDS = ("license", "library_name", "pipeline_tag", "tags", "base_model")
# Files next to a model card that belong in the repo too (Inference Endpoints custom handler).
ENDPOINT_FILES = ("handler.py", "requirements.txt")


def load_model(name_or_path: str | os.PathLike, device: str | torch.device = "cpu", **kwargs):
    """`EncodecModel.from_pretrained(name_or_path, **kwargs)` in eval mode on `device`: a Hub repository id or a
    local folder (``config.json`` + weights). The command line, ``compress`` / ``decompress``, the datasets
    helpers and the endpoint all load models through it.
    """
    # Imported here: the endpoint's request parsing and the .ecdc container import this module, and must not
    # pull in the network definition until a model is actually loaded.
    from ..codec.modeling import EncodecModel

    return EncodecModel.from_pretrained(os.fspath(name_or_path), **kwargs).to(device).eval()


def load_model_card(path: str | os.PathLike, repo_id: str | None = None):
    """Load a model card template and check its YAML header.

    `{repo_id}` in the card text is replaced by `repo_id` (when given), so usage snippets name the repo.

    Raises:
        FileNotFoundError: no card at `path`.
        ValueError: the header lacks one of `REQUIRED_CARD_FIELDS`.
    """
    from huggingface_hub import ModelCard

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model card {path} not found (the templates live in model_cards/).")
    text = path.read_text(encoding="utf-8")
    if repo_id is not None:
        text = text.replace("{repo_id}", repo_id)
    card = ModelCard(text)
    meta = card.data.to_dict()
    missing = [field for field in REQUIRED_CARD_FIELDS if not meta.get(field)]
    if missing:
        raise ValueError(f"Model card {path} lacks YAML header field(s) {missing}; add them between the --- lines.")
    return card


@contextlib.contextmanager
def _auto_classes(*pairs):
    """Temporarily mark classes for `auto_map` export (transformers stores this as a class attribute)."""
    saved = [(cls, cls.__dict__.get("_auto_class", None), "_auto_class" in cls.__dict__) for cls, _ in pairs]
    try:
        for cls, auto in pairs:
            cls.register_for_auto_class(auto)
        yield
    finally:
        for cls, value, had in saved:
            if had:
                cls._auto_class = value
            else:
                with contextlib.suppress(AttributeError):
                    delattr(cls, "_auto_class")


def save_for_hub(
    model,
    save_directory: str | os.PathLike,
    *,
    model_card: str | os.PathLike,
    feature_extractor=None,
    repo_id: str | None = None,
    remote_code: bool = True,
    endpoint_files: bool = True,
) -> list[str]:
    """Write a complete Hub repo for `model` into `save_directory`.

    Args:
        model (`EncodecModel`): the converted model.
        save_directory: target folder (created).
        model_card: card template, e.g. `model_cards/encodec_24khz.md`.
        feature_extractor (`EncodecFeatureExtractor`, *optional*): built from the config if omitted.
        repo_id (`str`, *optional*): substituted for `{repo_id}` in the card.
        remote_code (`bool`): add `auto_map` and the module files for `trust_remote_code=True` loading.
        endpoint_files (`bool`): copy `handler.py` / `requirements.txt` found next to the card.

    Returns:
        `list[str]`: the relative paths of the files written, sorted.
    """
    from ..codec.feature_extraction import EncodecFeatureExtractor

    card = load_model_card(model_card, repo_id)
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    fe = feature_extractor if feature_extractor is not None else EncodecFeatureExtractor.for_config(model.config)
    pairs = [(type(model.config), "AutoConfig"), (type(model), "AutoModel"), (type(fe), "AutoFeatureExtractor")]
    with _auto_classes(*pairs) if remote_code else contextlib.nullcontext():
        model.save_pretrained(save_directory, safe_serialization=True)
        fe.save_pretrained(save_directory)
    if remote_code:
        # `save_pretrained` recorded auto_map on the live config; keep the in-memory model as it was.
        with contextlib.suppress(AttributeError):
            del model.config.auto_map
    card.save(save_directory / "README.md")
    if endpoint_files:
        for name in ENDPOINT_FILES:
            source = Path(model_card).parent / name
            if source.is_file():
                shutil.copyfile(source, save_directory / name)
    return sorted(str(p.relative_to(save_directory)) for p in save_directory.rglob("*") if p.is_file())


def push_to_hub(
    model,
    repo_id: str,
    *,
    model_card: str | os.PathLike,
    feature_extractor=None,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload EnCodec model (encodec_hf)",
    api=None,
):
    """Create `repo_id` if needed and upload the folder `save_for_hub` builds.

    Args:
        api (`huggingface_hub.HfApi`, *optional*): the client to use (tests pass a local stand-in).

    Returns:
        Whatever `api.upload_folder` returns (a `CommitInfo` for the real Hub).
    """
    from huggingface_hub import HfApi

    api = api if api is not None else HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="encodec_hf_push_") as tmp:
        save_for_hub(model, tmp, model_card=model_card, feature_extractor=feature_extractor, repo_id=repo_id)
        api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
        return api.upload_folder(
            repo_id=repo_id, folder_path=tmp, repo_type="model", revision=revision, commit_message=commit_message
        )
