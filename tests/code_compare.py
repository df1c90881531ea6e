"""Comparing codes between two encode paths: exact where the arithmetic is the same, near-ties allowed where not.

Two paths that round differently (the fast plan against the reference layers, streaming against `encode`, another
thread count) give latents that differ in the last bits. The nearest-codeword search then picks the same code
everywhere except where two codewords are within float rounding of the residual: a *near-tie*. Such a flip is
not a bug, and the codes after it in the same frame legitimately differ too (the next stage quantizes a residual
that differs by a whole codeword). A real regression (a wrong weight, a swapped codebook, a shifted frame) gives
differences whose two candidates are far apart, or far too many differences.

`assert_codes_match` tells the two apart: stage by stage, the first differing codebook of each frame is judged on
the reference residual (the latents minus the codewords both paths agree on), by the *relative gap*

    gap = | |r - e_a|^2 - |r - e_b|^2 | / (|r|^2 + max(|e_a|^2, |e_b|^2))

(the difference of the two squared distances, relative to the size of the terms the float32 search adds up, so
float rounding of the search itself is ~1e-7). A difference is a near-tie when its gap is below ``rel_tol``; the
later codebooks of that frame are excluded. The comparison passes when every first difference is a near-tie and
there are at most ``max(1, max_fraction * frames)`` of them; otherwise it fails naming the frame, the codebook,
both codes and the gap.

Shapes: codes ``[..., K, F]`` (e.g. `encode`'s ``[N, B, K, F]`` or a stream's ``[B, K, F]``) and latents
``[..., D, F]`` with the same leading dimensions. benchmarks/code_identity.py uses the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

REL_TOL = 1e-4  # measured near-ties on real audio: gaps 1e-8 .. 3e-5 (docs/performance.md, "What identical means")
MAX_FRACTION = 0.01  # measured on real audio: well under 1e-3 of the frames


@dataclass(frozen=True)
class CodeDifference:
    """The first differing codebook of one frame: ``index`` is the leading index (e.g. (chunk, item))."""

    index: tuple[int, ...]
    frame: int
    codebook: int
    code_a: int
    code_b: int
    gap: float
    later_differences: int  # codebooks after `codebook` in the same frame that differ too (not judged)

    def describe(self) -> str:
        where = f"index {self.index}, " if self.index else ""
        return (
            f"{where}frame {self.frame}, codebook {self.codebook}: code {self.code_a} vs {self.code_b}, "
            f"relative gap {self.gap:.3g}"
        )


def _codebooks(model_or_quantizer) -> list[torch.Tensor]:
    quantizer = getattr(model_or_quantizer, "quantizer", model_or_quantizer)
    return [layer.codebook.embed.detach().double() for layer in quantizer.layers]


def code_differences(codes_a, codes_b, model_or_quantizer, latents) -> list[CodeDifference]:
    """Every frame where `codes_a` and `codes_b` differ, judged at its first differing codebook (see module doc).

    Args:
        codes_a, codes_b: int codes `[..., K, F]`, same shape.
        model_or_quantizer: an `EncodecModel` (its ``quantizer``) or the quantizer itself.
        latents: the encoder output the codes quantize, `[..., D, F]`; either path's (they differ by rounding).
            A callable returning it is called only when the codes differ (equal codes need no encoder pass).
    """
    codes_a, codes_b = torch.as_tensor(codes_a), torch.as_tensor(codes_b)
    if codes_a.shape != codes_b.shape:
        raise AssertionError(f"code shapes differ: {tuple(codes_a.shape)} vs {tuple(codes_b.shape)}")
    if callable(latents):
        if torch.equal(codes_a, codes_b):
            return []
        latents = latents()
    lead = codes_a.shape[:-2]
    if tuple(latents.shape[:-2]) != tuple(lead) or latents.shape[-1] != codes_a.shape[-1]:
        raise AssertionError(f"latents {tuple(latents.shape)} do not match codes {tuple(codes_a.shape)} ([..., D, F])")
    books = _codebooks(model_or_quantizer)
    num_books, frames = codes_a.shape[-2:]
    a = codes_a.reshape(-1, num_books, frames)
    b = codes_b.reshape(-1, num_books, frames)
    lat = latents.detach().double().reshape(a.shape[0], -1, frames)
    out = []
    for row, frame in torch.nonzero((a != b).any(dim=1)).tolist():
        differing = torch.nonzero(a[row, :, frame] != b[row, :, frame]).flatten()
        stage = int(differing[0])
        residual = lat[row, :, frame].clone()
        for k in range(stage):  # the codewords both paths agree on
            residual -= books[k][a[row, k, frame]]
        e_a, e_b = books[stage][a[row, stage, frame]], books[stage][b[row, stage, frame]]
        d_a, d_b = (residual - e_a).pow(2).sum(), (residual - e_b).pow(2).sum()
        scale = residual.pow(2).sum() + torch.maximum(e_a.pow(2).sum(), e_b.pow(2).sum())
        gap = float((d_a - d_b).abs() / scale.clamp_min(1e-30))
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(row), lead)) if lead else ()
        out.append(
            CodeDifference(
                index=index,
                frame=frame,
                codebook=stage,
                code_a=int(a[row, stage, frame]),
                code_b=int(b[row, stage, frame]),
                gap=gap,
                later_differences=len(differing) - 1,
            )
        )
    return out


def assert_codes_match(
    codes_a,
    codes_b,
    model_or_quantizer,
    latents,
    *,
    rel_tol: float = REL_TOL,
    max_fraction: float = MAX_FRACTION,
) -> list[CodeDifference]:
    """Pass when the codes are equal, or differ only at a few near-ties (see the module docstring).

    Returns the accepted differences (empty when the codes are equal). Raises AssertionError naming the first
    real difference (gap >= ``rel_tol``), or the count when there are more near-ties than
    ``max(1, max_fraction * frames)``.
    """
    differences = code_differences(codes_a, codes_b, model_or_quantizer, latents)
    if not differences:
        return []
    real = [d for d in differences if not d.gap < rel_tol]
    if real:
        shown = "; ".join(d.describe() for d in real[:5])
        raise AssertionError(
            f"codes differ beyond a near-tie (relative gap >= {rel_tol:g}) at {len(real)} frame(s): {shown}"
        )
    total_frames = torch.as_tensor(codes_a)[..., 0, :].numel()
    allowed = max(1, int(max_fraction * total_frames))
    if len(differences) > allowed:
        raise AssertionError(
            f"{len(differences)} near-tie differences in {total_frames} frames (at most {allowed} allowed, "
            f"fraction {max_fraction:g}): {'; '.join(d.describe() for d in differences[:5])}"
        )
    return differences


@torch.no_grad()
def encoder_latents(model, input_values: torch.Tensor) -> torch.Tensor:
    """The latents `encode` quantizes for an unpadded batch, through the reference layers: `[N, B, D, F]`.

    Chunked models: one entry per chunk (divided by its scale when the model normalizes), frames padded with
    zeros to the longest chunk, as `encode` pads ``audio_codes``.
    """
    from encodec_hf.codec.modeling import chunk_scale

    length = input_values.shape[-1]
    per_chunk = []
    for start, end in model.chunk_layout.spans(length):
        chunk = input_values[..., start:end]
        if model.config.normalize:
            chunk = chunk / chunk_scale(chunk).view(-1, 1, 1)
        per_chunk.append(model.encoder(chunk.to(next(model.parameters()).dtype)).float())
    frames = max(lat.shape[-1] for lat in per_chunk)
    return torch.stack([torch.nn.functional.pad(lat, (0, frames - lat.shape[-1])) for lat in per_chunk])
