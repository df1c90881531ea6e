"""Codebook learning for the residual vector quantizer: EMA updates, k-means init, dead codes, straight-through.

The codec's inference quantizer (``model.quantizer``) is left as it is; :class:`TrainingQuantizer` learns *its*
buffers in place (``layers[i].codebook.{embed, embed_avg, cluster_size, inited}``, the checkpoint keys), so a
trained model saves and loads like any other. Per step and per used codebook (see ``original_encodec_spec.md``,
section 6, "Codebooks"):

* **k-means init** on the first batch while ``inited`` is 0 (a freshly built model's state, zero codebooks):
  ``kmeans_iters`` Lloyd iterations from randomly sampled batch vectors, empty clusters keep their centre; then
  ``embed = embed_avg = means``, ``cluster_size = counts``, ``inited = 1``. Under data parallelism rank 0's result
  is broadcast. A pretrained model's codebooks (``inited = 1``) are kept and only follow the EMA.
* **EMA** with decay 0.99: ``cluster_size <- d*cs + (1-d)*counts``, ``embed_avg <- d*ea + (1-d)*sum(x assigned)``,
  Laplace smoothing ``cs' = (cs + eps) / (sum(cs) + bins*eps) * sum(cs)``, ``embed = embed_avg / cs'``. Counts and
  sums are all-reduced first, so every rank computes identical codebooks.
* **Dead codes** (``cluster_size < 2`` after the EMA step) are replaced by random batch vectors *after* the EMA
  step, and ``embed_avg`` / ``cluster_size`` are set to match (``embed_avg = v * threshold``,
  ``cluster_size = threshold``), so the replacement survives: the original and audiocraft replace ``embed``
  before ``embed = embed_avg / cs'`` overwrites it in the same step (facebookresearch/encodec#61).
* **Straight-through** once on the sum of the quantized layers, ``q = z + (sum_k q_k - z).detach()``, with each
  layer's residual kept differentiable, so every layer's commitment loss ``mse(q_k.detach(), r_k)`` reaches the
  encoder (facebookresearch/encodec#25; audiocraft's fix). The commitment penalty is their mean over layers.
* **Random codebook count**: the trainer draws one of ``config.target_bandwidths`` per step (the same on every
  rank) and passes its codebook count, so one model serves every bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

EMA_DECAY = 0.99
LAPLACE_EPSILON = 1e-5
DEAD_CODE_THRESHOLD = 2.0
KMEANS_ITERS = 50


@dataclass
class QuantizerOutput:
    """Result of :meth:`TrainingQuantizer.forward`.

    Args:
        quantized (`torch.FloatTensor` `[B, D, F]`): the quantized latents; gradients pass straight through to the
            latents.
        codes (`torch.LongTensor` `[B, K, F]`): the codes of the K used codebooks.
        commitment_loss (`torch.FloatTensor` `[]`): mean over layers of ``mse(q_k.detach(), r_k)``.
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    commitment_loss: torch.Tensor


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sample_vectors(samples: torch.Tensor, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``num`` rows of ``samples`` `[N, D]` drawn without replacement when N >= num, else with replacement.

    ``generator`` is a CPU generator (torch's global one when None); the indices then move to the samples' device.
    """
    count = samples.shape[0]
    if count >= num:
        indices = torch.randperm(count, generator=generator)[:num]
    else:
        indices = torch.randint(0, count, (num,), generator=generator)
    return samples[indices.to(samples.device)]


def nearest(samples: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Index of the nearest row of ``means`` `[K, D]` for each row of ``samples`` `[N, D]`: `[N]`.

    The expanded distance ``-(|x|^2 - 2 x.e + |e|^2)`` of the inference quantizer, so training and inference
    pick the same code; `[N, K]` memory instead of the reference k-means' `[N, K, D]` difference tensor.
    """
    dist_ = -(samples.pow(2).sum(1, keepdim=True) - 2 * samples @ means.t() + means.t().pow(2).sum(0, keepdim=True))
    return dist_.max(dim=-1).indices


def kmeans(
    samples: torch.Tensor, num_clusters: int, num_iters: int = KMEANS_ITERS, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on `[N, D]`: centres `[K, D]` and cluster sizes `[K]`; empty clusters keep their centre."""
    means = sample_vectors(samples, num_clusters, generator)
    counts = torch.zeros(num_clusters, dtype=samples.dtype, device=samples.device)
    for _ in range(num_iters):
        buckets = nearest(samples, means)
        counts = torch.bincount(buckets, minlength=num_clusters).to(samples.dtype)
        sums = torch.zeros_like(means).index_add_(0, buckets, samples)
        new_means = sums / counts.clamp(min=1)[:, None]
        means = torch.where((counts == 0)[:, None], means, new_means)
    return means, counts


class TrainingQuantizer(nn.Module):
    """Training-time RVQ over the buffers of ``quantizer`` (an ``EncodecResidualVectorQuantizer``).

    It holds no state of its own: the codebooks stay where the checkpoint keys put them. ``learn_codebooks=False``
    (decoder-only fine-tuning) quantizes exactly like inference and leaves every buffer untouched.

    Its random draws (k-means starts, dead-code replacements) come from its own ``generator``, seeded with
    ``seed``: a checkpoint saves its state, and nothing else that touches torch's global RNG (a DataLoader
    starting its iterator, say) can shift them.
    """

    def __init__(
        self,
        quantizer: nn.Module,
        decay: float = EMA_DECAY,
        epsilon: float = LAPLACE_EPSILON,
        dead_code_threshold: float = DEAD_CODE_THRESHOLD,
        kmeans_iters: int = KMEANS_ITERS,
        learn_codebooks: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        # A plain attribute, not a submodule: the buffers are registered once, under the model.
        object.__setattr__(self, "quantizer", quantizer)
        self.decay = decay
        self.epsilon = epsilon
        self.dead_code_threshold = dead_code_threshold
        self.kmeans_iters = kmeans_iters
        self.learn_codebooks = learn_codebooks
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def codebooks(self) -> list[nn.Module]:
        return [layer.codebook for layer in self.quantizer.layers]

    def forward(self, latents: torch.Tensor, num_quantizers: int) -> QuantizerOutput:
        """Quantizes latents `[B, D, F]` with the first ``num_quantizers`` codebooks, learning them when
        ``self.training and self.learn_codebooks``.

        Searches and updates run in float32 whatever the latents' dtype (bf16 autocast), like inference.
        """
        batch, dim, frames = latents.shape
        flat = latents.transpose(1, 2).reshape(batch * frames, dim).float()  # [N, D], differentiable
        learn = self.training and self.learn_codebooks and torch.is_grad_enabled()
        residual = flat
        quantized_sum = torch.zeros_like(flat)
        codes, losses = [], []
        for codebook in self.codebooks[:num_quantizers]:
            target = residual.detach()
            if learn and not bool(codebook.inited.item()):
                self._kmeans_init(codebook, target)
            indices = nearest(target, codebook.embed)
            quantized = F.embedding(indices, codebook.embed).detach()  # the codes the model chose, pre-update
            if learn:
                self._ema_update(codebook, target, indices)
            losses.append(F.mse_loss(quantized, residual))
            residual = residual - quantized  # still carries the gradient of the latents
            quantized_sum = quantized_sum + quantized
            codes.append(indices)
        # One straight-through estimator on the sum: d(output)/d(latents) = I, and every r_k stays live above.
        out = flat + (quantized_sum - flat).detach()
        out = out.view(batch, frames, dim).transpose(1, 2).to(latents.dtype)
        codes_t = torch.stack(codes, dim=1).view(batch, frames, -1).transpose(1, 2)
        return QuantizerOutput(quantized=out, codes=codes_t, commitment_loss=torch.stack(losses).mean())

    # ------------------------------------------------------------------ learning steps
    @torch.no_grad()
    def _kmeans_init(self, codebook: nn.Module, samples: torch.Tensor) -> None:
        means, counts = kmeans(samples, codebook.embed.shape[0], self.kmeans_iters, self.generator)
        codebook.embed.copy_(means)
        codebook.embed_avg.copy_(means)
        codebook.cluster_size.copy_(counts)
        codebook.inited.fill_(1.0)
        if _distributed():
            for buffer in (codebook.embed, codebook.embed_avg, codebook.cluster_size, codebook.inited):
                dist.broadcast(buffer, src=0)

    @torch.no_grad()
    def _ema_update(self, codebook: nn.Module, samples: torch.Tensor, indices: torch.Tensor) -> None:
        bins = codebook.embed.shape[0]
        counts = torch.bincount(indices, minlength=bins).to(samples.dtype)  # [K]
        sums = torch.zeros_like(codebook.embed).index_add_(0, indices, samples)  # [K, D]
        if _distributed():
            # Global statistics: every rank then computes the same cluster sizes and codebooks.
            stats = torch.cat([counts[:, None], sums], dim=1)
            dist.all_reduce(stats)
            counts, sums = stats[:, 0], stats[:, 1:]
        codebook.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        codebook.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = codebook.cluster_size.sum()
        smoothed = (codebook.cluster_size + self.epsilon) / (total + bins * self.epsilon) * total
        codebook.embed.copy_(codebook.embed_avg / smoothed[:, None])
        self._replace_dead_codes(codebook, samples)

    @torch.no_grad()
    def _replace_dead_codes(self, codebook: nn.Module, samples: torch.Tensor) -> None:
        """Gives codes used less than ``dead_code_threshold`` times (EMA) a random batch vector, consistently in
        ``embed``, ``embed_avg`` and ``cluster_size`` so that the next EMA step keeps it."""
        if self.dead_code_threshold <= 0:
            return
        dead = codebook.cluster_size < self.dead_code_threshold  # identical on every rank (all-reduced stats)
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        vectors = sample_vectors(samples, num_dead, self.generator)
        if _distributed():
            dist.broadcast(vectors, src=0)
        codebook.embed[dead] = vectors
        codebook.embed_avg[dead] = vectors * self.dead_code_threshold
        codebook.cluster_size[dead] = self.dead_code_threshold


def num_quantizers_for_step(config, seed: int, step: int) -> int:
    """The codebook count of training step ``step``: a bandwidth drawn uniformly from
    ``config.target_bandwidths`` by a generator seeded with (seed, step), hence the same on every rank and on
    resume, independent of any other random stream."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    bandwidths = config.target_bandwidths
    choice = int(torch.randint(len(bandwidths), (1,), generator=generator))
    return config.num_quantizers_for_bandwidth(bandwidths[choice])


__all__ = [
    "QuantizerOutput",
    "TrainingQuantizer",
    "kmeans",
    "nearest",
    "num_quantizers_for_step",
    "sample_vectors",
]
