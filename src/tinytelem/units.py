"""Numbers for people: one place that turns a figure and its unit into text.

Every command, table and report formats through here, so the same figure reads the same way in
the terminal, in HTML and in a comparison. Unknown values (None, NaN, inf) read as an em dash.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["DASH", "format_bytes", "format_hz", "format_rate", "format_watts", "si"]

DASH = "—"

_PREFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"))


def si(value: Any, unit: str = "") -> str:
    """A figure with an SI prefix keeping 3 significant digits: ``12.3 ms``, ``1.2 MiB``.

    Seconds, joules and watts never take a prefix above one (``12.3 s``, not ``12.3 ks``);
    ``B`` uses binary prefixes; ``tok/s`` and ``%`` keep one decimal; a bare number (unit ``""``
    or ``"x"``) keeps 3 significant digits, integers in full.
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    v = float(value)
    if unit == "B":
        for scale, name in ((1 << 20, "MiB"), (1 << 10, "KiB")):
            if abs(v) >= scale:
                return f"{v / scale:.1f} {name}"
        return f"{int(v)} B"
    if unit in ("", "x"):
        return f"{int(v)}{unit}" if v.is_integer() else f"{v:.3g}{unit}"
    if unit in ("tok/s", "%"):
        return f"{v:.1f} {unit}"
    if v == 0:
        return f"0 {unit}"
    for factor, prefix in _PREFIXES:
        if abs(v) >= factor:
            if factor > 1 and unit in ("s", "J", "W"):
                continue
            return f"{v / factor:.3g} {prefix}{unit}"
    return f"{v:.3g} {unit}"


def format_bytes(n: int) -> str:
    """Binary units, exact when possible: 532480 -> '520 KiB', 8388608 -> '8 MiB'; 0 -> '—'."""
    if n == 0:
        return DASH
    units = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
    for unit, size in units:
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    for unit, size in units:
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def _decimal(value: float, units: list[tuple[str, float]], base: str) -> str:
    for unit, scale in units:
        if value >= scale:
            return f"{value / scale:.4g} {unit}"
    return f"{value:.4g} {base}"


def format_hz(hz: float) -> str:
    """Decimal frequency: 1430000000 -> '1.43 GHz', 240000000 -> '240 MHz'."""
    return _decimal(hz, [("GHz", 1e9), ("MHz", 1e6), ("kHz", 1e3)], "Hz")


def format_rate(bytes_per_s: float) -> str:
    """Decimal bandwidth (as memory vendors quote it); 0 -> '—' (not applicable)."""
    if bytes_per_s == 0:
        return DASH
    return _decimal(bytes_per_s, [("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)], "B/s")


def format_watts(watts: float) -> str:
    """'6.4 W' or '15 mW'."""
    if watts >= 1:
        return f"{watts:.3g} W"
    return f"{watts * 1e3:.3g} mW"
