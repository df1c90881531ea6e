"""The EnCodec training loop, on Hugging Face ``accelerate`` (one CPU process, or DDP under ``accelerate launch`` /
``torchrun``).

One optimizer step (``run.grad_accum`` micro-batches, each ``run.batch_size / (processes * grad_accum)`` crops):

1. The codebook count is drawn among ``config.target_bandwidths`` and the adversary's update decided (probability
   ``discriminator.update_prob``), both from (seed, step), so every process agrees and a resumed run repeats them.
2. Codec forward: ``encoder -> TrainingQuantizer (EMA codebooks) -> decoder``; 48 kHz-style models (``normalize``)
   code the crop divided by its RMS and scale the output back, as each 1 s chunk is at inference.
3. Losses ``l_t``, ``l_f`` and, after ``discriminator.warmup_steps``, ``l_g`` and ``l_feat`` (adversary as of the
   start of the step) go through the balancer; the commitment loss ``lambda_w * l_w`` rides the same backward
   pass (one backward per forward, as DDP wants).
4. When the adversary updates, its hinge loss on (x, x_hat.detach()) accumulates its gradients; both optimizers
   step after the last micro-batch (the codec's gradients averaged over micro-batches).

Decoder-only fine-tuning (``model.trainable: decoder``) runs the encoder without gradients and the quantizer
without codebook updates, so the codes of any clip stay exactly those of the starting model. Training from scratch
empties the codebooks (``inited = 0``) so the first batch initialises them with k-means.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import TrainingConfigError
from . import checkpoint as ckpt
from .balancer import Balancer
from .codebook import TrainingQuantizer, num_quantizers_for_step
from .config import CodebookConfig, TrainingConfig, save_config
from .discriminator import MultiScaleSTFTDiscriminator
from .initialization import initialize_weights
from .losses import (
    MultiScaleMelLoss,
    discriminator_adversarial_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    time_l1_loss,
    time_relative_mse_loss,
)

logger = logging.getLogger(__name__)


class _AddLoss(torch.autograd.Function):
    """Identity on ``x`` whose backward also backpropagates ``loss`` (gradient 1): the commitment penalty joins
    the balancer's ``decoded.backward`` instead of needing a second backward pass through the encoder."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, torch.ones((), dtype=grad.dtype, device=grad.device)


class CodecForTraining(nn.Module):
    """Wraps an ``EncodecModel`` for training: audio `[B, C, T]` -> (decoded `[B, C, T]`, commitment loss)."""

    def __init__(
        self, model: nn.Module, train_encoder: bool = True, seed: int = 0, codebook: CodebookConfig | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.train_encoder = train_encoder
        codebook = codebook or CodebookConfig()
        self.quantizer = TrainingQuantizer(
            model.quantizer,
            decay=codebook.ema_decay,
            dead_code_threshold=codebook.dead_code_threshold,
            learn_codebooks=train_encoder,
            seed=seed,
        )

    def forward(self, audio: torch.Tensor, num_quantizers: int) -> tuple[torch.Tensor, torch.Tensor]:
        scale = None
        if self.model.config.normalize:  # per-crop RMS of the mono mix, as each chunk at inference
            scale = audio.mean(dim=1, keepdim=True).pow(2).mean(dim=-1, keepdim=True).sqrt() + 1e-8  # [B, 1, 1]
            audio = audio / scale
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.train_encoder):
            latents = self.model.encoder(audio)  # [B, D, F]
            out = self.quantizer(latents, num_quantizers)
        decoded = self.model.decoder(out.quantized)[..., : audio.shape[-1]].float()
        if scale is not None:
            decoded = decoded * scale
        return decoded, out.commitment_loss


class WeightsEMA:
    """Exponential moving average of a module's floating-point parameters (buffers, e.g. codebooks, are copied)."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        params = dict(module.named_parameters())
        for key, value in module.state_dict().items():
            if key in params and value.is_floating_point():
                self.shadow[key].lerp_(value, 1 - self.decay)
            else:
                self.shadow[key].copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            self.shadow[key].copy_(value)


def build_model(config: TrainingConfig):
    """The codec to train: ``model.pretrained`` (Hub id or folder) or a preset with ``model.config`` overrides."""
    from .. import EncodecConfig, EncodecModel

    m = config.model
    if m.pretrained is not None:
        model = EncodecModel.from_pretrained(m.pretrained)
        if m.config:
            raise TrainingConfigError("model.config overrides apply to from-scratch models; drop them or pretrained.")
        return model
    factory = {"24khz": EncodecConfig.encodec_24khz, "48khz": EncodecConfig.encodec_48khz}.get(m.preset)
    factory = factory or EncodecConfig.encodec_32khz
    try:
        model_config = factory(**m.config)
    except (TypeError, ValueError) as err:
        raise TrainingConfigError(f"model.config does not give a valid EncodecConfig: {err}") from err
    # A fresh model's codebooks are zero with inited = 0, so each one is set by k-means on the first batch using it.
    model = EncodecModel(model_config)
    initialize_weights(model, m.weight_init, torch.Generator().manual_seed(config.run.seed))
    return model


class Trainer:
    """Builds everything from a :class:`TrainingConfig` and runs :meth:`train`. Every check (config, model,
    data, lengths) happens in the constructor, before any step."""

    def __init__(self, config: TrainingConfig, accelerator=None) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        from .data import build_dataloader, build_dataset

        config.validate()
        self.config = c = config
        # Codebooks and the balancer are kept identical across processes by their own all-reduces.
        ddp = DistributedDataParallelKwargs(broadcast_buffers=False)
        # Precision is our own autocast, not Accelerator(mixed_precision=...): accelerate's state is a process-wide
        # singleton that refuses a second setting, and one process may build several trainers (tests, notebooks).
        # accelerate runs several CPU processes (torchrun without GPUs) as DDP over gloo only when told cpu=True.
        cpu = c.run.cpu or (not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1)
        self.accelerator = accelerator or Accelerator(cpu=cpu, kwargs_handlers=[ddp])
        acc = self.accelerator
        self._bf16 = c.run.mixed_precision == "bf16"
        self.rank, self.world = acc.process_index, acc.num_processes
        per_step = self.world * c.run.grad_accum
        if c.run.batch_size % per_step:
            raise TrainingConfigError(
                f"run.batch_size={c.run.batch_size} must be a multiple of processes x run.grad_accum = {per_step}."
            )
        self.micro_batch = c.run.batch_size // per_step
        set_seed(c.run.seed)

        self.model = build_model(c)
        mc = self.model.config
        self.crop = round(c.data.crop_seconds * mc.sampling_rate)
        disc_cfg = c.discriminator
        if disc_cfg.pretrained is not None:
            self.discriminator = ckpt.load_discriminator(disc_cfg.pretrained)
        else:
            self.discriminator = MultiScaleSTFTDiscriminator(
                filters=disc_cfg.filters, in_channels=mc.audio_channels, n_ffts=disc_cfg.n_ffts
            )
        first = self.discriminator.discriminators[0]
        self.discriminator_config = {  # MultiScaleSTFTDiscriminator's arguments, for load_discriminator
            "filters": first.convs[0].conv.out_channels,
            "in_channels": first.in_channels,
            "n_ffts": [d.n_fft for d in self.discriminator.discriminators],
            "hop_lengths": [d.hop_length for d in self.discriminator.discriminators],
            "win_lengths": [d.win_length for d in self.discriminator.discriminators],
            "negative_slope": first.activation.negative_slope,
        }
        if first.in_channels != mc.audio_channels:
            raise TrainingConfigError(
                f"discriminator.pretrained takes {first.in_channels} channel(s) but the model has {mc.audio_channels}."
            )
        lc = c.losses
        self.mel_loss = MultiScaleMelLoss(mc.sampling_rate, lc.n_mels, lc.mel_min_exponent, lc.mel_max_exponent)
        self.adversarial = lc.g > 0 or lc.feat > 0
        self._check_lengths()

        # Data: unreadable or empty sources raise here (TrainingDataError), before any step.
        data_options = dict(crop_seconds=c.data.crop_seconds, gain_db=c.data.gain_db, mixing=c.data.mixing)
        self.dataset = build_dataset(
            c.data.train, mc.sampling_rate, mc.audio_channels, seed=c.run.seed, **data_options
        )
        valid_source = c.data.valid if c.data.valid is not None else c.data.train
        valid = build_dataset(valid_source, mc.sampling_rate, mc.audio_channels, seed=c.run.seed + 1, **data_options)
        self.valid_clips = torch.stack([valid[i] for i in range(c.data.valid_items)])  # [N, C, T]
        self._build_dataloader = lambda start: build_dataloader(
            self.dataset, self.micro_batch, c.data.num_workers, start, None, self.rank, self.world
        )

        train_encoder = c.model.trainable == "all"
        if not train_encoder:
            self.model.encoder.requires_grad_(False)
        self.codec = CodecForTraining(self.model, train_encoder=train_encoder, seed=c.run.seed, codebook=c.codebook)
        self._quantizer_rng = self.codec.quantizer.generator
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt_g = torch.optim.Adam(params, lr=c.optim.lr, betas=c.optim.betas, weight_decay=c.optim.weight_decay)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=disc_cfg.lr, betas=disc_cfg.betas)
        self.codec, self.discriminator, self.opt_g, self.opt_d = acc.prepare(
            self.codec, self.discriminator, self.opt_g, self.opt_d
        )
        self.mel_loss.to(acc.device)
        weights = {"time": lc.t, "mel": lc.f, "adversarial": lc.g, "feature_matching": lc.feat}
        options = dict(
            rescale_grads=c.balancer.enabled, total_norm=c.balancer.total_norm, ema_decay=c.balancer.ema_decay
        )
        self.balancer = Balancer({k: w for k, w in weights.items() if w > 0}, **options)
        reconstruction = {k: w for k, w in weights.items() if w > 0 and k in ("time", "mel")}
        self.warmup_balancer = (
            Balancer(reconstruction, **options) if reconstruction and disc_cfg.warmup_steps else None
        )
        self.ema = WeightsEMA(self.model, c.run.weights_ema) if c.run.weights_ema else None
        self.step = 0
        self.output_dir = Path(c.run.output_dir)
        if c.run.resume and ckpt.list_checkpoints(self.output_dir):
            self._resume(ckpt.list_checkpoints(self.output_dir)[-1][1])

    # ------------------------------------------------------------------ checks
    def _check_lengths(self) -> None:
        needs = {"the mel loss (losses.mel_max_exponent)": self.mel_loss.min_length}
        if self.adversarial:
            needs["the discriminator (its largest n_fft)"] = self.discriminator.min_length
        for what, length in needs.items():
            if self.crop < length:
                raise TrainingConfigError(
                    f"data.crop_seconds={self.config.data.crop_seconds} gives {self.crop} samples but {what} needs "
                    f"{length}; use longer crops or smaller windows."
                )
        chunk = self.model.config.chunk_length
        if chunk is not None and self.crop > chunk:
            logger.warning("Crops of %d samples are longer than the model's %d-sample chunks.", self.crop, chunk)

    # ------------------------------------------------------------------ one step
    def _decisions(self, step: int) -> tuple[int, bool]:
        mc, c = self.model.config, self.config
        num_quantizers = num_quantizers_for_step(mc, c.run.seed, step)
        generator = torch.Generator().manual_seed(c.run.seed * 7_919 + step + 1)
        warm = step < c.discriminator.warmup_steps
        update = self.adversarial and (
            warm or float(torch.rand((), generator=generator)) < c.discriminator.update_prob
        )
        return num_quantizers, update

    def _autocast(self):
        """bf16 autocast of the networks (``run.mixed_precision``); losses, codebooks and the balancer stay float32."""
        return torch.autocast(self.accelerator.device.type, dtype=torch.bfloat16, enabled=self._bf16)

    def _micro_step(self, audio: torch.Tensor, num_quantizers: int, update_disc: bool, last: bool) -> dict:
        acc, c = self.accelerator, self.config
        warm = self.step < c.discriminator.warmup_steps
        metrics: dict[str, float] = {}
        with acc.no_sync(self.codec) if not last else contextlib.nullcontext():
            with self._autocast():
                decoded, commitment = self.codec(audio, num_quantizers)
            train_encoder = self.config.model.trainable == "all"
            if train_encoder and c.losses.w > 0:
                decoded = _AddLoss.apply(decoded, c.losses.w * commitment)
            time_loss = time_relative_mse_loss if c.losses.time_loss == "mse" else time_l1_loss
            losses = {"time": time_loss(decoded, audio), "mel": self.mel_loss(decoded, audio)}
            if self.adversarial and not warm:
                discriminator = acc.unwrap_model(self.discriminator)
                with self._autocast():
                    logits_fake, features_fake = discriminator(decoded)
                    with torch.no_grad():
                        _, features_real = discriminator(audio)
                losses["adversarial"] = generator_adversarial_loss(logits_fake)
                losses["feature_matching"] = feature_matching_loss(features_real, features_fake)
            balancer = self.warmup_balancer if warm and self.warmup_balancer is not None else self.balancer
            active = {k: v for k, v in losses.items() if k in balancer.weights}
            scales = balancer.backward(active, decoded)
        metrics.update({f"loss/{k}": float(v.detach()) for k, v in losses.items()})
        metrics["loss/commitment"] = float(commitment.detach())
        metrics.update({k: v for k, v in scales.items() if k.startswith("scale/")})
        if update_disc:
            with acc.no_sync(self.discriminator) if not last else contextlib.nullcontext():
                with self._autocast():
                    logits, _ = self.discriminator(torch.cat([audio, decoded.detach()]))
                batch = audio.shape[0]
                d_loss = discriminator_adversarial_loss([x[:batch] for x in logits], [x[batch:] for x in logits])
                acc.backward(d_loss)
            metrics["loss/discriminator"] = float(d_loss.detach())
        return metrics

    def _optimizer_step(self, update_disc: bool) -> None:
        c, accum = self.config, self.config.run.grad_accum
        for param in self.model.parameters():
            if param.grad is not None and accum > 1:
                param.grad.div_(accum)
        if c.optim.max_grad_norm is not None:
            self.accelerator.clip_grad_norm_(self.codec.parameters(), c.optim.max_grad_norm)
        self.opt_g.step()
        self.opt_g.zero_grad(set_to_none=True)
        if update_disc:
            self.opt_d.step()
        self.opt_d.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, float]:
        """Runs until ``run.steps``; returns the last step's metrics (averaged over processes)."""
        from tqdm.auto import tqdm

        c, acc = self.config, self.accelerator
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_config(c, self.output_dir / "training_config.yaml")
        logger_ = _MetricsWriter(self.output_dir, acc.is_main_process)
        self.codec.train()
        self.discriminator.train()
        batches = iter(self._build_dataloader(self.step * c.run.grad_accum))
        bar = tqdm(total=c.run.steps, initial=self.step, disable=not (c.run.progress and acc.is_main_process))
        last: dict[str, float] = {}
        try:
            while self.step < c.run.steps:
                tick = time.perf_counter()
                num_quantizers, update_disc = self._decisions(self.step)
                sums: dict[str, float] = {}
                for micro in range(c.run.grad_accum):
                    audio = next(batches).to(acc.device)
                    part = self._micro_step(audio, num_quantizers, update_disc, micro == c.run.grad_accum - 1)
                    for k, v in part.items():
                        sums[k] = sums.get(k, 0.0) + v / c.run.grad_accum
                self._optimizer_step(update_disc)
                self.step += 1
                last = self._reduce(sums)
                last.update(step=self.step, num_quantizers=num_quantizers, discriminator_updated=update_disc)
                duration = time.perf_counter() - tick
                last["time/steps_per_s"] = 1 / max(duration, 1e-9)
                last["time/audio_s_per_s"] = c.run.batch_size * c.data.crop_seconds / max(duration, 1e-9)
                logger_.write(last, flush=self.step % c.run.log_every == 0)
                bar.update(1)
                if self.step % c.run.log_every == 0:
                    bar.set_postfix(mel=f"{last['loss/mel']:.3f}", nq=num_quantizers)
                if self.step % c.run.valid_every == 0:
                    logger_.write({"step": self.step, **self.evaluate()}, flush=True)
                if self.step % c.run.save_every == 0 or self.step == c.run.steps:
                    self.save()
        finally:
            bar.close()
            logger_.close()
        return last

    def _reduce(self, metrics: dict[str, float]) -> dict[str, float]:
        if self.world == 1:
            return dict(metrics)
        keys = sorted(metrics)
        values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=self.accelerator.device)
        values = self.accelerator.reduce(values, reduction="mean")
        return dict(zip(keys, values.tolist(), strict=True))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mel distance and L1 on the fixed validation clips at the lowest and highest bandwidth (no learning)."""
        codec = self.accelerator.unwrap_model(self.codec)
        was_training = codec.training
        codec.eval()
        mc, out = self.model.config, {}
        for bandwidth in sorted({mc.target_bandwidths[0], mc.target_bandwidths[-1]}):
            num_quantizers = mc.num_quantizers_for_bandwidth(bandwidth)
            mel, l1 = 0.0, 0.0
            for clips in self.valid_clips.split(max(self.micro_batch, 1)):
                clips = clips.to(self.accelerator.device)
                decoded, _ = codec(clips, num_quantizers)
                share = clips.shape[0] / self.valid_clips.shape[0]
                mel += float(self.mel_loss(decoded, clips)) * share
                l1 += float(time_l1_loss(decoded, clips)) * share
            out[f"valid/mel@{bandwidth:g}kbps"], out[f"valid/l1@{bandwidth:g}kbps"] = mel, l1
        codec.train(was_training)
        return out

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "discriminator": self.accelerator.unwrap_model(self.discriminator).state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "balancer": self.balancer.state_dict(),
            "warmup_balancer": self.warmup_balancer.state_dict() if self.warmup_balancer else None,
            "ema": self.ema.state_dict() if self.ema else None,
            "quantizer_rng": self._quantizer_rng.get_state(),
            "config": self.config.to_dict(),
        }

    def save(self) -> Path:
        """Writes the checkpoint of the current step and exports the model folder to ``run.output_dir``."""
        acc = self.accelerator
        folder = ckpt.save_checkpoint(
            self.output_dir,
            self.step,
            self._state(),
            self.rank,
            self.world,
            self.config.run.keep_checkpoints,
            acc.wait_for_everyone,
        )
        if acc.is_main_process:
            model = self.model
            if self.ema is not None:
                model = type(self.model)(self.model.config)
                model.load_state_dict(self.ema.state_dict())
            ckpt.export_model(model, acc.unwrap_model(self.discriminator), self.discriminator_config, self.output_dir)
        acc.wait_for_everyone()
        return folder

    def _resume(self, folder: Path) -> None:
        state = ckpt.load_checkpoint(folder, self.rank, self.world)
        self.model.load_state_dict(state["model"])
        self.accelerator.unwrap_model(self.discriminator).load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.balancer.load_state_dict(state["balancer"])
        if self.warmup_balancer is not None and state.get("warmup_balancer"):
            self.warmup_balancer.load_state_dict(state["warmup_balancer"])
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self._quantizer_rng.set_state(state["quantizer_rng"])
        self.step = int(state["step"])
        logger.info("Resumed from %s (step %d).", folder, self.step)


class _MetricsWriter:
    """``metrics.jsonl`` (one JSON object per line) and TensorBoard scalars when ``tensorboard`` is installed."""

    def __init__(self, output_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.file = (output_dir / "metrics.jsonl").open("a", encoding="utf-8") if enabled else None
        self.tensorboard = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(output_dir / "tensorboard"))
            except ImportError:
                pass

    def write(self, metrics: dict[str, Any], flush: bool) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(metrics) + "\n")
        if self.tensorboard is not None:
            for key, value in metrics.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.tensorboard.add_scalar(key, value, metrics["step"])
        if flush:
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def train(config: TrainingConfig) -> Path:
    """Trains (or fine-tunes, or resumes) as ``config`` says; returns the exported model folder."""
    trainer = Trainer(config)
    trainer.train()
    return trainer.output_dir


__all__ = ["CodecForTraining", "Trainer", "WeightsEMA", "build_model", "train"]
