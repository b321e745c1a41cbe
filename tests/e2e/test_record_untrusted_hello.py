"""``tinytelem record`` survives a device whose HELLO names hold a NUL or bytes that are not UTF-8.

Before: such a HELLO made ``record`` fail at the end with "cannot write attributes ... VLEN
strings do not support embedded NULLs" (rc 1), and one whose name was not UTF-8 was dropped,
taking the device clock with it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.trace.test_device_strings import hello_frame
from tinytelem.protocol.codec import encode_frame
from tinytelem.protocol.messages import Heartbeat, Log
from tinytelem.trace.reader import open_trace

pytestmark = pytest.mark.slow


def _serve(conn: socket.socket, stop: threading.Event) -> None:
    """One connection: the hostile HELLO, a LOG with a NUL, then heartbeats until stopped."""
    with conn:
        conn.sendall(hello_frame(b"esp\x00s3\xff", b"fw\x00", b"model\xc3"))
        conn.sendall(encode_frame(Log(1, "boot\x00ok"), 1, 200))
        seq = 2
        while not stop.wait(0.05):
            try:
                conn.sendall(encode_frame(Heartbeat(seq * 50, 0), seq, 1000 * seq))
            except OSError:
                return
            seq += 1


def _device(server: socket.socket, stop: threading.Event) -> None:
    """A device on TCP: every connection (a reconnect too) starts with HELLO, like firmware."""
    server.settimeout(0.1)
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except (TimeoutError, OSError):
            continue
        threading.Thread(target=_serve, args=(conn, stop), daemon=True).start()


def test_record_keeps_going_and_stores_the_names_escaped(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    stop = threading.Event()
    thread = threading.Thread(target=_device, args=(server, stop), daemon=True)
    thread.start()
    out = tmp_path / "t.h5"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", "from tinytelem.cli.main import main; main()", "record",
             "--device", f"tcp://127.0.0.1:{port}", "--out", str(out), "--duration", "1.0"],
            capture_output=True, text=True, timeout=120, check=False)
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open_trace(out) as tr:
        assert tr.attrs["complete"] is True
        assert tr.attrs["platform"] == "esp\\x00s3\\xff"
        assert tr.attrs["firmware_version"] == "fw\\x00"
        assert tr.attrs["model_name"] == "model\\xc3"
        assert tr.attrs["tick_hz"] == 1_000_000
        assert list(tr.logs["text"]) == ["boot\\x00ok"]
        assert tr.events.size >= 5
        assert json.dumps(tr.summary)  # the summary was computed and stored
