"""``run_session``: the one place that opens a device and runs the recording actor graph.

::

    open_device ──> power source (twin waveform, hardware sensor, or none)
        │
        ├─> TraceWriter (or NullSink) + raw capture ──> TraceRecorder (+ power summaries)
        └─> Supervisor(link, power, recorder, raw, extra actors) .record(request)
                                   │
              store_session() ─────┘  then the files close, then summary.json

``profile``, ``record`` and ``serve`` differ only in the :class:`SessionOutputs` they ask for
and the extra actors they pass (the websocket streamer).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from tinytelem import __version__
from tinytelem.actors.recorder import TraceRecorder, TraceSink
from tinytelem.actors.supervisor import (
    ExtraActor,
    RunRequest,
    RunSchedule,
    RunTimeout,
    SessionOutcome,
    Supervisor,
)
from tinytelem.devices import DeviceHandle, TwinOptions, open_device
from tinytelem.emulator.link import LinkFit
from tinytelem.errors import ConfigError
from tinytelem.power.source import PowerSource
from tinytelem.power.twin import SIM_SENSOR_TRANSPORT_S, TwinSensor
from tinytelem.session.options import SessionOptions

__all__ = [
    "NullSink", "SessionOutputs", "check_sensor", "resolve_sensor", "run_request",
    "run_session", "store_session", "tokenize_prompt", "write_summary",
]

SENSORS = ("sim", "none")
LINK_BAUD_DEVICES = ("emu:", "qemu:", "native:")
"""Devices whose link rate ``--link-baud`` sets (the twin's model; the firmware's build)."""

TWIN_SENSOR_TAIL_S = 0.3
"""The twin publishes a power segment once it has happened, and the simulated sensor waits for
the segments covering each block; after the run, recording goes on this long so the sensor has
sampled all of it."""


@dataclass(frozen=True)
class SessionOutputs:
    """Where a session's data goes. ``trace=None`` keeps nothing (a live-only ``serve``)."""

    trace: Path | None
    raw: Path | None = None
    summary: Path | None = None
    overwrite: bool = False
    rotation: Any = None
    """A :class:`~tinytelem.session.rotate.Rotation`: write segments ``NAME-0001.h5``, ...
    (and raw captures beside them) instead of ``trace`` and ``raw``."""
    segments: list[Path] = field(default_factory=list)
    """With ``rotation``: filled with every segment path as it is created."""


class NullSink(TraceSink):
    """A trace sink that keeps nothing (``serve`` without ``--out``).

    The supervisor's session logic still needs the recorder's view of HELLO and of the runs.
    Every :class:`~tinytelem.actors.recorder.TraceSink` method is inherited and does nothing.
    """

    def close(self) -> None:
        """Nothing to close."""


def tokenize_prompt(options: SessionOptions) -> tuple[list[int], Callable[[list[int]], str] | None]:
    """Prompt ids (BOS first) and a decoder for the generated ids, when a tokenizer is known."""
    from tinytelem.models.formats import open_model, resolve_tokenizer
    from tinytelem.models.tokenizer import ByteTokenizer, load_tokenizer

    tok: Any
    if options.model is not None:
        # The model's own tokenizer (stored in it or beside it), or --tokenizer.
        tok = resolve_tokenizer(open_model(options.model), options.tokenizer)
    elif options.tokenizer is not None:
        tok = load_tokenizer(options.tokenizer)
    else:
        tok = ByteTokenizer()
    # Generated models have seeded random weights: their output ids are not text.
    text_known = not isinstance(tok, ByteTokenizer)
    ids = list(tok.encode(options.prompt, bos=True, eos=False))

    def decode(generated: list[int]) -> str:
        return str(tok.decode_all(ids + generated))

    return ids, decode if text_known else None


def run_request(options: SessionOptions) -> RunRequest:
    """The RUN a session asks the device for: the tokenized prompt and the sampling options."""
    prompt, _ = tokenize_prompt(options)
    return RunRequest(prompt=prompt, n_tokens=options.n_tokens, seed=options.seed,
                      temperature=options.temperature, trace_level=options.trace_level)


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


def check_sensor(options: SessionOptions) -> Any:
    """Validate ``--sensor`` early (before any device starts); load ``--calibration``."""
    calibration = None
    if options.sensor not in SENSORS:
        from tinytelem.sensors.open import parse_sensor_spec

        parse_sensor_spec(options.sensor)  # ConfigError naming the accepted forms
    if options.calibration is not None:
        from tinytelem.sensors.calibration import Calibration

        if options.sensor in SENSORS:
            raise ConfigError("--calibration applies to a real sensor (ppk2:, ina:, ...), "
                              f"not --sensor {options.sensor}")
        calibration = Calibration.load(options.calibration)
    return calibration


def _open_power(options: SessionOptions, handle: DeviceHandle,
                calibration: Any) -> PowerSource | None:
    if options.sensor == "sim":
        if handle.power_url is None:
            raise ConfigError(
                "--sensor sim samples the device twin's power waveform, so it needs an "
                "emu:<platform> device; use --sensor none for other devices"
            )
        return TwinSensor(handle.power_url, options.sensor_rate_hz, options.sensor_drift_ppm,
                          options.seed)
    if options.sensor != "none":
        from tinytelem.sensors.open import open_sensor

        return open_sensor(options.sensor, calibration=calibration)
    return None


def firmware_model(device: str, model: Path | None) -> Path | None:
    """The .tlm to link into ``qemu:`` / ``native:`` firmware (None: the demo engine)."""
    if model is None or not device.startswith(("qemu:", "native:")):
        return None
    if model.suffix != ".tlm":
        raise ConfigError(f"{device} runs the firmware's integer engine, which needs a .tlm "
                          f"model; quantize {model} first (tinytelem model quantize ... -o M.tlm)")
    return model


def check_link(options: SessionOptions) -> None:
    """Raise ConfigError when ``link_baud`` is asked of a device whose link we cannot set: the
    twin (``emu:``) models it, ``qemu:`` and ``native:`` firmware is built with it."""
    if options.link_baud is not None and not options.device.startswith(LINK_BAUD_DEVICES):
        raise ConfigError(
            f"--link-baud sets the link of the device twin (emu:) and of firmware built here "
            f"(qemu:, native:); {options.device} uses its real link (for serial:// give the "
            "rate in the URL: serial:///dev/ttyUSB0?baud=...)")


def predict_link(options: SessionOptions) -> LinkFit | None:
    """Whether the session's trace level fits its ``link_baud`` (predicted, ``emu:`` only).

    None without a link rate, and for firmware (its time is QEMU's or the host's, not a
    platform's). The fit uses the twin's own cost model and schedule for the
    model and platform the session runs.
    """
    check_link(options)
    if options.link_baud is None or not options.device.startswith("emu:"):
        return None
    from tinytelem.costing.model import CostModel
    from tinytelem.emulator.link import link_fit
    from tinytelem.models.formats import GENERATED_MODEL_BITS, open_model
    from tinytelem.models.llama2c import STORIES260K_SHAPE
    from tinytelem.platforms import get_platform
    from tinytelem.transports.url import EmuURL, parse_device_url

    config, bits = STORIES260K_SHAPE, GENERATED_MODEL_BITS
    if options.model is not None:
        lm = open_model(options.model)
        config, bits = lm.model.config, lm.weight_bits
    url = parse_device_url(options.device)
    assert isinstance(url, EmuURL)  # check_link refused every other device
    cost = CostModel(get_platform(url.platform), config, options.weight_bits or bits,
                     options.trace_level)
    return link_fit(cost, options.link_baud)


def link_advice(fit: LinkFit) -> str | None:
    """A warning naming what fits when ``fit`` does not, else None."""
    if fit.fits:
        return None
    from tinytelem.protocol.enums import TraceLevel

    lower = "tokens" if fit.level == TraceLevel.SPANS else "off"
    return (f"predicted: at trace level {fit.level.name.lower()} one decode token makes "
            f"{fit.frames_per_token} frames ({fit.bytes_per_token} bytes on the wire), "
            f"{fit.needed_bytes_s:,.0f} bytes/s, {fit.utilisation:.1f}x what {fit.baud} baud "
            f"carries: the device drops frames (counted as sequence gaps). Use --trace-level "
            f"{lower} or a link of at least {fit.baud_needed} baud.")


def model_attrs(options: SessionOptions) -> dict[str, Any]:
    """Model shape and weight width, so reports can compute rooflines from the trace alone.

    HELLO carries only the model's name and hash; the dimensions are known on the host when
    the twin runs (built-in shape) or when ``--model`` names the model file.
    """
    from tinytelem.models.cost import param_count
    from tinytelem.models.formats import GENERATED_MODEL_BITS, open_model
    from tinytelem.models.llama2c import STORIES260K_SHAPE

    out: dict[str, Any] = {}
    config = None
    bits = GENERATED_MODEL_BITS
    if options.model is not None:
        lm = open_model(options.model)
        config, bits = lm.model.config, lm.weight_bits
    elif options.device.startswith("emu:"):
        config = STORIES260K_SHAPE
    if config is not None:
        out["model_config"] = json.dumps(asdict(config))
        out["model_params"] = param_count(config)
    if options.device.startswith("emu:"):
        out["weight_bits"] = options.weight_bits or bits
    return out


def _trace_attrs(options: SessionOptions, handle: DeviceHandle, host_t0: float,
                 calibration: Any, run: bool) -> dict[str, Any]:
    return {
        "host_t0": host_t0,
        "device": handle.url,
        "link_url": handle.link_url,
        "platform": handle.platform or "",
        "sensor": options.sensor,
        "calibration_id": (calibration.id if calibration is not None
                           else "none (simulated sensor)" if options.sensor == "sim" else "none"),
        # The simulated sensor's blocks reach the host 1 ms after their last sample (plus
        # one-sided jitter); the clock fit cannot see a constant delay, so it is declared.
        **({"sensor_latency_s": SIM_SENSOR_TRANSPORT_S} if options.sensor == "sim" else {}),
        "prompt": options.prompt if run else "",
        **({"requested_tokens": options.n_tokens} if run else {}),
        "tool": f"tinytelem {__version__}",
        "trace_level": options.trace_level.name.lower(),
        **model_attrs(options),
    }


def store_session(
    writer: Any, recorder: TraceRecorder, outcome: SessionOutcome, power: PowerSource | None,
    calibration: Any = None,
) -> None:
    """Root and group attributes known only at the end: HELLO facts, link and sensor stats."""
    store_device_facts(writer, recorder.hello or outcome.hello, power, calibration,
                       dropped_samples=int(getattr(outcome.power, "dropped_samples", 0) or 0))
    d = outcome.decoder
    link = outcome.link
    if d is not None and link is not None:
        writer.set_attrs("link", {
            "frames": d.frames, "bytes": d.bytes, "crc_errors": d.crc_errors,
            "cobs_errors": d.cobs_errors, "other_errors": d.other_errors, "gaps": d.seq_gaps,
            "lost_frames": d.lost_frames, "lost_spans": d.lost_spans,
            "resyncs": d.resyncs, "reconnects": link.reconnects,
            "outages": link.outages, "down_s": link.down_s, "bytes_out": link.bytes_out,
        })
    writer.set_attrs("session", {
        "run_status": -1 if outcome.run_status is None else outcome.run_status,
        "stopped_early": outcome.stopped_early,
        "run_end_lost": outcome.run_end_lost,
        "n_generated_seen": len(outcome.token_ids),
        "runs_done": outcome.runs_done,
    })


def store_device_facts(writer: Any, hello: Any, power: PowerSource | None, calibration: Any,
                       dropped_samples: int = 0) -> None:
    """The HELLO facts (root) and the sensor's facts (/power) that make a trace readable on
    its own: at the end of a session, and at the end of each segment of a rotated one."""
    if hello is not None:
        writer.set_attrs("/", {
            "tick_hz": hello.tick_hz, "cpu_hz": hello.cpu_hz, "ram_bytes": hello.ram_bytes,
            "flash_bytes": hello.flash_bytes, "psram_bytes": hello.psram_bytes,
            "firmware_version": hello.firmware_version, "model_name": hello.model_name,
            "model_sha256": hello.model_hash.hex(), "capabilities": hello.capabilities,
            "platform": hello.platform,
        })
    if isinstance(power, TwinSensor):
        s = power.sensor
        writer.set_attrs("power", {
            "sample_rate_hz": s.rate_hz, "voltage_v": s.voltage_v, "sensor": "sim",
            "dropped_samples": dropped_samples,
        })
    elif power is not None:
        from tinytelem.sensors.open import record_sensor

        record_sensor(writer, power, calibration)


def write_summary(
    trace_path: Path, summary_path: Path | None = None, segments: Sequence[Path] = ()
) -> dict[str, Any]:
    """Compute the summary of a finished trace; store it in the trace and in ``summary_path``.

    With ``segments`` (a rotated recording, ``trace_path`` its last segment) the summary covers
    every segment, read as one.
    """
    from tinytelem.analysis.loader import summary_of_trace
    from tinytelem.trace.store import store_summary

    summary = summary_of_trace(list(segments) if segments else trace_path)
    store_summary(trace_path, summary)
    if summary_path is not None:
        summary_path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary


async def run_session(
    options: SessionOptions,
    outputs: SessionOutputs,
    request: RunRequest | RunSchedule | None,
    *,
    stop: trio.Event | None = None,
    duration_s: float | None = None,
    max_tokens: int | None = None,
    on_token: Callable[[int], None] | None = None,
    on_ready: Callable[[DeviceHandle], None] | None = None,
    extra_actors: Sequence[ExtraActor] = (),
    calibration: Any = None,
    before_record: Callable[[DeviceHandle], Awaitable[None]] | None = None,
    on_run_end: Callable[[SessionOutcome], None] | None = None,
) -> tuple[SessionOutcome, dict[str, Any] | None]:
    """Open the device, record until the request's run ends (or ``stop``, ``duration_s``,
    ``max_tokens``), close the files in order, and summarise the trace.

    Returns the supervisor's outcome and the summary (None when nothing was recorded).
    ``options.sensor`` must be resolved (:func:`resolve_sensor`) and checked, with its
    calibration loaded (:func:`check_sensor`), before anything is created on disk.
    ``before_record`` runs once the device is open and before anything is recorded (``serve
    --wait-clients`` waits for its audience there).
    """
    from tinytelem.power.summaries import PowerSummaryRecorder, summary_tables
    from tinytelem.trace.raw import RawCaptureWriter
    from tinytelem.trace.writer import TraceWriter

    is_emu = options.device.startswith("emu:")
    check_link(options)
    twin = TwinOptions(model=options.model, seed=options.seed, weight_bits=options.weight_bits,
                       faults=tuple(options.faults), link_baud=options.link_baud)
    async with open_device(options.device, twin if is_emu else None,
                           firmware_model=firmware_model(options.device, options.model),
                           firmware_link_baud=None if is_emu else options.link_baud,
                           ) as handle:
        if on_ready is not None:
            on_ready(handle)
        if before_record is not None:
            await before_record(handle)
        power = _open_power(options, handle, calibration)
        host_t0 = time.monotonic()
        writer: Any = NullSink()
        extensions: list[Any] = []
        raw_header = {"url": handle.url, "link_url": handle.link_url,
                      "tool_version": __version__, "host_t0": host_t0}

        def create_raw(path: Path) -> Any:
            return RawCaptureWriter.create(path, header=raw_header, overwrite=outputs.overwrite)

        raw: Any = None
        trace_out = outputs.trace
        if trace_out is not None:
            trace_out.parent.mkdir(parents=True, exist_ok=True)
            attrs = _trace_attrs(options, handle, host_t0, calibration, request is not None)
            tables = summary_tables() if power else None
            keep_samples = options.power_store != "stats"
            if outputs.rotation is None:
                writer = TraceWriter.create(trace_out, overwrite=outputs.overwrite, attrs=attrs,
                                            extra_tables=tables, power_samples=keep_samples)
            else:
                writer, raw = _rotating_outputs(outputs, trace_out, attrs, tables, create_raw,
                                                lambda w: store_device_facts(
                                                    w, recorder.hello, power, calibration),
                                                keep_samples)
            if power is not None:
                extensions.append(PowerSummaryRecorder(writer))
        if outputs.raw is not None and raw is None:
            raw = create_raw(outputs.raw)
        recorder = TraceRecorder(writer, host_t0=host_t0, extensions=extensions)
        try:
            supervisor = Supervisor(
                handle.link_url, handle.connect, recorder, power=power, raw=raw,
                reconnect=handle.reconnect, extra_actors=extra_actors,
                tail_s=TWIN_SENSOR_TAIL_S if power is not None else 0.1,
            )
            try:
                outcome = await supervisor.record(
                    request, duration_s=duration_s, max_tokens=max_tokens, stop=stop,
                    run_timeout_s=options.run_timeout_s, on_token=on_token,
                    on_run_end=on_run_end)
            except RunTimeout as exc:
                if exc.outcome is not None:
                    store_session(writer, recorder, exc.outcome, power, calibration)
                    writer.set_attrs("session", {"error": str(exc)})
                raise
            store_session(writer, recorder, outcome, power, calibration)
        finally:
            # The trace first, then the raw capture, even when the first fails (disk full):
            # nothing is left open for the garbage collector to finalise later.
            try:
                writer.close()
            finally:
                if raw is not None:
                    raw.close()
    if outputs.trace is None:
        return outcome, None
    if outputs.rotation is not None:
        return outcome, write_summary(outputs.segments[-1], outputs.summary, outputs.segments)
    return outcome, write_summary(outputs.trace, outputs.summary)


def _raw_beside(trace: Path) -> Path:
    return trace.with_suffix(".ttraw.zst")


def _rotating_outputs(outputs: SessionOutputs, out: Path, attrs: dict[str, Any],
                      tables: Any, create_raw: Callable[[Path], Any],
                      on_segment_end: Callable[[Any], None],
                      power_samples: bool = True) -> tuple[Any, Any]:
    """The segment writer (and raw capture) of ``record --rotate``."""
    from tinytelem.session.rotate import RotatingRaw, RotatingSink, segment_path
    from tinytelem.trace.writer import TraceWriter

    def create_trace(path: Path) -> Any:
        return TraceWriter.create(path, overwrite=outputs.overwrite, attrs={
            **attrs, "segment": len(outputs.segments) + 1, "segment_of": out.name,
        }, extra_tables=tables, power_samples=power_samples)

    raw = (RotatingRaw(create_raw, _raw_beside(segment_path(out, 1)))
           if outputs.raw is not None else None)
    writer = RotatingSink(create_trace, out, outputs.rotation, raw=raw, raw_path=_raw_beside,
                          on_segment_end=on_segment_end, segments=outputs.segments)
    return writer, raw
