"""Helpers shared by the firmware tests: compile C with the host compiler, run it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-ffp-contract=off"]


def host_cc() -> str:
    """The host C compiler, or skip with the install command."""
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no host C compiler; install one with `bash scripts/setup-system.sh` "
                "(or `apt-get install gcc`)")
    raise AssertionError("unreachable")


def compile_c(sources: list[Path], out: Path, include: list[Path], extra: list[str] | None = None
              ) -> Path:
    """Compile ``sources`` into the executable ``out`` with the strict flags; fail loudly."""
    argv = [host_cc(), *CFLAGS, *(f"-I{p}" for p in include), *map(str, sources), "-o", str(out),
            *(extra or [])]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, f"compile failed: {' '.join(argv)}\n{proc.stderr}"
    return out
