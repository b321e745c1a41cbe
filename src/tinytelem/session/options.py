"""The options of a session: one type with what every layout shares, and each layout's extras.

Every default is written here once; the CLI modules and the library layouts take them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tinytelem.protocol.enums import TraceLevel

__all__ = ["ProfileOptions", "RecordOptions", "ServeOptions", "SessionOptions"]

DEFAULT_PROMPT = "Once upon a time"


@dataclass(kw_only=True)
class SessionOptions:
    """The device, the model it runs, the inference to request and the power sensor."""

    device: str
    prompt: str = DEFAULT_PROMPT
    n_tokens: int = 64
    model: Path | None = None
    tokenizer: Path | None = None
    seed: int = 42
    temperature: float = 0.0
    trace_level: TraceLevel = TraceLevel.SPANS
    sensor: str = "auto"
    """``auto`` (the twin's waveform for ``emu:``, RAPL for ``native:``), ``sim``, ``none`` or a
    hardware sensor spec (``ppk2:/dev/ttyACM0`` ...; see docs/sensors.md)."""
    sensor_rate_hz: float = 100_000.0
    sensor_drift_ppm: float = -40.0
    """The simulated sensor's clock error against the host (a real sensor has one too)."""
    weight_bits: int | None = None
    """Width the twin's cost model assumes; None: the model's own (see models.formats)."""
    faults: list[str] = field(default_factory=list)
    link_baud: int | None = None
    """The link's UART rate (8N1) for the twin (``emu:``) and firmware built here (``qemu:``,
    ``native:``, drop policy); None: a free link."""
    overwrite: bool = False
    run_timeout_s: float = 300.0
    calibration: Path | None = None
    """Per-unit calibration file (TOML) applied to a real sensor's samples."""
    power_store: str = "all"
    """``all``: every power sample plus the summaries; ``stats``: only the summaries
    (/power/summary: min, mean, max, std per 1 ms ... 1 s), for long recordings at high rates."""


@dataclass(kw_only=True)
class ProfileOptions(SessionOptions):
    """``tinytelem profile``: one inference into a directory."""

    out_dir: Path
    stem: str | None = None
    """Name the files ``<stem>.h5``, ``<stem>.ttraw.zst`` and ``<stem>.summary.json`` (a lab's
    device, ``profile --session``); None: ``trace.h5``, ``raw.ttraw.zst``, ``summary.json``."""


@dataclass(kw_only=True)
class RecordOptions(SessionOptions):
    """``tinytelem record``: a device until stopped (optionally starting one inference)."""

    out: Path
    max_tokens: int | None = None
    duration_s: float | None = None
    run: bool = False
    sensor: str = "none"
    repeat: int | None = 1
    """With ``run``: how many runs, one after another; None repeats until stopped."""
    interval_s: float = 0.0
    """Start a run this long after the previous one started (0: as soon as it ended)."""
    prompts: list[str] | None = None
    """Prompts the runs take in turn (``--prompts FILE``); None: ``prompt`` every time."""
    rotate: str | None = None
    """Start a new segment file after this long or at this size (``1h``, ``2GB``); None:
    one file."""


@dataclass(kw_only=True)
class ServeOptions(SessionOptions):
    """``tinytelem serve`` (and ``monitor --device``): the graph plus a websocket streamer."""

    listen: str = "ws://127.0.0.1:8765"
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    out: Path | None = None
    """Also record a trace to this file."""
    run: bool = False
    duration_s: float | None = None
    client_queue: int = 65536
    wait_clients: int = 0
    """Before recording (and before RUN), wait until this many clients have subscribed."""
    wait_timeout_s: float | None = None
    """Give up waiting for clients after this long (ConfigError); None waits until stopped."""
