"""``make demo``: encode then decode a short clip and report bitrate, SI-SNR, ViSQOL and real-time factor.

Usage: ``python -m encodec_hf.demo [--model REPO_OR_DIR] [--bandwidth KBPS] [--input WAV] [--output WAV]``.

Without ``--model`` the demo uses ``facebook/encodec_24khz`` when the Hub answers or the local cache holds it
(``integrations.hub.load_model`` decides within a few seconds), and otherwise the model bundled with the package
(``encodec_hf.bundled``), saying so in one line.
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
from .bundled import BUNDLED_MODEL_NAME, bundled_model_path
from .errors import HubUnreachableError, MetricInputError
from .evaluation.metrics import si_snr, visqol
from .integrations.hub import load_model

BUNDLED_CLIP = Path(__file__).parent / "assets" / "speech_24k_4s.wav"
HUB_MODEL = "facebook/encodec_24khz"


def load_default_model():
    """(model, name): `facebook/encodec_24khz` from the Hub or the cache, else the bundled model (one line on
    stderr says so). Every other failure (a broken cache entry, a bad download) is raised as it is."""
    try:
        return load_model(HUB_MODEL), HUB_MODEL
    except HubUnreachableError:
        print(
            f"{HUB_MODEL} is not reachable (no Hub, not cached): using the bundled {BUNDLED_MODEL_NAME}, a small "
            "model trained by encodec_hf (not Meta's weights, lower quality; see its model card).",
            file=sys.stderr,
        )
        return load_model(bundled_model_path()), BUNDLED_MODEL_NAME


def _visqol_line(decoded: torch.Tensor, audio: torch.Tensor, sampling_rate: int) -> str:
    """ViSQOL (speech mode; audio mode where the speech model is not installed), or why it is unavailable."""
    for mode in ("speech", "audio"):
        try:
            return f"{visqol(decoded, audio, sampling_rate, mode=mode):.2f} ({mode} mode, MOS-LQO 1-5)"
        except ImportError:
            continue
        except MetricInputError as err:
            return f"n/a ({err})"
    return "n/a: pip install 'encodec-hf[demo]' for visqol-python"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help=f"Hub repo id or local folder (default: {HUB_MODEL}, else the bundled model)"
    )
    parser.add_argument("--bandwidth", type=float, default=None, help="kbps (default: 6, or the model's lowest)")
    parser.add_argument("--input", type=Path, default=BUNDLED_CLIP, help="audio file (default: bundled 4 s clip)")
    parser.add_argument("--output", type=Path, default=Path("demo_out/decoded.wav"))
    args = parser.parse_args(argv)

    # The demo's own message says what went wrong; the libraries' retry warnings would only bury it.
    hf_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    try:  # a wrong path, an empty folder, no Hub and no cache: load_model's one line says which, and the fix
        model, name = load_default_model() if args.model is None else (load_model(args.model), args.model)
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

    print(f"model        {name} ({config.sampling_rate} Hz, {config.audio_channels} channel(s))")
    print(f"input        {args.input.name}: {duration:.2f} s")
    effective_kbps = bits / duration / 1000
    print(f"bandwidth    {bandwidth} kbps nominal, {effective_kbps:.2f} kbps of codes ({codes.shape[2]} codebooks)")
    print(f"SI-SNR       {float(si_snr(decoded, audio)):.2f} dB")
    print(f"ViSQOL       {_visqol_line(decoded, audio, config.sampling_rate)}")
    print(
        f"speed        encode {encode_s * 1000:.0f} ms, decode {decode_s * 1000:.0f} ms: "
        f"{duration / (encode_s + decode_s):.1f}x real time"
    )
    print(f"wrote        {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
