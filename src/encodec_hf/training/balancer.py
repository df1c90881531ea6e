"""EnCodec's loss balancer (paper section 3.4; Meta's ``encodec/balancer.py``, audiocraft ``losses/balancer.py``).

Public API::

    PAPER_LOSS_WEIGHTS = {"time": 0.1, "mel": 1.0, "adversarial": 3.0, "feature_matching": 3.0}
    Balancer(weights: Mapping[str, float] = PAPER_LOSS_WEIGHTS, *, rescale_grads: bool = True,
             total_norm: float = 1.0, ema_decay: float = 0.999, per_batch_item: bool = True,
             epsilon: float = 1e-12)
        .backward(losses: Mapping[str, Tensor []], decoded: Tensor [B, ...], retain_graph: bool = False)
            -> dict[str, float]   # "ema_norm/<name>", "norm/<name>", "scale/<name>", "effective_loss"
        .state_dict() -> dict      /   .load_state_dict(state: dict) -> None
        .ema_norms -> dict[str, float]

For each loss ``l_i`` (keys of ``weights``) the balancer takes ``g_i = d l_i / d decoded``, its norm
``n_i = mean_b ||g_i[b]||_2`` (``||g_i||_2`` with ``per_batch_item=False``), a bias-corrected EMA
``S_i <- beta S_i + n_i``, ``F_i <- beta F_i + 1``, ``avg_i = S_i / F_i``, and back-propagates once

    decoded.backward(sum_i (w_i / sum_j w_j) * total_norm / (epsilon + avg_i) * g_i)

so that ``w_i / sum_j w_j`` is the share of the gradient that reaches the model from loss ``i``, whatever that
loss's scale. With ``rescale_grads=False`` the gradient is the plain weighted sum ``sum_i w_i g_i``.

The commitment loss is not balanced (as in the paper and Meta's code): backpropagate it yourself, first, with
``retain_graph=True`` (it shares the encoder's graph with ``decoded``), then call :meth:`Balancer.backward`.

Distributed data parallel: when ``torch.distributed`` is initialised, each step's norms ``n_i`` are averaged across
ranks (weighted by their batch sizes with ``per_batch_item``) before entering the EMA, so every rank applies the same
scales and holds the same EMA state (any rank's :meth:`state_dict` resumes all of them). audiocraft averages the
per-rank EMAs instead, which is the same number when batch sizes are equal. The gradients themselves are left
to DDP's own all-reduce of the parameter gradients.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import autograd

from ..errors import EncodecInputError, TrainingConfigError

__all__ = ["PAPER_LOSS_WEIGHTS", "Balancer"]

# lambda_t, lambda_f, lambda_g, lambda_feat of the paper (the commitment weight lambda_w = 1 lives outside).
PAPER_LOSS_WEIGHTS: dict[str, float] = {"time": 0.1, "mel": 1.0, "adversarial": 3.0, "feature_matching": 3.0}


class Balancer:
    """Normalises each loss's gradient with respect to the decoded audio and back-propagates their weighted sum.

    Args:
        weights: loss name -> non-negative weight (at least one positive). ``backward`` needs exactly these names.
        rescale_grads: normalise gradients by their EMA norm (the balancer proper). False: ``sum_i w_i g_i``.
        total_norm: reference norm ``R`` of the combined gradient when rescaling.
        ema_decay: decay ``beta`` of the norms' EMA, in ``(0, 1]`` (1: running mean over all steps).
        per_batch_item: norm per batch item, then mean over the batch (the default), instead of over the batch.
        epsilon: added to the EMA norm before dividing.
    """

    def __init__(
        self,
        weights: Mapping[str, float] = PAPER_LOSS_WEIGHTS,
        *,
        rescale_grads: bool = True,
        total_norm: float = 1.0,
        ema_decay: float = 0.999,
        per_batch_item: bool = True,
        epsilon: float = 1e-12,
    ) -> None:
        weights = {str(name): float(w) for name, w in weights.items()}
        bad = {name: w for name, w in weights.items() if not math.isfinite(w) or w < 0}
        if not weights or bad or sum(weights.values()) <= 0:
            raise TrainingConfigError(
                f"Balancer weights must be finite, non-negative and not all zero; got {weights}"
                + (f" (bad: {bad})" if bad else "")
                + "."
            )
        if not 0 < ema_decay <= 1:
            raise TrainingConfigError(f"ema_decay must be in (0, 1]; got {ema_decay}.")
        if not total_norm > 0 or not epsilon >= 0:
            raise TrainingConfigError(f"Need total_norm > 0 and epsilon >= 0; got {total_norm}, {epsilon}.")
        self.weights = weights
        self.rescale_grads = rescale_grads
        self.total_norm = float(total_norm)
        self.ema_decay = float(ema_decay)
        self.per_batch_item = per_batch_item
        self.epsilon = float(epsilon)
        # Bias-corrected EMA: S_i (decayed sum of norms) and F_i (decayed count), explicit so checkpoints resume it.
        self._sums = dict.fromkeys(weights, 0.0)
        self._counts = dict.fromkeys(weights, 0.0)

    @property
    def ema_norms(self) -> dict[str, float]:
        """``avg_i = S_i / F_i`` per loss (empty before the first ``backward``)."""
        return {name: self._sums[name] / self._counts[name] for name in self.weights if self._counts[name] > 0}

    def _check(self, losses: Mapping[str, torch.Tensor], decoded: torch.Tensor) -> None:
        unknown, missing = sorted(set(losses) - set(self.weights)), sorted(set(self.weights) - set(losses))
        if unknown or missing:
            raise TrainingConfigError(
                f"Balancer.backward got losses {sorted(losses)} but its weights name {sorted(self.weights)}"
                + (f"; unknown: {unknown}" if unknown else "")
                + (f"; missing: {missing}" if missing else "")
                + ". Pass exactly the weighted losses (the commitment loss is backpropagated separately)."
            )
        if not decoded.requires_grad:
            raise EncodecInputError(
                "Balancer.backward: `decoded` does not require grad; pass the decoder's output from a forward pass "
                "run with autograd enabled (not under torch.no_grad / inference_mode, not detached)."
            )
        if decoded.dim() < 1 or (self.per_batch_item and decoded.shape[0] == 0):
            raise EncodecInputError(
                f"Balancer.backward: `decoded` needs a batch dimension; got {tuple(decoded.shape)}."
            )
        for name, loss in losses.items():
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
                raise EncodecInputError(f"Balancer.backward: loss {name!r} must be a scalar tensor; got {shape}.")

    def _reduce_across_ranks(self, norms: torch.Tensor, count: int) -> torch.Tensor:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return norms
        packed = torch.cat([norms * count, norms.new_tensor([float(count)])])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        return packed[:-1] / packed[-1]

    def backward(
        self, losses: Mapping[str, torch.Tensor], decoded: torch.Tensor, retain_graph: bool = False
    ) -> dict[str, float]:
        """Back-propagate the balanced gradient of ``losses`` through ``decoded`` (e.g. ``[B, C, T]``), once.

        Returns metrics: per loss ``norm/<name>`` (this step's ``n_i``, averaged across ranks),
        ``ema_norm/<name>`` (``avg_i``), ``scale/<name>`` (the factor its gradient got), and ``effective_loss``
        (``sum_i scale_i * l_i``, the loss whose plain gradient equals the one applied).
        ``retain_graph`` is passed to the final ``decoded.backward``.
        """
        self._check(losses, decoded)
        names = list(self.weights)
        grads: dict[str, torch.Tensor] = {}
        for name in names:
            grad = None
            if losses[name].requires_grad:
                (grad,) = autograd.grad(losses[name], [decoded], retain_graph=True, allow_unused=True)
            if grad is None:
                raise EncodecInputError(
                    f"Balancer.backward: loss {name!r} does not depend on `decoded`; the balancer only passes "
                    "gradients through `decoded`, so compute every weighted loss from it (and no other path)."
                )
            grads[name] = grad
        if self.per_batch_item:
            norms = torch.stack([g.reshape(g.shape[0], -1).norm(p=2, dim=1).mean() for g in grads.values()])
            count = decoded.shape[0]
        else:
            norms = torch.stack([g.norm(p=2) for g in grads.values()])
            count = 1
        norms = self._reduce_across_ranks(norms.detach().double(), count).tolist()

        metrics: dict[str, float] = {}
        total_weight = sum(self.weights.values())
        out_grad = torch.zeros_like(decoded)
        effective_loss = 0.0
        for name, norm in zip(names, norms, strict=True):
            self._sums[name] = self.ema_decay * self._sums[name] + norm
            self._counts[name] = self.ema_decay * self._counts[name] + 1.0
            avg = self._sums[name] / self._counts[name]
            if self.rescale_grads:
                scale = self.weights[name] / total_weight * self.total_norm / (self.epsilon + avg)
            else:
                scale = self.weights[name]
            out_grad.add_(grads[name], alpha=scale)
            effective_loss += scale * float(losses[name].detach())
            metrics[f"norm/{name}"] = norm
            metrics[f"ema_norm/{name}"] = avg
            metrics[f"scale/{name}"] = scale
        metrics["effective_loss"] = effective_loss
        decoded.backward(out_grad, retain_graph=retain_graph)
        return metrics

    def state_dict(self) -> dict:
        """The EMA state and the settings it depends on (plain Python numbers, safe for ``torch.save``)."""
        return {
            "weights": dict(self.weights),
            "ema_decay": self.ema_decay,
            "per_batch_item": self.per_batch_item,
            "ema_sums": dict(self._sums),
            "ema_counts": dict(self._counts),
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict`'s EMA. The loss names must match; other settings come from the constructor."""
        try:
            sums, counts = dict(state["ema_sums"]), dict(state["ema_counts"])
        except (KeyError, TypeError) as err:
            raise TrainingConfigError(
                f"Not a Balancer state dict (needs 'ema_sums' and 'ema_counts'): {err!r}."
            ) from err
        if set(sums) != set(self.weights) or set(counts) != set(self.weights):
            raise TrainingConfigError(
                f"The saved balancer state covers losses {sorted(sums)} but this balancer weights "
                f"{sorted(self.weights)}; build it with the same loss names to resume."
            )
        self._sums = {name: float(sums[name]) for name in self.weights}
        self._counts = {name: float(counts[name]) for name in self.weights}
