"""`make eval`: `encodec-hf evaluate` on the two real clips of ../shared/audio (skipped when they are absent).

    python benchmarks/run_eval.py --audio ../shared/audio --report eval_out [--model DIR_OR_HUB_ID] [--content music]

Without `--model`, a 24 kHz model with random weights (and a random LM) is saved to REPORT/random_24khz and
evaluated: this checks the whole pipeline on real audio, but random weights give meaningless quality.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

CLIPS = ("test_24k.wav", "test_48k.wav")


def save_random_24khz(folder: Path, seed: int = 0) -> Path:
    """Save `EncodecConfig.encodec_24khz()` with random weights and codebooks, and a random LM, into `folder`."""
    from encodec_hf import EncodecConfig, EncodecLM, EncodecLMConfig, EncodecModel

    torch.manual_seed(seed)
    config = EncodecConfig.encodec_24khz()
    model = EncodecModel(config).eval()
    with torch.no_grad():
        for layer in model.quantizer.layers:  # codebooks start at zero: fill them so codes vary
            layer.codebook.embed.normal_()
            layer.codebook.inited.fill_(1.0)  # set, as a trained model's are (fine-tuning keeps them)
    model.save_pretrained(folder)
    EncodecLM(EncodecLMConfig.for_codec(config.num_quantizers, config.frame_rate)).save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, default=Path("../shared/audio"))
    parser.add_argument("--model", help="model folder or Hub id (default: a random-weight 24 kHz model)")
    parser.add_argument("--content", choices=("music", "speech"), default="music")
    parser.add_argument("--report", type=Path, default=Path("eval_out"))
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    clips = [args.audio / name for name in CLIPS if (args.audio / name).is_file()]
    if not clips:
        print(f"make eval: no {' / '.join(CLIPS)} under {args.audio}; skipped.")
        return 0
    torch.set_num_threads(1)
    model = args.model
    if model is None:
        model = str(save_random_24khz(args.report / "random_24khz"))
        print(f"No MODEL given: evaluating random weights saved to {model}. Their quality is meaningless.")
    from encodec_hf.cli import main as cli_main

    start = time.perf_counter()
    status = cli_main(
        ["evaluate", *map(str, clips), "--model", model, "--content", args.content, "--report", str(args.report)]
        + ["--max-seconds", str(args.max_seconds), "--workers", str(args.workers)]
    )
    print(f"wall time {time.perf_counter() - start:.0f} s ({torch.get_num_threads()} thread(s) per process)")
    return status


if __name__ == "__main__":
    sys.exit(main())
