"""Arithmetic coding over quantized CDFs, bit-compatible with the ``.ecdc`` files of Meta's EnCodec.

The coder keeps an integer interval `[low, high]` whose width is renormalised to at least `2**B` (B = 24) by
shifting in one bit at a time, narrows it to the sub-range of each symbol and emits the leading bits that
`low` and `high` share. There is no underflow renormalisation: an interval that straddles a bit boundary
simply grows `max_bit`. The bits go out LSB-first within each byte and every stream ends on a byte boundary.

`build_stable_quantized_cdf` turns model probabilities into integer CDFs with every symbol given at least
`min_range` slots, so any symbol stays encodable. It computes in float32 with the same operations, in the
same order, as the original; the result is bit-identical for identical input probabilities. It does not
make coding robust to probabilities that differ in the last bit (see the README).
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
import torch

from ..errors import EcdcFormatError

TOTAL_RANGE_BITS = 24


def build_stable_quantized_cdf(
    pdf: torch.Tensor,
    total_range_bits: int = TOTAL_RANGE_BITS,
    roundoff: float = 1e-8,
    min_range: int = 2,
    check: bool = True,
) -> torch.Tensor:
    """Quantize probabilities `pdf` `[..., N]` into int64 cumulative counts `[..., N]` on `total_range_bits`.

    `range_i = floor((1 - a) * 2**B * floor(p_i / roundoff) * roundoff) + min_range` with
    `a = min_range * N / 2**B`, and the CDF is their cumulative sum, so `cdf[..., -1] <= 2**B`. Leading
    dimensions are independent rows computed element-wise, so a batch of K pdfs gives exactly the K CDFs
    computed one at a time.

    Raises:
        ValueError: `min_range < 2`, or `min_range * N > 2**B`, or (with `check`) a CDF that overflows.
    """
    if min_range < 2:
        raise ValueError(f"min_range must be at least 2, got {min_range}.")
    total_range = 2**total_range_bits
    cardinality = pdf.shape[-1]
    alpha = min_range * cardinality / total_range
    if alpha > 1:
        raise ValueError(
            f"{cardinality} symbols with min_range={min_range} do not fit in 2**{total_range_bits}; "
            "reduce min_range or raise total_range_bits."
        )
    pdf = pdf.detach()
    if roundoff:
        # Division, not multiplication by 1e8: torch divides by float32(1e-8) exactly, the reciprocal differs.
        pdf = (pdf / roundoff).floor() * roundoff
    ranges = (((1 - alpha) * total_range) * pdf).floor().long()
    ranges += min_range
    cdf = torch.cumsum(ranges, dim=-1)
    if check and bool((cdf[..., -1] > total_range).any()):
        raise ValueError(f"Quantized CDF overflows 2**{total_range_bits}: the pdf does not sum to at most 1.")
    return cdf


def _drop_shared_bits(low: int, high: int, max_bit: int, out: list[int] | None = None) -> tuple[int, int, int]:
    """Clear the leading bits (from `max_bit` down) that `low` and `high` share: no later symbol can change them.

    Returns the new `(low, high, max_bit)`; the encoder collects the dropped bits in `out`, the decoder drops
    them from its window as well.
    """
    while max_bit >= 0:
        b1 = low >> max_bit
        if b1 != high >> max_bit:
            break
        if b1:
            low -= 1 << max_bit
            high -= 1 << max_bit
        if out is not None:
            out.append(b1)
        max_bit -= 1
    return low, high, max_bit


class ArithmeticEncoder:
    """Encode symbols given their quantized CDFs; `finish()` returns the byte-aligned stream.

    Args:
        total_range_bits (`int`, defaults to 24): `B`, the width below which the interval is renormalised.

    Example:

    ```python
    >>> enc = ArithmeticEncoder()
    >>> cdf = build_stable_quantized_cdf(torch.full((1024,), 1 / 1024))
    >>> enc.push(5, cdf)
    >>> enc.finish().hex()
    '80fcdf'
    ```
    """

    def __init__(self, total_range_bits: int = TOTAL_RANGE_BITS):
        if not 1 <= total_range_bits <= 30:
            raise ValueError(f"total_range_bits must be in [1, 30], got {total_range_bits}.")
        self.total_range_bits = total_range_bits
        self.low = 0
        self.high = 0
        self.max_bit = -1
        self._bits: list[int] = []

    def push(self, symbol: int, quantized_cdf) -> None:
        """Encode `symbol` with `quantized_cdf` `[N]` (tensor, array or list of increasing int counts)."""
        range_low = 0 if symbol == 0 else int(quantized_cdf[symbol - 1])
        self.push_range(range_low, int(quantized_cdf[symbol]))

    def push_range(self, cdf_low: int, cdf_high: int) -> None:
        """Encode the symbol occupying the CDF slots `[cdf_low, cdf_high)` (`cdf[s-1]` or 0, and `cdf[s]`)."""
        bits = self.total_range_bits
        low, high, max_bit = self.low, self.high, self.max_bit
        while high - low + 1 < (1 << bits):
            low <<= 1
            high = (high << 1) | 1
            max_bit += 1
        delta = high - low + 1
        # The original computes ceil/floor(r * (delta / 2**B)) in float64; the product is below 2**49 and
        # delta / 2**B is exact, so these integer formulas give the same values.
        high = low + (((cdf_high - 1) * delta) >> bits)
        low = low - ((-cdf_low * delta) >> bits)
        if low > high:
            raise ValueError(f"Empty range [{cdf_low}, {cdf_high}) for this symbol: the CDF must be increasing.")
        self.low, self.high, self.max_bit = _drop_shared_bits(low, high, max_bit, self._bits)

    def drain(self) -> bytes:
        """The complete bytes emitted so far, removed from the encoder (the bits of a partial byte stay).

        Long streams call it now and then so the pending bits do not grow with the stream; the bytes of every
        `drain()` followed by `finish()` are those `finish()` alone would return.
        """
        whole = len(self._bits) // 8 * 8
        if not whole:
            return b""
        data = np.packbits(np.asarray(self._bits[:whole], dtype=np.uint8), bitorder="little").tobytes()
        del self._bits[:whole]
        return data

    def finish(self) -> bytes:
        """Emit the remaining bits of `low`, pad the last byte with zeros and return the whole stream."""
        for i in range(self.max_bit, -1, -1):
            self._bits.append((self.low >> i) & 1)
        self.max_bit = -1
        data = np.packbits(np.asarray(self._bits, dtype=np.uint8), bitorder="little").tobytes()
        self._bits = []
        return data

    def flush(self, fo: BinaryIO) -> None:
        """`finish()` and write the bytes to `fo`."""
        fo.write(self.finish())


class ArithmeticDecoder:
    """Decode symbols from `data[offset:]`; feed it the same sequence of CDFs as the encoder got.

    Bits are consumed lazily, whole bytes at a time, so once the last symbol of a stream is pulled
    `bytes_consumed` is the stream's length, and the next stream starts at `offset + bytes_consumed`.

    Raises (from `pull`):
        EcdcFormatError: the data ends before the symbol is determined, or no symbol matches (corrupt data).
    """

    def __init__(self, data: bytes | memoryview, offset: int = 0, total_range_bits: int = TOTAL_RANGE_BITS):
        self.total_range_bits = total_range_bits
        self._data = data
        self._offset = offset
        self._bitpos = 0
        self._nbits = 8 * max(0, len(data) - offset)
        self.low = 0
        self.high = 0
        self.current = 0
        self.max_bit = -1

    @property
    def bytes_consumed(self) -> int:
        return (self._bitpos + 7) // 8

    def pull(self, quantized_cdf) -> int:
        """Decode one symbol with `quantized_cdf` `[N]` (an int64 NumPy array is fastest)."""
        bits = self.total_range_bits
        low, high, current, max_bit = self.low, self.high, self.current, self.max_bit
        if high - low + 1 < (1 << bits):
            data, offset, pos = self._data, self._offset, self._bitpos
            while high - low + 1 < (1 << bits):
                if pos >= self._nbits:
                    raise EcdcFormatError("The arithmetic-coded stream ended sooner than expected (truncated file).")
                bit = (data[offset + (pos >> 3)] >> (pos & 7)) & 1
                pos += 1
                low <<= 1
                high = (high << 1) | 1
                current = (current << 1) | bit
                max_bit += 1
            self._bitpos = pos
        delta = high - low + 1
        target = current - low
        # Smallest s with floor((cdf[s] - 1) * delta / 2**B) >= target, i.e. cdf[s] >= ceil(target*2**B/delta)+1;
        # it is the symbol iff its lower bound ceil(cdf[s-1] * delta / 2**B) is <= target as well.
        threshold = -((-target << bits) // delta) + 1 if target >= 0 else 0
        symbol = int(np.searchsorted(quantized_cdf, threshold, side="left"))
        if symbol >= len(quantized_cdf):
            raise EcdcFormatError("Arithmetic decoding failed: no symbol matches (corrupt data or wrong model/LM).")
        cdf_low = 0 if symbol == 0 else int(quantized_cdf[symbol - 1])
        eff_low = -((-cdf_low * delta) >> bits)
        if eff_low > target or target < 0:
            raise EcdcFormatError("Arithmetic decoding failed: no symbol matches (corrupt data or wrong model/LM).")
        high = low + (((int(quantized_cdf[symbol]) - 1) * delta) >> bits)
        low = low + eff_low
        # `current` lies in [low, high], so it shares their leading bits and loses what `low` loses.
        new_low, self.high, self.max_bit = _drop_shared_bits(low, high, max_bit)
        self.low, self.current = new_low, current - (low - new_low)
        return symbol


__all__ = ["TOTAL_RANGE_BITS", "ArithmeticDecoder", "ArithmeticEncoder", "build_stable_quantized_cdf"]
