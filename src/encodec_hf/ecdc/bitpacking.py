"""LSB-first bit packing of fixed-width integers, as in the ``.ecdc`` format of Meta's EnCodec.

Values are appended to an accumulator at increasing bit offsets and complete low bytes are written out, so
the first value occupies the lowest bits of the first byte. A final `flush` writes the remaining partial
byte with zero high bits: `n` values of `bits` bits take exactly `ceil(n * bits / 8)` bytes. Example with
10 bits: `[1, 2, 3, 1023, 512]` packs to `01 08 30 c0 ff 00 02`.

`BitPacker` / `BitUnpacker` stream one value at a time over file objects (the arithmetic coder uses them
with `bits=1`); `pack` / `unpack` are the vectorised NumPy equivalents used for whole code segments.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

from ..errors import EcdcFormatError


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or not 1 <= bits <= 32:
        raise ValueError(f"bits must be an integer in [1, 32], got {bits!r}.")


class BitPacker:
    """Streaming LSB-first packer: `push` values of `bits` bits, then `flush` once at the end.

    Args:
        bits (`int`): width of every value, 1 to 32.
        fo (`BinaryIO`): where complete bytes are written as soon as they are available.
    """

    def __init__(self, bits: int, fo: BinaryIO):
        _check_bits(bits)
        self.bits = bits
        self.fo = fo
        self._value = 0
        self._nbits = 0

    def push(self, value: int) -> None:
        if not 0 <= value < (1 << self.bits):
            raise ValueError(f"value {value} does not fit in {self.bits} bits.")
        self._value |= value << self._nbits
        self._nbits += self.bits
        if self._nbits >= 8:
            nbytes = self._nbits // 8
            self.fo.write((self._value & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little"))
            self._value >>= 8 * nbytes
            self._nbits -= 8 * nbytes

    def flush(self) -> None:
        """Write the last partial byte (zero high bits), if any. Call once, at the end of the stream."""
        if self._nbits:
            self.fo.write(bytes([self._value]))
            self._value = 0
            self._nbits = 0


class BitUnpacker:
    """Streaming inverse of `BitPacker`: `pull` returns the next value, or `None` once the bytes run out.

    Reads whole bytes from `fo` only when the next value needs them, so after the last value of a segment
    the file position is the first byte of whatever follows.
    """

    def __init__(self, bits: int, fo: BinaryIO):
        _check_bits(bits)
        self.bits = bits
        self.fo = fo
        self._mask = (1 << bits) - 1
        self._value = 0
        self._nbits = 0

    def pull(self) -> int | None:
        while self._nbits < self.bits:
            byte = self.fo.read(1)
            if not byte:
                return None
            self._value |= byte[0] << self._nbits
            self._nbits += 8
        out = self._value & self._mask
        self._value >>= self.bits
        self._nbits -= self.bits
        return out


def packed_size(count: int, bits: int) -> int:
    """Bytes taken by `count` values of `bits` bits once flushed: `ceil(count * bits / 8)`."""
    return (count * bits + 7) // 8


def pack(values: np.ndarray | list[int], bits: int) -> bytes:
    """Pack `values` `[N]` (non-negative, below `2**bits`) LSB-first; same bytes as `BitPacker` + `flush`."""
    _check_bits(bits)
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    if values.size and (values.min() < 0 or values.max() >= (1 << bits)):
        raise ValueError(f"values must lie in [0, {1 << bits}) to be packed on {bits} bits.")
    # [N, bits] little-endian bit matrix, flattened value after value, then 8 bits per byte, LSB first.
    bit_matrix = (values[:, None] >> np.arange(bits, dtype=np.int64)) & 1
    return np.packbits(bit_matrix.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


def unpack(data: bytes | memoryview, bits: int, count: int) -> np.ndarray:
    """Read `count` values of `bits` bits from the start of `data`; returns int64 `[count]`.

    Raises:
        EcdcFormatError: `data` holds fewer than `ceil(count * bits / 8)` bytes.
    """
    _check_bits(bits)
    needed = packed_size(count, bits)
    if len(data) < needed:
        raise EcdcFormatError(
            f"Truncated code payload: {count} codes of {bits} bits need {needed} bytes, only {len(data)} remain."
        )
    raw = np.frombuffer(data, dtype=np.uint8, count=needed)
    bit_array = np.unpackbits(raw, bitorder="little")[: count * bits].reshape(count, bits).astype(np.int64)
    return (bit_array << np.arange(bits, dtype=np.int64)).sum(axis=1)


__all__ = ["BitPacker", "BitUnpacker", "pack", "packed_size", "unpack"]
