"""The device twin: an emulated device that speaks wire protocol v1 (docs/emulator.md).

``schedule`` lays a RUN out in device time using the calibrated cost model (``tinytelem.costing``),
``twin`` is the sans-I/O device, ``server`` puts it on a TCP socket or a pseudo-terminal.
Submodules are imported on demand so ``import tinytelem.emulator`` stays cheap.
"""

from __future__ import annotations
