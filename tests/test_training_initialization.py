"""Weight initialisation of from-scratch codecs (encodec_hf.training.initialization) and the codebook options
the trainer passes to its quantizer."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_FIELDS
from test_trainer import tiny_training_config, write_clips

from encodec_hf import EncodecConfig, EncodecModel
from encodec_hf.codec.seanet import EncodecResnetBlock
from encodec_hf.training.config import TrainingConfig
from encodec_hf.training.initialization import RESIDUAL_BRANCH_SCALE, initialize_weights
from encodec_hf.training.trainer import Trainer, build_model


def _first_to_last_gradient_ratio(model: EncodecModel) -> float:
    """|grad| of the encoder's first convolution over the decoder's last one, for an L1 reconstruction loss."""
    torch.manual_seed(0)
    audio = 0.1 * torch.randn(2, 1, 4000)
    decoded = model.decoder(model.encoder(audio))[..., : audio.shape[-1]]
    (decoded - audio).abs().mean().backward()
    first = model.encoder.layers[0].conv.parametrizations.weight.original1.grad.norm()
    last = model.decoder.layers[-1].conv.parametrizations.weight.original1.grad.norm()
    return float(first / last)


def _conv_layers(model):
    return [m for m in model.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]


def test_variance_preserving_init_lets_the_gradient_reach_the_encoder():
    config = EncodecConfig.encodec_24khz(num_filters=8, hidden_size=32)
    torch.manual_seed(0)
    plain = EncodecModel(config)
    torch.manual_seed(0)
    scaled = EncodecModel(config)
    initialize_weights(scaled, "variance_preserving", torch.Generator().manual_seed(0))
    # Measured: ~1e-7 with the layers' own init (below Adam's epsilon once the loss' gradient is small),
    # ~0.1 after; the bounds leave orders of magnitude either side.
    assert _first_to_last_gradient_ratio(plain) < 1e-4
    assert _first_to_last_gradient_ratio(scaled) > 1e-2


def test_variance_preserving_init_sets_the_weights_it_promises():
    model = EncodecModel(EncodecConfig(**TINY_FIELDS))
    initialize_weights(model, "variance_preserving", torch.Generator().manual_seed(3))
    branch_ends = {id(block.block[-1].conv) for block in model.modules() if isinstance(block, EncodecResnetBlock)}
    assert branch_ends
    for conv in _conv_layers(model):
        direction = conv.parametrizations.weight.original1
        # g = ||v||: the weight is v itself, scaled down at the end of each residual branch (SkipInit).
        scale = RESIDUAL_BRANCH_SCALE if id(conv) in branch_ends else 1.0
        torch.testing.assert_close(conv.weight, direction * scale)
        if isinstance(conv, torch.nn.ConvTranspose1d):
            fan_in = direction.shape[0] * direction.shape[2] / conv.stride[0]
        else:
            fan_in = direction.shape[1] * direction.shape[2]
        if direction.numel() >= 256:  # enough draws for the sample deviation to be within 25 %
            assert direction.std().item() == pytest.approx(fan_in**-0.5, rel=0.25)
        if conv.bias is not None:
            assert torch.count_nonzero(conv.bias) == 0
    again = EncodecModel(EncodecConfig(**TINY_FIELDS))
    initialize_weights(again, "variance_preserving", torch.Generator().manual_seed(3))
    for a, b in zip(_conv_layers(model), _conv_layers(again), strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))  # the generator
        # alone decides the convolutions' draw (the LSTMs keep PyTorch's own, from the global RNG)


def test_torch_init_leaves_the_model_untouched_and_unknown_schemes_are_refused():
    model = EncodecModel(EncodecConfig(**TINY_FIELDS))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    initialize_weights(model, "torch")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="xavier"):
        initialize_weights(model, "xavier")


def test_trainer_applies_the_init_and_the_codebook_options(tmp_path):
    clips = write_clips(tmp_path / "data")
    values = tiny_training_config(clips, tmp_path / "run")
    values["model"]["weight_init"] = "variance_preserving"
    values["codebook"] = {"dead_code_threshold": 0.25, "ema_decay": 0.9}
    values["losses"]["time_loss"] = "mse"
    config = TrainingConfig.from_dict(values)
    expected = EncodecModel(EncodecConfig(**TINY_FIELDS))
    initialize_weights(expected, "variance_preserving", torch.Generator().manual_seed(config.run.seed))
    built = build_model(config)
    for key, value in expected.state_dict().items():
        if "parametrizations" in key or key.endswith("bias"):
            assert torch.equal(built.state_dict()[key], value), key
    trainer = Trainer(config)
    assert trainer.codec.quantizer.dead_code_threshold == 0.25
    assert trainer.codec.quantizer.decay == 0.9
    last = trainer.train()
    assert last["loss/time"] > 0 and all(torch.isfinite(torch.tensor(v)) for k, v in last.items() if "loss/" in k)
