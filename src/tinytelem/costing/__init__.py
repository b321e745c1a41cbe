"""Predicted cost of the C engine on a board: calibrated instructions, core timing, memory.

Layers: ``features`` (what each operator does, shared by fitting and prediction) ->
``calibration`` (the engine's fitted instructions per operator, per ISA family, from
``calibration/engine.json``) -> ``model`` (:class:`~tinytelem.costing.model.CostModel`: board
time, power and memory per operator). ``measure`` regenerates the calibration under QEMU
(``tinytelem firmware calibrate``). The memory budget lives in ``tinytelem.platforms.memory``.
Every figure from here is a prediction; the twin, ``recommend``, bottleneck analysis and QEMU
summaries label it so.
"""

from __future__ import annotations
