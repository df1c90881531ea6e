"""Opt-in registration of encodec_hf's classes with transformers' Auto classes.

transformers already owns `model_type "encodec"` (its own `EncodecConfig` / `EncodecModel` /
`EncodecFeatureExtractor`), and the Hub checkpoints `facebook/encodec_*` say `"model_type": "encodec"`.
Registering the same key therefore *replaces* the built-in mapping for the whole process, which is why
it only happens when you call `register()` (never on import) and can be undone with `unregister()`.

What `register()` changes:

* `AutoConfig`: `"encodec"` resolves to `encodec_hf.EncodecConfig` (`exist_ok=True` registration).
* `AutoModel`: `encodec_hf.EncodecConfig` resolves to `encodec_hf.EncodecModel`.
* `AutoFeatureExtractor`: `encodec_hf.EncodecConfig` resolves to `encodec_hf.EncodecFeatureExtractor`.
  `preprocessor_config.json` files name their class (`"feature_extractor_type":
  "EncodecFeatureExtractor"`), and transformers looks that name up among its own classes before the
  registered ones; both classes share the name, so `register()` also wraps that lookup (in
  `transformers.models.auto.feature_extraction_auto`) to return encodec_hf's class for that one name.

Objects of transformers' own `EncodecConfig` (e.g. built by hand) still map to transformers' model.
"""

from __future__ import annotations

import threading

__all__ = ["is_registered", "register", "unregister"]

MODEL_TYPE = "encodec"
FEATURE_EXTRACTOR_NAME = "EncodecFeatureExtractor"
_lock = threading.Lock()
_state: dict = {}


def _classes():
    from ..codec.configuration import EncodecConfig
    from ..codec.feature_extraction import EncodecFeatureExtractor
    from ..codec.modeling import EncodecModel

    return EncodecConfig, EncodecModel, EncodecFeatureExtractor


def is_registered() -> bool:
    """Whether `register()` is in effect in this process."""
    return bool(_state)


def register() -> None:
    """Make `AutoConfig`, `AutoModel` and `AutoFeatureExtractor` resolve `"encodec"` to encodec_hf.

    Idempotent. Affects the whole process until `unregister()`; see the module docstring for details.

    Example:

    ```python
    >>> import encodec_hf
    >>> from transformers import AutoModel
    >>> encodec_hf.register()
    >>> model = AutoModel.from_pretrained("facebook/encodec_24khz")  # an encodec_hf.EncodecModel
    ```
    """
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel
    from transformers.models.auto import feature_extraction_auto

    config_cls, model_cls, fe_cls = _classes()
    with _lock:
        if _state:
            return
        AutoConfig.register(MODEL_TYPE, config_cls, exist_ok=True)
        AutoModel.register(config_cls, model_cls, exist_ok=True)
        AutoFeatureExtractor.register(config_cls, fe_cls, exist_ok=True)

        original = feature_extraction_auto.feature_extractor_class_from_name

        def feature_extractor_class_from_name(class_name: str):
            if class_name == FEATURE_EXTRACTOR_NAME:
                return fe_cls
            return original(class_name)

        feature_extraction_auto.feature_extractor_class_from_name = feature_extractor_class_from_name
        _state.update(original_lookup=original, classes=(config_cls, model_cls, fe_cls))


def unregister() -> None:
    """Undo `register()`: `"encodec"` resolves to transformers' own classes again. Idempotent."""
    from transformers.models.auto import feature_extraction_auto
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.feature_extraction_auto import FEATURE_EXTRACTOR_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    with _lock:
        if not _state:
            return
        config_cls, _, _ = _state["classes"]
        # The Auto mappings keep registrations in `_extra_content`; there is no public removal API.
        if CONFIG_MAPPING._extra_content.get(MODEL_TYPE) is config_cls:
            del CONFIG_MAPPING._extra_content[MODEL_TYPE]
        MODEL_MAPPING._extra_content.pop(config_cls, None)
        FEATURE_EXTRACTOR_MAPPING._extra_content.pop(config_cls, None)
        feature_extraction_auto.feature_extractor_class_from_name = _state["original_lookup"]
        _state.clear()
