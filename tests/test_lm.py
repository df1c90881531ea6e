"""EncodecLM against the original `LMModel`: bit-identical probabilities, step after step."""

import pytest
import torch

from encodec_hf.ecdc.lm import EncodecLM, EncodecLMConfig
from encodec_hf.ecdc.lm_exact import KernelChoices


@pytest.fixture(autouse=True)
def _lm_threads_as_the_original(monkeypatch):
    """Meta's LM runs at the process's thread count and its bits depend on it; ours runs at one thread unless told
    otherwise (`encodec_hf.threads`). Comparing bits, both sides run at the process's count."""
    monkeypatch.setenv("ENCODEC_HF_NUM_THREADS", "inherit")


def _original_lm(n_q, past_context, seed=0):
    from reference_encodec import import_reference

    torch.manual_seed(seed)
    return import_reference().model.LMModel(n_q, 1024, num_layers=5, dim=200, past_context=past_context).eval()


def _original_probas(lm, codes):
    """Per-step probabilities `[T, K, card]` of the original, driven as `encodec.compress` drives it."""
    states, offset, out = None, 0, []
    inp = torch.zeros(1, codes.shape[1], 1, dtype=torch.long)
    with torch.no_grad():
        for t in range(codes.shape[-1]):
            probas, states, offset = lm(inp, states, offset)
            out.append(probas[0, :, :, 0].t())
            inp = 1 + codes[:, :, t : t + 1]
    return torch.stack(out)


@pytest.mark.parametrize(
    "n_q, past_context, num_codebooks, steps, capacity",
    [
        (8, 20, 4, 70, 4096),  # window slides many times, past the row-stable threshold
        (8, 20, 8, 50, 45),  # a small buffer forces the window back to the front
        (32, 262, 2, 30, 4096),  # the 24 kHz geometry, first frames (exact recompute regime)
    ],
)
def test_bit_identical_to_original(n_q, past_context, num_codebooks, steps, capacity):
    original = _original_lm(n_q, past_context)
    ours = EncodecLM(EncodecLMConfig(num_codebooks=n_q, past_context=past_context))
    ours.load_state_dict(original.state_dict(), strict=True)
    ours.eval()
    codes = torch.randint(1024, (1, num_codebooks, steps), generator=torch.Generator().manual_seed(3))
    expected = _original_probas(original, codes)
    state = ours.init_state(capacity=capacity)
    for t in range(steps):
        probas = ours.step_first(num_codebooks, state) if t == 0 else ours.step(codes[0, :, t - 1], state)
        assert torch.equal(probas, expected[t]), f"step {t} differs"
    forward, _ = ours(codes)  # [1, card, K, T], the original's output layout
    assert torch.equal(forward[0].permute(2, 1, 0), expected)


def _pair(n_q=8, past_context=20, seed=0):
    original = _original_lm(n_q, past_context, seed)
    ours = EncodecLM(EncodecLMConfig(num_codebooks=n_q, past_context=past_context))
    ours.load_state_dict(original.state_dict(), strict=True)
    return original, ours.eval()


def test_position_cache_is_bounded_and_bits_unchanged():
    original, ours = _pair()
    ours.max_cached_positions = 7  # long files would otherwise keep one tensor per frame offset
    codes = torch.randint(1024, (1, 4, 30), generator=torch.Generator().manual_seed(5))
    forward, _ = ours(codes)
    assert 0 < len(ours.exact_plan().positions) <= 7
    assert torch.equal(forward[0].permute(2, 1, 0), _original_probas(original, codes))


def _check_against_original(original, ours, steps=40):
    """Probabilities of our LM, both block-wise and frame by frame, equal the original's."""
    codes = torch.randint(1024, (1, 6, steps), generator=torch.Generator().manual_seed(7))
    expected = _original_probas(original, codes)
    forward, _ = ours(codes)
    assert torch.equal(forward[0].permute(2, 1, 0), expected)
    state = ours.init_state()
    for t in range(steps):
        probas = ours.step_first(6, state) if t == 0 else ours.step(codes[0, :, t - 1], state)
        assert torch.equal(probas, expected[t]), f"step {t} differs"


def test_plan_is_kept_until_its_key_changes():
    _, lm = _pair()
    plan = lm.exact_plan()
    assert lm.exact_plan() is plan
    lm(torch.randint(1024, (1, 4, 5)))  # running it changes nothing the plan depends on
    assert lm.exact_plan() is plan and plan.key.num_threads == torch.get_num_threads()
    assert plan.key.device == torch.device("cpu") and plan.key.dtype == torch.float32


def test_plan_key_follows_the_thread_count():
    original, lm = _pair()
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            plan = lm.exact_plan()
            assert plan.key.num_threads == threads  # and its kernel choices were measured with them
            _check_against_original(original, lm)
    finally:
        torch.set_num_threads(previous)


def test_plan_key_follows_in_place_weight_edits_and_loading():
    original, lm = _pair()
    _check_against_original(original, lm)
    plan = lm.exact_plan()
    with torch.no_grad():
        # The stacked copies (embeddings, output heads) and the views (in_proj split) must all follow.
        for model in (original, lm):
            model.emb[2].weight.mul_(1.5)
            model.linears[1].bias.add_(0.25)
            model.transformer.layers[3].self_attn.in_proj_weight.mul_(0.5)
    assert lm.exact_plan().key != plan.key
    _check_against_original(original, lm)

    other, _ = _pair(seed=1)
    plan = lm.exact_plan()
    lm.load_state_dict(other.state_dict())
    assert lm.exact_plan().key.weights_version != plan.key.weights_version
    _check_against_original(other, lm)

    plan = lm.exact_plan()
    lm.linears[0].weight = torch.nn.Parameter(lm.linears[0].weight.detach() * 2)  # a new parameter object
    assert lm.exact_plan() is not plan
    assert torch.equal(lm.exact_plan().heads[0][0], lm.linears[0].weight)


def test_exact_recompute_is_part_of_the_key_and_gives_the_same_bits():
    original, lm = _pair(past_context=16)
    cached = lm.exact_plan()
    _check_against_original(original, lm)
    lm.exact_recompute = True
    recompute = lm.exact_plan()
    assert recompute.key.exact_recompute and recompute.kernels == KernelChoices(stable_rows=None, batched_heads=False)
    _check_against_original(original, lm)
    lm.exact_recompute = False
    assert lm.exact_plan().kernels == cached.kernels


def test_lms_made_under_inference_mode(tmp_path):
    """`compress` loads the LM under inference mode: from_pretrained still makes normal tensors, whose in-place edits
    the plan key sees; an LM built under inference mode (no version counters) runs too."""
    torch.manual_seed(0)
    lm = EncodecLM(EncodecLMConfig(num_codebooks=2, past_context=10)).eval()
    lm.save_pretrained(tmp_path)
    codes = torch.randint(1024, (1, 2, 12))
    expected, _ = lm(codes)
    with torch.inference_mode():
        loaded = EncodecLM.from_pretrained(tmp_path)
        built = EncodecLM(lm.config).eval()
        built.load_state_dict(lm.state_dict())
        assert torch.equal(loaded(codes)[0], expected) and torch.equal(built(codes)[0], expected)
    assert not any(p.is_inference() for p in loaded.parameters())
    plan = loaded.exact_plan()
    with torch.no_grad():
        loaded.linears[0].bias.add_(1.0)
    assert loaded.exact_plan() is not plan


def test_save_load_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    lm = EncodecLM(EncodecLMConfig(num_codebooks=2, past_context=10)).eval()
    lm.save_pretrained(tmp_path)
    loaded = EncodecLM.from_pretrained(tmp_path)
    assert loaded.config == lm.config
    codes = torch.randint(1024, (1, 2, 5))
    assert torch.equal(lm(codes)[0], loaded(codes)[0])
    empty = tmp_path / "codec_without_lm"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="lm-checkpoint"):
        EncodecLM.from_pretrained(empty)
    state = lm.init_state()
    with pytest.raises(ValueError, match="codebooks"):
        lm.step_first(3, state)
    with pytest.raises(ValueError, match="Codes must lie"):
        lm.step(torch.tensor([1024, 0]), lm.init_state())
    with pytest.raises(ValueError, match="divisible"):
        EncodecLMConfig(dim=201)


def test_blocks_give_the_bits_of_frame_by_frame_steps():
    """Compression runs the LM a block of frames at a time (layer by layer); decoding runs it frame by frame
    with prefetching. Both must give the same CDFs, here on the 24 kHz geometry past its 262-frame window."""
    import numpy as np

    from encodec_hf.ecdc.container import decode_lm_segment, encode_lm_segment

    torch.manual_seed(0)
    lm = EncodecLM(EncodecLMConfig.for_codec(32, 75)).eval()
    codes = torch.randint(1024, (6, 300), generator=torch.Generator().manual_seed(5))
    blocks = np.concatenate(list(lm.iter_cdfs(codes, block_frames=64)))
    state = lm.init_state()
    for t in range(codes.shape[1]):
        previous = None if t == 0 else codes[:, t - 1]
        assert np.array_equal(lm.step_cdfs(previous, state, 6), blocks[t]), f"frame {t} differs"
    data = encode_lm_segment(lm, codes.numpy())
    decoded, end = decode_lm_segment(lm, data, 0, 6, 300)
    assert end == len(data) and np.array_equal(decoded, codes.numpy())


def test_frames_probas_bad_arguments():
    lm = EncodecLM(EncodecLMConfig(num_codebooks=2, past_context=10)).eval()
    state = lm.init_state(capacity=30)  # room for max_block_frames = 30 - 10 - 2 frames per call
    with pytest.raises(ValueError, match=r"\[K, F\]"):
        lm.frames_probas(torch.zeros(1, 2, 3, dtype=torch.long), state)
    with pytest.raises(ValueError, match="shorter blocks"):
        lm.frames_probas(torch.zeros(2, 19, dtype=torch.long), state)
    with pytest.raises(ValueError, match="no frame"):
        lm.frames_probas(torch.zeros(2, 0, dtype=torch.long), state)
    lm.frames_probas(torch.zeros(2, 18, dtype=torch.long), state)
    with pytest.raises(ValueError, match="one codebook count"):
        lm.frames_probas(torch.zeros(1, 3, dtype=torch.long), state)
    state.previous_codes = None
    with pytest.raises(ValueError, match="previous_codes"):
        lm.frames_probas(torch.zeros(2, 3, dtype=torch.long), state)
