"""Residual vector quantizer (RVQ) of EnCodec.

Nearest-neighbour search uses the expanded squared distance ``-(|x|^2 - 2 x.E + |E|^2)`` in float32, in
exactly the reference's order of operations, so ties and near-ties resolve to the same code. The quantizer stays
in float32 when the model is cast to half precision (``model.to(torch.bfloat16)``, ``model.half()``): only the
encoder and decoder run in the lower precision, and the search sees the codebooks' full values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EncodecEuclideanCodebook(nn.Module):
    """One codebook: ``embed`` `[K, D]` plus the EMA training buffers kept for checkpoint compatibility.

    A fresh codebook is the original's before training: all zeros with ``inited`` 0, because the original fills
    it by k-means on the first training batch. A fresh model therefore gives code 0 everywhere until its codebooks
    are trained or loaded. `EncodecPreTrainedModel._init_weights` writes the same values, so a model built
    directly and one built on the meta device and initialised by ``init_weights()`` agree.
    """

    def __init__(self, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.inited = nn.Buffer(torch.zeros(1))
        self.cluster_size = nn.Buffer(torch.zeros(codebook_size))
        self.embed = nn.Buffer(torch.zeros(codebook_size, codebook_dim))
        self.embed_avg = nn.Buffer(torch.zeros(codebook_size, codebook_dim))
        self._norm_key: tuple | None = None
        self._embed_sq_norm: torch.Tensor | None = None

    def embed_sq_norm(self) -> torch.Tensor:
        """``|e_k|^2`` per code, `[1, K]`: the same expression the search used to recompute on every call, cached
        until ``embed`` changes (in place or by a move/cast), so the codes are unchanged bit for bit."""
        embed = self.embed
        if embed.is_inference():  # created under inference_mode: no version counter to key the cache on
            return embed.t().pow(2).sum(0, keepdim=True)
        key = (embed._version, embed.data_ptr(), embed.dtype, embed.device)
        if key != self._norm_key:
            with torch.inference_mode(False), torch.no_grad():
                self._embed_sq_norm = embed.t().pow(2).sum(0, keepdim=True)
            self._norm_key = key
        return self._embed_sq_norm

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest code per vector: `[N, D] -> [N]` (int64)."""
        dist = -(x.pow(2).sum(1, keepdim=True) - 2 * x @ self.embed.t() + self.embed_sq_norm())
        return dist.max(dim=-1).indices

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Embedding lookup: `[...] -> [..., D]`."""
        return F.embedding(codes, self.embed)


class EncodecVectorQuantization(nn.Module):
    """Wrapper that keeps the ``quantizer.layers.{i}.codebook`` key layout of the checkpoints."""

    def __init__(self, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        self.codebook = EncodecEuclideanCodebook(codebook_size, codebook_dim)


class EncodecResidualVectorQuantizer(nn.Module):
    """Latents `[B, D, F]` <-> codes `[B, K, F]` with K codebooks applied to successive residuals."""

    def __init__(self, num_quantizers: int, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        self.num_quantizers = num_quantizers
        self.codebook_size = codebook_size
        self.layers = nn.ModuleList(
            [EncodecVectorQuantization(codebook_size, codebook_dim) for _ in range(num_quantizers)]
        )

    def _apply(self, fn, recurse: bool = True):
        """Moves with the model but never drops below float32 (see the module docstring)."""

        def keep_precision(t: torch.Tensor) -> torch.Tensor:
            out = fn(t)
            if t.dtype == torch.float32 and out.is_floating_point() and out.element_size() < 4:
                return t.to(out.device)  # from the original values, not from the rounded cast
            return out

        return super()._apply(keep_precision, recurse)

    def encode(self, latents: torch.Tensor, num_quantizers: int) -> torch.Tensor:
        """Latents `[B, D, F]` (any float dtype) to codes `[B, K, F]` (int64) with the first ``num_quantizers``
        codebooks, searched in the codebooks' dtype (float32)."""
        batch, dim, frames = latents.shape
        residual = latents.transpose(1, 2).reshape(batch * frames, dim)  # [B*F, D]
        residual = residual.to(self.layers[0].codebook.embed.dtype)
        codes = []
        for layer in self.layers[:num_quantizers]:
            indices = layer.codebook.encode(residual)
            residual = residual - layer.codebook.decode(indices)
            codes.append(indices)
        return torch.stack(codes, dim=1).view(batch, frames, -1).transpose(1, 2)

    def decode(self, codes: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Codes `[B, K, F]` to the summed codebook vectors `[B, D, F]`, summed in float32 then cast to `dtype`
        (the decoder's, for a half-precision model)."""
        quantized = None
        for k in range(codes.shape[1]):
            vectors = self.layers[k].codebook.decode(codes[:, k])  # [B, F, D]
            quantized = vectors if quantized is None else quantized + vectors
        quantized = quantized.transpose(1, 2)
        return quantized if dtype is None else quantized.to(dtype)
