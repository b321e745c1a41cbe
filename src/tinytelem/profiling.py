"""One profiling session end to end: device, sensor, actors, trace, raw capture, summary.

Used by ``tinytelem profile`` and ``tinytelem record``, by the tests and by the benchmarks, so
they all exercise the same path.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from tinytelem import __version__
from tinytelem.actors.recorder import TraceRecorder
from tinytelem.actors.supervisor import (
    ExtraActor,
    PowerSource,
    RunRequest,
    SessionOutcome,
    Supervisor,
)
from tinytelem.devices import DeviceHandle, TwinOptions, open_device
from tinytelem.errors import ConfigError, TraceError
from tinytelem.protocol.messages import TraceLevel
from tinytelem.records import Record

TRACE_NAME = "trace.h5"
SUMMARY_NAME = "summary.json"
RAW_NAME = "raw.zst"

SENSORS = ("sim", "none")

# The twin publishes a power segment once it has happened, and the simulated sensor waits for
# the segments covering each block; after the run, recording goes on this long so the sensor
# has sampled all of it.
TWIN_SENSOR_TAIL_S = 0.3
SIM_SENSOR_TRANSPORT_S = 0.001


@dataclass
class ProfileOptions:
    """Everything a profiling session needs (the CLI's options)."""

    device: str
    out_dir: Path
    prompt: str = "Once upon a time"
    n_tokens: int = 64
    model: Path | None = None
    tokenizer: Path | None = None
    seed: int = 42
    temperature: float = 0.0
    trace_level: TraceLevel = TraceLevel.SPANS
    sensor: str = "auto"
    sensor_rate_hz: float = 100_000.0
    sensor_drift_ppm: float = -40.0
    weight_bits: int | None = None
    """Twin cost model precision; None: the model's own (32 for float models)."""
    faults: list[str] = field(default_factory=list)
    overwrite: bool = False
    run_timeout_s: float = 300.0
    calibration: Path | None = None
    """Per-unit calibration file (TOML) applied to a real sensor's samples."""


@dataclass
class ProfileResult:
    """What a session produced."""

    out_dir: Path
    trace_path: Path
    summary_path: Path
    raw_path: Path
    summary: dict[str, Any]
    outcome: SessionOutcome
    text: str | None


class TwinSensor:
    """The simulated sensor wired to the twin's power waveform (what a shunt would see)."""

    def __init__(self, power_url: str, rate_hz: float, drift_ppm: float, seed: int) -> None:
        from tinytelem.actors.power import SegmentWaveform, SimulatedPowerSensor

        self.power_url = power_url
        self.waveform = SegmentWaveform()
        self.sensor = SimulatedPowerSensor(
            self.waveform, rate_hz=rate_hz, drift_ppm=drift_ppm, noise_a=1e-5, seed=seed,
            transport_s=SIM_SENSOR_TRANSPORT_S,
        )

    async def run(
        self,
        send: trio.MemorySendChannel[Record],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        from tinytelem.actors.power import twin_power_client

        async with trio.open_nursery() as nursery:
            await nursery.start(twin_power_client, self.power_url, self.waveform)
            self.sensor.voltage_v = self.waveform.voltage_v
            await nursery.start(self.sensor.run, send)
            task_status.started()

    def statistics(self) -> Any:
        return self.sensor.statistics()


def tokenize_prompt(options: ProfileOptions) -> tuple[list[int], Callable[[list[int]], str] | None]:
    """Prompt ids (BOS first) and a decoder for the generated ids, when a tokenizer is known."""
    from tinytelem.models.tokenizer import ByteTokenizer, load_tokenizer

    text_known = True
    if options.tokenizer is not None:
        tok: Any = load_tokenizer(options.tokenizer)
    elif options.model is None:
        # The built-in model has seeded random weights: its output ids are not text.
        tok = ByteTokenizer()
        text_known = False
    else:
        raise ConfigError(
            f"--model {options.model} needs --tokenizer (the llama2.c tokenizer .bin that "
            "belongs to it, e.g. tok512.bin for stories260K)"
        )
    ids = list(tok.encode(options.prompt, bos=True, eos=False))

    def decode(generated: list[int]) -> str:
        return str(tok.decode_all(ids + generated))

    return ids, decode if text_known else None


def _trace_attrs(options: ProfileOptions, handle: DeviceHandle, host_t0: float) -> dict[str, Any]:
    return {
        "host_t0": host_t0,
        "device": handle.url,
        "link_url": handle.link_url,
        "platform": handle.platform or "",
        "sensor": options.sensor,
        "calibration_id": "none (simulated sensor)" if options.sensor == "sim" else "none",
        # The simulated sensor's blocks reach the host 1 ms after their last sample (plus
        # one-sided jitter); the clock fit cannot see a constant delay, so it is declared.
        **({"sensor_latency_s": SIM_SENSOR_TRANSPORT_S} if options.sensor == "sim" else {}),
        "prompt": options.prompt,
        "tool": f"tinytelem {__version__}",
        "trace_level": options.trace_level.name.lower(),
        **_model_attrs(options),
    }


def _firmware_model(device: str, model: Path | None) -> Path | None:
    """The .tlm to link into ``qemu:`` / ``native:`` firmware (None: the demo engine)."""
    if model is None or not device.startswith(("qemu:", "native:")):
        return None
    if model.suffix != ".tlm":
        raise ConfigError(f"{device} runs the firmware's integer engine, which needs a .tlm "
                          f"model; quantize {model} first (tinytelem model quantize ... -o M.tlm)")
    return model


def _model_attrs(options: ProfileOptions) -> dict[str, Any]:
    """Model shape and weight width, so reports can compute rooflines from the trace alone.

    HELLO carries only the model's name and hash; the dimensions are known on the host when
    the twin runs (built-in shape) or when ``--model`` names the checkpoint.
    """
    from dataclasses import asdict

    from tinytelem.models.cost import param_count
    from tinytelem.models.llama2c import STORIES260K_SHAPE, load_checkpoint

    out: dict[str, Any] = {}
    config = None
    if options.model is not None and options.model.suffix == ".tlm":
        from tinytelem.models.tlm import read_tlm

        config = read_tlm(options.model).config
    elif options.model is not None:
        config = load_checkpoint(options.model).config
    elif options.device.startswith("emu:"):
        config = STORIES260K_SHAPE
    if config is not None:
        out["model_config"] = json.dumps(asdict(config))
        out["model_params"] = param_count(config)
    if options.device.startswith("emu:"):
        out["weight_bits"] = options.weight_bits or _own_bits(options.model)
    return out


def _own_bits(model: Path | None) -> int:
    """The precision a model is stored at: a .tlm's bits, 32 for float checkpoints."""
    if model is not None and model.suffix == ".tlm":
        from tinytelem.models.tlm import read_tlm

        bits = read_tlm(model).metadata.get("bits")
        return bits if isinstance(bits, int) else 32
    return 32


def _prepare_out(options: ProfileOptions) -> tuple[Path, Path, Path]:
    out = options.out_dir
    paths = (out / TRACE_NAME, out / SUMMARY_NAME, out / RAW_NAME)
    existing = [p for p in paths if p.exists()]
    if existing and not options.overwrite:
        raise ConfigError(
            f"{existing[0]} already exists; pass --overwrite or choose another --out directory"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output directory {out}: {exc.strerror}") from exc
    for p in existing:
        p.unlink()
    return paths


def write_summary(trace_path: Path, summary_path: Path | None = None) -> dict[str, Any]:
    """Compute the summary of a finished trace; store it in the trace and in ``summary_path``."""
    from tinytelem.analysis.loader import summary_of_trace
    from tinytelem.trace.writer import store_summary

    summary = summary_of_trace(trace_path)
    store_summary(trace_path, summary)
    if summary_path is not None:
        summary_path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary


async def run_profile(
    options: ProfileOptions,
    on_token: Callable[[int], None] | None = None,
    on_ready: Callable[[DeviceHandle], None] | None = None,
    extra_actors: Sequence[ExtraActor] = (),
) -> ProfileResult:
    """Profile one inference on ``options.device``; write trace, raw capture and summary.

    ``extra_actors`` are started beside the recorder once the hub exists (``--serve`` passes
    the websocket streamer's ``run``); the power summaries go into the trace when a sensor runs.
    """
    from tinytelem.live.summaries import PowerSummaryRecorder, summary_tables
    from tinytelem.trace.raw import RawCaptureWriter
    from tinytelem.trace.writer import TraceWriter

    options = dataclasses.replace(options, sensor=resolve_sensor(options.sensor, options.device))
    calibration = _check_sensor(options)
    if options.n_tokens < 1:
        raise ConfigError("--tokens must be at least 1")
    prompt, decode = tokenize_prompt(options)
    trace_path, summary_path, raw_path = _prepare_out(options)
    twin = TwinOptions(
        model=options.model, seed=options.seed, weight_bits=options.weight_bits,
        faults=tuple(options.faults),
    )
    async with open_device(options.device, twin if options.device.startswith("emu:") else None,
                           firmware_model=_firmware_model(options.device, options.model)
                           ) as handle:
        if on_ready is not None:
            on_ready(handle)
        power: PowerSource | None = None
        if options.sensor == "sim":
            if handle.power_url is None:
                raise ConfigError(
                    "--sensor sim samples the device twin's power waveform, so it needs an "
                    "emu:<platform> device; use --sensor none for other devices"
                )
            power = TwinSensor(handle.power_url, options.sensor_rate_hz,
                                options.sensor_drift_ppm, options.seed)
        elif options.sensor != "none":
            from tinytelem.sensors import open_sensor

            power = open_sensor(options.sensor, calibration=calibration)
        host_t0 = time.monotonic()
        attrs = _trace_attrs(options, handle, host_t0)
        if calibration is not None:
            attrs["calibration_id"] = calibration.id
        writer = TraceWriter.create(trace_path, attrs=attrs,
                                    extra_tables=summary_tables() if power else None)
        raw = RawCaptureWriter.create(raw_path, header={
            "url": handle.url, "link_url": handle.link_url, "tool_version": __version__,
            "host_t0": host_t0,
        })
        recorder = TraceRecorder(writer, host_t0=host_t0,
                                 extensions=[PowerSummaryRecorder(writer)] if power else ())
        try:
            supervisor = Supervisor(
                handle.link_url, handle.connect, recorder, power=power, raw=raw,
                reconnect=handle.reconnect, extra_actors=extra_actors,
                tail_s=TWIN_SENSOR_TAIL_S if power is not None else 0.1,
            )
            request = RunRequest(prompt=prompt, n_tokens=options.n_tokens, seed=options.seed,
                                 temperature=options.temperature,
                                 trace_level=options.trace_level)
            outcome = await supervisor.record(request, run_timeout_s=options.run_timeout_s,
                                              on_token=on_token)
            store_session(writer, recorder, outcome, power, calibration)
        finally:
            writer.close()
            raw.close()
    summary = write_summary(trace_path, summary_path)
    text = decode(outcome.token_ids) if decode is not None else None
    return ProfileResult(options.out_dir, trace_path, summary_path, raw_path, summary, outcome,
                         text)


def resolve_sensor(spec: str, device: str, sysfs_root: str = "/") -> str:
    """``auto``: the twin's power waveform for ``emu:``, the host's RAPL package energy counter
    for ``native:`` (when readable), no sensor otherwise. Anything else is returned as given."""
    if spec != "auto":
        return spec
    if device.startswith("emu:"):
        return "sim"
    if device.startswith("native:"):
        from tinytelem.sensors.linux import discover

        for channel in discover(sysfs_root, runner=lambda args: ""):
            if channel.source == "rapl" and os.access(channel.path, os.R_OK):
                return channel.spec
    return "none"


def _check_sensor(options: ProfileOptions) -> Any:
    """Validate ``--sensor`` early (before any device starts); load ``--calibration``."""
    calibration = None
    if options.sensor not in SENSORS:
        from tinytelem.sensors import parse_sensor_spec

        parse_sensor_spec(options.sensor)  # ConfigError naming the accepted forms
    if options.calibration is not None:
        from tinytelem.sensors.calibration import Calibration

        if options.sensor in SENSORS:
            raise ConfigError("--calibration applies to a real sensor (ppk2:, ina:, ...), "
                              f"not --sensor {options.sensor}")
        calibration = Calibration.load(options.calibration)
    return calibration


def store_session(
    writer: Any, recorder: TraceRecorder, outcome: SessionOutcome, power: PowerSource | None,
    calibration: Any = None,
) -> None:
    """Root and group attributes known only at the end: HELLO facts, link and sensor stats."""
    hello = recorder.hello or outcome.hello
    if hello is not None:
        writer.set_attrs("/", {
            "tick_hz": hello.tick_hz, "cpu_hz": hello.cpu_hz, "ram_bytes": hello.ram_bytes,
            "flash_bytes": hello.flash_bytes, "psram_bytes": hello.psram_bytes,
            "firmware_version": hello.firmware_version, "model_name": hello.model_name,
            "model_sha256": hello.model_hash.hex(), "capabilities": hello.capabilities,
            "platform": hello.platform,
        })
    d = outcome.decoder
    link = outcome.link
    if d is not None and link is not None:
        writer.set_attrs("link", {
            "frames": d.frames, "bytes": d.bytes, "crc_errors": d.crc_errors,
            "cobs_errors": d.cobs_errors, "other_errors": d.other_errors, "gaps": d.seq_gaps,
            "lost_frames": d.lost_frames, "resyncs": d.resyncs, "reconnects": link.reconnects,
            "outages": link.outages, "down_s": link.down_s, "bytes_out": link.bytes_out,
        })
    if isinstance(power, TwinSensor):
        s = power.sensor
        writer.set_attrs("power", {
            "sample_rate_hz": s.rate_hz, "voltage_v": s.voltage_v, "sensor": "sim",
            "dropped_samples": int(getattr(outcome.power, "dropped_samples", 0) or 0),
        })
    elif power is not None:
        from tinytelem.sensors import record_sensor

        record_sensor(writer, power, calibration)
    writer.set_attrs("session", {
        "run_status": -1 if outcome.run_status is None else outcome.run_status,
        "stopped_early": outcome.stopped_early,
        "run_end_lost": outcome.run_end_lost,
        "n_generated_seen": len(outcome.token_ids),
    })


def format_seconds(value: float | None) -> str:
    """Human time: 12.3 ms, 1.23 s."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"


__all__ = ["ProfileOptions", "ProfileResult", "TraceError", "run_profile", "write_summary"]


@dataclass
class RecordOptions:
    """Options of ``tinytelem record``."""

    device: str
    out: Path
    max_tokens: int | None = None
    duration_s: float | None = None
    run: bool = False
    prompt: str = "Once upon a time"
    n_tokens: int = 64
    model: Path | None = None
    tokenizer: Path | None = None
    seed: int = 42
    trace_level: TraceLevel = TraceLevel.SPANS
    overwrite: bool = False
    faults: list[str] = field(default_factory=list)


def raw_path_for(trace: Path) -> Path:
    """The raw capture that goes beside a trace: ``run.h5`` -> ``run.raw.zst``."""
    return trace.with_suffix(".raw.zst")


async def run_record(
    options: RecordOptions,
    stop: trio.Event,
    on_token: Callable[[int], None] | None = None,
    on_ready: Callable[[DeviceHandle], None] | None = None,
    extra_actors: Sequence[ExtraActor] = (),
) -> tuple[SessionOutcome, dict[str, Any]]:
    """Record a device until ``stop`` is set, ``max_tokens`` or ``duration_s`` is reached.

    With ``run`` it also starts one inference (and ends after its INFER_END).
    """
    from tinytelem.trace.raw import RawCaptureWriter
    from tinytelem.trace.writer import TraceWriter

    raw_path = raw_path_for(options.out)
    for p in (options.out, raw_path):
        if p.exists() and not options.overwrite:
            raise ConfigError(f"{p} already exists; pass --overwrite or choose another name")
    options.out.parent.mkdir(parents=True, exist_ok=True)
    request = None
    if options.run:
        sub = ProfileOptions(device=options.device, out_dir=options.out.parent,
                             prompt=options.prompt, model=options.model,
                             tokenizer=options.tokenizer)
        prompt, _ = tokenize_prompt(sub)
        request = RunRequest(prompt=prompt, n_tokens=options.n_tokens, seed=options.seed,
                             trace_level=options.trace_level)
    is_emu = options.device.startswith("emu:")
    twin = TwinOptions(model=options.model, seed=options.seed, faults=tuple(options.faults))
    async with open_device(options.device, twin if is_emu else None,
                           firmware_model=_firmware_model(options.device, options.model)
                           ) as handle:
        if on_ready is not None:
            on_ready(handle)
        host_t0 = time.monotonic()
        writer = TraceWriter.create(options.out, overwrite=options.overwrite, attrs={
            "host_t0": host_t0, "device": handle.url, "link_url": handle.link_url,
            "platform": handle.platform or "", "sensor": "none", "calibration_id": "none",
        })
        raw = RawCaptureWriter.create(raw_path, header={
            "url": handle.url, "link_url": handle.link_url, "tool_version": __version__,
            "host_t0": host_t0,
        }, overwrite=options.overwrite)
        recorder = TraceRecorder(writer, host_t0=host_t0)
        try:
            supervisor = Supervisor(handle.link_url, handle.connect, recorder, raw=raw,
                                    reconnect=handle.reconnect, extra_actors=extra_actors)
            outcome = await supervisor.record(
                request, duration_s=options.duration_s, max_tokens=options.max_tokens,
                stop=stop, on_token=on_token,
            )
            store_session(writer, recorder, outcome, None)
        finally:
            writer.close()
            raw.close()
    summary = write_summary(options.out)
    return outcome, summary
