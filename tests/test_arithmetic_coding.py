import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from encodec_hf.ecdc.arithmetic_coding import ArithmeticDecoder, ArithmeticEncoder, build_stable_quantized_cdf
from encodec_hf.errors import EcdcFormatError


def _encode(symbols, cdfs):
    enc = ArithmeticEncoder()
    for s, cdf in zip(symbols, cdfs, strict=True):
        enc.push(s, cdf)
    return enc.finish()


def test_spec_vectors():
    uniform = build_stable_quantized_cdf(torch.full((1024,), 1 / 1024))
    assert uniform[0] == 16383 and uniform[-1] == 16776192
    assert _encode([5], [uniform]).hex() == "80fcdf"
    assert _encode([0, 1, 1023, 512, 7, 100], [uniform] * 6).hex() == "0000f83f059813e06104"
    cdf = build_stable_quantized_cdf(torch.softmax(torch.arange(8.0), 0))
    assert cdf.tolist() == [9675, 35973, 107456, 301764, 829945, 2265688, 6168439, 16777213]
    assert _encode([7, 7, 6, 0, 7], [cdf] * 5).hex() == "e5ee5b295f"


def test_batched_cdf_equals_per_row_and_original():
    from reference_encodec import import_reference

    ac = import_reference().quantization.ac
    torch.manual_seed(0)
    pdfs = torch.softmax(torch.randn(16, 1024) * 3, -1)
    batched = build_stable_quantized_cdf(pdfs, check=False)
    for k in range(16):
        assert torch.equal(batched[k], build_stable_quantized_cdf(pdfs[k]))
        assert torch.equal(batched[k], ac.build_stable_quantized_cdf(pdfs[k], 24, check=False))


def test_bytes_identical_to_original_and_round_trip():
    from reference_encodec import import_reference

    ac = import_reference().quantization.ac
    gen = torch.Generator().manual_seed(1)
    pdfs = torch.softmax(torch.randn(400, 1024, generator=gen) * 4, -1)
    symbols = torch.multinomial(pdfs, 1, generator=gen)[:, 0].tolist()
    symbols[::37] = [1023] * len(symbols[::37])  # some unlikely symbols, to exercise long straddles
    cdfs = build_stable_quantized_cdf(pdfs)
    fo = io.BytesIO()
    reference = ac.ArithmeticCoder(fo)
    for s, cdf in zip(symbols, cdfs, strict=True):
        reference.push(s, cdf)
    reference.flush()
    ours = _encode(symbols, cdfs)
    assert ours == fo.getvalue()
    dec = ArithmeticDecoder(ours + b"trailing")
    assert [dec.pull(cdf.numpy()) for cdf in cdfs] == symbols
    assert dec.bytes_consumed == len(ours)


@settings(max_examples=40, deadline=None)
# From 16 symbols: with 2 symbols a softmax summing to 1 + 1 ulp overflows 2**24 (the check catches it).
@given(st.integers(16, 300), st.integers(1, 60), st.integers(0, 2**31 - 1))
def test_round_trip_random_pdfs(cardinality, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    pdfs = torch.softmax(torch.randn(steps, cardinality, generator=gen) * 5, -1)
    symbols = torch.randint(cardinality, (steps,), generator=gen).tolist()
    cdfs = build_stable_quantized_cdf(pdfs).numpy()
    data = _encode(symbols, cdfs)
    dec = ArithmeticDecoder(data)
    assert [dec.pull(c) for c in cdfs] == symbols
    assert dec.bytes_consumed == len(data)


def test_truncated_stream_raises():
    cdfs = build_stable_quantized_cdf(torch.full((50, 1024), 1 / 1024)).numpy()
    data = _encode(list(range(50)), cdfs)
    dec = ArithmeticDecoder(data[: len(data) // 2])
    with pytest.raises(EcdcFormatError, match="ended sooner"):
        for cdf in cdfs:
            dec.pull(cdf)


def test_cdf_argument_errors():
    with pytest.raises(ValueError, match="min_range"):
        build_stable_quantized_cdf(torch.ones(4) / 4, min_range=1)
    with pytest.raises(ValueError, match="do not fit"):
        build_stable_quantized_cdf(torch.ones(2**20) / 2**20, total_range_bits=20)
    with pytest.raises(ValueError, match="overflows"):
        build_stable_quantized_cdf(torch.ones(8))
    with pytest.raises(ValueError, match="Empty range"):
        ArithmeticEncoder().push(1, np.array([5, 5, 10]))
