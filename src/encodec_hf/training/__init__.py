"""Training: losses, the MS-STFT discriminator, the loss balancer, codebook learning and the training loop.

    from encodec_hf.training import Trainer, load_config

    config = load_config("train.yaml", ["optim.lr=1e-4"])  # or TrainingConfig.from_dict({...})
    Trainer(config).train()  # writes a folder that EncodecModel.from_pretrained loads

Needs the ``[train]`` extra (accelerate, pyyaml); see docs/training.md. The package imports without them: the
trainer imports accelerate when built, the config loader pyyaml when it reads YAML.
"""

from .balancer import PAPER_LOSS_WEIGHTS, Balancer
from .checkpoint import export_model, load_discriminator
from .codebook import QuantizerOutput, TrainingQuantizer, num_quantizers_for_step
from .config import TrainingConfig, load_config, save_config
from .data import AudioCropDataset, build_dataloader, build_dataset
from .discriminator import MultiScaleSTFTDiscriminator
from .losses import (
    MultiScaleMelLoss,
    commitment_loss,
    discriminator_adversarial_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    time_l1_loss,
    time_relative_mse_loss,
)
from .trainer import CodecForTraining, Trainer, WeightsEMA, build_model, train

__all__ = [
    "PAPER_LOSS_WEIGHTS",
    "AudioCropDataset",
    "Balancer",
    "CodecForTraining",
    "MultiScaleMelLoss",
    "MultiScaleSTFTDiscriminator",
    "QuantizerOutput",
    "Trainer",
    "TrainingConfig",
    "TrainingQuantizer",
    "WeightsEMA",
    "build_dataloader",
    "build_dataset",
    "build_model",
    "commitment_loss",
    "discriminator_adversarial_loss",
    "export_model",
    "feature_matching_loss",
    "generator_adversarial_loss",
    "load_config",
    "load_discriminator",
    "num_quantizers_for_step",
    "save_config",
    "time_l1_loss",
    "time_relative_mse_loss",
    "train",
]
