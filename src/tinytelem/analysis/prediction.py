"""Say what is predicted: the ``prediction`` block of a summary and its labels.

A run on the device twin (``emu:``) is a prediction from top to bottom: its latency, power and
memory come from the calibrated cost model. A run under QEMU (``qemu:``) measures instructions
(``-icount shift=0``: one instruction = 1 ns of virtual time), so its tok/s are virtual; the
board the target stands for gets a *predicted* decode rate through the same calibrated core
model (instructions x cycles per instruction x efficiency / clock; memory stalls left out). Both
carry the calibration they used and the uncertainty band of the fidelity table
(``calibration/fidelity.json``, written by ``bench/twin_fidelity.py --write``).
docs/summary-format.md documents the fields.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from tinytelem.errors import ConfigError

__all__ = ["QEMU_BOARDS", "fidelity_band", "prediction_block"]

QEMU_BOARDS: dict[str, str] = {
    "stm32f405": "stm32f4",
    "cortex-m4": "stm32f4",
    "cortex-m7": "stm32h7",
    "riscv32f": "bl602",
}
"""The board (platform) a QEMU target stands for; riscv32 (RV32IMAC virt) has none."""

VIRTUAL_CLOCK = "virtual (icount shift=0: 1 instruction = 1 ns), not a board's time"


@functools.cache
def fidelity_band() -> dict[str, Any] | None:
    """The stored uncertainty band: true/predicted lies in [low, high] on the published points."""
    from tinytelem.costing.calibration import calibration_file

    f = calibration_file("fidelity.json")
    if f is None:
        return None
    band = json.loads(f.read_text()).get("band")
    return dict(band) if isinstance(band, dict) else None


def _calibration_id(platform_name: str) -> tuple[str | None, Any]:
    from tinytelem.costing.calibration import load_calibration
    from tinytelem.platforms import get_platform

    try:
        p = get_platform(platform_name)
        return load_calibration(p.isa_family).calibration_id, p
    except ConfigError:
        return None, None


def prediction_block(attrs: Mapping[str, Any], itl_mean_s: float | None
                     ) -> dict[str, Any] | None:
    """What in the summary is predicted and how well (None for a real board)."""
    device = str(attrs.get("device") or "")
    if device.startswith("emu:"):
        cal, _ = _calibration_id(device.removeprefix("emu:") or str(attrs.get("platform")))
        return {"source": "twin", "calibration": cal, "band": fidelity_band(),
                "predicted": ["latency", "power", "memory"],
                "note": "every figure is the device twin's prediction, not a measurement"}
    if device.startswith("qemu:"):
        target = device.removeprefix("qemu:").split("?")[0]
        instr = itl_mean_s * 1e9 if itl_mean_s else None
        board = QEMU_BOARDS.get(target)
        out: dict[str, Any] = {
            "source": "qemu", "clock": VIRTUAL_CLOCK,
            "instructions_per_token": round(instr) if instr else None,
            "board": board, "board_decode_tok_s": None, "calibration": None,
            "band": fidelity_band(),
            "predicted": ["board_decode_tok_s"],
            "note": "latency figures are virtual time; instructions per token are measured",
        }
        if board is not None and instr:
            cal, p = _calibration_id(board)
            if p is not None:
                seconds = instr * p.cycles_per_instruction * p.compute_factor / p.cpu_hz
                out["board_decode_tok_s"] = 1.0 / seconds
                out["calibration"] = cal
        return out
    return None


def band_text(band: Mapping[str, Any] | None) -> str:
    """``x0.52 .. x1.9 (4 published boards)`` or ``unknown``."""
    if not band:
        return "unknown (no fidelity table)"
    return f"x{band['low']:.2g} .. x{band['high']:.2g} ({band.get('points', '?')} published points)"
