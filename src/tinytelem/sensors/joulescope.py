"""Joulescope JS220 / JS110 through pyjoulescope_driver (optional extra ``tinytelem[joulescope]``).

The driver is publish/subscribe: ``publish('<dev>/s/i/ctrl', 1)`` enables the current signal,
and ``'<dev>/s/i/!data'`` then delivers dicts with ``sample_id`` (sample counter at the full
rate), ``decimate_factor``, ``sample_rate`` and ``data`` (float32 amperes) from the driver's
own thread. Those callbacks are handed to trio through the run's trio token; a jump in
``sample_id`` is a gap (the driver's buffers overflowed). Voltage arrives the same way on
``s/v/!data``; each block reports the latest mean voltage.

``driver_factory`` is injectable so tests run against a fake with the same calls
(``device_paths``, ``open``, ``publish``, ``subscribe``, ``unsubscribe``, ``close``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import trio

from tinytelem.errors import SensorError
from tinytelem.records import PowerBlock, PowerGap, Record

log = logging.getLogger(__name__)

__all__ = ["JoulescopeSensor", "driver_available"]

INSTALL_HINT = "install the extra: pip install 'tinytelem[joulescope]' (pyjoulescope_driver)"


def driver_available() -> bool:
    """True when pyjoulescope_driver can be imported."""
    try:
        import pyjoulescope_driver  # type: ignore[import-untyped,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def _default_driver() -> Any:
    try:
        from pyjoulescope_driver import (  # type: ignore[import-untyped,unused-ignore]
            Driver,
        )
    except ImportError as exc:
        raise SensorError(f"Joulescope support is not installed; {INSTALL_HINT}") from exc
    return Driver()


@dataclass(frozen=True, slots=True)
class JoulescopeStatistics:
    samples: int
    blocks: int
    gaps: int
    missing: int


class JoulescopeSensor:
    """Actor for a Joulescope (``device``: a path such as ``u/js220/001234``, or "" for the
    first one found)."""

    def __init__(self, device: str = "", *, driver_factory: Callable[[], Any] = _default_driver,
                 calibration: object | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.device = device
        self.rate_hz = math.nan
        self.voltage_v = math.nan
        self.calibration = calibration
        self._factory = driver_factory
        self._clock = clock
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._wake = trio.Event()
        self._next: int | None = None
        self._samples = 0
        self._blocks = 0
        self._gaps = 0
        self._missing = 0

    async def run(self, send: trio.MemorySendChannel[Record],
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        token = trio.lowlevel.current_trio_token()
        driver = self._factory()

        def on_data(topic: str, value: dict[str, Any]) -> None:  # driver thread
            def push() -> None:
                self._queue.append((topic, value))
                self._wake.set()

            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(push)

        try:
            paths = [p for p in driver.device_paths() if not self.device or
                     p.endswith(self.device) or p == self.device]
            if not paths:
                raise SensorError("no Joulescope found; plug it in (and check the udev rules "
                                  "from the Joulescope docs) or pass its path, e.g. "
                                  "joulescope:u/js220/001234")
            dev = paths[0]
            self.device = dev
            driver.open(dev, "restore")
            for sig in ("v", "i"):
                driver.subscribe(f"{dev}/s/{sig}/!data", ["pub"], on_data)
            for sig in ("v", "i"):
                driver.publish(f"{dev}/s/{sig}/ctrl", 1, timeout=1.0)
        except SensorError:
            driver.close()
            raise
        except Exception as exc:  # the driver raises its own types
            driver.close()
            raise SensorError(f"Joulescope {self.device or '(first)'}: {exc}") from exc
        task_status.started()
        try:
            async with send:
                while True:
                    await self._wake.wait()
                    self._wake = trio.Event()
                    while self._queue:
                        topic, value = self._queue.popleft()
                        await self._handle(topic, value, send)
        finally:
            with trio.CancelScope(shield=True):
                try:
                    for sig in ("i", "v"):
                        driver.unsubscribe(f"{dev}/s/{sig}/!data", on_data)
                        driver.publish(f"{dev}/s/{sig}/ctrl", 0, timeout=0.25)
                    driver.close(dev)
                except Exception as exc:  # best-effort cleanup of a device that is gone
                    log.debug("joulescope %s: cleanup failed: %s", dev, exc)

    async def _handle(self, topic: str, value: dict[str, Any],
                      send: trio.MemorySendChannel[Record]) -> None:
        data: npt.NDArray[np.float32] = np.asarray(value["data"], dtype=np.float32)
        if topic.endswith("/s/v/!data"):
            if data.size:
                self.voltage_v = float(data.mean())
            return
        decimate = int(value.get("decimate_factor", 1)) or 1
        first = int(value["sample_id"]) // decimate
        self.rate_hz = float(value["sample_rate"]) / decimate
        now = self._clock()
        if self._next is not None and first > self._next:
            n = first - self._next
            self._gaps += 1
            self._missing += n
            await send.send(PowerGap(now, self._next, n))
        apply = getattr(self.calibration, "apply_current", None)
        if apply is not None:
            data = apply(data)
        self._next = first + data.size
        self._samples += data.size
        self._blocks += 1
        await send.send(PowerBlock(now, first, data, self.voltage_v, self.rate_hz))

    def statistics(self) -> JoulescopeStatistics:
        return JoulescopeStatistics(self._samples, self._blocks, self._gaps, self._missing)
