"""Packaging for encodec-hf (import name ``encodec_hf``)."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
# Optional extras, named once: each is also part of "test".
ONNX = ["onnx>=1.16", "onnxruntime>=1.18"]
TRAIN = ["accelerate>=1.0", "pyyaml>=6.0"]
PESQ = ["pesq>=0.0.4"]
DEMO = ["visqol-python[lattice]>=3.8"]  # make demo's ViSQOL (speech mode)
EVAL = ["visqol-python[lattice,accel]>=3.8", "pystoi>=0.4", "matplotlib>=3.7", "scipy>=1.10"]

setup(
    name="encodec-hf",
    version="0.1.0",
    description="Meta's EnCodec neural audio codec for the Hugging Face ecosystem",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    package_dir={"": "src"},
    packages=find_packages("src"),
    # The bundled model (encodec_hf.bundled): weights, configs, model card and its plots.
    package_data={"encodec_hf": ["assets/*.wav", "assets/*.md", "assets/encodec_hf_small_24khz/*"]},
    python_requires=">=3.10",
    # Lower bounds only: transformers 5 is where PreTrainedConfig became a dataclass and the
    # weight_g/weight_v -> parametrizations renaming moved into the loader, both of which we rely on.
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0",
        "huggingface_hub>=1.0",
        "safetensors>=0.4",
        "datasets>=3.0",
        "numpy>=1.24",
        "soundfile>=0.12",
        "tqdm>=4.60",  # progress bars (CLI, encode-dataset)
    ],
    extras_require={
        # Optional ONNX export and onnxruntime inference (encodec_hf.integrations.onnx).
        "onnx": ONNX,
        # Training and fine-tuning (encodec_hf.training, `encodec-hf train`).
        "train": TRAIN,
        # `encodec-hf evaluate` (encodec_hf.evaluation): ViSQOL with its speech lattice mapper and numba speed-up
        # (visqol-python's libsvm-official dependency compiles with gcc), STOI, plots, Student-t intervals.
        # The Opus baseline also needs Debian's opus-tools (apt-get install opus-tools).
        "eval": EVAL,
        "demo": DEMO,
        # PESQ compiles from source (gcc); optional because not every machine has a compiler.
        "pesq": PESQ,
        "test": ["pytest>=8", "hypothesis>=6.100", "ruff>=0.6", "einops>=0.6"] + ONNX + TRAIN + EVAL + DEMO + PESQ,
    },
    entry_points={"console_scripts": ["encodec-hf=encodec_hf.cli:main"]},
)
