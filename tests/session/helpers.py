"""Lab session files the tests share."""

from __future__ import annotations

TWO_TWINS = """
name = "bench"
[devices.esp]
url = "emu:esp32s3"
[devices.rp]
url = "emu:rp2040"
[sensors.esp-power]
spec = "sim"
measures = "esp"
rate = 20000
"""
"""Two twins, the first measured by the simulated sensor (the second has no power)."""
