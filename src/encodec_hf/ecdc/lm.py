"""EncodecLM: the small transformer over EnCodec codes that drives the `.ecdc` arithmetic coder.

It predicts, for every codebook k at frame t, a distribution over the 1024 codes from the codes of frame
t - 1 (all K codebooks in parallel, no conditioning within a frame). Five post-norm transformer layers
(dim 200, 8 heads, FF 800, exact GELU) attend to at most `past_context` = 3.5 s of frames.

The arithmetic coder only decodes what was encoded if both sides compute the *same float32 bits* as the
original (Meta's `encodec.model.LMModel`), which recomputes its whole past at every frame. The streaming
computation here caches keys and values and still gives those bits; how, and everything the bits depend on
(measured BLAS kernel choices, stacked weights, their cache key), lives in `lm_exact.py`.

Threads: every public computation runs inside ``encodec_hf.threads.torch_threads(lm.num_threads)``, one torch
thread by default (a frame is a few hundred small kernels), the caller's count restored afterwards. The bits depend
on the thread count (`PlanKey`), so a fixed default also makes files compressed on one machine decode on another
with a different core count; set ``lm.num_threads`` (or ``$ENCODEC_HF_NUM_THREADS``) to what the other side used to
decode a file compressed with another count.

The parameter names are those of the original checkpoint, so conversion copies tensors unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..threads import torch_threads
from .arithmetic_coding import TOTAL_RANGE_BITS, build_stable_quantized_cdf
from .lm_exact import EncodecLMState, ExactPlan, PlanKey

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
        self._plan: ExactPlan | None = None
        self.exact_recompute = False  # the original's recompute-everything kernels (for tests and benchmarks)
        self.num_threads: int | None = None  # torch threads of every computation; None: encodec_hf.threads' default

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
            from huggingface_hub.errors import EntryNotFoundError

            from ..integrations.hub import hub_file

            try:  # the cache when the Hub does not answer, as for the model (integrations.hub.load_model)
                path = hub_file(path, LM_WEIGHTS_NAME, **hub_kwargs)
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
        # Normal tensors even when called under inference mode (as `compress` does), so that in-place edits of the
        # weights keep bumping the version counters the exact decoder's cache key reads.
        with torch.inference_mode(False):
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
    def exact_plan(self) -> ExactPlan:
        """The weights in the exact decoder's layouts and its kernel choices, rebuilt when its key changes (thread
        count, device, dtype, an in-place edit or replacement of any parameter, `exact_recompute`)."""
        key = PlanKey.of(self)
        if self._plan is None or self._plan.key != key:
            self._plan = ExactPlan.build(self, key)
        return self._plan

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
        with torch_threads(self.num_threads):
            return self._frames_probas(codes + 1, state)[0]

    @torch.inference_mode()
    def step_first(self, num_codebooks: int, state: EncodecLMState) -> torch.Tensor:
        """Probabilities `[K, card]` for the first frame (all inputs "missing", index 0)."""
        with torch_threads(self.num_threads):
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
        with torch_threads(self.num_threads):
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
        return self.exact_plan().frames_probas(indices, state, self.max_cached_positions)

    def step_cdfs(self, previous_codes, state: EncodecLMState, num_codebooks: int | None = None) -> np.ndarray:
        """Quantized CDFs int64 `[K, card]` for the next frame (`previous_codes=None` for the first one)."""
        if previous_codes is None and num_codebooks is None:
            raise ValueError("num_codebooks is required for the first frame.")
        with torch_threads(self.num_threads):
            if previous_codes is None:
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
            with torch_threads(self.num_threads):  # per block: a generator must not hold a scope across its yields
                probas = self.frames_probas(codes[:, start : start + block_frames], state)
                cdfs = build_stable_quantized_cdf(probas, TOTAL_RANGE_BITS, check=False).cpu().numpy()
            yield cdfs

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
