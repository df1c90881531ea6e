"""The body of an `.ecdc` file, written and read a block of frames at a time.

After the header (``container.py``) each chunk holds its scale (a big-endian float32, when the model normalises)
and then its codes, byte-aligned: packed time-major on ``codebook_nbits`` bits, LSB first, or arithmetic-coded
with the LM from a fresh state and a fresh coder. The 24 kHz model writes the whole file as one chunk, so a
long file is one long chunk: :class:`PayloadWriter` takes its codes in blocks of frames and writes the bytes of
each block as soon as they are final, and :func:`iter_payload` gives them back in blocks. Both hold a block, the
LM state and a few pending bits, never the whole chunk.

The bytes do not depend on how the frames are cut into blocks: bit packing carries the values of a partial byte
to the next block, the LM computes the same float32 bits whatever block it is given (``EncodecLM.frames_probas``)
and the coder's complete bytes are the same drained early or late (``ArithmeticEncoder.drain``). ``compress``
writes through the same class, one block per chunk.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np
import torch

from ..errors import EcdcFormatError
from .arithmetic_coding import TOTAL_RANGE_BITS, ArithmeticDecoder, ArithmeticEncoder, build_stable_quantized_cdf
from .bitpacking import pack, packed_size, unpack
from .lm import EncodecLM

SCALE = struct.Struct("!f")


def lm_block_frames(num_codebooks: int) -> int:
    """Frames per LM call when all codes are known: 2048 frame-codebooks (256 frames at 6 kbps, 64 at 24 kbps),
    so a block's CDFs (int64) and their temporaries stay near 20 MB whatever the bandwidth, while each layer's
    weights still serve 64+ frames."""
    return max(16, 2048 // num_codebooks)


class LMSegmentEncoder:
    """Arithmetic-codes one chunk's codes with a fresh LM state, a block of frames at a time.

    ``push(codes [K, f])`` returns the bytes now complete; ``finish()`` the rest (the stream ends on a byte).
    """

    def __init__(self, lm: EncodecLM, num_codebooks: int) -> None:
        self.lm = lm
        self.num_codebooks = num_codebooks
        self.state = lm.init_state()
        self.coder = ArithmeticEncoder()
        self.block_frames = max(1, min(lm_block_frames(num_codebooks), lm.max_block_frames(self.state)))

    def push(self, codes: np.ndarray) -> bytes:
        codes_t = torch.as_tensor(codes, dtype=torch.long)
        for start in range(0, codes_t.shape[1], self.block_frames):
            block = codes_t[:, start : start + self.block_frames]
            probas = self.lm.frames_probas(block, self.state)  # [f, K, card]
            cdfs = build_stable_quantized_cdf(probas, TOTAL_RANGE_BITS, check=False).cpu().numpy()
            symbols = block.numpy().T  # [f, K]
            highs = np.take_along_axis(cdfs, symbols[..., None], axis=-1)[..., 0]
            below = np.maximum(symbols - 1, 0)[..., None]
            lows = np.where(symbols > 0, np.take_along_axis(cdfs, below, -1)[..., 0], 0)
            for low, high in zip(lows.reshape(-1).tolist(), highs.reshape(-1).tolist(), strict=True):
                self.coder.push_range(low, high)
        return self.coder.drain()

    def finish(self) -> bytes:
        return self.coder.finish()


class CodesPacker:
    """Packs codes time-major on ``bits`` bits, a block at a time; the values of a partial byte wait for the next."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.group = 8 // math.gcd(bits, 8)  # values per whole number of bytes
        self._carry = np.zeros(0, dtype=np.int64)

    def push(self, codes: np.ndarray) -> bytes:
        values = np.concatenate([self._carry, np.asarray(codes, dtype=np.int64).T.reshape(-1)])
        whole = values.size - values.size % self.group
        self._carry = values[whole:]
        return pack(values[:whole], self.bits) if whole else b""

    def finish(self) -> bytes:
        data = pack(self._carry, self.bits) if self._carry.size else b""
        self._carry = self._carry[:0]
        return data


class PayloadWriter:
    """Writes the chunks of an `.ecdc` body to ``fo``: ``begin_chunk(scale)``, ``push(codes)`` any number of
    times, ``end_chunk()``.

    Args:
        fo: a binary file object, written as bytes become final.
        normalize: the model writes a scale per chunk.
        nbits: bits per code without the LM (``config.codebook_nbits``).
        lm: the LM to arithmetic-code with, `None` to pack.
        num_codebooks: K of every pushed block.
    """

    def __init__(self, fo: BinaryIO, normalize: bool, nbits: int, lm: EncodecLM | None, num_codebooks: int) -> None:
        self.fo = fo
        self.normalize = normalize
        self.nbits = nbits
        self.lm = lm
        self.num_codebooks = num_codebooks
        self.bytes_written = 0
        self._coder: LMSegmentEncoder | CodesPacker | None = None

    def _write(self, data: bytes) -> None:
        if data:
            self.fo.write(data)
            self.bytes_written += len(data)

    def begin_chunk(self, scale: float | None) -> None:
        if self._coder is not None:
            raise RuntimeError("end_chunk() the previous chunk first.")
        if self.normalize:
            self._write(SCALE.pack(scale))
        self._coder = LMSegmentEncoder(self.lm, self.num_codebooks) if self.lm is not None else CodesPacker(self.nbits)

    def push(self, codes: np.ndarray) -> None:
        """Codes `[K, f]` of the current chunk's next frames (f may be 0)."""
        if self._coder is None:
            raise RuntimeError("begin_chunk() first.")
        if codes.shape[0] != self.num_codebooks:
            raise ValueError(f"Expected codes of {self.num_codebooks} codebooks, got shape {tuple(codes.shape)}.")
        if codes.shape[1]:
            self._write(self._coder.push(codes))

    def end_chunk(self) -> None:
        if self._coder is None:
            raise RuntimeError("begin_chunk() first.")
        self._write(self._coder.finish())
        self._coder = None


def _lm_frames(
    lm: EncodecLM, decoder: ArithmeticDecoder, num_codebooks: int, frames: int, block_frames: int
) -> Iterator[np.ndarray]:
    """LM-decodes one chunk frame by frame (each frame's CDFs need the previous frame's codes): int64 `[K, f]`
    blocks."""
    state = lm.init_state()
    previous = None
    for start in range(0, frames, block_frames):
        block = np.zeros((num_codebooks, min(block_frames, frames - start)), dtype=np.int64)
        for t in range(block.shape[1]):
            cdfs = lm.step_cdfs(previous, state, num_codebooks)
            for k in range(num_codebooks):
                block[k, t] = decoder.pull(cdfs[k])
            previous = torch.from_numpy(block[:, t].copy())
        yield block


def iter_payload(
    data: bytes | memoryview,
    offset: int,
    chunk_frames: list[int],
    num_codebooks: int,
    normalize: bool,
    nbits: int,
    lm: EncodecLM | None,
    block_frames: int,
    end: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, float | None, np.ndarray]]:
    """Reads the chunks of an `.ecdc` body from ``data[offset:]``: yields ``(chunk index, scale, codes)`` with codes
    int64 `[K, f]`, f <= ``block_frames``, in order (a chunk's scale repeats with each of its blocks).

    ``end`` is called with the offset just past the body once every chunk is read.

    Raises:
        EcdcFormatError: a scale or codes past the end of the data, a scale that is not finite, LM-coded data that
            does not decode.
    """
    for index, frames in enumerate(chunk_frames):
        scale = None
        if normalize:
            if offset + SCALE.size > len(data):
                raise EcdcFormatError("Truncated .ecdc file: a chunk's scale is missing.")
            (scale,) = SCALE.unpack_from(data, offset)
            if not math.isfinite(scale):
                raise EcdcFormatError(f"Corrupt .ecdc file: chunk scale {scale} is not finite.")
            offset += SCALE.size
        if lm is not None:
            decoder = ArithmeticDecoder(data, offset)
            for block in _lm_frames(lm, decoder, num_codebooks, frames, block_frames):
                yield index, scale, block
            offset += decoder.bytes_consumed
            continue
        count = frames * num_codebooks
        if len(data) - offset < packed_size(count, nbits):
            unpack(data[offset:], nbits, count)  # raises the truncation error
        # Blocks of whole bytes: `group` frames of K codes of nbits bits end on a byte boundary.
        group = 8 // math.gcd(num_codebooks * nbits, 8)
        step = max(group, block_frames // group * group)
        for start in range(0, frames, step):
            f = min(step, frames - start)
            begin = offset + start * num_codebooks * nbits // 8
            piece = data[begin : begin + packed_size(f * num_codebooks, nbits)]
            codes = unpack(piece, nbits, f * num_codebooks).reshape(f, num_codebooks).T
            yield index, scale, np.ascontiguousarray(codes)
        offset += packed_size(count, nbits)
    if end is not None:
        end(offset)


def encode_lm_segment(lm: EncodecLM, codes: np.ndarray, progress: Callable[[int], None] | None = None) -> bytes:
    """Arithmetic-codes one chunk's codes `[K, F]` with a fresh LM state; returns the byte-aligned stream."""
    coder = LMSegmentEncoder(lm, codes.shape[0])
    out = []
    for start in range(0, codes.shape[1], coder.block_frames):
        block = codes[:, start : start + coder.block_frames]
        out.append(coder.push(block))
        if progress is not None:
            progress(block.shape[1])
    return b"".join(out) + coder.finish()


def decode_lm_segment(
    lm: EncodecLM,
    data: bytes | memoryview,
    offset: int,
    num_codebooks: int,
    frames: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Inverse of :func:`encode_lm_segment`: codes int64 `[K, F]` and the offset just past the stream."""
    decoder = ArithmeticDecoder(data, offset)
    blocks = []
    for block in _lm_frames(lm, decoder, num_codebooks, frames, 1):
        blocks.append(block)
        if progress is not None:
            progress(1)
    codes = np.concatenate(blocks, axis=1) if blocks else np.zeros((num_codebooks, 0), dtype=np.int64)
    return codes, offset + decoder.bytes_consumed


__all__ = [
    "SCALE",
    "CodesPacker",
    "LMSegmentEncoder",
    "PayloadWriter",
    "decode_lm_segment",
    "encode_lm_segment",
    "iter_payload",
    "lm_block_frames",
]
