"""EncodecLM: the small transformer over EnCodec codes that drives the `.ecdc` arithmetic coder.

It predicts, for every codebook k at frame t, a distribution over the 1024 codes from the codes of frame
t - 1 (all K codebooks in parallel, no conditioning within a frame). Five post-norm transformer layers
(dim 200, 8 heads, FF 800, exact GELU) attend to at most `past_context` = 3.5 s of frames.

The arithmetic coder only decodes what was encoded if both sides compute the *same float32 bits*. The
original (Meta's `encodec.model.LMModel`) runs one frame at a time through `nn.MultiheadAttention` and
recomputes the keys and values of its whole past at every step; this module runs the same kernels on
tensors of the same shapes and strides, in the same order, but caches keys and values:

- BLAS results for a row of `linear(x[:M])` depend on M for small M (other kernels for thin matrices), so
  a cached row is only valid where the original's M gives the same bits. `_row_stable_min_rows` measures
  on this machine and thread count the M from which rows no longer depend on M; below it (the first
  frames of a segment) the window is recomputed exactly as the original does; if no such M exists the
  whole run falls back to recomputing every step.
- The K output projections are one matmul when that is bit-identical to K separate ones (also measured).
- Embedding sums are sequential adds, as Python's `sum()` in the original (a tensor `sum` reassociates).

Speed on CPU is a matter of cache, not arithmetic: one frame streams ~10 MB of layer weights plus 0.8 MB per
output head through matrix-vector products, whose access pattern is slow on weights that are not in the
core's cache. When every frame's codes are known (compression, `frames_probas` / `iter_cdfs`), the loops are
swapped: each layer runs over a block of frames while its weights stay cached, every kernel still seeing
the shapes, values and strides of the frame-by-frame order. Frame by frame (decoding), each weight matrix
and each layer's window of keys and values is read once with a streaming reduction just before it is used,
which pulls it into the cache faster than the products' own access patterns do.

The parameter names are those of the original checkpoint, so conversion copies tensors unchanged.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .arithmetic_coding import TOTAL_RANGE_BITS, build_stable_quantized_cdf

logger = logging.getLogger(__name__)

LM_WEIGHTS_NAME = "lm.safetensors"


@dataclass
class EncodecLMConfig:
    """Hyper-parameters of [`EncodecLM`]; the defaults are those of the released 24 kHz LM.

    Args:
        num_codebooks (`int`): codebooks modelled (`n_q` of the codec: 32 at 24 kHz, 16 at 48 kHz).
        codebook_size (`int`): codes per codebook (1024); the embeddings have one more row, 0 = "missing".
        dim / num_layers / num_heads / hidden_scale: transformer width, depth, heads and FF ratio.
        past_context (`int`): frames of history attended to, `int(3.5 * frame_rate)`.
        max_period (`float`): longest period of the sinusoidal position embedding.
    """

    num_codebooks: int = 32
    codebook_size: int = 1024
    dim: int = 200
    num_layers: int = 5
    num_heads: int = 8
    hidden_scale: float = 4.0
    past_context: int = 262
    max_period: float = 10000.0

    def __post_init__(self):
        if self.dim % self.num_heads or self.dim % 2:
            raise ValueError(f"dim={self.dim} must be even and divisible by num_heads={self.num_heads}.")
        if self.past_context < 1 or self.num_codebooks < 1 or self.codebook_size < 2:
            raise ValueError(f"Invalid EncodecLMConfig: {self}.")

    @classmethod
    def for_codec(cls, num_codebooks: int, frame_rate: int, codebook_size: int = 1024) -> EncodecLMConfig:
        """The configuration the original pairs with a codec of this size and frame rate."""
        return cls(num_codebooks=num_codebooks, codebook_size=codebook_size, past_context=int(3.5 * frame_rate))

    def to_dict(self) -> dict:
        return asdict(self)


class _SelfAttentionParameters(nn.Module):
    """Holds `nn.MultiheadAttention`'s parameters under its names (q, k, v rows of `in_proj_weight`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)


class _TransformerLayer(nn.Module):
    """Parameters of one post-norm layer, named as in `nn.TransformerEncoderLayer`."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.self_attn = _SelfAttentionParameters(dim)
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)


class _Transformer(nn.Module):
    def __init__(self, config: EncodecLMConfig):
        super().__init__()
        self.norm_in = nn.LayerNorm(config.dim)
        hidden = int(config.dim * config.hidden_scale)
        self.layers = nn.ModuleList([_TransformerLayer(config.dim, hidden) for _ in range(config.num_layers)])


@dataclass(frozen=True)
class _LayerTensors:
    """A layer's tensors, fetched once: module attribute lookups cost more than the small ops themselves."""

    out_w: torch.Tensor
    out_b: torch.Tensor
    l1_w: torch.Tensor
    l1_b: torch.Tensor
    l2_w: torch.Tensor
    l2_b: torch.Tensor
    norm1_w: torch.Tensor
    norm1_b: torch.Tensor
    eps1: float
    norm2_w: torch.Tensor
    norm2_b: torch.Tensor
    eps2: float

    @classmethod
    def of(cls, layer: _TransformerLayer) -> _LayerTensors:
        return cls(
            layer.self_attn.out_proj.weight, layer.self_attn.out_proj.bias,
            layer.linear1.weight, layer.linear1.bias, layer.linear2.weight, layer.linear2.bias,
            layer.norm1.weight, layer.norm1.bias, layer.norm1.eps,
            layer.norm2.weight, layer.norm2.bias, layer.norm2.eps,
        )  # fmt: skip


@dataclass
class EncodecLMState:
    """Streaming state of [`EncodecLM`] for one sequence (B = 1).

    Per layer, `inputs[l][start:start + length]` are the layer inputs of the past frames (the first one is
    the all-zero vector the original starts from) and `keys`/`values` their projections where `cached`.
    """

    offset: int = 0
    start: int = 0
    length: int = 1
    cached: bool = False
    inputs: list[torch.Tensor] = field(default_factory=list)
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    previous_codes: torch.Tensor | None = None


@dataclass(frozen=True)
class _Window:
    """Where frame t's past lies in the state's buffers: rows `[start, start + length)`, and whether the keys
    and values of those rows are cached (else they are recomputed, as the original does)."""

    start: int
    length: int
    cached: bool


@functools.lru_cache(maxsize=16)
def _row_stable_min_rows(in_features: int, out_features: int, max_rows: int, device: str, threads: int):
    """Smallest M such that every row of `linear(x[:m])`, m >= M, equals the row of `linear(x[:max_rows])`.

    Returns None when there is none (then keys/values are recomputed every step, as the original does).
    Thin-matrix BLAS kernels sum in another order than the blocked ones, hence the measurement; it costs a
    few hundred small matmuls once per process, device and thread count.
    """
    gen = torch.Generator().manual_seed(1234)
    weight = torch.randn(out_features, in_features, generator=gen).to(device)
    bias = torch.randn(out_features, generator=gen).to(device)
    x = torch.randn(max_rows, 1, in_features, generator=gen).to(device)
    with torch.inference_mode():
        reference = F.linear(x, weight, bias)
        # Every M up to 96 (where kernel switches live), then a dense sample of the remaining range.
        candidates = sorted(set(range(1, min(97, max_rows + 1))) | set(range(97, max_rows + 1, 3)) | {max_rows})
        stable = None
        for m in reversed(candidates):
            if not torch.equal(F.linear(x[:m], weight, bias), reference[:m]):
                break
            stable = m
    return stable


@functools.lru_cache(maxsize=16)
def _batched_heads_exact(dim: int, card: int, max_heads: int, device: str, threads: int) -> bool:
    """Whether one `linear` over K stacked heads gives the bits of K separate `linear` calls (M = 1)."""
    gen = torch.Generator().manual_seed(4321)
    weight = torch.randn(max_heads * card, dim, generator=gen).to(device)
    bias = torch.randn(max_heads * card, generator=gen).to(device)
    x = torch.randn(1, 1, dim, generator=gen).to(device)
    with torch.inference_mode():
        separate = torch.cat(
            [
                F.linear(x, weight[k * card : (k + 1) * card], bias[k * card : (k + 1) * card])
                for k in range(max_heads)
            ],
            -1,
        )
        return all(
            torch.equal(F.linear(x, weight[: k * card], bias[: k * card]), separate[..., : k * card])
            for k in range(1, max_heads + 1)
        )


class EncodecLM(nn.Module):
    """The entropy model of EnCodec's `.ecdc` coder.

    Args:
        config (`EncodecLMConfig`): hyper-parameters.

    Example:

    ```python
    >>> lm = EncodecLM(EncodecLMConfig(num_codebooks=8, past_context=262)).eval()
    >>> state = lm.init_state()
    >>> probs = lm.step_first(8, state)  # [K, card] for the first frame
    >>> cdfs = lm.step_cdfs(torch.tensor([3, 1, 4, 1, 5, 9, 2, 6]), state)  # int64 [K, card] for the second
    ```
    """

    # Position embeddings are computed one offset at a time (a block would round its loop tails differently) and
    # cached per offset, up to this many.
    max_cached_positions: int = 8192

    def __init__(self, config: EncodecLMConfig):
        super().__init__()
        self.config = config
        self.transformer = _Transformer(config)
        self.emb = nn.ModuleList(
            [nn.Embedding(config.codebook_size + 1, config.dim) for _ in range(config.num_codebooks)]
        )
        self.linears = nn.ModuleList(
            [nn.Linear(config.dim, config.codebook_size) for _ in range(config.num_codebooks)]
        )
        self._packed: dict | None = None
        self._pos_cache: dict[int, torch.Tensor] = {}
        self.exact_recompute = False  # force the original's recompute-everything path (for tests / benchmarks)

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike, device: str | torch.device = "cpu", **hub_kwargs):
        """Load `lm.safetensors` from a local folder (or file) or a Hub repository.

        Raises:
            FileNotFoundError: there are no LM weights there.
        """
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = os.fspath(path_or_repo)
        if os.path.isdir(path):
            path = os.path.join(path, LM_WEIGHTS_NAME)
        elif not os.path.isfile(path):
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import EntryNotFoundError

            try:
                path = hf_hub_download(path, LM_WEIGHTS_NAME, **hub_kwargs)
            except EntryNotFoundError as err:
                raise FileNotFoundError(f"{path_or_repo} has no {LM_WEIGHTS_NAME}.") from err
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"No LM weights at {path}. Convert the original checkpoint with "
                "`conversion/convert_original_checkpoint.py --lm-checkpoint encodec_lm_*.th` to get them."
            )
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
        if "lm_config" not in metadata:
            raise ValueError(f"{path} lacks the 'lm_config' metadata written by EncodecLM.save_pretrained.")
        lm = cls(EncodecLMConfig(**json.loads(metadata["lm_config"])))
        lm.load_state_dict(load_file(path), strict=True)
        return lm.to(device).eval()

    def save_pretrained(self, directory: str | os.PathLike) -> str:
        """Write `lm.safetensors` (weights + config as metadata) into `directory`; returns the file path."""
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        path = os.path.join(os.fspath(directory), LM_WEIGHTS_NAME)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, path, metadata={"lm_config": json.dumps(self.config.to_dict())})
        return path

    # ------------------------------------------------------------------ streaming computation
    def _pack(self) -> dict:
        """Views of the weights in the layouts the step function uses (rebuilt if parameters moved)."""
        device = self.transformer.norm_in.weight.device
        if self._packed is not None and self._packed["device"] == device:
            return self._packed
        cfg = self.config
        threads = torch.get_num_threads()
        window = cfg.past_context + 1
        stable = (
            None if self.exact_recompute else _row_stable_min_rows(cfg.dim, 2 * cfg.dim, window, str(device), threads)
        )
        batched_heads = (not self.exact_recompute) and _batched_heads_exact(
            cfg.dim, cfg.codebook_size, cfg.num_codebooks, str(device), threads
        )
        logger.debug("EncodecLM: row-stable from M=%s, batched heads: %s", stable, batched_heads)
        layers = []
        for layer in self.transformer.layers:
            w, b = layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias
            # The original splits exactly like this in F._in_projection_packed (query is not key).
            w_q, w_kv = w.split([cfg.dim, 2 * cfg.dim])
            b_q, b_kv = b.split([cfg.dim, 2 * cfg.dim])
            layers.append((w_q, b_q, w_kv, b_kv, layer, _LayerTensors.of(layer)))
        self._packed = {
            "device": device,
            "layers": layers,
            "stable_rows": stable,
            "batched_heads": batched_heads,
            "emb": torch.cat([e.weight for e in self.emb]).detach(),  # [n_q * (card + 1), dim]
            "emb_offsets": torch.arange(cfg.num_codebooks, device=device) * (cfg.codebook_size + 1),
            "head_w": torch.cat([lin.weight for lin in self.linears]).detach(),  # [n_q * card, dim]
            "head_b": torch.cat([lin.bias for lin in self.linears]).detach(),
            "zero_masks": {},
        }
        return self._packed

    def load_state_dict(self, *args, **kwargs):
        self._packed = None  # the packed copies (stacked embeddings and heads) would be stale
        return super().load_state_dict(*args, **kwargs)

    def _apply(self, fn, *args, **kwargs):
        self._packed = None
        self._pos_cache = {}
        return super()._apply(fn, *args, **kwargs)

    def init_state(self, capacity: int = 4096) -> EncodecLMState:
        """A fresh state (offset 0, one all-zero past input per layer), as the original's `states=None`."""
        cfg = self.config
        device = self.transformer.norm_in.weight.device
        capacity = max(capacity, 2 * (cfg.past_context + 1))
        state = EncodecLMState()
        for _ in range(cfg.num_layers):
            state.inputs.append(torch.zeros(capacity, 1, cfg.dim, device=device))
            state.keys.append(torch.zeros(capacity, cfg.dim, device=device))
            state.values.append(torch.zeros(capacity, cfg.dim, device=device))
        return state

    def _position_embedding(self, offset: int) -> torch.Tensor:
        """`[1, 1, dim]` sinusoidal embedding of position `offset`, computed with the original's ops."""
        pos = self._pos_cache.get(offset)
        if pos is None:
            device = self.transformer.norm_in.weight.device
            half = self.config.dim // 2
            positions = torch.arange(1, device=device).view(1, -1, 1) + offset
            adim = torch.arange(half, device=device).view(1, 1, -1)
            phase = positions / (self.config.max_period ** (adim / (half - 1)))
            pos = torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)
            if len(self._pos_cache) >= self.max_cached_positions:
                # Bounded: an hour of 24 kHz audio is 270k offsets (~300 MB of small tensors) otherwise.
                self._pos_cache.clear()
            self._pos_cache[offset] = pos
        return pos

    def _zero_mask(self, length: int, device) -> torch.Tensor:
        masks = self._packed["zero_masks"]
        mask = masks.get(length)
        if mask is None:
            # The original passes a boolean "no access" mask, turned into a float 0/-inf one; for a
            # single query every key is visible, so it is all zeros, of shape [1, 1, 1, S].
            mask = torch.zeros(1, 1, 1, length, device=device)
            masks[length] = mask
        return mask

    def _attention(
        self,
        x: torch.Tensor,
        layer_index: int,
        window: _Window,
        state: EncodecLMState,
        packed: dict,
        prefetch: bool = False,
    ) -> torch.Tensor:
        """Self-attention of the new frame `x` `[1, 1, D]` over the stored past (`window`) plus itself."""
        cfg = self.config
        w_q, b_q, w_kv, b_kv, _, weights = packed["layers"][layer_index]
        inputs, keys, values = state.inputs[layer_index], state.keys[layer_index], state.values[layer_index]
        start, length = window.start, window.length
        inputs[start + length].copy_(x[0])
        num_keys = length + 1
        stable = packed["stable_rows"]
        if stable is not None and window.cached and num_keys >= stable:
            # Only the new row is projected, in a block of `stable` rows so the same kernel runs.
            first = start + num_keys - stable
            kv = F.linear(inputs[first : start + num_keys], w_kv, b_kv)[-1, 0]  # [2D]
            keys[start + length].copy_(kv[: cfg.dim])
            values[start + length].copy_(kv[cfg.dim :])
        else:
            kv = F.linear(inputs[start : start + num_keys], w_kv, b_kv)  # [S, 1, 2D], as the original
            kv = kv.unflatten(-1, (2, cfg.dim)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()
            keys[start : start + num_keys].copy_(kv[0, :, 0])
            values[start : start + num_keys].copy_(kv[1, :, 0])
        heads, head_dim, dim = cfg.num_heads, cfg.dim // cfg.num_heads, cfg.dim
        # [B, H, 1, hd] query and [B, H, S, hd] keys/values over the window, with the strides the original's
        # view/transpose chain gives them (rows of D floats, heads 25 floats apart); fewer ops, same tensors.
        q = F.linear(x, w_q, b_q).view(1, heads, 1, head_dim)
        k = keys.as_strided((1, heads, num_keys, head_dim), (num_keys * dim, head_dim, dim, 1), start * dim)
        v = values.as_strided((1, heads, num_keys, head_dim), (num_keys * dim, head_dim, dim, 1), start * dim)
        if prefetch:  # the window's keys and values (2 x 210 kB per layer at 24 kHz), as the weights in `_layer`
            keys[start : start + num_keys].sum(), values[start : start + num_keys].sum()
        out = F.scaled_dot_product_attention(q, k, v, self._zero_mask(num_keys, x.device), 0.0, False)
        # For one query the [B, H, 1, hd] output viewed as [1, 1, D] is the original's permute + reshape.
        return F.linear(out.reshape(1, 1, dim), weights.out_w, weights.out_b)

    def _layer(
        self,
        x: torch.Tensor,
        layer_index: int,
        window: _Window,
        state: EncodecLMState,
        packed: dict,
        prefetch: bool = False,
    ) -> torch.Tensor:
        """One post-norm `nn.TransformerEncoderLayer` on the new frame `x` `[1, 1, D]`, with its functional calls.

        With `prefetch`, each weight matrix is read once, streaming, just before its matrix-vector product: the
        product's own access pattern is slow on weights that are not in the core's cache (frame-by-frame
        decoding cycles ~16 MB of weights per frame), a plain reduction is not; the sum is thrown away.
        """
        w_in, w = packed["layers"][layer_index][4].self_attn.in_proj_weight, packed["layers"][layer_index][-1]
        shape = (self.config.dim,)
        if prefetch:
            w_in.sum(), w.out_w.sum()
        attended = self._attention(x, layer_index, window, state, packed, prefetch)
        x = F.layer_norm(x + attended, shape, w.norm1_w, w.norm1_b, w.eps1)
        if prefetch:
            w.l1_w.sum()
        hidden = F.gelu(F.linear(x, w.l1_w, w.l1_b))
        if prefetch:
            w.l2_w.sum()
        return F.layer_norm(x + F.linear(hidden, w.l2_w, w.l2_b), shape, w.norm2_w, w.norm2_b, w.eps2)

    def _windows(self, state: EncodecLMState, steps: int, packed: dict) -> list[_Window]:
        """The attention windows of the next `steps` frames; moves the state past them.

        The window keeps the last `past_context` inputs, as the original's `cat[past, x][-past_context:]`.
        The buffers are compacted first if the frames would run past their end (a move, no arithmetic).
        """
        cfg = self.config
        capacity = state.inputs[0].shape[0]
        if state.start + state.length + steps + 1 > capacity:
            for buffers in (state.inputs, state.keys, state.values):
                for buf in buffers:
                    buf[: state.length] = buf[state.start : state.start + state.length].clone()
            state.start = 0
        stable = packed["stable_rows"]
        windows = []
        for _ in range(steps):
            windows.append(_Window(state.start, state.length, state.cached))
            num_keys = state.length + 1
            if stable is not None and num_keys >= stable:
                state.cached = True
            drop = max(0, num_keys - cfg.past_context)
            state.start += drop
            state.length = num_keys - drop
            state.offset += 1
        return windows

    def max_block_frames(self, state: EncodecLMState) -> int:
        """The most frames one `frames_probas` call can take with this state's buffers."""
        return state.inputs[0].shape[0] - self.config.past_context - 2

    @torch.inference_mode()
    def step(self, previous_codes: torch.Tensor | list[int] | None, state: EncodecLMState) -> torch.Tensor:
        """Probabilities `[K, card]` for the next frame given the codes `[K]` of the previous one.

        The first frame of a segment has no previous codes: use `step_first`. K may be smaller than
        `config.num_codebooks`; only the first K embeddings and heads are used, as in the original.
        """
        if previous_codes is None:
            raise ValueError("Use step_first(num_codebooks, state) for the first frame of a segment.")
        codes = torch.as_tensor(previous_codes, dtype=torch.long).reshape(1, -1)
        return self._frames_probas(codes + 1, state)[0]

    @torch.inference_mode()
    def step_first(self, num_codebooks: int, state: EncodecLMState) -> torch.Tensor:
        """Probabilities `[K, card]` for the first frame (all inputs "missing", index 0)."""
        return self._frames_probas(torch.zeros(1, num_codebooks, dtype=torch.long), state)[0]

    @torch.inference_mode()
    def frames_probas(self, codes: torch.Tensor, state: EncodecLMState) -> torch.Tensor:
        """Probabilities `[F, K, card]` of `F` frames whose codes `[K, F]` are all known (compression).

        Frame f is predicted from frame f - 1 (from `state.previous_codes`, or "missing" at the start of a
        segment); afterwards `state.previous_codes` is the last frame. The result is bit-identical to `F`
        calls of `step`: every kernel runs on the same shapes, values and strides, only the loops are
        swapped (layer by layer over the frames, not frame by frame over the layers), so each layer's
        weights stay in the CPU cache instead of being streamed from memory once per frame.
        """
        codes = torch.as_tensor(codes, dtype=torch.long)
        if codes.dim() != 2:
            raise ValueError(f"codes must be [K, F], got shape {tuple(codes.shape)}.")
        num_codebooks, frames = codes.shape
        if frames == 0:
            raise ValueError("codes hold no frame (shape [K, 0]); pass at least one frame.")
        if frames > self.max_block_frames(state):
            raise ValueError(
                f"{frames} frames do not fit the state's buffers (at most {self.max_block_frames(state)}); "
                "call frames_probas on shorter blocks."
            )
        if state.offset == 0:
            first = torch.zeros(num_codebooks, 1, dtype=torch.long)
        elif state.previous_codes is None:
            raise ValueError("state.previous_codes must hold the codes of the frame before these ones.")
        else:
            previous = torch.as_tensor(state.previous_codes, dtype=torch.long)
            if previous.numel() != num_codebooks:
                raise ValueError(
                    f"state.previous_codes holds {previous.numel()} codes, these frames have {num_codebooks} "
                    "codebooks; keep one codebook count per stream."
                )
            first = 1 + previous.reshape(num_codebooks, 1)
        indices = torch.cat([first, 1 + codes[:, :-1]], dim=1).t()  # [F, K]
        probas = self._frames_probas(indices, state)
        state.previous_codes = codes[:, -1].clone()
        return probas

    def _frames_probas(self, indices: torch.Tensor, state: EncodecLMState) -> torch.Tensor:
        """Probabilities `[F, K, card]` for frames whose embedding indices (code + 1, 0 = missing) are `[F, K]`."""
        cfg = self.config
        frames, num_codebooks = indices.shape
        if not 1 <= num_codebooks <= cfg.num_codebooks:
            raise ValueError(f"Got codes for {num_codebooks} codebooks; this LM models 1 to {cfg.num_codebooks}.")
        if int(indices.min()) < 0 or int(indices.max()) > cfg.codebook_size:
            raise ValueError(f"Codes must lie in [0, {cfg.codebook_size}).")
        packed = self._pack()
        device = packed["emb"].device
        first_offset = state.offset
        rows = packed["emb"][indices.to(device) + packed["emb_offsets"][:num_codebooks]]  # [F, K, D]
        # Sequential adds starting from 0, as Python's sum() over the K embeddings in the original (element-wise
        # float adds, so summing every frame at once gives each frame's bits).
        summed = 0 + rows[:, 0]
        for k in range(1, num_codebooks):
            summed = summed + rows[:, k]
        norm_in = self.transformer.norm_in
        xs = [
            F.layer_norm(summed[f].view(1, 1, cfg.dim), norm_in.normalized_shape, norm_in.weight, norm_in.bias,
                         norm_in.eps) + self._position_embedding(first_offset + f)
            for f in range(frames)
        ]  # fmt: skip
        windows = self._windows(state, frames, packed)
        prefetch = frames == 1  # a block keeps each layer's weights in cache across its frames
        for index in range(cfg.num_layers):
            xs = [self._layer(x, index, w, state, packed, prefetch) for x, w in zip(xs, windows, strict=True)]
        heads = num_codebooks * cfg.codebook_size
        probas = []
        for x in xs:
            if packed["batched_heads"] and not prefetch:
                logits = F.linear(x, packed["head_w"][:heads], packed["head_b"][:heads])
            else:
                # The original's K separate heads; when prefetching, one head (0.8 MB) at a time fits the core's
                # cache where the K stacked heads (K x 0.8 MB) do not.
                parts = []
                for head in self.linears[:num_codebooks]:
                    if prefetch:
                        head.weight.sum()
                    parts.append(head(x))
                logits = torch.cat(parts, dim=-1)
            # Same layout as torch.stack([...], dim=1).permute(0, 3, 1, 2) in the original: softmax over dim 1
            # of a [B, card, K, T] view, which decides how the sum of exponentials is associated.
            logits = logits.view(1, num_codebooks, 1, cfg.codebook_size).permute(0, 3, 1, 2)
            probas.append(torch.softmax(logits, dim=1)[0, :, :, 0].t())  # [K, card]
        return torch.stack(probas)

    def step_cdfs(self, previous_codes, state: EncodecLMState, num_codebooks: int | None = None) -> np.ndarray:
        """Quantized CDFs int64 `[K, card]` for the next frame (`previous_codes=None` for the first one)."""
        if previous_codes is None:
            if num_codebooks is None:
                raise ValueError("num_codebooks is required for the first frame.")
            probas = self.step_first(num_codebooks, state)
        else:
            probas = self.step(previous_codes, state)
        return build_stable_quantized_cdf(probas, TOTAL_RANGE_BITS, check=False).cpu().numpy()

    def iter_cdfs(self, codes: torch.Tensor | np.ndarray, block_frames: int = 256):
        """Quantized CDFs of every frame of a segment whose codes `[K, F]` are known, a block at a time.

        Yields int64 arrays `[f, K, card]` (f <= `block_frames`) in order, the same values as `step_cdfs`
        frame by frame from a fresh state; memory stays bounded on long segments.
        """
        codes = torch.as_tensor(codes, dtype=torch.long)
        state = self.init_state()
        block_frames = max(1, min(block_frames, self.max_block_frames(state)))
        for start in range(0, codes.shape[1], block_frames):
            probas = self.frames_probas(codes[:, start : start + block_frames], state)
            yield build_stable_quantized_cdf(probas, TOTAL_RANGE_BITS, check=False).cpu().numpy()

    @torch.inference_mode()
    def forward(self, codes: torch.Tensor, state: EncodecLMState | None = None):
        """Probabilities for every frame of `codes` `[1, K, T]` (frame t predicted from frame t - 1).

        Returns:
            `(probas [1, card, K, T], state)`, the layout of the original's `LMModel` output.
        """
        if codes.dim() != 3 or codes.shape[0] != 1:
            raise ValueError(f"codes must be [1, K, T], got shape {tuple(codes.shape)}.")
        state = self.init_state() if state is None else state
        block = self.max_block_frames(state)
        outputs = [self.frames_probas(codes[0, :, t : t + block], state) for t in range(0, codes.shape[-1], block)]
        return torch.cat(outputs).permute(2, 1, 0).unsqueeze(0), state


__all__ = ["EncodecLM", "EncodecLMConfig", "EncodecLMState", "LM_WEIGHTS_NAME"]
