"""Building the firmware through the Makefile (src/tinytelem/firmware/build.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.firmware.helpers import need_tools
from tinytelem.firmware import build


@pytest.mark.parametrize("target", ["cortex-m4", "riscv32", "rp2040", "nrf52840", "stm32h7"])
def test_build_is_deterministic(target: str, tmp_path: Path) -> None:
    """Two builds in two directories give the same bytes (no paths, no dates in the image)."""
    need_tools(target, run=False)
    a = build(target, build_dir=tmp_path / "a")
    b = build(target, build_dir=tmp_path / "b")
    assert a.elf.read_bytes() == b.elf.read_bytes()
    assert a.bin is not None and b.bin is not None
    assert a.bin.read_bytes() == b.bin.read_bytes() and a.bin.stat().st_size > 1000
