"""transformers' model-class contract, checked on encodec_hf's classes and on transformers' own.

The wheel of transformers does not ship its test suite (``tests/test_modeling_common.py`` with
``ModelTesterMixin`` lives only in its repository), so these tests restate, in our words, what four of its common
EnCodec tests check, with the configuration of its ``EncodecModelTester``:

* ``test_init_weights_can_init_buffers``: a model built by ``__init__`` (without running inits) and one built on
  the meta device then initialised by ``init_weights()`` have the same buffers;
* ``test_can_init_all_missing_weights``: ``from_pretrained(None, config=..., state_dict={})`` initialises every
  tensor, exactly as ``__init__`` does when both inits start from the same seed;
* ``test_model_weights_reload_no_missing_tied_weights``: a checkpoint with none of the weights loads with
  ``output_loading_info=True`` and reports every parameter and persistent buffer as missing;
* ``test_feed_forward_chunking``: a fresh model gives the same audio chunked (1 s chunks, no overlap) and not.

Each runs on both classes, so a difference between them is a failure of encodec_hf's, not of the restatement.
"""

from __future__ import annotations

import copy
import os
import re
from contextlib import contextmanager

import pytest
import torch
import transformers
from safetensors.torch import save_file
from transformers.initialization import no_init_weights
from transformers.modeling_utils import PreTrainedModel

import encodec_hf

CLASSES = {
    "encodec_hf": (encodec_hf.EncodecModel, encodec_hf.EncodecConfig),
    "transformers": (transformers.EncodecModel, transformers.EncodecConfig),
}


def config_of_tester(name: str):
    """The configuration of transformers' ``EncodecModelTester`` (2 channels, hop 32, 64 codes)."""
    _, config_class = CLASSES[name]
    return config_class(
        audio_channels=2,
        hidden_size=32,
        num_filters=8,
        num_residual_layers=1,
        upsampling_ratios=[8, 4],
        num_lstm_layers=1,
        codebook_size=64,
    )


@contextmanager
def seeded_init(seed: int = 0):
    """Every ``initialize_weights`` pass starts from the same seed, so two models whose ``_init_weights`` cover
    every tensor get identical values whatever else drew random numbers before (torch's own layer inits)."""
    original = PreTrainedModel.initialize_weights

    def seeded(self):
        torch.manual_seed(seed)
        return original(self)

    PreTrainedModel.initialize_weights = seeded
    try:
        yield
    finally:
        PreTrainedModel.initialize_weights = original


@pytest.mark.parametrize("name", CLASSES)
def test_init_weights_gives_the_buffers_of_init(name):
    model_class, _ = CLASSES[name]
    config = config_of_tester(name)
    with no_init_weights():
        from_init = model_class(copy.deepcopy(config))
    with torch.device("meta"):
        from_meta = model_class(copy.deepcopy(config))
    from_meta.to_empty(device="cpu")
    from_meta.init_weights()
    a, b = dict(from_init.named_buffers()), dict(from_meta.named_buffers())
    assert sorted(a) == sorted(b)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_fresh_codebooks_are_untrained_zeros():
    """Before training or loading, codebooks are the original's pre-k-means state (zeros, not inited)."""
    model = encodec_hf.EncodecModel(config_of_tester("encodec_hf"))
    reference = transformers.EncodecModel(config_of_tester("transformers"))
    for ours, theirs in zip(model.quantizer.layers, reference.quantizer.layers, strict=True):
        for buffer in ("embed", "embed_avg", "cluster_size"):
            assert torch.equal(getattr(ours.codebook, buffer), getattr(theirs.codebook, buffer))
            assert not getattr(ours.codebook, buffer).any()
        assert ours.codebook.inited.item() == 0  # k-means has not run (transformers marks it 1 regardless)
    model.eval()
    with torch.inference_mode():
        codes = model.encode(torch.randn(1, 2, 320), bandwidth=model.config.target_bandwidths[-1]).audio_codes
    assert not codes.any()  # every vector is nearest to the first of equal (zero) codes


@pytest.mark.parametrize("name", CLASSES)
def test_from_pretrained_with_empty_state_dict_initialises_everything(name):
    model_class, _ = CLASSES[name]
    config = config_of_tester(name)
    with seeded_init():
        from_init = model_class(copy.deepcopy(config))
        from_pretrained = model_class.from_pretrained(None, config=copy.deepcopy(config), state_dict={})
    tensors = list(from_pretrained.named_parameters()) + list(from_pretrained.named_buffers())
    assert [k for k, v in tensors if v.device.type == "meta"] == []
    a, b = from_init.state_dict(), from_pretrained.state_dict()
    assert sorted(a) == sorted(b)
    # transformers' test leaves the weight-norm parametrizations out (its own model does not re-initialise
    # them); encodec_hf's `_init_weights` covers them, so they are compared too.
    compared = [k for k in a if name == "encodec_hf" or not re.search(r"\.parametrizations\..*?\.original[01]", k)]
    assert any(".parametrizations." in k for k in compared) == (name == "encodec_hf")
    assert [k for k in compared if not torch.equal(a[k], b[k])] == []


@pytest.mark.parametrize("name", CLASSES)
def test_checkpoint_without_weights_reports_every_tensor_missing(name, tmp_path):
    model_class, _ = CLASSES[name]
    model_class(config_of_tester(name)).save_pretrained(tmp_path)
    save_file({"tensor": torch.tensor([1, 2])}, os.path.join(tmp_path, "model.safetensors"), metadata={"format": "pt"})
    reloaded, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
    persistent = set(reloaded.state_dict())
    names = set(dict(reloaded.named_parameters())) | set(dict(reloaded.named_buffers()))
    missing = set(info["missing_keys"])
    assert missing - names == set()
    assert (names & persistent) - missing == set()
    assert set(info["unexpected_keys"]) == {"tensor"}


@pytest.mark.parametrize("name", CLASSES)
def test_fresh_model_gives_the_same_audio_chunked_or_not(name):
    model_class, _ = CLASSES[name]
    config = config_of_tester(name)
    config.sampling_rate = 10
    x = torch.rand(2, 2, 40).repeat(1, 1, 10)  # the tester's inputs (2 items instead of 12), tiled as the test does
    outputs = []
    for chunk_length_s, overlap in ((None, None), (1.0, 0.0)):
        config = copy.deepcopy(config)
        config.chunk_length_s, config.overlap = chunk_length_s, overlap
        torch.manual_seed(0)
        model = model_class(config).eval()
        with torch.no_grad():
            outputs.append(model(x)[1])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-1, atol=1e-2)


def test_fresh_conv_weights_follow_torch_default_init():
    """Convs start as torch's `reset_parameters` leaves them (the original's starting point), weight norm with
    g = ||v||, whichever path builds the model."""
    config = config_of_tester("encodec_hf")
    model = encodec_hf.EncodecModel.from_pretrained(None, config=config, state_dict={})
    conv = model.encoder.layers[0].conv
    v = conv.parametrizations.weight.original1  # [out, in, k]
    fan_in = v.shape[1] * v.shape[2]
    assert v.abs().max() <= 1 / fan_in**0.5 and v.std() > 0.3 / fan_in**0.5  # kaiming_uniform_(a=sqrt(5))
    assert conv.bias.abs().max() <= 1 / fan_in**0.5 and conv.bias.any()
    torch.testing.assert_close(conv.parametrizations.weight.original0, torch.norm_except_dim(v, 2, 0))
    torch.testing.assert_close(conv.weight, v)
