"""The target table (src/tinytelem/firmware/targets.py) and the port directories it names."""

from __future__ import annotations

import shutil

import pytest

from tests.firmware.helpers import FIRMWARE
from tinytelem.errors import ConfigError
from tinytelem.firmware.targets import TARGETS, get_target, require_tools


def test_unknown_target_and_missing_tool_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="cortex-m4"):
        get_target("z80")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"scripts/setup-system\.sh") as info:
        require_tools(get_target("riscv32"), run=True)
    assert "gcc-riscv64-unknown-elf" in str(info.value)
    assert "qemu-system-misc" in str(info.value)


def test_every_port_lives_in_firmware_ports() -> None:
    """One home for ports: each target's port directory exists, the Makefile builds from it,
    bare-metal ones have their memory.ld, and no directory under ports/ is left unused."""
    makefile = (FIRMWARE / "Makefile").read_text()
    for t in TARGETS.values():
        assert (FIRMWARE / "ports" / t.port).is_dir(), t.name
        assert f"ports/{t.port}/" in makefile, t.name
        assert t.native or (FIRMWARE / "ports" / t.port / "memory.ld").is_file(), t.name
    shared = {"cortex-m", "esp-idf"}  # the Cortex-M core code; the ESP-IDF project (no Target)
    ports = {p.name for p in (FIRMWARE / "ports").iterdir()}
    assert ports == {t.port for t in TARGETS.values()} | shared
    assert sorted(p.name for p in FIRMWARE.iterdir() if p.is_dir()) == [
        "core", "engine", "ina_bridge", "ports", "telemetry"]
