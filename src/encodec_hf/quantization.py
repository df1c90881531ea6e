"""Residual vector quantizer (RVQ) of EnCodec.

Nearest-neighbour search uses the expanded squared distance ``-(|x|^2 - 2 x.E + |E|^2)`` in float32, in
exactly the reference's order of operations, so ties and near-ties resolve to the same code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EncodecEuclideanCodebook(nn.Module):
    """One codebook: ``embed`` `[K, D]` plus the EMA training buffers kept for checkpoint compatibility."""

    def __init__(self, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.inited = nn.Buffer(torch.ones(1))
        self.cluster_size = nn.Buffer(torch.zeros(codebook_size))
        self.embed = nn.Buffer(torch.zeros(codebook_size, codebook_dim))
        self.embed_avg = nn.Buffer(torch.zeros(codebook_size, codebook_dim))
        self._norm_key: tuple | None = None
        self._embed_sq_norm: torch.Tensor | None = None

    def embed_sq_norm(self) -> torch.Tensor:
        """``|e_k|^2`` per code, `[1, K]`: the same expression the search used to recompute on every call, cached
        until ``embed`` changes (in place or by a move/cast), so the codes are unchanged bit for bit."""
        embed = self.embed
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

    def encode(self, latents: torch.Tensor, num_quantizers: int) -> torch.Tensor:
        """Latents `[B, D, F]` to codes `[B, K, F]` (int64) using the first ``num_quantizers`` codebooks."""
        batch, dim, frames = latents.shape
        residual = latents.transpose(1, 2).reshape(batch * frames, dim)  # [B*F, D]
        codes = []
        for layer in self.layers[:num_quantizers]:
            indices = layer.codebook.encode(residual)
            residual = residual - layer.codebook.decode(indices)
            codes.append(indices)
        return torch.stack(codes, dim=1).view(batch, frames, -1).transpose(1, 2)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `[B, K, F]` to the summed codebook vectors `[B, D, F]`."""
        quantized = None
        for k in range(codes.shape[1]):
            vectors = self.layers[k].codebook.decode(codes[:, k])  # [B, F, D]
            quantized = vectors if quantized is None else quantized + vectors
        return quantized.transpose(1, 2)
