"""Host side of the firmware: targets and toolchains, the build driver, QEMU, footprints.

Light to import: QEMU and pyelftools are only touched when used.
"""

from __future__ import annotations

from tinytelem.firmware.build import BuildResult, build, default_build_dir
from tinytelem.firmware.footprint import Footprint, footprint
from tinytelem.firmware.qemu import qemu_command, run_qemu
from tinytelem.firmware.targets import TARGETS, Target, get_target, missing_tools, qemu_targets

__all__ = [
    "TARGETS",
    "BuildResult",
    "Footprint",
    "Target",
    "build",
    "default_build_dir",
    "footprint",
    "get_target",
    "missing_tools",
    "qemu_command",
    "qemu_targets",
    "run_qemu",
]
