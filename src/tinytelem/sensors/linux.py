"""Power sources the Linux kernel already exposes (host PCs, Raspberry Pi, Jetson).

- **RAPL** (Intel/AMD ``powercap``): ``/sys/class/powercap/intel-rapl:N[:M]/energy_uj``, a
  cumulative microjoule counter that wraps at ``max_energy_range_uj``. Power is the counter
  difference over the polling interval.
- **hwmon**: ``/sys/class/hwmon/hwmonN/{power,curr,in}K_input`` (microwatts, milliamperes,
  millivolts) with ``*_label`` names; INA2xx, PMBus regulators, laptop batteries...
- **Jetson INA3221** rails: hwmon devices named ``ina3221`` (JetPack 5+) or the older IIO
  nodes ``/sys/bus/i2c/drivers/ina3221x/*/iio:device*/in_{power,current,voltage}N_input``
  with ``rail_name_N``.
- **Raspberry Pi 5 PMIC**: ``vcgencmd pmic_read_adc`` prints per-rail current and voltage
  (``VDD_CORE_A current(7)=1.2A``, ``VDD_CORE_V volt(15)=0.72V``); power is their product.

All readers take an injectable ``root`` (a fake sysfs tree in tests) and, for the PMIC, an
injectable command runner. :func:`discover` lists what is present; :class:`LinuxPowerSensor`
polls one source and emits PowerBlocks. These sources give *power*, not current at a known
voltage: blocks carry ``voltage_v = 1.0`` and ``current_a`` = watts, so ``current x voltage``
is still power everywhere downstream.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trio

from tinytelem.errors import SensorError
from tinytelem.records import PowerBlock, Record

__all__ = ["LinuxPowerSensor", "PowerChannel", "discover", "parse_pmic_adc", "read_channel"]

Runner = Callable[[list[str]], str]


@dataclass(frozen=True)
class PowerChannel:
    """One readable power figure.

    ``kind``: ``rapl`` (energy counter, ``path`` = energy_uj), ``hwmon-power`` (uW),
    ``hwmon-iv`` (``path`` = current mA, ``path2`` = voltage mV), ``iio-power`` (mW),
    ``pmic`` (``name`` = rail stem).
    """

    source: str
    """rapl, hwmon, jetson or rpi5-pmic."""
    name: str
    kind: str
    path: str = ""
    path2: str = ""
    max_uj: int = 0

    @property
    def spec(self) -> str:
        """What ``--sensor`` accepts for this channel."""
        return f"{self.source}:{self.name}"


def _read(p: Path) -> str:
    try:
        return p.read_text().strip()
    except OSError as exc:
        raise SensorError(f"cannot read {p}: {exc.strerror or exc}") from exc


def _rapl(root: Path) -> list[PowerChannel]:
    out = []
    for d in sorted((root / "sys/class/powercap").glob("intel-rapl:*")):
        energy = d / "energy_uj"
        if not energy.exists():
            continue
        name = _read(d / "name") if (d / "name").exists() else d.name
        mx = int(_read(d / "max_energy_range_uj")) if (d / "max_energy_range_uj").exists() else 0
        out.append(PowerChannel("rapl", f"{d.name.split(':', 1)[1]}-{name}", "rapl",
                                str(energy), max_uj=mx))
    return out


def _hwmon(root: Path) -> list[PowerChannel]:
    out = []
    for d in sorted((root / "sys/class/hwmon").glob("hwmon*")):
        dev = _read(d / "name") if (d / "name").exists() else d.name
        source = "jetson" if dev.startswith("ina3221") else "hwmon"
        for p in sorted(d.glob("power*_input")):
            k = p.name[len("power"):-len("_input")]
            label = d / f"power{k}_label"
            name = _read(label) if label.exists() else f"power{k}"
            out.append(PowerChannel(source, f"{dev}/{name}", "hwmon-power", str(p)))
        for p in sorted(d.glob("curr*_input")):
            k = p.name[len("curr"):-len("_input")]
            volt = d / f"in{k}_input"
            if not volt.exists():
                continue
            label = d / f"in{k}_label"
            if not label.exists():
                label = d / f"curr{k}_label"
            name = _read(label) if label.exists() else f"rail{k}"
            out.append(PowerChannel(source, f"{dev}/{name}", "hwmon-iv", str(p), str(volt)))
    return out


def _jetson_iio(root: Path) -> list[PowerChannel]:
    out = []
    for d in sorted((root / "sys/bus/i2c/drivers/ina3221x").glob("*/iio:device*")):
        for p in sorted(d.glob("in_power*_input")):
            k = p.name[len("in_power"):-len("_input")]
            rail = d / f"rail_name_{k}"
            name = _read(rail) if rail.exists() else f"rail{k}"
            out.append(PowerChannel("jetson", name, "iio-power", str(p)))
    return out


_PMIC = re.compile(r"^\s*(\S+)_([AV])\s+(current|volt)\((\d+)\)=([-+0-9.eE]+)([AV])\s*$")


def parse_pmic_adc(text: str) -> dict[str, float]:
    """Watts per rail from ``vcgencmd pmic_read_adc`` output (rails with both I and V)."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        m = _PMIC.match(line)
        if not m:
            continue
        stem, value = m.group(1), float(m.group(5))
        (amps if m.group(3) == "current" else volts)[stem] = value
    return {k: amps[k] * volts[k] for k in sorted(amps) if k in volts}


def _run_vcgencmd(args: list[str]) -> str:
    exe = shutil.which(args[0])
    if exe is None:
        raise SensorError("vcgencmd not found: the Raspberry Pi 5 PMIC needs Raspberry Pi OS "
                          "(package raspi-utils)")
    try:
        return subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=2,
                              check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise SensorError(f"`{' '.join(args)}` failed: {exc}") from exc


def _pmic(runner: Runner) -> list[PowerChannel]:
    try:
        rails = parse_pmic_adc(runner(["vcgencmd", "pmic_read_adc"]))
    except SensorError:
        return []
    out = [PowerChannel("rpi5-pmic", r, "pmic") for r in rails]
    if rails:
        out.insert(0, PowerChannel("rpi5-pmic", "total", "pmic"))
    return out


def discover(root: str | Path = "/", runner: Runner = _run_vcgencmd) -> list[PowerChannel]:
    """Every power channel present under ``root`` (``/`` on a real system)."""
    r = Path(root)
    return _rapl(r) + _hwmon(r) + _jetson_iio(r) + _pmic(runner)


def read_channel(ch: PowerChannel, runner: Runner = _run_vcgencmd) -> float:
    """The channel's raw reading: microjoules for RAPL, watts for everything else."""
    try:
        if ch.kind == "rapl":
            return float(int(_read(Path(ch.path))))
        if ch.kind == "hwmon-power":
            return int(_read(Path(ch.path))) * 1e-6
        if ch.kind == "hwmon-iv":
            return int(_read(Path(ch.path))) * 1e-3 * int(_read(Path(ch.path2))) * 1e-3
        if ch.kind == "iio-power":
            return int(_read(Path(ch.path))) * 1e-3
    except ValueError as exc:
        raise SensorError(f"{ch.path} does not hold a number: {exc}") from exc
    rails = parse_pmic_adc(runner(["vcgencmd", "pmic_read_adc"]))
    if ch.name == "total":
        return sum(rails.values())
    if ch.name not in rails:
        raise SensorError(f"PMIC rail {ch.name} not in `vcgencmd pmic_read_adc` output")
    return rails[ch.name]


def select(spec: str, root: str | Path = "/", runner: Runner = _run_vcgencmd) -> PowerChannel:
    """The channel a spec names: ``rapl`` (first package), ``rapl:0-package-0``, ``hwmon:...``,
    ``jetson[:rail]``, ``rpi5-pmic[:rail]``.

    Raises:
        SensorError: nothing matching here (the message lists what is present).
    """
    source, _, name = spec.partition(":")
    chans = [c for c in discover(root, runner) if c.source == source]
    if name:
        chans = [c for c in chans if c.name == name or c.name.endswith("/" + name)]
    if not chans:
        present = ", ".join(c.spec for c in discover(root, runner)) or "none"
        raise SensorError(f"power source {spec!r} is not available here (present: {present}); "
                          "`tinytelem sensors list` shows what this machine exposes")
    return chans[0]


@dataclass(frozen=True, slots=True)
class LinuxPowerStatistics:
    samples: int
    blocks: int
    wraps: int
    errors: int


class LinuxPowerSensor:
    """Polls one :class:`PowerChannel` at ``rate_hz`` and emits one-sample PowerBlocks in
    batches (``current_a`` holds watts, ``voltage_v`` is 1.0; see the module docstring)."""

    def __init__(self, channel: PowerChannel, *, rate_hz: float = 50.0, batch: int = 10,
                 runner: Runner = _run_vcgencmd,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.channel = channel
        self.rate_hz = rate_hz
        self.voltage_v = 1.0
        self.batch = batch
        self._runner = runner
        self._clock = clock
        self._samples = 0
        self._blocks = 0
        self._wraps = 0
        self._errors = 0
        self._last: tuple[float, float] | None = None

    def power_from(self, reading: float, now: float) -> float | None:
        """Watts from a raw reading (RAPL needs two; the first gives None)."""
        if self.channel.kind != "rapl":
            return reading
        last, self._last = self._last, (reading, now)
        if last is None or now <= last[1]:
            return None
        delta = reading - last[0]
        if delta < 0:  # the counter wrapped
            self._wraps += 1
            delta += self.channel.max_uj
        return delta * 1e-6 / (now - last[1])

    async def run(self, send: trio.MemorySendChannel[Record],
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        read_channel(self.channel, self._runner)  # fail early with a clear message
        period = 1.0 / self.rate_hz
        task_status.started()
        values: list[float] = []
        first = 0
        async with send:
            next_t = self._clock()
            while True:
                next_t += period
                await trio.sleep(max(0.0, next_t - self._clock()))
                try:
                    reading = await trio.to_thread.run_sync(read_channel, self.channel,
                                                            self._runner)
                except SensorError:
                    self._errors += 1
                    continue
                p = self.power_from(reading, self._clock())
                if p is None:
                    continue
                values.append(p)
                if len(values) >= self.batch:
                    await send.send(PowerBlock(self._clock(), first,
                                               np.asarray(values, dtype=np.float32), 1.0,
                                               self.rate_hz))
                    self._blocks += 1
                    first += len(values)
                    self._samples += len(values)
                    values = []

    def statistics(self) -> LinuxPowerStatistics:
        return LinuxPowerStatistics(self._samples, self._blocks, self._wraps, self._errors)
