"""Loss balancer, tested from its definition: known gradients in, the expected combined gradient out.

With ``l_i = sum(decoded * A_i)`` the gradient of loss ``i`` with respect to ``decoded`` is exactly ``A_i``, so the
combined gradient ``sum_i (w_i / sum w) * R / (eps + avg_i) * A_i`` can be written out by hand.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from encodec_hf.errors import EncodecInputError, TrainingConfigError
from encodec_hf.training.balancer import PAPER_LOSS_WEIGHTS, Balancer


def _linear_losses(decoded: torch.Tensor, grads: dict[str, torch.Tensor], scales: dict | None = None) -> dict:
    scales = scales or {}
    return {name: scales.get(name, 1.0) * (decoded * g).sum() for name, g in grads.items()}


def _item_norm(g: torch.Tensor) -> float:
    return g.reshape(g.shape[0], -1).norm(dim=1).mean().item()


def test_paper_defaults():
    assert PAPER_LOSS_WEIGHTS == {"time": 0.1, "mel": 1.0, "adversarial": 3.0, "feature_matching": 3.0}
    balancer = Balancer()
    assert balancer.weights == PAPER_LOSS_WEIGHTS
    assert (balancer.ema_decay, balancer.total_norm, balancer.per_batch_item) == (0.999, 1.0, True)
    assert balancer.rescale_grads and balancer.epsilon == 1e-12


@pytest.mark.parametrize("per_batch_item", [True, False])
def test_known_gradients_give_the_expected_combined_gradient_over_steps(per_batch_item):
    torch.manual_seed(0)
    weights, decay, total_norm = {"a": 1.0, "b": 3.0}, 0.5, 2.0
    balancer = Balancer(weights, ema_decay=decay, total_norm=total_norm, per_batch_item=per_batch_item)
    sums, counts = {"a": 0.0, "b": 0.0}, {"a": 0.0, "b": 0.0}
    for step in range(4):
        grads = {"a": torch.randn(3, 1, 16) * (step + 1), "b": torch.randn(3, 1, 16) * 0.01}
        decoded = torch.zeros(3, 1, 16, requires_grad=True)
        metrics = balancer.backward(_linear_losses(decoded, grads), decoded)
        expected = torch.zeros(3, 1, 16)
        for name, g in grads.items():
            norm = _item_norm(g) if per_batch_item else g.norm().item()
            sums[name] = decay * sums[name] + norm  # bias-corrected EMA
            counts[name] = decay * counts[name] + 1
            avg = sums[name] / counts[name]
            scale = weights[name] / 4.0 * total_norm / (1e-12 + avg)
            expected += scale * g
            assert metrics[f"norm/{name}"] == pytest.approx(norm, rel=1e-6)
            assert metrics[f"ema_norm/{name}"] == pytest.approx(avg, rel=1e-6)
            assert metrics[f"scale/{name}"] == pytest.approx(scale, rel=1e-6)
        torch.testing.assert_close(decoded.grad, expected, rtol=1e-5, atol=1e-7)
    assert balancer.ema_norms == pytest.approx({k: sums[k] / counts[k] for k in sums}, rel=1e-6)


def test_first_step_gives_each_loss_its_weight_share_of_the_reference_norm():
    # On the first step avg_i = n_i, so each balanced gradient has norm w_i / sum(w) * R.
    grads = {"a": torch.randn(1, 1, 32) * 100.0, "b": torch.randn(1, 1, 32) * 1e-4}
    balancer = Balancer({"a": 1.0, "b": 4.0}, total_norm=10.0)
    decoded = torch.zeros(1, 1, 32, requires_grad=True)
    metrics = balancer.backward(_linear_losses(decoded, grads), decoded)
    for name, share in (("a", 0.2), ("b", 0.8)):
        assert (metrics[f"scale/{name}"] * grads[name]).norm().item() == pytest.approx(10.0 * share, rel=1e-5)


def test_invariant_to_scaling_one_loss_by_a_constant():
    torch.manual_seed(0)
    plain, scaled = Balancer({"a": 1.0, "b": 2.0}, ema_decay=0.9), Balancer({"a": 1.0, "b": 2.0}, ema_decay=0.9)
    for _ in range(3):
        grads = {"a": torch.randn(2, 2, 10), "b": torch.randn(2, 2, 10)}
        d1 = torch.zeros(2, 2, 10, requires_grad=True)
        d2 = torch.zeros(2, 2, 10, requires_grad=True)
        plain.backward(_linear_losses(d1, grads), d1)
        scaled.backward(_linear_losses(d2, grads, scales={"a": 1000.0}), d2)
        torch.testing.assert_close(d2.grad, d1.grad, rtol=1e-5, atol=1e-7)


def test_without_rescaling_the_gradient_is_the_weighted_sum():
    grads = {"a": torch.randn(2, 1, 8), "b": torch.randn(2, 1, 8)}
    decoded = torch.zeros(2, 1, 8, requires_grad=True)
    metrics = Balancer({"a": 0.1, "b": 3.0}, rescale_grads=False).backward(_linear_losses(decoded, grads), decoded)
    torch.testing.assert_close(decoded.grad, 0.1 * grads["a"] + 3.0 * grads["b"])
    assert metrics["scale/a"] == 0.1


def test_backpropagates_once_into_the_model_and_reports_the_effective_loss():
    torch.manual_seed(0)
    model = torch.nn.Conv1d(1, 1, 3, padding=1)
    x, target = torch.randn(2, 1, 20), torch.randn(2, 1, 20)
    decoded = model(x)
    losses = {"l1": (decoded - target).abs().mean(), "l2": (decoded - target).square().mean()}
    g = {name: torch.autograd.grad(loss, decoded, retain_graph=True)[0] for name, loss in losses.items()}
    metrics = Balancer({"l1": 1.0, "l2": 1.0}).backward(losses, decoded)
    out_grad = metrics["scale/l1"] * g["l1"] + metrics["scale/l2"] * g["l2"]
    expected = torch.autograd.grad(model(x), model.weight, out_grad)[0]
    torch.testing.assert_close(model.weight.grad, expected)
    effective = metrics["scale/l1"] * losses["l1"].item() + metrics["scale/l2"] * losses["l2"].item()
    assert metrics["effective_loss"] == pytest.approx(effective, rel=1e-6)


def test_commitment_loss_outside_the_balancer_with_a_shared_graph():
    torch.manual_seed(0)
    encoder, decoder = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    latent = encoder(torch.randn(2, 4))
    decoded = decoder(latent).unsqueeze(1)
    commitment = latent.square().mean()
    commitment.backward(retain_graph=True)  # first, as the graphs share the encoder
    commit_grad = encoder.weight.grad.clone()
    Balancer({"l1": 1.0}).backward({"l1": decoded.abs().mean()}, decoded)
    assert not torch.equal(encoder.weight.grad, commit_grad)  # both contributions accumulated


def test_state_dict_resumes_exactly(tmp_path):
    torch.manual_seed(0)
    steps = [{"a": torch.randn(2, 1, 8), "b": torch.randn(2, 1, 8) * 5} for _ in range(3)]

    def run(balancer, grads):
        decoded = torch.zeros(2, 1, 8, requires_grad=True)
        balancer.backward(_linear_losses(decoded, grads), decoded)
        return decoded.grad

    continuous = Balancer({"a": 1.0, "b": 1.0}, ema_decay=0.7)
    expected = [run(continuous, g) for g in steps][-1]
    first = Balancer({"a": 1.0, "b": 1.0}, ema_decay=0.7)
    run(first, steps[0])
    run(first, steps[1])
    torch.save(first.state_dict(), tmp_path / "balancer.pt")
    resumed = Balancer({"a": 1.0, "b": 1.0}, ema_decay=0.7)
    resumed.load_state_dict(torch.load(tmp_path / "balancer.pt", weights_only=True))
    assert torch.equal(run(resumed, steps[2]), expected)
    with pytest.raises(TrainingConfigError, match="same loss names"):
        Balancer({"a": 1.0}).load_state_dict(first.state_dict())
    with pytest.raises(TrainingConfigError, match="Not a Balancer state dict"):
        Balancer({"a": 1.0}).load_state_dict({"weights": {}})


def test_bad_inputs():
    for weights, match in (({"a": -1.0}, "non-negative"), ({"a": 0.0}, "not all zero"), ({}, "not all zero")):
        with pytest.raises(TrainingConfigError, match=match):
            Balancer(weights)
    with pytest.raises(TrainingConfigError, match="ema_decay"):
        Balancer({"a": 1.0}, ema_decay=0.0)
    balancer = Balancer({"a": 1.0, "b": 1.0})
    decoded = torch.zeros(2, 1, 8, requires_grad=True)
    good = {"a": decoded.sum(), "b": decoded.square().sum()}
    with pytest.raises(TrainingConfigError, match=r"unknown: \['c'\]"):
        balancer.backward({**good, "c": decoded.mean()}, decoded)
    with pytest.raises(TrainingConfigError, match=r"missing: \['b'\]"):
        balancer.backward({"a": good["a"]}, decoded)
    with pytest.raises(EncodecInputError, match="does not require grad"):
        balancer.backward(good, decoded.detach())
    with pytest.raises(EncodecInputError, match="scalar"):
        balancer.backward({"a": decoded * 2, "b": good["b"]}, decoded)
    other = torch.zeros(3, requires_grad=True)
    with pytest.raises(EncodecInputError, match="'b' does not depend on `decoded`"):
        balancer.backward({"a": good["a"], "b": other.sum()}, decoded)
    with pytest.raises(EncodecInputError, match="'b' does not depend on `decoded`"):
        balancer.backward({"a": good["a"], "b": torch.tensor(1.0)}, decoded)
    assert balancer.ema_norms == {}  # rejected calls leave the EMA untouched


_DDP_WORKER = """
import sys, torch, torch.distributed as dist, torch.multiprocessing as mp
from encodec_hf.training.balancer import Balancer

def worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    balancer = Balancer({"a": 1.0, "b": 1.0})
    decoded = torch.zeros(2, 1, 8, requires_grad=True)
    # Rank 1's gradients are 3x rank 0's: the averaged norms are 2x rank 0's on both ranks.
    g = torch.arange(16.0).reshape(2, 1, 8) * (1 + 2 * rank)
    metrics = balancer.backward({"a": (decoded * g).sum(), "b": (decoded * g.flip(-1) ** 2).sum()}, decoded)
    torch.save({"metrics": metrics, "state": balancer.state_dict()}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()

if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2]), nprocs=2)
"""


def test_ddp_ranks_average_norms_and_agree(tmp_path):
    script = tmp_path / "ddp_worker.py"
    script.write_text(textwrap.dedent(_DDP_WORKER))
    src = Path(__file__).resolve().parents[1] / "src"
    # Loopback for gloo's connections: no dependence on the machine's hostname resolving.
    loopback = "lo0" if sys.platform == "darwin" else "lo"
    env = {"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "GLOO_SOCKET_IFNAME": loopback}
    subprocess.run(
        [sys.executable, str(script), str(tmp_path / "init"), str(tmp_path)], check=True, env=env, timeout=120
    )
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert results[0] == results[1]  # same scales and the same EMA state on every rank
    g0 = torch.arange(16.0).reshape(2, 1, 8)
    assert results[0]["metrics"]["norm/a"] == pytest.approx(2.0 * _item_norm(g0), rel=1e-6)
