"""Opening a power sensor from a ``--sensor`` spec, and what a trace records about it.

Every sensor is a :class:`tinytelem.power.source.PowerSource` (``run(send_channel,
task_status)``, ``statistics()``) that sends :class:`~tinytelem.records.PowerBlock` /
:class:`~tinytelem.records.PowerGap` records.
:func:`open_sensor` builds one from a ``--sensor`` spec:

==========================  ==================================================================
``ppk2:/dev/ttyACM0``        Nordic PPK2 (``?mode=ampere&voltage_mv=1800`` optional)
``ina:/dev/ttyUSB0``         INA219/INA226 bridge (firmware/ina_bridge); also ``ina:tcp://h:p``;
                             ``?shunt_ohm=0.1``
``joulescope[:path]``        Joulescope through pyjoulescope_driver (extra ``[joulescope]``)
``rapl[:domain]``            Intel/AMD RAPL energy counters (powercap)
``hwmon:chip/label``         any hwmon power or current+voltage input
``jetson[:rail]``            Jetson INA3221 rails
``rpi5-pmic[:rail]``         Raspberry Pi 5 PMIC ADC (``total`` by default)
==========================  ==================================================================

Modules import their heavy dependencies (numba, pyjoulescope_driver) only when used.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from tinytelem.errors import ConfigError
from tinytelem.power.source import PowerSource

__all__ = ["HARDWARE_KINDS", "open_sensor", "parse_sensor_spec", "record_sensor"]

HARDWARE_KINDS = ("ppk2", "ina", "joulescope", "rapl", "hwmon", "jetson", "rpi5-pmic")


def parse_sensor_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``kind:target?k=v`` -> (kind, target, options).

    Raises:
        ConfigError: unknown kind (the message lists the known ones).
    """
    head, _, query = spec.partition("?")
    kind, _, target = head.partition(":")
    if kind not in HARDWARE_KINDS:
        raise ConfigError(f"unknown sensor {spec!r}; use sim, none or one of "
                          + ", ".join(f"{k}:..." for k in HARDWARE_KINDS))
    return kind, target, dict(parse_qsl(query))


def _float(opts: dict[str, str], key: str, default: float) -> float:
    try:
        return float(opts.get(key, default))
    except ValueError as exc:
        raise ConfigError(f"sensor option {key}={opts[key]!r} is not a number") from exc


def open_sensor(spec: str, *, calibration: Any = None, sysfs_root: str = "/") -> PowerSource:
    """Build the sensor actor a ``--sensor`` spec names (not started yet).

    Args:
        spec: see the module docstring.
        calibration: a :class:`tinytelem.sensors.calibration.Calibration` applied to every
            sample (None: raw readings).
        sysfs_root: root of /sys for the Linux sources (tests pass a fake tree).

    Raises:
        ConfigError: a malformed spec. SensorError: a Linux source that is not present.
    """
    kind, target, opts = parse_sensor_spec(spec)
    if kind == "ppk2":
        from tinytelem.sensors.ppk2 import PPK2Sensor

        if not target:
            raise ConfigError("ppk2 needs a port: --sensor ppk2:/dev/ttyACM0 "
                              "(`tinytelem sensors list` shows candidates)")
        return PPK2Sensor(target, mode=opts.get("mode", "source"),
                          voltage_mv=int(_float(opts, "voltage_mv", 3300)),
                          calibration=calibration)
    if kind == "ina":
        from tinytelem.sensors.ina import InaBridgeSensor

        if not target:
            raise ConfigError("ina needs a port or URL: --sensor ina:/dev/ttyUSB0")
        url = target if "://" in target else f"serial://{target}?baud=" + opts.get(
            "baud", "1000000")
        return InaBridgeSensor(url, shunt_ohm=_float(opts, "shunt_ohm", 0.1),
                               calibration=calibration)
    if kind == "joulescope":
        from tinytelem.sensors.joulescope import JoulescopeSensor

        return JoulescopeSensor(target, calibration=calibration)
    from tinytelem.sensors.linux import LinuxPowerSensor, select

    channel = select(f"{kind}:{target}" if target else kind, sysfs_root)
    return LinuxPowerSensor(channel, rate_hz=_float(opts, "rate_hz", 50.0))


MAX_EDGE_ATTRS = 4000
"""Logic edges kept as /power attributes (HDF5 attributes must stay small)."""


def record_sensor(writer: Any, sensor: Any, calibration: Any = None,
                  alignment: Any = None) -> None:
    """Store what a trace needs to know about the sensor at the end of a session.

    Root ``calibration_id`` (``none`` when uncalibrated) and the ``/calibration`` group; the
    ``/power`` group (sensor facts, counters from ``statistics()``, logic edges for marker
    alignment, the first :data:`MAX_EDGE_ATTRS`); ``/clock`` alignment attributes when an
    :class:`tinytelem.analysis.alignment.Alignment` is given.
    """
    import dataclasses

    import numpy as np

    attrs: dict[str, Any] = {}
    facts = getattr(sensor, "trace_attrs", None)
    if callable(facts):
        attrs.update(facts())
    else:
        attrs.update({"sensor": type(sensor).__name__,
                      "sample_rate_hz": float(getattr(sensor, "rate_hz", float("nan"))),
                      "voltage_v": float(getattr(sensor, "voltage_v", float("nan")))})
    stats = sensor.statistics()
    if dataclasses.is_dataclass(stats):
        for f in dataclasses.fields(stats):
            attrs[f"stat_{f.name}"] = getattr(stats, f.name)
    edges = getattr(sensor, "logic_edges", None)
    if callable(edges):
        idx, val = edges()
        attrs["logic_edges"] = int(idx.size)
        attrs["logic_edge_index"] = np.asarray(idx[:MAX_EDGE_ATTRS], dtype=np.int64)
        attrs["logic_edge_value"] = np.asarray(val[:MAX_EDGE_ATTRS], dtype=np.uint8)
    writer.set_attrs("power", attrs)
    cal_id = calibration.id if calibration is not None else "none"
    writer.set_attrs("/", {"calibration_id": cal_id})
    if calibration is not None:
        writer.set_attrs("calibration", calibration.trace_attrs())
    if alignment is not None:
        writer.set_attrs("clock", alignment.clock_attrs())
