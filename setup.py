"""Packaging hook: the firmware's C sources ship inside the wheel as ``tinytelem/_firmware``, and
the engine calibration and published points (``calibration/``) as ``tinytelem/_calibration``.

``firmware/`` sits at the project root, beside the Python package, because it is a C project of
its own (Makefile, ports, linker scripts). ``native:``, ``qemu:`` and ``tinytelem firmware
build`` compile it on the user's machine, so an installed tinytelem needs the sources too.
Everything else about the package is in pyproject.toml; MANIFEST.in puts ``firmware/`` in the
sdist, so a wheel built from the sdist gets it as well. The twin costs every run with the
calibration, so an installed tinytelem needs it as much as the firmware.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

FIRMWARE = Path(__file__).resolve().parent / "firmware"
CALIBRATION = Path(__file__).resolve().parent / "calibration"
BUILD_OUTPUTS = shutil.ignore_patterns("*.o", "*.elf", "*.a", "*.map", "build", "__pycache__")


class BuildPyWithFirmware(build_py):
    """``build_py`` plus a copy of ``firmware/`` into the built package."""

    def run(self) -> None:
        super().run()
        if FIRMWARE.is_dir() and not getattr(self, "editable_mode", False):
            target = Path(self.build_lib) / "tinytelem" / "_firmware"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(FIRMWARE, target, ignore=BUILD_OUTPUTS)
        if CALIBRATION.is_dir() and not getattr(self, "editable_mode", False):
            target = Path(self.build_lib) / "tinytelem" / "_calibration"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(CALIBRATION, target, ignore=shutil.ignore_patterns("examples"))


setup(cmdclass={"build_py": BuildPyWithFirmware})
