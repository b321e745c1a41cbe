"""Lab sessions: many devices and sensors on one host (``record --session lab.toml``).

A session file names the devices (URLs as ``--device`` takes them), the sensors (specs as
``--sensor`` takes them) and which sensor measures which device (docs/lab.md)::

    name = "bench-a"                 # optional; default: the file's stem

    [devices.esp]
    url = "emu:esp32s3"

    [devices.rp]
    url = "emu:rp2040"

    [sensors.esp-power]
    spec = "sim"
    measures = "esp"
    rate = 100000                    # optional; samples/s (default: --sensor-rate)

Each device is recorded by :func:`~tinytelem.session.record.run_record` -- the very code a
single ``record`` runs, its own actor tree (link, decoder, hub, recorder, power source) -- all
under one nursery here, into ``OUT/<device id>.h5`` (raw capture ``OUT/<device id>.ttraw.zst``
beside it); ``profile --session`` gives :class:`ProfileOptions` instead, and each device is
profiled by :func:`~tinytelem.session.profile.run_profile` (``OUT/<device id>.summary.json``
too). Each device is a bulkhead: a device that fails is logged and reported in
``OUT/lab.json``, and the other recordings go on. Outlets (the websocket streamer, the MQTT
publisher) ride along: one for the whole lab, fed by one extra actor per device.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

from tinytelem.actors.supervisor import ExtraActor, SessionOutcome
from tinytelem.analysis.fleet import LAB_REPORT
from tinytelem.errors import ConfigError, first_error
from tinytelem.session.options import ProfileOptions, RecordOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["LAB_REPORT", "DeviceResult", "Lab", "LabDevice", "LabOutlet", "lab_devices",
           "lab_profiles", "load_lab", "parse_lab", "run_lab", "trace_path"]

log = logging.getLogger("tinytelem.lab")

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class LabDevice:
    """One device of a lab and the sensor that measures it (``none``: no sensor)."""

    id: str
    url: str
    sensor: str = "none"
    sensor_id: str | None = None
    sensor_rate_hz: float | None = None


@dataclass(frozen=True)
class Lab:
    """A parsed session file."""

    name: str
    devices: tuple[LabDevice, ...]


def _check_id(kind: str, name: str, source: str) -> str:
    if not ID_RE.match(name):
        raise ConfigError(f"{source}: {kind} id {name!r} is not a usable name; use letters, "
                          "digits, '-', '_' and '.' (it names the trace file and MQTT topics)")
    return name


def _table(doc: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [{key}] must be a table of named entries, e.g. "
                          f"[{key}.NAME]")
    return value


def parse_lab(doc: dict[str, Any], source: str, default_name: str = "lab") -> Lab:
    """Check a session file's document; every mistake is a ConfigError naming the entry."""
    unknown = set(doc) - {"name", "devices", "sensors"}
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; a session "
                          "file has name, [devices.ID] and [sensors.ID] (docs/lab.md)")
    devices = _table(doc, "devices", source)
    if not devices:
        raise ConfigError(f"{source}: no devices; add one as [devices.NAME] with url = "
                          "\"emu:esp32s3\" (any URL --device takes)")
    urls: dict[str, str] = {}
    for name, entry in devices.items():
        _check_id("device", name, source)
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            raise ConfigError(f"{source}: [devices.{name}] needs url = \"...\" (a URL as "
                              "--device takes it: emu:esp32s3, serial:///dev/ttyACM0, ...)")
        extra = set(entry) - {"url"}
        if extra:
            raise ConfigError(f"{source}: [devices.{name}] has unknown key(s) "
                              f"{', '.join(sorted(extra))}; a device has url only")
        urls[name] = entry["url"]
    measured: dict[str, tuple[str, str, float | None]] = {}
    for name, entry in _table(doc, "sensors", source).items():
        _check_id("sensor", name, source)
        if not isinstance(entry, dict) or not isinstance(entry.get("spec"), str) \
                or not isinstance(entry.get("measures"), str):
            raise ConfigError(f"{source}: [sensors.{name}] needs spec = \"...\" (as --sensor "
                              "takes it: sim, ppk2:/dev/ttyACM0, ...) and measures = \"DEVICE\"")
        extra = set(entry) - {"spec", "measures", "rate"}
        if extra:
            raise ConfigError(f"{source}: [sensors.{name}] has unknown key(s) "
                              f"{', '.join(sorted(extra))}; a sensor has spec, measures, rate")
        target = entry["measures"]
        if target not in urls:
            raise ConfigError(f"{source}: sensor {name} measures {target!r}, which is no "
                              f"device of this file ({', '.join(urls)})")
        if target in measured:
            raise ConfigError(f"{source}: sensors {measured[target][0]} and {name} both measure "
                              f"{target}; a trace holds one power channel, so give each "
                              "device one sensor")
        rate = entry.get("rate")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)
                                 or not 1 <= rate <= 1e6):
            raise ConfigError(f"{source}: [sensors.{name}] rate must be 1 to 1000000 "
                              "samples/s")
        spec = entry["spec"]
        if spec == "sim" and not urls[target].startswith("emu:"):
            raise ConfigError(f"{source}: sensor {name} is 'sim' (the twin's power waveform) "
                              f"but {target} is {urls[target]}; sim measures emu: devices only")
        measured[target] = (name, spec, float(rate) if rate is not None else None)
    name = doc.get("name", default_name)
    if not isinstance(name, str):
        raise ConfigError(f"{source}: name must be a string")
    return Lab(_check_id("lab", name, source), tuple(
        LabDevice(d, url, *((measured[d][1], measured[d][0], measured[d][2])
                            if d in measured else ()))
        for d, url in urls.items()))


def load_lab(path: Path) -> Lab:
    """Read and check a session file (TOML)."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read session file {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"session file {path} is not valid TOML: {exc}") from exc
    return parse_lab(doc, str(path), default_name=path.stem)


def trace_path(out_dir: Path, device_id: str) -> Path:
    """Where a lab device's trace goes: ``OUT/<device id>.h5``."""
    return out_dir / f"{device_id}.h5"


def lab_devices(lab: Lab, base: RecordOptions, out_dir: Path) -> list[tuple[str, RecordOptions]]:
    """Each device's record options: ``base`` with its URL, trace path and sensor."""
    return [(d.id, dataclasses.replace(
        base, device=d.url, out=trace_path(out_dir, d.id), sensor=d.sensor,
        sensor_rate_hz=d.sensor_rate_hz or base.sensor_rate_hz)) for d in lab.devices]


def lab_profiles(lab: Lab, base: ProfileOptions, out_dir: Path
                 ) -> list[tuple[str, ProfileOptions]]:
    """Each device's profile options (``profile --session``): ``base`` with its URL, its sensor
    (``none`` without one) and its files ``OUT/<device id>.*``."""
    return [(d.id, dataclasses.replace(
        base, device=d.url, out_dir=out_dir, stem=d.id, sensor=d.sensor,
        sensor_rate_hz=d.sensor_rate_hz or base.sensor_rate_hz)) for d in lab.devices]


def _outputs(options: RecordOptions | ProfileOptions) -> tuple[Path, ...]:
    """The files a device's session writes: trace first."""
    if isinstance(options, ProfileOptions):
        from tinytelem.session.profile import profile_paths

        return profile_paths(options)
    return options.out, options.out.with_suffix(".ttraw.zst")


@dataclass
class DeviceResult:
    """How one device's recording ended."""

    device_id: str
    url: str
    trace: Path
    summary: dict[str, Any] | None = None
    outcome: SessionOutcome | None = None
    error: str | None = None
    run_uid: str = ""
    """Unique per recording (``<host>-<device>-<start ns>``): what a collector dedupes by."""
    summary_path: Path | None = None
    """``profile --session``: the device's ``<id>.summary.json``."""

    @property
    def ok(self) -> bool:
        return self.error is None


class LabOutlet(Protocol):
    """Something that rides along with every device of a lab (streamer, publisher)."""

    async def serve(self, task_status: trio.TaskStatus[None] = ...) -> None:
        """Run until cancelled (listen, hold a broker connection...)."""

    def feed_actor(self, device_id: str, run_uid: str = "") -> ExtraActor:
        """The extra actor that takes one device's hub."""

    async def device_done(self, result: DeviceResult) -> None:
        """One device's recording ended (its summary, or its error)."""

    async def drain(self) -> bool:
        """Every device ended: send what is still queued (False: some was not)."""


async def run_lab(
    devices: Sequence[tuple[str, RecordOptions]] | Sequence[tuple[str, ProfileOptions]],
    stop: trio.Event,
    *,
    outlets: Sequence[LabOutlet] = (),
    report: Path | None = None,
    host: str | None = None,
    on_ready: Callable[[str, Any], None] | None = None,
    on_device_end: Callable[[DeviceResult], Awaitable[None] | None] | None = None,
) -> list[DeviceResult]:
    """Record every device at once until each ends (``stop``, ``duration_s``, its runs), or
    with :class:`ProfileOptions` profile each one's inference.

    A device that fails ends alone (its error is logged and in its result). ``report``: write
    the results there as JSON (``OUT/lab.json``).
    """
    from tinytelem.session.profile import run_profile
    from tinytelem.session.record import run_record

    ids = [device_id for device_id, _ in devices]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"device ids must differ: {', '.join(ids)}")
    for _, options in devices:  # refuse before anything starts, not one device later
        existing = [p for p in _outputs(options) if p.exists()]
        if existing and not options.overwrite:
            raise ConfigError(f"{existing[0]} already exists; pass --overwrite or choose "
                              "another --out")
    for _, options in devices:  # before any device starts (one failing removes none of it)
        where = _outputs(options)[0].parent
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create output directory {where}: "
                              f"{exc.strerror or exc}") from exc
    host = host or socket.gethostname()
    results: list[DeviceResult] = []

    async def one(device_id: str, options: RecordOptions | ProfileOptions) -> None:
        files = _outputs(options)
        result = DeviceResult(device_id, options.device, files[0],
                              run_uid=f"{host}-{device_id}-{time.time_ns()}")
        extra = [o.feed_actor(device_id, result.run_uid) for o in outlets]
        ready = (lambda h: on_ready(device_id, h)) if on_ready else None
        try:
            if isinstance(options, ProfileOptions):
                profiled = await run_profile(options, on_ready=ready, extra_actors=extra)
                result.outcome, result.summary = profiled.outcome, profiled.summary
                result.summary_path = profiled.summary_path
            else:
                result.outcome, result.summary = await run_record(
                    options, stop, extra_actors=extra, on_ready=ready)
        except Exception as exc:  # the bulkhead: this device ends, the others go on
            error = first_error(exc)
            result.error = str(error) if error is not None else repr(exc)
            log.error("device %s (%s) failed: %s", device_id, options.device, result.error,
                      exc_info=error is None)
        results.append(result)
        with trio.CancelScope(shield=True):
            for outlet in outlets:
                await outlet.device_done(result)
        if on_device_end is not None:
            maybe = on_device_end(result)
            if maybe is not None:
                await maybe

    async with trio.open_nursery() as nursery:
        for outlet in outlets:
            await nursery.start(outlet.serve)
        async with trio.open_nursery() as recordings:
            for device_id, options in devices:
                recordings.start_soon(one, device_id, options)
        for outlet in outlets:
            if not await outlet.drain():
                log.warning("%s: some messages were not delivered before giving up",
                            type(outlet).__name__)
        nursery.cancel_scope.cancel()
    results.sort(key=lambda r: ids.index(r.device_id))
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps({
            "host": host,
            "devices": [{"id": r.device_id, "url": r.url, "trace": r.trace.name,
                         "run_uid": r.run_uid, "ok": r.ok, "error": r.error,
                         "runs_done": r.outcome.runs_done if r.outcome else 0,
                         **({"summary": r.summary_path.name} if r.summary_path else {})}
                        for r in results],
        }, indent=2) + "\n")
    return results
