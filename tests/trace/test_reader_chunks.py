"""The reader's raw-chunk path (trace._chunks): fletcher32 checked in numpy agrees with HDF5."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from tinytelem.trace._chunks import fletcher32_matches, read_float32_checked
from tinytelem.trace.reader import open_trace
from tinytelem.trace.writer import TraceWriter


def hdf5_fletcher32(data: bytes) -> int:
    """H5_checksum_fletcher32, transcribed (big-endian 16-bit words, 360-word blocks)."""
    words = len(data) // 2
    sum1 = sum2 = 0
    pos = 0
    while words:
        block = min(words, 360)
        words -= block
        for _ in range(block):
            sum1 += (data[pos] << 8) | data[pos + 1]
            pos += 2
            sum2 += sum1
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
    sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    return (sum2 << 16) | sum1


@pytest.mark.parametrize("fill", ["random", "zeros", "ones", "ramp"])
def test_numpy_check_agrees_with_the_hdf5_algorithm(fill: str) -> None:
    rng = np.random.default_rng(3)
    m = 2 * 1000  # words of a 1000-sample float32 chunk (rows of gcd(2000, 1024) = 16 words)
    chunks = {
        "random": rng.integers(0, 65536, (3, m), dtype=np.uint16),
        "zeros": np.zeros((3, m), dtype=np.uint16),
        "ones": np.full((3, m), 0xFFFF, dtype=np.uint16),
        "ramp": (np.arange(3 * m, dtype=np.uint32) % 65536).astype(np.uint16).reshape(3, m),
    }[fill]
    stored = np.array([hdf5_fletcher32(c.astype("<u2").tobytes()) for c in chunks],
                      dtype=np.uint32)
    assert fletcher32_matches(chunks, stored).all()
    broken = chunks.copy()
    broken[1, 777] ^= 0x0100
    assert list(fletcher32_matches(broken, stored)) == [True, False, True]
    assert not fletcher32_matches(chunks, stored ^ np.uint32(1 << 20)).any()


def _trace(path: Path, n: int, chunk: int) -> np.ndarray:
    samples = np.random.default_rng(5).standard_normal(n).astype(np.float32)
    with TraceWriter.create(path, attrs={}, power_chunk=chunk) as w:
        for at in range(0, n, 7_777):
            w.add_power(at, samples[at : at + 7_777], 0.0)
    return samples


@pytest.mark.parametrize("chunk", [1000, 65536])
def test_every_range_reads_the_samples_hdf5_reads(tmp_path: Path, chunk: int) -> None:
    path = tmp_path / "t.h5"
    n = 3 * chunk + 1234
    samples = _trace(path, n, chunk)
    with h5py.File(path, "r") as f:
        dset = f["power/current_a"]
        for begin, end in [(0, n), (1, n - 1), (chunk - 1, chunk + 1), (chunk, 2 * chunk),
                           (n - 5, n), (17, 18)]:
            got = read_float32_checked(dset, begin, end)
            assert got is not None, (begin, end)
            np.testing.assert_array_equal(got, samples[begin:end])
        assert read_float32_checked(dset, 5, 5) is None
    with open_trace(path) as tr:
        np.testing.assert_array_equal(tr.power_samples(), samples)
        assert tr.damaged == {}


def test_a_damaged_chunk_is_left_to_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    samples = _trace(path, 5000, 1000)
    with h5py.File(path, "r") as f:
        offset = f["power/current_a"].id.get_chunk_info(3).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset + 100] ^= 0x40
    path.write_bytes(bytes(raw))
    with h5py.File(path, "r") as f:
        dset = f["power/current_a"]
        assert read_float32_checked(dset, 0, 5000) is None
        np.testing.assert_array_equal(read_float32_checked(dset, 0, 3000), samples[:3000])
    with open_trace(path) as tr:
        np.testing.assert_array_equal(tr.power_samples(), samples[:3000])
        assert tr.damaged["/power/current_a"] == 3000


def test_other_layouts_are_left_to_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("gz", data=np.arange(5000, dtype=np.float32), chunks=(1000,),
                         fletcher32=True, compression="gzip")
        f.create_dataset("nofilter", data=np.arange(5000, dtype=np.float32), chunks=(1000,))
        f.create_dataset("f64", data=np.arange(5000, dtype=np.float64), chunks=(1000,),
                         fletcher32=True)
    with h5py.File(path, "r") as f:
        for name in ("gz", "nofilter", "f64"):
            assert read_float32_checked(f[name], 0, 5000) is None, name
