"""Flash / static RAM / stack from the ELF sections (src/tinytelem/firmware/footprint.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.firmware.helpers import need_tools
from tinytelem.errors import ConfigError
from tinytelem.firmware import build, footprint


@pytest.mark.parametrize("target", ["cortex-m4", "riscv32", "rp2040", "nrf52840", "stm32h7"])
def test_footprint_reads_sections(target: str, tmp_path: Path) -> None:
    need_tools(target, run=False)
    res = build(target, build_dir=tmp_path)
    fp = footprint(res.elf)
    # flash is the load image: .text + .rodata + .data, plus .ARM.exidx (a few bytes at most)
    assert 0 <= fp.flash - (fp.text + fp.rodata + fp.data) <= 64
    assert res.bin is not None and res.bin.stat().st_size <= fp.flash
    assert fp.text > 2000 and fp.bss > 80_000 and fp.static_ram == fp.data + fp.bss
    assert fp.stack >= 8192


def test_footprint_rejects_non_elf(tmp_path: Path) -> None:
    bad = tmp_path / "x.elf"
    bad.write_bytes(b"not an elf")
    with pytest.raises(ConfigError, match="not an ELF"):
        footprint(bad)
    with pytest.raises(ConfigError, match="build it first"):
        footprint(tmp_path / "missing.elf")
