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
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "REQUIRED_CARD_FIELDS",
    "check_model_folder",
    "hub_file",
    "hub_unreachable_reason",
    "is_cached",
    "load_config",
    "load_model",
    "load_model_card",
    "looks_like_path",
    "push_to_hub",
    "save_for_hub",
]

logger = logging.getLogger(__name__)

REQUIRED_CARD_FIELDS = ("license", "library_name", "pipeline_tag", "tags", "base_model")
# Files next to a model card that belong in the repo too (Inference Endpoints custom handler).
ENDPOINT_FILES = ("handler.py", "requirements.txt")


# What `save_pretrained` writes besides config.json: one of these must be in a model folder.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# How long the Hub may take to answer one request before it counts as unreachable (huggingface_hub's own
# retries of a refused connection take ~25 s before transformers gives up).
HUB_PROBE_TIMEOUT_S = 4.0


@contextlib.contextmanager
def quiet_weight_loading() -> Iterator[None]:
    """Hides transformers' own "Loading weights" bar while a model loads (the CLI, the demo and the server print
    their own progress); Hub download bars keep their setting. The previous state is restored afterwards."""
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as transformers_logging

    bars_were_on = transformers_logging.is_progress_bar_enabled()
    downloads_were_off = hub_utils.are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()  # also turns off huggingface_hub's bars ...
    if not downloads_were_off:
        hub_utils.enable_progress_bars()  # ... which show downloads: keep them
    try:
        yield
    finally:
        if bars_were_on:
            transformers_logging.enable_progress_bar()
        if downloads_were_off:
            hub_utils.disable_progress_bars()


def load_model(name_or_path: str | os.PathLike, device: str | torch.device = "cpu", **kwargs):
    """`EncodecModel.from_pretrained(name_or_path, **kwargs)` in eval mode on `device`: a Hub repository id or a
    local folder (``config.json`` + weights). The command line, ``compress`` / ``decompress``, the demo, the
    datasets helpers and the endpoint all load models through it, so they all fail the same way, at once:

    * a path (starts with ``/``, ``.`` or ``~``, has more than one ``/``, or exists) must be a model folder:
      missing, a file, empty, without ``config.json`` or without weights raises `ModelNotFoundError`, naming it;
    * a Hub id is loaded from the Hub when it answers within `HUB_PROBE_TIMEOUT_S`; from the local Hugging Face
      cache (``HF_HOME`` / ``HF_HUB_CACHE``) when it does not, or when ``HF_HUB_OFFLINE=1``; and raises
      `HubUnreachableError` (naming ``--model PATH``, ``MODEL=``, ``HF_HOME``, ``HF_HUB_OFFLINE``) when neither.

    Raises:
        ModelNotFoundError: a local path that is not a model folder, or a string that is neither.
        HubUnreachableError: a Hub id that is not cached while the Hub does not answer.
    """
    # Imported here: the endpoint's request parsing and the .ecdc container import this module, and must not
    # pull in the network definition until a model is actually loaded.
    from ..codec.modeling import EncodecModel

    source = os.fspath(name_or_path)
    with quiet_weight_loading():
        if looks_like_path(source):
            model = EncodecModel.from_pretrained(os.fspath(check_model_folder(source)), **kwargs)
        else:
            model = EncodecModel.from_pretrained(source, **_hub_kwargs(source, kwargs))
    return model.to(device).eval()


def load_config(name_or_path: str | os.PathLike, **kwargs):
    """`EncodecConfig.from_pretrained(name_or_path, **kwargs)` with `load_model`'s checks and offline lookup:
    a path must be a model folder, a Hub id comes from the Hub or, when it does not answer, the local cache.

    Raises:
        ModelNotFoundError, HubUnreachableError: as `load_model`.
    """
    from ..codec.configuration import EncodecConfig

    source = os.fspath(name_or_path)
    if looks_like_path(source):
        return EncodecConfig.from_pretrained(os.fspath(check_model_folder(source)), **kwargs)
    return EncodecConfig.from_pretrained(source, **_hub_kwargs(source, kwargs))


def looks_like_path(source: str) -> bool:
    """Whether `source` names a local path rather than a Hub repository id (``org/name`` or ``name``)."""
    if source.startswith(("/", ".", "~")) or source.endswith("/") or source.count("/") > 1:
        return True
    if os.sep != "/" and (os.sep in source or (os.altsep and os.altsep != "/" and os.altsep in source)):
        return True
    return os.path.exists(os.path.expanduser(source))


def check_model_folder(source: str | os.PathLike) -> Path:
    """`source` (``~`` expanded) if it is a model folder, else `ModelNotFoundError` saying what is missing."""
    from ..errors import ModelNotFoundError

    folder = Path(os.path.expanduser(os.fspath(source)))
    wanted = "a folder written by EncodecModel.save_pretrained (config.json + model.safetensors)"
    if not folder.exists():
        raise ModelNotFoundError(f"Model folder {source} does not exist: give {wanted} or a Hub repository id.")
    if not folder.is_dir():
        raise ModelNotFoundError(f"Model path {source} is a file, not a folder: give {wanted}.")
    names = sorted(p.name for p in folder.iterdir())
    if not names:
        raise ModelNotFoundError(f"Model folder {source} is empty: it needs config.json and model.safetensors.")
    listing = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    if "config.json" not in names:
        raise ModelNotFoundError(f"Model folder {source} has no config.json (it holds {listing}): give {wanted}.")
    if not any(name in names for name in WEIGHT_FILES):
        raise ModelNotFoundError(
            f"Model folder {source} has config.json but no weights (model.safetensors or pytorch_model.bin; "
            f"it holds {listing})."
        )
    return folder


def _hub_kwargs(repo_id: str, kwargs: dict) -> dict:
    """`from_pretrained` keyword arguments for a Hub id: as given when the Hub answers, else the local cache's
    copy (``local_files_only=True``), else `HubUnreachableError`."""
    from ..errors import ModelNotFoundError

    try:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        validate_repo_id(repo_id)
    except HFValidationError:
        raise ModelNotFoundError(
            f"Model {repo_id!r} is neither a local folder (no such path) nor a Hub repository id (org/name)."
        ) from None
    reason = _why_not_online(kwargs)
    if reason is None:
        return kwargs
    if not is_cached(repo_id, revision=kwargs.get("revision"), cache_dir=kwargs.get("cache_dir")):
        raise _unreachable(f"{repo_id!r}: no such local folder,", reason, kwargs.get("cache_dir"))
    if reason is not OFFLINE:
        logger.warning("The Hugging Face Hub does not answer (%s): loading %s from the local cache.", reason, repo_id)
    return {**kwargs, "local_files_only": True}


OFFLINE = "offline mode: HF_HUB_OFFLINE=1 or local_files_only"


def _why_not_online(hub_kwargs: dict) -> str | None:
    """None when the Hub may be asked, `OFFLINE` when the user said not to, else why it does not answer."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or hub_kwargs.get("local_files_only"):
        return OFFLINE
    return hub_unreachable_reason()


def hub_unreachable_reason(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """None when the Hub endpoint (``HF_ENDPOINT``) answers one HEAD request within `timeout` seconds (any HTTP
    status counts), else why not (``ConnectError: [Errno 111] Connection refused``)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as err:  # noqa: BLE001 -- the HTTP client's error types differ between huggingface_hub versions
        return f"{type(err).__name__}: {err}"
    return None


def is_cached(repo_id: str, filenames: tuple[str, ...] = ("config.json",), *, revision=None, cache_dir=None) -> bool:
    """Whether the local Hugging Face cache holds `filenames` of `repo_id` at `revision` (default ``main``) and,
    for a model (`filenames` has config.json), one of its weight files."""
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> bool:
        found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir, revision=revision)
        return isinstance(found, str)

    weights = any(cached(name) for name in WEIGHT_FILES) if "config.json" in filenames else True
    return weights and all(cached(name) for name in filenames)


def _unreachable(what: str, reason: str, cache_dir=None):
    """The one message for a Hub file that neither the Hub nor the local cache can give."""
    from huggingface_hub import constants

    from ..errors import HubUnreachableError

    cache = cache_dir or constants.HF_HUB_CACHE
    return HubUnreachableError(
        f"Cannot load {what} the Hugging Face Hub at {constants.ENDPOINT} does not answer ({reason}) and it is "
        f"not in the local cache ({cache}). Use a model folder instead (encodec-hf --model PATH, "
        "make demo MODEL=PATH; a folder with config.json and model.safetensors), or set HF_HOME to a Hugging Face "
        "cache that holds it (HF_HUB_OFFLINE=1 skips the network)."
    )


def hub_file(repo_id: str, filename: str, **hub_kwargs) -> str:
    """Local path of `filename` in Hub repository `repo_id`: downloaded when the Hub answers, from the local cache
    when it does not (or under ``HF_HUB_OFFLINE=1``), else `HubUnreachableError`.

    Raises:
        FileNotFoundError: offline, and the cache records that the repository has no such file.
        HubUnreachableError: offline, and the file is not in the cache.
        huggingface_hub's ``EntryNotFoundError``: online, and the repository has no such file.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    reason = _why_not_online(hub_kwargs)
    if reason is None:
        return hf_hub_download(repo_id, filename, **hub_kwargs)
    cache_dir = hub_kwargs.get("cache_dir")
    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=hub_kwargs.get("revision"))
    if isinstance(found, str):
        return found
    if found is not None:  # huggingface_hub's _CACHED_NO_EXIST: an earlier download found no such file
        raise FileNotFoundError(f"{repo_id} has no {filename} (the local Hugging Face cache records it missing).")
    raise _unreachable(f"{filename} of {repo_id}:", reason, cache_dir)


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
