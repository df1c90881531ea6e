"""Codebook learning (encodec_hf.training.codebook): EMA maths, k-means init, dead codes that stay replaced,
the straight-through estimator on the sum of layers, and the per-step codebook count."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from conftest import random_model, tiny_config

from encodec_hf import EncodecModel
from encodec_hf.training.codebook import (
    TrainingQuantizer,
    kmeans,
    nearest,
    num_quantizers_for_step,
)


def _latents(batch: int = 2, dim: int = 8, frames: int = 50, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, dim, frames, generator=torch.Generator().manual_seed(seed))


def _flat(latents: torch.Tensor) -> torch.Tensor:
    return latents.transpose(1, 2).reshape(-1, latents.shape[1])


def test_ema_update_follows_the_reference_formula():
    model = random_model(tiny_config())
    codebook = model.quantizer.layers[0].codebook
    codebook.cluster_size.uniform_(3, 5)  # no dead codes, so only the EMA step acts
    codebook.embed_avg.copy_(codebook.embed * codebook.cluster_size[:, None])
    before = {k: v.clone() for k, v in codebook.state_dict().items()}
    quantizer = TrainingQuantizer(model.quantizer).train()
    latents = _latents()
    out = quantizer(latents, num_quantizers=1)

    x = _flat(latents)
    idx = nearest(x, before["embed"])
    onehot = F.one_hot(idx, 64).float()
    cs = 0.99 * before["cluster_size"] + 0.01 * onehot.sum(0)
    ea = 0.99 * before["embed_avg"] + 0.01 * (onehot.t() @ x)
    smoothed = (cs + 1e-5) / (cs.sum() + 64 * 1e-5) * cs.sum()
    torch.testing.assert_close(codebook.cluster_size, cs, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(codebook.embed_avg, ea, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(codebook.embed, ea / smoothed[:, None], rtol=1e-5, atol=1e-6)
    # The codes are the ones chosen before the update, as the inference quantizer would have chosen them.
    assert torch.equal(out.codes[:, 0].reshape(-1), idx.view(2, 50).reshape(-1))


def test_dead_code_is_replaced_and_the_replacement_survives_the_step():
    torch.manual_seed(0)
    model = random_model(tiny_config())
    codebook = model.quantizer.layers[0].codebook
    codebook.cluster_size.fill_(10.0)
    codebook.embed_avg.copy_(codebook.embed * 10.0)
    dead = 5
    codebook.embed[dead] = 1e3  # far from every latent: never chosen
    codebook.embed_avg[dead] = 1e3 * 0.5
    codebook.cluster_size[dead] = 0.5  # below the threshold of 2
    quantizer = TrainingQuantizer(model.quantizer).train()
    latents = _latents()
    samples = _flat(latents)

    first = quantizer(latents, num_quantizers=1)
    assert not (first.codes == dead).any()
    # After the step the code *is* one of the batch vectors (the reference leaves embed_avg / cs' here instead).
    distance = (samples - codebook.embed[dead]).abs().sum(1)
    assert float(distance.min()) == 0.0
    assert float(codebook.cluster_size[dead]) == 2.0
    torch.testing.assert_close(codebook.embed_avg[dead], codebook.embed[dead] * 2.0)

    # The next step with the same batch uses it: the vector it was copied from is now exactly on it.
    second = quantizer(latents, num_quantizers=1)
    assert (second.codes == dead).any()
    assert float(codebook.cluster_size[dead]) > 0.99 * 2.0


def test_kmeans_init_on_the_first_batch():
    torch.manual_seed(0)
    model = EncodecModel(tiny_config())
    # The trainer relies on this contract for models trained from scratch: fresh codebooks wait for k-means.
    assert all(float(layer.codebook.inited) == 0.0 for layer in model.quantizer.layers)
    quantizer = TrainingQuantizer(model.quantizer).train()
    latents = _latents(batch=4, frames=100)
    quantizer(latents, num_quantizers=2)
    for layer in model.quantizer.layers[:2]:
        assert float(layer.codebook.inited) == 1.0
        assert float(layer.codebook.embed.abs().sum()) > 0
    # Unused codebooks stay uninitialised until a step uses them.
    assert float(model.quantizer.layers[2].codebook.inited) == 0.0

    samples = _flat(latents)
    torch.manual_seed(1)
    means, counts = kmeans(samples, 16, num_iters=20)
    assert float(counts.sum()) == samples.shape[0]
    # Lloyd iterations do not increase the distortion from the sampled starting points.
    torch.manual_seed(1)
    start, _ = kmeans(samples, 16, num_iters=0)

    def distortion(c):
        return (samples - c[nearest(samples, c)]).pow(2).sum()

    assert float(distortion(means)) < float(distortion(start))


def test_commitment_loss_of_every_layer_reaches_the_latents():
    model = random_model(tiny_config())
    quantizer = TrainingQuantizer(model.quantizer, learn_codebooks=False).train()
    latents = _latents().requires_grad_()
    out = quantizer(latents, num_quantizers=3)
    (grad,) = torch.autograd.grad(out.commitment_loss, latents)

    # Analytic gradient of mean_k mse(q_k, r_k) with r_k = z - sum_{j<k} q_j (q_j constant): sum over all layers.
    z = _flat(latents.detach())
    residual, expected = z, torch.zeros_like(z)
    for k in range(3):
        idx = nearest(residual, model.quantizer.layers[k].codebook.embed)
        q = model.quantizer.layers[k].codebook.embed[idx]
        expected += 2 * (residual - q) / residual.numel() / 3
        residual = residual - q
    expected = expected.view(2, 50, 8).transpose(1, 2)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-8)

    # A per-layer straight-through estimator (the reference's) would give layer 0's share only.
    layer0 = 2 * (z - model.quantizer.layers[0].codebook.embed[nearest(z, model.quantizer.layers[0].codebook.embed)])
    layer0 = (layer0 / z.numel() / 3).view(2, 50, 8).transpose(1, 2)
    assert float((grad - layer0).abs().max()) > 1e-4

    # And the output passes gradients straight through: d(sum q)/dz = I.
    (identity,) = torch.autograd.grad(out.quantized.sum(), latents)
    assert torch.equal(identity, torch.ones_like(latents))


def test_frozen_or_eval_quantizer_matches_inference_and_leaves_buffers_alone():
    model = random_model(tiny_config())
    before = {k: v.clone() for k, v in model.quantizer.state_dict().items()}
    latents = _latents()
    for quantizer in (
        TrainingQuantizer(model.quantizer, learn_codebooks=False).train(),
        TrainingQuantizer(model.quantizer).eval(),
    ):
        out = quantizer(latents, num_quantizers=4)
        assert torch.equal(out.codes, model.quantizer.encode(latents, 4))
        torch.testing.assert_close(out.quantized, model.quantizer.decode(out.codes), rtol=0, atol=1e-6)
    for key, value in model.quantizer.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_codebook_count_per_step_is_reproducible_and_covers_every_bandwidth():
    config = tiny_config()  # 6, 12, 24 kbps -> 1, 2, 4 codebooks
    counts = [num_quantizers_for_step(config, seed=3, step=s) for s in range(60)]
    assert counts == [num_quantizers_for_step(config, seed=3, step=s) for s in range(60)]
    assert set(counts) == {1, 2, 4}
    assert counts != [num_quantizers_for_step(config, seed=4, step=s) for s in range(60)]
