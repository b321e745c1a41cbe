"""Host -> device command layouts: every ProtocolError path of commands.py."""

from __future__ import annotations

import math
import struct

import pytest

from tinytelem.errors import ProtocolError
from tinytelem.protocol.commands import Config, Run, Stop
from tinytelem.protocol.enums import TraceLevel


def test_run_errors() -> None:
    Run(1, 2, 0.5, 3, tuple(range(252))).pack()
    with pytest.raises(ProtocolError, match="253 tokens; at most 252"):
        Run(1, 2, 0.5, 3, tuple(range(253))).pack()
    for bad in (math.nan, math.inf, -0.5):
        with pytest.raises(ProtocolError, match="must be finite and >= 0"):
            Run(1, 2, bad, 3).pack()
        with pytest.raises(ProtocolError, match="must be finite and >= 0"):
            Run.unpack(struct.pack("<IIfHH", 1, 2, bad, 3, 0))
    with pytest.raises(ProtocolError, match="RUN payload too short: 15"):
        Run.unpack(bytes(15))
    with pytest.raises(ProtocolError, match="announces 2 prompt tokens but carries 4 bytes"):
        Run.unpack(struct.pack("<IIfHH", 1, 2, 0.5, 3, 2) + bytes(4))
    run = Run(1, 2, 0.25, 3, (7, 8))
    assert Run.unpack(run.pack()) == run


def test_stop_and_config() -> None:
    with pytest.raises(ProtocolError, match="STOP payload must be empty, got 1"):
        Stop.unpack(b"\x00")
    with pytest.raises(ProtocolError, match="CONFIG payload must be 1 byte, got 2"):
        Config.unpack(b"\x00\x00")
    assert Config.unpack(b"\x02") == Config(TraceLevel.SPANS)
