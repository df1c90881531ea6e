"""TrainingConfig: every knob of a training run, with the paper's values as defaults, loaded from YAML.

A config is a tree of small dataclasses (``model``, ``data``, ``optim``, ``discriminator``, ``losses``,
``balancer``, ``run``). ``load_config(path, overrides)`` reads a YAML file whose keys mirror the tree and applies
command-line overrides ``section.key=value`` (values parsed as YAML: ``optim.lr=1e-4``, ``optim.betas=[0.5,0.9]``,
``model.pretrained=null``). Unknown keys, wrong types and inconsistent values raise
:class:`~encodec_hf.errors.TrainingConfigError` naming the key, before anything is built.

Defaults (``original_encodec_spec.md`` section 6; the model card): Adam lr 3e-4, betas (0.5, 0.9), batches of
64 one-second crops, 300 x 2000 updates, the discriminator updated with probability 2/3 (24 kHz), loss weights
lambda_t 0.1, lambda_f 1, lambda_g 3, lambda_feat 3, lambda_w 1 (commitment, outside the balancer), balancer
total norm 1 and EMA decay 0.999, random gain -10..+6 dB, mixing strategies s1-s4.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TrainingConfigError
from .initialization import WEIGHT_INITS

PRESETS = ("24khz", "48khz", "32khz")
TRAINABLE = ("all", "decoder")
TIME_LOSSES = ("l1", "mse")
MIXED_PRECISION = ("no", "bf16")


@dataclass
class ModelConfig:
    """What to train: a preset or a pretrained model (Hub id or folder), and which part of it."""

    pretrained: str | None = None  # "facebook/encodec_24khz", "facebook/encodec_48khz" or a local folder
    preset: str = "24khz"  # architecture when training from scratch (ignored with `pretrained`)
    config: dict[str, Any] = field(default_factory=dict)  # EncodecConfig overrides for a from-scratch model
    trainable: str = "all"  # "all", or "decoder": encoder and codebooks frozen, so codes stay valid
    weight_init: str = "torch"  # from scratch: "torch" (the layers' own, as Meta) or "variance_preserving"


@dataclass
class DataConfig:
    """Training and validation audio (see encodec_hf.training.data for the accepted forms)."""

    train: str | None = None  # folder, .jsonl manifest or audio file
    valid: str | None = None  # same; default: items taken from the training data with another seed
    crop_seconds: float = 1.0
    gain_db: tuple[float, float] = (-10.0, 6.0)
    mixing: bool = True  # strategies s1-s4 when the data is labelled music/speech/other
    num_workers: int = 0
    valid_items: int = 16  # fixed validation clips


@dataclass
class OptimConfig:
    """Adam for the codec (encoder + decoder)."""

    lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.9)
    weight_decay: float = 0.0
    max_grad_norm: float | None = None  # clip the codec's gradient norm (None: no clipping, as the paper)


@dataclass
class CodebookConfig:
    """Codebook learning (EMA k-means). A code whose EMA usage count falls below ``dead_code_threshold`` gets a
    vector of the current batch. The paper's 2 suits its 4,800 frames per step (about 4.7 per code of 1024); a
    batch of B x S seconds at 75 frames/s gives each code 75 B S / 1024 on average, so a small batch needs a
    proportionally smaller threshold, or every code is replaced at every step."""

    dead_code_threshold: float = 2.0
    ema_decay: float = 0.99


@dataclass
class DiscriminatorConfig:
    """The MS-STFT adversary and its own Adam."""

    pretrained: str | None = None  # folder with discriminator.safetensors (an encodec-hf run); null: from scratch
    n_ffts: list[int] = field(default_factory=lambda: [2048, 1024, 512, 256, 128])
    filters: int = 32
    update_prob: float = 2 / 3  # paper: 2/3 at 24 kHz (every other batch, 0.5, at 48 kHz)
    warmup_steps: int = 0  # steps where only the adversary learns from the codec (no l_g / l_feat for it)
    lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.9)


@dataclass
class LossConfig:
    """Loss weights lambda_* and the multi-scale mel loss' windows 2^min_exponent..2^max_exponent."""

    t: float = 0.1
    time_loss: str = "l1"  # l_t: "l1" (the paper) or "mse" (squared error over the target's energy)
    f: float = 1.0
    g: float = 3.0
    feat: float = 3.0
    w: float = 1.0  # commitment, backpropagated outside the balancer
    mel_min_exponent: int = 5
    mel_max_exponent: int = 11
    n_mels: int = 64


@dataclass
class BalancerConfig:
    enabled: bool = True  # False: the plain weighted sum of the losses
    total_norm: float = 1.0
    ema_decay: float = 0.999


@dataclass
class RunConfig:
    """Loop, precision, logging and checkpoints."""

    output_dir: str = "encodec-run"
    steps: int = 600_000  # 300 epochs x 2000 updates
    batch_size: int = 64  # per optimizer step, over all processes and accumulation micro-steps
    grad_accum: int = 1
    seed: int = 0
    mixed_precision: str = "no"  # "no" or "bf16" (autocast of the encoder, decoder and adversary)
    weights_ema: float | None = None  # e.g. 0.99 (audiocraft): an EMA of the codec's weights is what gets exported
    log_every: int = 10
    valid_every: int = 1000
    save_every: int = 1000
    keep_checkpoints: int = 2
    resume: bool = True  # continue from the newest checkpoint in output_dir when there is one
    progress: bool = True
    cpu: bool = False  # force CPU even where CUDA is available


@dataclass
class TrainingConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    balancer: BalancerConfig = field(default_factory=BalancerConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any], require_data: bool = True) -> TrainingConfig:
        """Builds and validates a config from nested dicts (YAML); missing keys keep their defaults.

        ``require_data=False`` accepts a config without ``data.train`` (printing the defaults as a template)."""
        config = _build(cls, values, "")
        config.validate(require_data)
        return config

    def validate(self, require_data: bool = True) -> None:
        """Raises TrainingConfigError for values no run can use (checked before any model or data is built);
        ``require_data=False`` skips only the check that ``data.train`` is set."""
        m, d, o, disc, r = self.model, self.data, self.optim, self.discriminator, self.run
        _require(m.pretrained is not None or m.preset in PRESETS, "model.preset", f"one of {PRESETS}", m.preset)
        _require(m.trainable in TRAINABLE, "model.trainable", f"one of {TRAINABLE}", m.trainable)
        _require(m.weight_init in WEIGHT_INITS, "model.weight_init", f"one of {WEIGHT_INITS}", m.weight_init)
        _require(
            m.weight_init == "torch" or m.pretrained is None,
            "model.weight_init",
            "'torch' with model.pretrained (initialisation applies to from-scratch models)",
            m.weight_init,
        )
        cb = self.codebook
        _require(cb.dead_code_threshold >= 0, "codebook.dead_code_threshold", ">= 0", cb.dead_code_threshold)
        _require(0 < cb.ema_decay < 1, "codebook.ema_decay", "in (0, 1)", cb.ema_decay)
        _require(
            m.trainable == "all" or m.pretrained is not None,
            "model.trainable",
            "'all' when training from scratch (a decoder-only run needs model.pretrained)",
            m.trainable,
        )
        _require(
            d.train is not None or not require_data, "data.train", "a folder, .jsonl manifest or audio file", d.train
        )
        _require(d.crop_seconds > 0, "data.crop_seconds", "> 0", d.crop_seconds)
        _require(d.num_workers >= 0, "data.num_workers", ">= 0", d.num_workers)
        _require(d.valid_items >= 1, "data.valid_items", ">= 1", d.valid_items)
        _require(len(d.gain_db) == 2 and d.gain_db[0] <= d.gain_db[1], "data.gain_db", "[low, high]", d.gain_db)
        for name, lr, betas in (("optim", o.lr, o.betas), ("discriminator", disc.lr, disc.betas)):
            _require(lr > 0 and math.isfinite(lr), f"{name}.lr", "a positive number", lr)
            _require(
                len(betas) == 2 and all(0 <= b < 1 for b in betas), f"{name}.betas", "two values in [0, 1)", betas
            )
        _require(o.max_grad_norm is None or o.max_grad_norm > 0, "optim.max_grad_norm", "> 0 or null", o.max_grad_norm)
        _require(0 <= disc.update_prob <= 1, "discriminator.update_prob", "in [0, 1]", disc.update_prob)
        _require(disc.warmup_steps >= 0, "discriminator.warmup_steps", ">= 0", disc.warmup_steps)
        _require(len(disc.n_ffts) > 0 and min(disc.n_ffts) >= 4, "discriminator.n_ffts", "windows >= 4", disc.n_ffts)
        _require(
            self.losses.time_loss in TIME_LOSSES, "losses.time_loss", f"one of {TIME_LOSSES}", self.losses.time_loss
        )
        for key in ("t", "f", "g", "feat", "w"):
            value = getattr(self.losses, key)
            _require(value >= 0 and math.isfinite(value), f"losses.{key}", ">= 0", value)
        _require(self.balancer.total_norm > 0, "balancer.total_norm", "> 0", self.balancer.total_norm)
        _require(0 <= self.balancer.ema_decay < 1, "balancer.ema_decay", "in [0, 1)", self.balancer.ema_decay)
        _require(r.steps >= 1, "run.steps", ">= 1", r.steps)
        _require(r.grad_accum >= 1, "run.grad_accum", ">= 1", r.grad_accum)
        _require(r.batch_size >= 1, "run.batch_size", ">= 1", r.batch_size)
        _require(r.batch_size % r.grad_accum == 0, "run.batch_size", "a multiple of run.grad_accum", r.batch_size)
        _require(
            r.mixed_precision in MIXED_PRECISION, "run.mixed_precision", f"one of {MIXED_PRECISION}", r.mixed_precision
        )
        _require(r.weights_ema is None or 0 < r.weights_ema < 1, "run.weights_ema", "in (0, 1) or null", r.weights_ema)
        for key in ("log_every", "valid_every", "save_every", "keep_checkpoints"):
            _require(getattr(r, key) >= 1, f"run.{key}", ">= 1", getattr(r, key))


def _require(ok: bool, key: str, expected: str, got: Any) -> None:
    if not ok:
        raise TrainingConfigError(f"Config key {key} must be {expected}; got {got!r}.")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, values: Any, prefix: str) -> Any:
    """Instantiates dataclass ``cls`` from a dict, converting and checking each field's type."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise TrainingConfigError(f"Config section {prefix or '(top level)'} must be a mapping; got {values!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        where = f"section {prefix.rstrip('.')}" if prefix else "the top level"
        raise TrainingConfigError(
            f"Unknown config key(s) {', '.join(prefix + k for k in unknown)} in {where}; "
            f"valid keys: {', '.join(prefix + k for k in fields)}."
        )
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _convert(value, hint, prefix + name)
    return cls(**kwargs)


def _convert(value: Any, hint: Any, key: str) -> Any:
    """``value`` as type ``hint`` (int/float/str/bool, Optional, tuple, list, dict), or TrainingConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key)
            except TrainingConfigError as err:
                errors.append(str(err))
        raise TrainingConfigError(errors[-1] if errors else f"Config key {key} cannot be {value!r}.")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise TrainingConfigError(f"Config key {key} must be a list; got {value!r}.")
        if origin is tuple and len(args) == 2 and args[1] is not Ellipsis:
            if len(value) != len(args):
                raise TrainingConfigError(f"Config key {key} must be a list of {len(args)} values; got {value!r}.")
            return tuple(_convert(v, a, key) for v, a in zip(value, args, strict=True))
        return origin(_convert(v, args[0], key) for v in value) if args else origin(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise TrainingConfigError(f"Config key {key} must be a mapping; got {value!r}.")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise TrainingConfigError(f"Config key {key} must be true or false; got {value!r}.")
        return value
    if hint in (int, float):
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads 3e-4 as a string: it wants a dot in the mantissa (3.0e-4).
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (hint is int and value != int(value)):
            raise TrainingConfigError(
                f"Config key {key} must be a{'n integer' if hint is int else ' number'}; got {value!r}."
            )
        return hint(value)
    if hint is str:
        if not isinstance(value, (str, Path)):
            raise TrainingConfigError(f"Config key {key} must be a string; got {value!r}.")
        return str(value)
    return value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Sets ``section.key=value`` overrides (values parsed as YAML) in the nested dict ``values``."""
    import yaml

    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise TrainingConfigError(f"Override {item!r} must look like section.key=value (e.g. optim.lr=1e-4).")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise TrainingConfigError(f"Override {item!r}: the value is not valid YAML ({err}).") from err
        *sections, leaf = key.strip().split(".")
        node = values
        for section in sections:
            child = node.get(section)
            if child is None:
                child = node[section] = {}
            elif not isinstance(child, dict):
                raise TrainingConfigError(f"Override {item!r}: {section} is not a config section.")
            else:
                child = node[section] = dict(child)
            node = child
        node[leaf] = value
    return values


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, require_data: bool = True
) -> TrainingConfig:
    """Reads a YAML config (or the defaults when ``path`` is None), applies overrides, validates (see
    :meth:`TrainingConfig.from_dict` for ``require_data``)."""
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise TrainingConfigError(f"Config file {path} does not exist.")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise TrainingConfigError(f"Config file {path} is not valid YAML: {err}") from err
        if not isinstance(values, dict):
            raise TrainingConfigError(
                f"Config file {path} must hold a mapping of sections, got {type(values).__name__}."
            )
    values = apply_overrides(values, overrides or [])
    return TrainingConfig.from_dict(values, require_data)


def save_config(config: TrainingConfig, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")


__all__ = [
    "BalancerConfig",
    "DataConfig",
    "DiscriminatorConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainingConfig",
    "apply_overrides",
    "load_config",
    "save_config",
]
