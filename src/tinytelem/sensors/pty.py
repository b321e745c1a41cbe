"""A pseudo-terminal that stands in for a USB serial device (emulated sensors).

The emulator holds the master end; the driver opens the *slave* path with the real serial code
(pyserial + FdStream), exactly as it would open ``/dev/ttyACM0``. The slave is reached through
a stable symlink, so "unplug and replug" (:meth:`PtyPort.unplug` / :meth:`PtyPort.replug`)
gives a fresh pty behind the same name, the way udev keeps a by-id path for a re-enumerated
device.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import tty
from pathlib import Path

import trio

__all__ = ["PtyPort"]


class PtyPort:
    """A pty pair with a stable path for the slave side (POSIX only)."""

    def __init__(self, link: str | os.PathLike[str] | None = None) -> None:
        if link is None:
            self._tmp: str | None = tempfile.mkdtemp(prefix="tinytelem-pty-")
            link = Path(self._tmp) / "ttyEMU0"
        else:
            self._tmp = None
        self.path = str(link)
        """What the driver opens."""
        self.master: trio.lowlevel.FdStream | None = None
        self._slave_fd = -1
        self.plugs = 0
        self.replug()

    def replug(self) -> None:
        """A new pty behind :attr:`path` (the old one, if any, is closed first)."""
        self.unplug()
        master_fd, slave_fd = os.openpty()
        tty.setraw(slave_fd)  # no echo, no CR/LF translation: binary both ways
        tty.setraw(master_fd)
        self._slave_fd = slave_fd  # kept open so writes before the driver opens are buffered
        tmp = self.path + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(os.ttyname(slave_fd), tmp)
        os.replace(tmp, self.path)
        self.master = trio.lowlevel.FdStream(master_fd)
        self.plugs += 1

    def unplug(self) -> None:
        """Close the master: the driver's next read fails as if the cable were pulled."""
        if self.master is not None:
            self.master.close()  # wakes any task blocked on it, then closes the fd
            self.master = None
        if self._slave_fd >= 0:
            os.close(self._slave_fd)
            self._slave_fd = -1

    def close(self) -> None:
        """Unplug and remove the symlink (and the temp dir it lives in)."""
        self.unplug()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self._tmp)
