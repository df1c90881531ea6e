"""The Opus baseline: a round trip through libopus with Xiph's `opusenc` / `opusdec` (Debian `opus-tools`).

Why the command-line tools: they are the reference encoder front-end maintained by Xiph with libopus, packaged
by Debian (`apt-get install opus-tools`), and write real Ogg Opus files whose size is the honest container
bitrate. The Python bindings on PyPI (`opuslib` 3.0.1, last released 2018; `pyogg` 0.6 alpha, 2020) are
unmaintained and would still need the system libopus.

Encoding uses hard CBR (`--hard-cbr`, 20 ms frames, complexity 10) so that the bitrate is the one asked for,
no tag padding (`--padding 0`) and no copied comments. Two bitrates are measured from the file itself:
`payload_kbps` (the Opus packets, comparable to the bits of EnCodec codes) and `file_kbps` (the whole Ogg
file, comparable to an `.ecdc` file). libopus cannot go below about 6 kbps with full quality; at 1.5 and
3 kbps it still makes (very poor) 3- and 7-byte packets, which the measured bitrates show.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np

from ..errors import OpusUnavailableError

OPUSENC = "opusenc"
OPUSDEC = "opusdec"
# The header packets every Ogg Opus stream starts with (RFC 7845); they are container, not payload.
_HEADER_MAGICS = (b"OpusHead", b"OpusTags")


@dataclass(frozen=True)
class OpusResult:
    """Decoded audio `[C, T]` (float32, input rate and length) and the measured sizes of one round trip."""

    audio: np.ndarray
    requested_kbps: float
    payload_bytes: int
    file_bytes: int
    duration_s: float

    @property
    def payload_kbps(self) -> float:
        return self.payload_bytes * 8 / self.duration_s / 1000

    @property
    def file_kbps(self) -> float:
        return self.file_bytes * 8 / self.duration_s / 1000


def opus_available() -> bool:
    """Whether both Opus tools are on PATH."""
    return shutil.which(OPUSENC) is not None and shutil.which(OPUSDEC) is not None


def ogg_packet_sizes(data: bytes) -> list[int]:
    """Sizes of the packets of an Ogg stream (RFC 3533: pages of 27-byte headers and lacing values).

    Raises:
        ValueError: the bytes are not a well-formed Ogg stream.
    """
    sizes: list[int] = []
    current = 0
    offset = 0
    while offset < len(data):
        if data[offset : offset + 4] != b"OggS" or offset + 27 > len(data):
            raise ValueError(f"Not an Ogg page at byte {offset}.")
        segments = data[offset + 26]
        lacing = data[offset + 27 : offset + 27 + segments]
        body = offset + 27 + segments
        for value in lacing:
            current += value
            if value < 255:  # a lacing value under 255 ends a packet
                sizes.append(current)
                current = 0
        offset = body + sum(lacing)
    if offset != len(data):
        raise ValueError("Truncated Ogg stream.")
    return sizes


def opus_payload_bytes(data: bytes) -> int:
    """Bytes of Opus audio packets in an Ogg Opus file (everything but the container and the two headers)."""
    sizes = ogg_packet_sizes(data)
    # The first two packets are OpusHead and OpusTags; check rather than assume.
    offset = 27 + data[26]
    if data[offset : offset + 8] not in _HEADER_MAGICS:
        raise ValueError("Not an Ogg Opus stream (no OpusHead packet).")
    return sum(sizes[2:])


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stderr.strip()[-500:]}")


def opus_round_trip(audio: np.ndarray, sampling_rate: int, bitrate_kbps: float) -> OpusResult:
    """Encode `audio` `[C, T]` (C = 1 or 2, float in [-1, 1]) at `bitrate_kbps` with Opus and decode it.

    The decoded audio has the input's rate (opusdec resamples from Opus' internal 48 kHz) and length.

    Raises:
        OpusUnavailableError: the tools are missing (install Debian's `opus-tools`).
        ValueError: more than two channels, or a bitrate outside libopus' 0.5..512 kbps.
    """
    import soundfile as sf

    if not opus_available():
        raise OpusUnavailableError("The Opus baseline needs opusenc/opusdec: apt-get install opus-tools.")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[0] not in (1, 2):
        raise ValueError(f"Opus baseline audio must be [C, T] with C = 1 or 2, got shape {audio.shape}.")
    if not 0.5 <= bitrate_kbps <= 512:
        raise ValueError(f"Opus bitrates are 0.5..512 kbps, got {bitrate_kbps}.")
    with tempfile.TemporaryDirectory(prefix="encodec_hf_opus_") as tmp:
        source, encoded, decoded = (os.path.join(tmp, name) for name in ("in.wav", "out.opus", "out.wav"))
        sf.write(source, audio.T, sampling_rate, subtype="FLOAT")
        _run(
            [OPUSENC, "--quiet", "--hard-cbr", "--bitrate", f"{bitrate_kbps:g}", "--framesize", "20"]
            + ["--comp", "10", "--padding", "0", "--discard-comments", source, encoded]
        )
        with open(encoded, "rb") as f:
            data = f.read()
        _run([OPUSDEC, "--quiet", "--float", "--rate", str(sampling_rate), "--force-wav", encoded, decoded])
        out, rate = sf.read(decoded, dtype="float32", always_2d=True)
    out = out.T
    if rate != sampling_rate:
        raise RuntimeError(f"opusdec wrote {rate} Hz audio, {sampling_rate} Hz was asked for.")
    if out.shape[0] != audio.shape[0]:
        out = out[: audio.shape[0]] if out.shape[0] > audio.shape[0] else np.repeat(out, audio.shape[0], axis=0)
    length = audio.shape[1]
    out = out[:, :length] if out.shape[1] >= length else np.pad(out, ((0, 0), (0, length - out.shape[1])))
    return OpusResult(
        audio=np.ascontiguousarray(out),
        requested_kbps=float(bitrate_kbps),
        payload_bytes=opus_payload_bytes(data),
        file_bytes=len(data),
        duration_s=length / sampling_rate,
    )


__all__ = ["OpusResult", "OpusUnavailableError", "ogg_packet_sizes", "opus_available", "opus_round_trip"]
