"""Bit-exact incremental decoding for [`EncodecLM`]: the original's float32 bits, with cached keys and values.

The arithmetic coder only decodes what was encoded if both sides compute the *same float32 bits*. The
original (Meta's `encodec.model.LMModel`) runs one frame at a time through `nn.MultiheadAttention` and
recomputes the keys and values of its whole past at every step; this module runs the same kernels on
tensors of the same shapes and strides, in the same order, but caches keys and values:

- BLAS results for a row of `linear(x[:M])` depend on M for small M (other kernels for thin matrices), so
  a cached row is only valid where the original's M gives the same bits. `KernelChoices.measure` finds, for this
  device, dtype and thread count, the M from which rows no longer depend on M; below it (the first frames
  of a segment) the window is recomputed exactly as the original does; if no such M exists every step
  recomputes, as the original.
- The K output projections are one matmul when that is bit-identical to K separate ones (also measured).
- Embedding sums are sequential adds, as Python's `sum()` in the original (a tensor `sum` reassociates).

Speed on CPU is a matter of cache, not arithmetic: one frame streams ~10 MB of layer weights plus 0.8 MB per
output head through matrix-vector products, whose access pattern is slow on weights that are not in the
core's cache. When every frame's codes are known (compression), the loops are swapped: each layer runs over
a block of frames while its weights stay cached, every kernel still seeing the shapes, values and strides of
the frame-by-frame order.

Everything the bits depend on besides the inputs is in one [`ExactPlan`], rebuilt whenever its [`PlanKey`]
(threads, device, dtype, the weights' version, `exact_recompute`) changes.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanKey:
    """What an [`ExactPlan`] depends on; a plan whose key differs from the LM's current one is rebuilt.

    `weights_version` holds `(id, _version, data_ptr)` of every parameter: torch bumps a tensor's `_version` on
    every in-place change (`copy_` in `load_state_dict`, edits under `no_grad`, optimizer steps), `id` changes
    when a parameter is replaced and `data_ptr` when its storage is (`param.data = ...`, `.to()`). A hook-bumped
    counter would miss in-place edits, which no module hook sees. The plan holds the parameters, so their ids
    are not reused while it lives. Not seen: writes through `param.data`, which has its own version counter;
    edit the parameters themselves; nor in-place edits of parameters created under `torch.inference_mode`
    (inference tensors have no version counter; `EncodecLM.from_pretrained` makes normal ones).
    """

    num_threads: int
    device: torch.device
    dtype: torch.dtype
    weights_version: tuple[tuple[int, int, int], ...]
    exact_recompute: bool

    @classmethod
    def of(cls, lm) -> PlanKey:
        """The key of `lm` now. It is checked on every call, once per decoded frame, hence `_parameters_of`."""
        parameters = _parameters_of(lm, [])
        try:
            version = tuple((id(p), p._version, p.data_ptr()) for p in parameters)
        except RuntimeError:  # inference tensors (made under `torch.inference_mode`) have no version counter
            version = tuple((id(p), -1 if p.is_inference() else p._version, p.data_ptr()) for p in parameters)
        return cls(
            num_threads=torch.get_num_threads(),
            device=parameters[0].device,
            dtype=parameters[0].dtype,
            weights_version=version,
            exact_recompute=bool(lm.exact_recompute),
        )


def _parameters_of(module: torch.nn.Module, out: list) -> list[torch.nn.Parameter]:
    """`list(module.parameters())` (same order), in a sixth of its time: no generators, no de-duplication set (a
    parameter shared by two modules is listed twice, which only lengthens the key)."""
    out.extend(p for p in module._parameters.values() if p is not None)
    for child in module._modules.values():
        if child is not None:
            _parameters_of(child, out)
    return out


@dataclass(frozen=True)
class KernelChoices:
    """Which cached computations give the original's bits on this device, dtype and thread count.

    Args:
        stable_rows: smallest M from which every row of `linear(x[:M])` equals that row computed in a taller
            block (so a key/value row can be computed once and kept); `None`: there is none, recompute always.
        batched_heads: one `linear` over the K stacked output heads equals K separate ones.
    """

    stable_rows: int | None
    batched_heads: bool

    @classmethod
    def measure(cls, config, key: PlanKey) -> KernelChoices:
        if key.exact_recompute:
            return cls(stable_rows=None, batched_heads=False)
        device, dtype, threads = str(key.device), key.dtype, key.num_threads
        window = config.past_context + 1
        return cls(
            stable_rows=_row_stable_min_rows(config.dim, 2 * config.dim, window, device, dtype, threads),
            batched_heads=_batched_heads_exact(
                config.dim, config.codebook_size, config.num_codebooks, device, dtype, threads
            ),
        )


# Both measurements run random matrices of the LM's shapes (which kernel BLAS picks depends on the shapes and the
# thread count, not on the values); a few hundred small matmuls once per process and shapes, device, dtype and
# thread count, which are the cache key (`threads` is the current count, passed only to key the cache).
@functools.lru_cache(maxsize=16)
def _row_stable_min_rows(in_features: int, out_features: int, max_rows: int, device: str, dtype, threads: int):
    """Smallest M such that every row of `linear(x[:m])`, m >= M, equals the row of `linear(x[:max_rows])`.

    Thin-matrix BLAS kernels sum in another order than the blocked ones, hence the measurement.
    """
    gen = torch.Generator().manual_seed(1234)
    weight = torch.randn(out_features, in_features, generator=gen).to(device, dtype)
    bias = torch.randn(out_features, generator=gen).to(device, dtype)
    x = torch.randn(max_rows, 1, in_features, generator=gen).to(device, dtype)
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
def _batched_heads_exact(dim: int, card: int, max_heads: int, device: str, dtype, threads: int) -> bool:
    """Whether one `linear` over K stacked heads gives the bits of K separate `linear` calls (M = 1)."""
    gen = torch.Generator().manual_seed(4321)
    weight = torch.randn(max_heads * card, dim, generator=gen).to(device, dtype)
    bias = torch.randn(max_heads * card, generator=gen).to(device, dtype)
    x = torch.randn(1, 1, dim, generator=gen).to(device, dtype)
    with torch.inference_mode():
        parts = [
            F.linear(x, weight[k * card : (k + 1) * card], bias[k * card : (k + 1) * card]) for k in range(max_heads)
        ]
        separate = torch.cat(parts, -1)
        return all(
            torch.equal(F.linear(x, weight[: k * card], bias[: k * card]), separate[..., : k * card])
            for k in range(1, max_heads + 1)
        )


@dataclass(frozen=True)
class LayerWeights:
    """One post-norm transformer layer's tensors, fetched once (module attribute lookups cost more than the small
    ops themselves). `in_proj` is split as the original's `F._in_projection_packed` does: query rows, then the
    key and value rows together (self-attention: query is not key, so `in_proj_weight.split([D, 2 D])`)."""

    q_w: torch.Tensor
    q_b: torch.Tensor
    kv_w: torch.Tensor
    kv_b: torch.Tensor
    out_w: torch.Tensor
    out_b: torch.Tensor
    l1_w: torch.Tensor
    l1_b: torch.Tensor
    l2_w: torch.Tensor
    l2_b: torch.Tensor
    norm1: tuple[torch.Tensor, torch.Tensor, float]
    norm2: tuple[torch.Tensor, torch.Tensor, float]

    @classmethod
    def of(cls, layer, dim: int) -> LayerWeights:
        attn = layer.self_attn
        q_w, kv_w = attn.in_proj_weight.split([dim, 2 * dim])
        q_b, kv_b = attn.in_proj_bias.split([dim, 2 * dim])
        return cls(
            q_w, q_b, kv_w, kv_b, attn.out_proj.weight, attn.out_proj.bias,
            layer.linear1.weight, layer.linear1.bias, layer.linear2.weight, layer.linear2.bias,
            (layer.norm1.weight, layer.norm1.bias, layer.norm1.eps),
            (layer.norm2.weight, layer.norm2.bias, layer.norm2.eps),
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


@dataclass
class ExactPlan:
    """An LM's weights in the layouts the exact decoder uses, the kernel choices measured for them, and the
    small tensors it reuses (position embeddings per offset, all-zero attention masks per length)."""

    key: PlanKey
    kernels: KernelChoices
    dim: int
    num_heads: int
    past_context: int
    codebook_size: int
    max_period: float
    norm_in: tuple[torch.Tensor, torch.Tensor, float]
    layers: tuple[LayerWeights, ...]
    heads: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # the K output heads (weight [card, D], bias [card])
    emb: torch.Tensor  # [n_q * (card + 1), D], the K embeddings stacked
    emb_offsets: torch.Tensor  # [n_q], first row of each embedding in `emb`
    head_w: torch.Tensor  # [n_q * card, D], the K heads stacked
    head_b: torch.Tensor
    positions: dict[int, torch.Tensor] = field(default_factory=dict)
    zero_masks: dict[int, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def build(cls, lm, key: PlanKey) -> ExactPlan:
        cfg = lm.config
        kernels = KernelChoices.measure(cfg, key)
        logger.debug("EncodecLM: %s for %s threads on %s", kernels, key.num_threads, key.device)
        norm_in = lm.transformer.norm_in
        return cls(
            key=key,
            kernels=kernels,
            dim=cfg.dim,
            num_heads=cfg.num_heads,
            past_context=cfg.past_context,
            codebook_size=cfg.codebook_size,
            max_period=cfg.max_period,
            norm_in=(norm_in.weight, norm_in.bias, norm_in.eps),
            layers=tuple(LayerWeights.of(layer, cfg.dim) for layer in lm.transformer.layers),
            heads=tuple((head.weight, head.bias) for head in lm.linears),
            emb=torch.cat([e.weight for e in lm.emb]).detach(),
            emb_offsets=torch.arange(cfg.num_codebooks, device=key.device) * (cfg.codebook_size + 1),
            head_w=torch.cat([head.weight for head in lm.linears]).detach(),
            head_b=torch.cat([head.bias for head in lm.linears]).detach(),
        )

    # ------------------------------------------------------------------ small reused tensors
    def position_embedding(self, offset: int, max_cached: int) -> torch.Tensor:
        """`[1, 1, dim]` sinusoidal embedding of position `offset`, with the original's ops on one offset (a block
        of offsets would round its loop tails differently); the last `max_cached` offsets are kept."""
        pos = self.positions.get(offset)
        if pos is None:
            device, half = self.key.device, self.dim // 2
            positions = torch.arange(1, device=device).view(1, -1, 1) + offset
            adim = torch.arange(half, device=device).view(1, 1, -1)
            phase = positions / (self.max_period ** (adim / (half - 1)))
            pos = torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)
            if len(self.positions) >= max_cached:
                # Bounded: an hour of 24 kHz audio is 270k offsets (~300 MB of small tensors) otherwise.
                self.positions.clear()
            self.positions[offset] = pos
        return pos

    def zero_mask(self, length: int) -> torch.Tensor:
        """The original passes a boolean "no access" mask, turned into a float 0/-inf one; for a single query every
        key is visible, so it is all zeros, `[1, 1, 1, S]`."""
        mask = self.zero_masks.get(length)
        if mask is None:
            mask = self.zero_masks[length] = torch.zeros(1, 1, 1, length, device=self.key.device)
        return mask

    # ------------------------------------------------------------------ one frame through one layer
    def windows(self, state: EncodecLMState, steps: int) -> list[_Window]:
        """The attention windows of the next `steps` frames; moves the state past them.

        The window keeps the last `past_context` inputs, as the original's `cat[past, x][-past_context:]`.
        The buffers are compacted first if the frames would run past their end (a move, no arithmetic).
        """
        if state.start + state.length + steps + 1 > state.inputs[0].shape[0]:
            for buffers in (state.inputs, state.keys, state.values):
                for buf in buffers:
                    buf[: state.length] = buf[state.start : state.start + state.length].clone()
            state.start = 0
        stable = self.kernels.stable_rows
        windows = []
        for _ in range(steps):
            windows.append(_Window(state.start, state.length, state.cached))
            num_keys = state.length + 1
            if stable is not None and num_keys >= stable:
                state.cached = True
            drop = max(0, num_keys - self.past_context)
            state.start += drop
            state.length = num_keys - drop
            state.offset += 1
        return windows

    def attention(self, x: torch.Tensor, index: int, window: _Window, state: EncodecLMState) -> torch.Tensor:
        """Self-attention of the new frame `x` `[1, 1, D]` over the stored past (`window`) plus itself."""
        w, dim = self.layers[index], self.dim
        inputs, keys, values = state.inputs[index], state.keys[index], state.values[index]
        start, length = window.start, window.length
        inputs[start + length].copy_(x[0])
        num_keys = length + 1
        stable = self.kernels.stable_rows
        if stable is not None and window.cached and num_keys >= stable:
            # Only the new row is projected, in a block of `stable` rows so the same kernel runs.
            first = start + num_keys - stable
            kv = F.linear(inputs[first : start + num_keys], w.kv_w, w.kv_b)[-1, 0]  # [2D]
            keys[start + length].copy_(kv[:dim])
            values[start + length].copy_(kv[dim:])
        else:
            kv = F.linear(inputs[start : start + num_keys], w.kv_w, w.kv_b)  # [S, 1, 2D], as the original
            kv = kv.unflatten(-1, (2, dim)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()
            keys[start : start + num_keys].copy_(kv[0, :, 0])
            values[start : start + num_keys].copy_(kv[1, :, 0])
        heads, head_dim = self.num_heads, dim // self.num_heads
        # [B, H, 1, hd] query and [B, H, S, hd] keys/values over the window, with the strides the original's
        # view/transpose chain gives them (rows of D floats, heads hd floats apart); fewer ops, same tensors.
        q = F.linear(x, w.q_w, w.q_b).view(1, heads, 1, head_dim)
        k = keys.as_strided((1, heads, num_keys, head_dim), (num_keys * dim, head_dim, dim, 1), start * dim)
        v = values.as_strided((1, heads, num_keys, head_dim), (num_keys * dim, head_dim, dim, 1), start * dim)
        out = F.scaled_dot_product_attention(q, k, v, self.zero_mask(num_keys), 0.0, False)
        # For one query the [B, H, 1, hd] output viewed as [1, 1, D] is the original's permute + reshape.
        return F.linear(out.reshape(1, 1, dim), w.out_w, w.out_b)

    def layer(self, x: torch.Tensor, index: int, window: _Window, state: EncodecLMState) -> torch.Tensor:
        """One post-norm `nn.TransformerEncoderLayer` on the new frame `x` `[1, 1, D]`, with its functional calls."""
        w, shape = self.layers[index], (self.dim,)
        x = F.layer_norm(x + self.attention(x, index, window, state), shape, *w.norm1)
        hidden = F.gelu(F.linear(x, w.l1_w, w.l1_b))
        return F.layer_norm(x + F.linear(hidden, w.l2_w, w.l2_b), shape, *w.norm2)

    # ------------------------------------------------------------------ frames to probabilities
    def frames_probas(self, indices: torch.Tensor, state: EncodecLMState, max_cached_positions: int) -> torch.Tensor:
        """Probabilities `[F, K, card]` for frames whose embedding indices (code + 1, 0 = missing) are `[F, K]`."""
        frames, num_codebooks = indices.shape
        first_offset = state.offset
        rows = self.emb[indices.to(self.emb.device) + self.emb_offsets[:num_codebooks]]  # [F, K, D]
        # Sequential adds starting from 0, as Python's sum() over the K embeddings in the original (element-wise
        # float adds, so summing every frame at once gives each frame's bits).
        summed = 0 + rows[:, 0]
        for k in range(1, num_codebooks):
            summed = summed + rows[:, k]
        xs = [
            F.layer_norm(summed[f].view(1, 1, self.dim), (self.dim,), *self.norm_in)
            + self.position_embedding(first_offset + f, max_cached_positions)
            for f in range(frames)
        ]
        windows = self.windows(state, frames)
        for index in range(len(self.layers)):
            xs = [self.layer(x, index, w, state) for x, w in zip(xs, windows, strict=True)]
        card, probas = self.codebook_size, []
        for x in xs:
            if self.kernels.batched_heads:
                logits = F.linear(x, self.head_w[: num_codebooks * card], self.head_b[: num_codebooks * card])
            else:  # the original's K separate heads
                logits = torch.cat([F.linear(x, weight, bias) for weight, bias in self.heads[:num_codebooks]], dim=-1)
            # Same layout as torch.stack([...], dim=1).permute(0, 3, 1, 2) in the original: softmax over dim 1
            # of a [B, card, K, T] view, which decides how the sum of exponentials is associated.
            logits = logits.view(1, num_codebooks, 1, card).permute(0, 3, 1, 2)
            probas.append(torch.softmax(logits, dim=1)[0, :, :, 0].t())  # [K, card]
        return torch.stack(probas)


__all__ = ["EncodecLMState", "ExactPlan", "KernelChoices", "LayerWeights", "PlanKey"]
