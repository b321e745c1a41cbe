"""Firmware targets and the tools they need: compilers, QEMU machines, install commands.

One table drives the build driver, the QEMU runner, ``tinytelem doctor`` and the docs, so a new
board is one entry here plus its port directory ``firmware/ports/<port>/`` (and its branch in
``firmware/Makefile``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tinytelem.errors import ConfigError

__all__ = [
    "INSTALL_HINT",
    "TARGETS",
    "Target",
    "firmware_dir",
    "get_target",
    "missing_tools",
    "qemu_targets",
]

INSTALL_HINT = "bash scripts/setup-system.sh"
"""The project's script that installs every Debian package below (CI runs it)."""

APT = {
    "arm-none-eabi-gcc": "gcc-arm-none-eabi",
    "riscv64-unknown-elf-gcc": "gcc-riscv64-unknown-elf",
    "qemu-system-arm": "qemu-system-arm",
    "qemu-system-riscv32": "qemu-system-misc",
    "make": "make",
    "cc": "gcc",
}


@dataclass(frozen=True)
class Target:
    """A firmware target: how to compile it and, when QEMU models it, how to run it."""

    name: str
    compiler: str
    description: str
    port: str
    """Its directory under ``firmware/ports/``: the board's port and, on bare metal, its
    ``memory.ld``."""
    qemu: str | None = None
    """QEMU system binary, or None for boards that only compile here."""
    machine: str | None = None
    platform: str = ""
    """The platform name the firmware announces in HELLO."""
    dsp: bool = False
    """Cortex-M DSP extension (SMLAD/SXTB16) available."""

    @property
    def native(self) -> bool:
        """The host build (a process, not an image)."""
        return self.name == "native"

    def tools(self) -> list[str]:
        """Executables this target needs (make, compiler, and QEMU when it has a machine)."""
        tools = ["make", self.compiler]
        if self.qemu is not None:
            tools.append(self.qemu)
        return tools


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("cortex-m4", "arm-none-eabi-gcc", "Arm Cortex-M4F on the MPS2 AN386 board", "mps2",
           "qemu-system-arm", "mps2-an386", "mps2-an386", dsp=True),
    Target("cortex-m7", "arm-none-eabi-gcc", "Arm Cortex-M7 on the MPS2 AN500 board", "mps2",
           "qemu-system-arm", "mps2-an500", "mps2-an500", dsp=True),
    Target("stm32f405", "arm-none-eabi-gcc", "STM32F405 (Cortex-M4F) on the Netduino Plus 2",
           "stm32f4", "qemu-system-arm", "netduinoplus2", "stm32f405", dsp=True),
    Target("riscv32", "riscv64-unknown-elf-gcc", "RV32IMAC on QEMU's virt board", "riscv-virt",
           "qemu-system-riscv32", "virt", "riscv32-virt"),
    Target("riscv32f", "riscv64-unknown-elf-gcc",
           "RV32IMAFC (hardware single float, BL602-class) on QEMU's virt board", "riscv-virt",
           "qemu-system-riscv32", "virt", "riscv32f-virt"),
    Target("native", "cc", "this host (Linux/POSIX process; also Raspberry Pi, Jetson)", "linux",
           platform="linux"),
    Target("nrf52840", "arm-none-eabi-gcc", "Nordic nRF52840 (Cortex-M4F), compile only",
           "nrf52840", platform="nrf52840", dsp=True),
    Target("stm32h7", "arm-none-eabi-gcc", "STM32H743 (Cortex-M7), compile only", "stm32h7",
           platform="stm32h7", dsp=True),
    Target("rp2040", "arm-none-eabi-gcc", "Raspberry Pi RP2040 (Cortex-M0+, no DSP), compile only",
           "rp2040", platform="rp2040"),
    # the rp2040 port built for the RP2350 (TT_BOARD_RP2350), with its own memory.ld
    Target("rp2350", "arm-none-eabi-gcc",
           "Raspberry Pi RP2350 (Cortex-M33, DSP + FPU), compile only", "rp2350",
           platform="rp2350", dsp=True),
)}


def get_target(name: str) -> Target:
    """The target called ``name``.

    Raises:
        ConfigError: naming the known targets.
    """
    try:
        return TARGETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown firmware target {name!r}; choose one of {', '.join(TARGETS)}"
        ) from None


def qemu_targets() -> list[str]:
    """Targets QEMU can run."""
    return [t.name for t in TARGETS.values() if t.qemu is not None]


def missing_tools(target: Target) -> list[str]:
    """Executables of ``target.tools()`` that are not on PATH."""
    missing = []
    for tool in target.tools():
        if tool == "cc":
            if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
                missing.append(tool)
        elif shutil.which(tool) is None:
            missing.append(tool)
    return missing


def require_tools(target: Target, *, run: bool = False) -> None:
    """Raise a ConfigError naming the install command when a tool for ``target`` is missing.

    With ``run=False`` only the build tools are checked (QEMU is not needed to build).
    """
    missing = missing_tools(target)
    if not run and target.qemu in missing:
        missing.remove(target.qemu)
    if missing:
        packages = sorted({APT.get(m, m) for m in missing})
        raise ConfigError(
            f"target {target.name} needs {', '.join(missing)}, which is not installed; install "
            f"it with `{INSTALL_HINT}` (or `sudo apt-get install --no-install-recommends "
            f"{' '.join(packages)}`)"
        )


PACKAGED_FIRMWARE = Path(__file__).resolve().parents[1] / "_firmware"
"""Where a wheel install keeps the firmware sources (setup.py copies ``firmware/`` there)."""


def firmware_dir() -> Path:
    """The firmware sources: ``firmware/`` of a source checkout, else the installed copy.

    Raises:
        ConfigError: when neither exists (an install built without the sources).
    """
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "firmware" / "Makefile"
        if candidate.is_file():
            return candidate.parent
    if (PACKAGED_FIRMWARE / "Makefile").is_file():
        return PACKAGED_FIRMWARE
    raise ConfigError(
        f"the firmware sources were not found: neither firmware/Makefile in a source checkout "
        f"above {here.parents[2]} nor {PACKAGED_FIRMWARE}/Makefile in the installed package; "
        "reinstall tinytelem from a wheel or sdist built by this project's setup, or run from "
        "a source checkout"
    )
