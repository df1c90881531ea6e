"""``make demo``: encode then decode a short clip and report bitrate, SI-SNR and real-time factor.

Usage: ``python -m encodec_hf.demo [--model REPO_OR_DIR] [--bandwidth KBPS] [--input WAV] [--output WAV]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import soundfile as sf
import torch
from huggingface_hub.utils import logging as hf_logging
from transformers.utils import logging as transformers_logging

from .audio_io import convert_audio, read_audio
from .integrations.hub import load_model

BUNDLED_CLIP = Path(__file__).parent / "assets" / "speech_24k_4s.wav"


def si_snr(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    """Scale-invariant SNR in dB of `[C, T]` signals, averaged over channels."""
    reference = reference - reference.mean(dim=-1, keepdim=True)
    estimate = estimate - estimate.mean(dim=-1, keepdim=True)
    target = (estimate * reference).sum(-1, keepdim=True) / reference.pow(2).sum(-1, keepdim=True) * reference
    noise = estimate - target
    return (10 * torch.log10(target.pow(2).sum(-1) / noise.pow(2).sum(-1))).mean().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="facebook/encodec_24khz", help="Hub repo id or local checkpoint folder")
    parser.add_argument("--bandwidth", type=float, default=None, help="kbps (default: 6, or the model's lowest)")
    parser.add_argument("--input", type=Path, default=BUNDLED_CLIP, help="audio file (default: bundled 4 s clip)")
    parser.add_argument("--output", type=Path, default=Path("demo_out/decoded.wav"))
    args = parser.parse_args(argv)

    # The demo's own message says what went wrong; the libraries' retry warnings would only bury it.
    hf_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    try:  # a wrong path, an empty folder, no Hub and no cache: load_model's one line says which, and the fix
        model = load_model(args.model)
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    config = model.config
    bandwidth = args.bandwidth
    if bandwidth is None:
        bandwidth = 6.0 if 6.0 in config.target_bandwidths else config.target_bandwidths[0]

    audio, sampling_rate = read_audio(args.input)  # [C, T]
    audio = convert_audio(audio, sampling_rate, config.sampling_rate, config.audio_channels)
    duration = audio.shape[-1] / config.sampling_rate

    with torch.inference_mode():
        start = time.perf_counter()
        encoded = model.encode(audio[None], bandwidth=bandwidth)
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        decoded = model.decode(**encoded).audio_values[0]
        decode_s = time.perf_counter() - start

    codes = encoded.audio_codes
    valid_frames = codes.shape[0] * codes.shape[-1] - encoded.last_frame_pad_length
    bits = valid_frames * codes.shape[2] * config.codebook_nbits + (32 * codes.shape[0] if config.normalize else 0)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sf.write(args.output, decoded.clamp(-1, 1).T.numpy(), config.sampling_rate, subtype="PCM_16")

    print(f"model        {args.model} ({config.sampling_rate} Hz, {config.audio_channels} channel(s))")
    print(f"input        {args.input.name}: {duration:.2f} s")
    effective_kbps = bits / duration / 1000
    print(f"bandwidth    {bandwidth} kbps nominal, {effective_kbps:.2f} kbps of codes ({codes.shape[2]} codebooks)")
    print(f"SI-SNR       {si_snr(decoded, audio):.2f} dB")
    print(
        f"speed        encode {encode_s * 1000:.0f} ms, decode {decode_s * 1000:.0f} ms: "
        f"{duration / (encode_s + decode_s):.1f}x real time"
    )
    print(f"wrote        {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
