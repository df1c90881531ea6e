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

    def _attention(self, x: torch.Tensor, layer_index: int, state: EncodecLMState, packed: dict) -> torch.Tensor:
        """Self-attention of the new frame `x` `[1, 1, D]` over the stored past plus itself."""
        cfg = self.config
        w_q, b_q, w_kv, b_kv, _, weights = packed["layers"][layer_index]
        inputs, keys, values = state.inputs[layer_index], state.keys[layer_index], state.values[layer_index]
        start, length = state.start, state.length
        inputs[start + length].copy_(x[0])
        num_keys = length + 1
        stable = packed["stable_rows"]
        if stable is not None and state.cached and num_keys >= stable:
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
        out = F.scaled_dot_product_attention(q, k, v, self._zero_mask(num_keys, x.device), 0.0, False)
        # For one query the [B, H, 1, hd] output viewed as [1, 1, D] is the original's permute + reshape.
        return F.linear(out.reshape(1, 1, dim), weights.out_w, weights.out_b)

    def _advance(self, state: EncodecLMState, packed: dict) -> None:
        """Keep the last `past_context` inputs (as `cat[past, x][-past_context:]`), sliding the window."""
        cfg = self.config
        num_keys = state.length + 1
        if packed["stable_rows"] is not None and num_keys >= packed["stable_rows"]:
            state.cached = True
        drop = max(0, num_keys - cfg.past_context)
        state.start += drop
        state.length = num_keys - drop
        capacity = state.inputs[0].shape[0]
        if state.start + state.length + 1 > capacity:  # move the window back to the front of the buffers
            for buffers in (state.inputs, state.keys, state.values):
                for buf in buffers:
                    buf[: state.length] = buf[state.start : state.start + state.length].clone()
            state.start = 0
        state.offset += 1

    @torch.inference_mode()
    def step(self, previous_codes: torch.Tensor | list[int] | None, state: EncodecLMState) -> torch.Tensor:
        """Probabilities `[K, card]` for the next frame given the codes `[K]` of the previous one.

        The first frame of a segment has no previous codes: use `step_first`. K may be smaller than
        `config.num_codebooks`; only the first K embeddings and heads are used, as in the original.
        """
        if previous_codes is None:
            raise ValueError("Use step_first(num_codebooks, state) for the first frame of a segment.")
        codes = torch.as_tensor(previous_codes, dtype=torch.long).reshape(-1)
        return self._step_indices(codes + 1, state)

    @torch.inference_mode()
    def step_first(self, num_codebooks: int, state: EncodecLMState) -> torch.Tensor:
        """Probabilities `[K, card]` for the first frame (all inputs "missing", index 0)."""
        return self._step_indices(torch.zeros(num_codebooks, dtype=torch.long), state)

    def _step_indices(self, indices: torch.Tensor, state: EncodecLMState) -> torch.Tensor:
        cfg = self.config
        num_codebooks = indices.shape[0]
        if not 1 <= num_codebooks <= cfg.num_codebooks:
            raise ValueError(f"Got codes for {num_codebooks} codebooks; this LM models 1 to {cfg.num_codebooks}.")
        if int(indices.min()) < 0 or int(indices.max()) > cfg.codebook_size:
            raise ValueError(f"Codes must lie in [0, {cfg.codebook_size}).")
        packed = self._pack()
        device = packed["emb"].device
        rows = packed["emb"].index_select(0, indices.to(device) + packed["emb_offsets"][:num_codebooks])  # [K, D]
        # Sequential adds starting from 0, as Python's sum() over the K embeddings in the original.
        rows = rows.unbind(0)
        x = 0 + rows[0]
        for row in rows[1:]:
            x = x + row
        x = x.view(1, 1, cfg.dim)
        norm_in = self.transformer.norm_in
        x = F.layer_norm(x, norm_in.normalized_shape, norm_in.weight, norm_in.bias, norm_in.eps)
        x = x + self._position_embedding(state.offset)
        shape = (cfg.dim,)
        for index, (_, _, _, _, _, w) in enumerate(packed["layers"]):
            # Post-norm layer of nn.TransformerEncoderLayer, with the functional calls its modules make.
            attended = self._attention(x, index, state, packed)
            x = F.layer_norm(x + attended, shape, w.norm1_w, w.norm1_b, w.eps1)
            x = F.layer_norm(
                x + F.linear(F.gelu(F.linear(x, w.l1_w, w.l1_b)), w.l2_w, w.l2_b), shape, w.norm2_w, w.norm2_b, w.eps2
            )
        self._advance(state, packed)
        card = cfg.codebook_size
        if packed["batched_heads"]:
            logits = F.linear(x, packed["head_w"][: num_codebooks * card], packed["head_b"][: num_codebooks * card])
        else:
            logits = torch.cat([self.linears[k](x) for k in range(num_codebooks)], dim=-1)
        # Same layout as torch.stack([...], dim=1).permute(0, 3, 1, 2) in the original: softmax over dim 1
        # of a [B, card, K, T] view, which decides how the sum of exponentials is associated.
        logits = logits.view(1, num_codebooks, 1, card).permute(0, 3, 1, 2)
        probas = torch.softmax(logits, dim=1)  # [1, card, K, 1]
        return probas[0, :, :, 0].t()  # [K, card]

    def step_cdfs(self, previous_codes, state: EncodecLMState, num_codebooks: int | None = None) -> np.ndarray:
        """Quantized CDFs int64 `[K, card]` for the next frame (`previous_codes=None` for the first one)."""
        if previous_codes is None:
            if num_codebooks is None:
                raise ValueError("num_codebooks is required for the first frame.")
            probas = self.step_first(num_codebooks, state)
        else:
            probas = self.step(previous_codes, state)
        return build_stable_quantized_cdf(probas, TOTAL_RANGE_BITS, check=False).cpu().numpy()

    @torch.inference_mode()
    def forward(self, codes: torch.Tensor, state: EncodecLMState | None = None):
        """Probabilities for every frame of `codes` `[1, K, T]` (frame t predicted from frame t - 1).

        Returns:
            `(probas [1, card, K, T], state)`, the layout of the original's `LMModel` output.
        """
        if codes.dim() != 3 or codes.shape[0] != 1:
            raise ValueError(f"codes must be [1, K, T], got shape {tuple(codes.shape)}.")
        state = self.init_state() if state is None else state
        outputs = []
        for t in range(codes.shape[-1]):
            if t == 0 and state.offset == 0:
                outputs.append(self.step_first(codes.shape[1], state))
            else:
                prev = state.previous_codes if t == 0 else codes[0, :, t - 1]
                outputs.append(self.step(prev, state))
            state.previous_codes = codes[0, :, t]
        return torch.stack(outputs, dim=-1).unsqueeze(0).transpose(1, 2), state


__all__ = ["EncodecLM", "EncodecLMConfig", "EncodecLMState", "LM_WEIGHTS_NAME"]
