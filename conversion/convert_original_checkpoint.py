"""Convert Meta's original EnCodec checkpoints (and their LMs) into an `EncodecModel.from_pretrained` folder.

Usage:

    python conversion/convert_original_checkpoint.py --checkpoint encodec_24khz-d7cc33bc.th \
        --lm-checkpoint encodec_lm_24khz-1608e3c0.th --output-dir converted/encodec_24khz

Inputs: `encodec_24khz-d7cc33bc.th`, `encodec_48khz-7e698e3e.th` (facebookresearch/encodec), their LMs
`encodec_lm_24khz-1608e3c0.th`, `encodec_lm_48khz-7add9fc3.th`, and audiocraft's MusicGen
`compression_state_dict.bin` (the 32 kHz codec, weights under "best_state").

Outputs: `config.json` (transformers' EncodecConfig fields plus `ecdc_model_name`, the name `.ecdc` headers
carry), `model.safetensors` (transformers key layout; weight norm as `weight_g`/`weight_v`, the names of the
Hub checkpoints), `preprocessor_config.json`, `lm.safetensors` (with --lm-checkpoint) and `README.md` from
`model_cards/encodec_original.md`.

Safety: checkpoints are read with `torch.load(..., weights_only=True)` only, and the 8-hex sha256 prefix that
Meta's file names carry (`name-<sha256[:8]>.th`) is verified; a mismatch is refused unless
`--no-verify-hash` is given.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import sys
from pathlib import Path
from string import Template

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))

from encodec_hf.codec.configuration import EncodecConfig  # noqa: E402
from encodec_hf.ecdc.lm import EncodecLM, EncodecLMConfig  # noqa: E402
from encodec_hf.errors import CheckpointMismatchError  # noqa: E402

logger = logging.getLogger("convert_original_checkpoint")

MODEL_NAMES = ("encodec_24khz", "encodec_48khz", "encodec_32khz")
# The names `.ecdc` headers use; only Meta's two codecs have one (the original refuses any other model).
ECDC_NAMES = {"encodec_24khz": "encodec_24khz", "encodec_48khz": "encodec_48khz"}
LICENSES = {
    "encodec_24khz": ("mit", "the MIT license (facebookresearch/encodec, relicensed from CC-BY-NC 4.0 in 2023)"),
    "encodec_48khz": ("mit", "the MIT license (facebookresearch/encodec, relicensed from CC-BY-NC 4.0 in 2023)"),
    "encodec_32khz": ("cc-by-nc-4.0", "CC-BY-NC 4.0 (the MusicGen weights of facebookresearch/audiocraft)"),
}
CARD_TEMPLATE = ROOT / "model_cards" / "encodec_original.md"
_HASH_SUFFIX = re.compile(r"-([0-9a-f]{8})$")


class HashMismatchError(ValueError):
    """The file's sha256 does not start with the prefix its name carries."""


def config_for(model_name: str) -> EncodecConfig:
    """The EncodecConfig preset of `model_name`, with the `.ecdc` name where the format has one."""
    preset = {
        "encodec_24khz": EncodecConfig.encodec_24khz,
        "encodec_48khz": EncodecConfig.encodec_48khz,
        "encodec_32khz": EncodecConfig.encodec_32khz,
    }[model_name]
    extra = {"ecdc_model_name": ECDC_NAMES[model_name]} if model_name in ECDC_NAMES else {}
    return preset(**extra)


def infer_model_name(path: Path) -> str:
    """`encodec_24khz-d7cc33bc.th` -> `encodec_24khz`; `compression_state_dict.bin` -> `encodec_32khz`."""
    stem = _HASH_SUFFIX.sub("", path.stem)
    if stem in MODEL_NAMES:
        return stem
    if stem == "compression_state_dict":
        return "encodec_32khz"
    raise ValueError(
        f"Cannot tell the model from the file name {path.name!r}; pass --model-name one of {', '.join(MODEL_NAMES)}."
    )


def verify_hash(path: Path, verify: bool = True) -> str:
    """Check the sha256 prefix in `path`'s name (Meta's `name-<sha256[:8]>.th`); returns the full digest."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    sha = digest.hexdigest()
    match = _HASH_SUFFIX.search(path.stem)
    if match is None:
        logger.info("%s carries no sha256 prefix in its name; nothing to verify.", path.name)
    elif not sha.startswith(match.group(1)):
        message = (
            f"{path.name}: sha256 {sha[:8]}... does not match the prefix {match.group(1)} in its name; the file is "
            "corrupt or not the released checkpoint. Download it again, or pass --no-verify-hash to convert anyway."
        )
        if verify:
            raise HashMismatchError(message)
        logger.warning(message)
    return sha


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict safely (`weights_only=True`), unwrapping audiocraft's `best_state`."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "best_state" in state:
        state = state["best_state"]
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatchError(f"{path} does not hold a flat state dict of tensors.")
    return state


def rename_key(key: str) -> str:
    """Original (encodec / audiocraft) name -> transformers EncodecModel name."""
    key = re.sub(r"^(encoder|decoder)\.model\.", r"\1.layers.", key)
    key = key.replace(".conv.conv.", ".conv.").replace(".convtr.convtr.", ".conv.")
    key = key.replace(".conv.norm.", ".norm.").replace(".convtr.norm.", ".norm.")
    # audiocraft with torch's parametrized weight norm; the Hub files use the legacy names.
    key = key.replace(".parametrizations.weight.original0", ".weight_g")
    key = key.replace(".parametrizations.weight.original1", ".weight_v")
    key = re.sub(r"^quantizer\.vq\.layers\.(\d+)\._codebook\.", r"quantizer.layers.\1.codebook.", key)
    return key


def _expected_shapes(config: EncodecConfig) -> dict[str, torch.Size]:
    """Keys and shapes of an EncodecModel for `config`, weight norm under the legacy names."""
    from transformers import EncodecConfig as HFConfig
    from transformers import EncodecModel as HFModel

    fields = {k: v for k, v in config.to_dict().items() if k in HFConfig().to_dict() or k == "codebook_dim"}
    with torch.device("meta"):
        model = HFModel(HFConfig(**fields))
    shapes = {}
    for key, tensor in model.state_dict().items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g")
        key = key.replace(".parametrizations.weight.original1", ".weight_v")
        shapes[key] = tensor.shape
    return shapes


def convert_state_dict(original: dict[str, torch.Tensor], config: EncodecConfig) -> dict[str, torch.Tensor]:
    """Rename every tensor and check the result against the model of `config` (keys and shapes, strict).

    Raises:
        CheckpointMismatchError: missing, unexpected or mis-shaped tensors.
    """
    converted = {rename_key(k): v.detach().to(torch.float32).contiguous() for k, v in original.items()}
    expected = _expected_shapes(config)
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong = sorted(k for k in set(expected) & set(converted) if converted[k].shape != expected[k])
    if missing or unexpected or wrong:
        raise CheckpointMismatchError(
            "The checkpoint does not fit the chosen model (check --model-name): "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} ({len(unexpected)}), "
            f"wrong shapes {[(k, tuple(converted[k].shape), tuple(expected[k])) for k in wrong[:5]]}."
        )
    return converted


def convert_lm(original: dict[str, torch.Tensor], config: EncodecConfig) -> EncodecLM:
    """Build the EncodecLM of an original `encodec_lm_*.th` state dict (same parameter names)."""
    num_codebooks = len([k for k in original if re.fullmatch(r"emb\.\d+\.weight", k)])
    if num_codebooks == 0:
        raise CheckpointMismatchError("The LM checkpoint has no `emb.N.weight` tensors: is it an encodec_lm_*.th?")
    lm = EncodecLM(EncodecLMConfig.for_codec(num_codebooks, config.frame_rate, config.codebook_size))
    try:
        lm.load_state_dict({k: v.to(torch.float32) for k, v in original.items()}, strict=True)
    except RuntimeError as err:
        raise CheckpointMismatchError(f"The LM checkpoint does not fit a 5-layer dim-200 EncodecLM: {err}") from err
    if num_codebooks != config.num_quantizers:
        raise CheckpointMismatchError(
            f"The LM models {num_codebooks} codebooks but the codec has {config.num_quantizers}: "
            "wrong --lm-checkpoint?"
        )
    return lm.eval()


def write_model_card(
    output_dir: Path,
    config: EncodecConfig,
    model_name: str,
    checkpoint: Path,
    sha: str,
    has_lm: bool,
    repo_id: str | None,
) -> None:
    license_id, license_text = LICENSES[model_name]
    bits_per_codebook = config.codebook_nbits * config.frame_rate
    rows = []
    for bw in config.target_bandwidths:
        n_q = config.num_quantizers_for_bandwidth(bw)
        rows.append(f"| {bw:g} | {n_q} | {n_q * bits_per_codebook} |")
    chunking = (
        f"{config.chunk_length_s:g} s chunks, {config.overlap * 100:g}% overlap, per-chunk RMS normalisation"
        if config.chunk_length_s
        else "none: the whole input in one pass"
    )
    values = dict(
        license=license_id,
        license_text=license_text,
        model_name=model_name,
        checkpoint_file=checkpoint.name,
        checkpoint_sha256=sha,
        lm_sentence=(
            " It also holds the entropy-coding transformer language model (`lm.safetensors`) of the original\n"
            "release, used to write and read compact `.ecdc` files."
            if has_lm
            else ""
        ),
        sampling_rate=config.sampling_rate,
        channels=config.audio_channels,
        channels_text="1 (mono)" if config.audio_channels == 1 else "2 (stereo)",
        causal="yes" if config.use_causal_conv else "no",
        chunking=chunking,
        num_codebooks=config.num_quantizers,
        codebook_size=config.codebook_size,
        codebook_nbits=config.codebook_nbits,
        frame_rate=config.frame_rate,
        bitrate_rows="\n".join(rows),
        repo_id=repo_id or f"path/to/{model_name}",
        example_bandwidth=f"{config.target_bandwidths[min(1, len(config.target_bandwidths) - 1)]:g}",
        use_lm_example="True" if has_lm else "False",
        lm_flag=" --lm" if has_lm else "",
    )
    text = Template(CARD_TEMPLATE.read_text(encoding="utf-8")).substitute(values)
    (output_dir / "README.md").write_text(text, encoding="utf-8")


def convert(
    checkpoint: str | Path,
    output_dir: str | Path,
    model_name: str | None = None,
    lm_checkpoint: str | Path | None = None,
    verify_hashes: bool = True,
    repo_id: str | None = None,
) -> Path:
    """Convert `checkpoint` (and optionally `lm_checkpoint`) into `output_dir`; returns `output_dir`."""
    from safetensors.torch import save_file
    from transformers import EncodecFeatureExtractor

    checkpoint = Path(checkpoint)
    output_dir = Path(output_dir)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"Checkpoint {checkpoint} does not exist.")
    model_name = model_name or infer_model_name(checkpoint)
    if model_name not in MODEL_NAMES:
        raise ValueError(f"--model-name must be one of {', '.join(MODEL_NAMES)}, got {model_name!r}.")
    sha = verify_hash(checkpoint, verify_hashes)
    config = config_for(model_name)
    state = convert_state_dict(load_checkpoint(checkpoint), config)
    lm = None
    if lm_checkpoint is not None:
        lm_checkpoint = Path(lm_checkpoint)
        if not lm_checkpoint.is_file():
            raise FileNotFoundError(f"LM checkpoint {lm_checkpoint} does not exist.")
        verify_hash(lm_checkpoint, verify_hashes)
        lm = convert_lm(load_checkpoint(lm_checkpoint), config)

    output_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(output_dir)
    save_file(state, output_dir / "model.safetensors", metadata={"format": "pt"})
    EncodecFeatureExtractor(
        feature_size=config.audio_channels,
        sampling_rate=config.sampling_rate,
        chunk_length_s=config.chunk_length_s,
        overlap=config.overlap,
    ).save_pretrained(output_dir)
    if lm is not None:
        lm.save_pretrained(output_dir)
    write_model_card(output_dir, config, model_name, checkpoint, sha, lm is not None, repo_id)
    logger.info(
        "Converted %s -> %s (%d tensors%s).", checkpoint.name, output_dir, len(state), ", with LM" if lm else ""
    )
    return output_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", required=True, help="encodec_24khz-*.th, encodec_48khz-*.th or compression_state_dict.bin"
    )
    parser.add_argument("--lm-checkpoint", help="encodec_lm_24khz-*.th or encodec_lm_48khz-*.th (optional)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--model-name", choices=MODEL_NAMES, help="default: taken from the checkpoint's file name")
    parser.add_argument("--repo-id", help="Hub repository id used in the model card's examples")
    parser.add_argument(
        "--no-verify-hash", action="store_true", help="convert even if the sha256 prefix in the name mismatches"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        convert(
            args.checkpoint,
            args.output_dir,
            args.model_name,
            args.lm_checkpoint,
            not args.no_verify_hash,
            args.repo_id,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
