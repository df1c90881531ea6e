import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from encodec_hf.ecdc.bitpacking import BitPacker, BitUnpacker, pack, packed_size, unpack
from encodec_hf.errors import EcdcFormatError


def test_known_vector_10_bits():
    assert pack([1, 2, 3, 1023, 512], 10).hex() == "010830c0ff0002"
    assert unpack(bytes.fromhex("010830c0ff0002"), 10, 5).tolist() == [1, 2, 3, 1023, 512]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 16).flatmap(lambda b: st.tuples(st.just(b), st.lists(st.integers(0, 2**b - 1), max_size=300))))
def test_round_trip_and_streaming_equivalence(bits_values):
    bits, values = bits_values
    data = pack(values, bits)
    assert len(data) == packed_size(len(values), bits)
    assert unpack(data, bits, len(values)).tolist() == values
    fo = io.BytesIO()
    packer = BitPacker(bits, fo)
    for v in values:
        packer.push(v)
    packer.flush()
    assert fo.getvalue() == data
    unpacker = BitUnpacker(bits, io.BytesIO(data))
    assert [unpacker.pull() for _ in values] == values


def test_same_bytes_as_original():
    from reference_encodec import import_reference

    binary = import_reference().binary
    rng = np.random.default_rng(0)
    for bits in (1, 3, 10, 11, 16):
        values = rng.integers(0, 2**bits, size=257).tolist()
        fo = io.BytesIO()
        packer = binary.BitPacker(bits, fo)
        for v in values:
            packer.push(v)
        packer.flush()
        assert pack(values, bits) == fo.getvalue()


def test_unpacker_end_of_stream_and_errors():
    unpacker = BitUnpacker(10, io.BytesIO(b"\x01"))
    assert unpacker.pull() is None
    with pytest.raises(EcdcFormatError, match="Truncated"):
        unpack(b"\x00" * 3, 10, 3)
    with pytest.raises(ValueError, match="must lie in"):
        pack([1024], 10)
    with pytest.raises(ValueError, match="bits"):
        pack([1], 0)
    with pytest.raises(ValueError, match="fit"):
        BitPacker(4, io.BytesIO()).push(16)
