"""The live stream's message schema, ``tinytelem.stream/1`` (normative text: docs/streaming.md).

Every websocket message is one map with a ``"type"`` key. Two encodings carry the same maps,
chosen by websocket subprotocol:

* ``tinytelem.v1.msgpack`` (default, binary frames): raw samples travel as little-endian
  float32 ``bin`` values, 4 bytes a sample.
* ``tinytelem.v1.json`` (text frames): for consumers without msgpack (a browser, ``jq``);
  raw samples become arrays of numbers.

Decoding is tolerant in the way protocol v1 is: unknown message types become
:class:`UnknownMessage` and unknown keys are ignored, so a newer server can add fields without
breaking older clients. The version is the number in the subprotocol name; an incompatible
change gets ``tinytelem.v2.*``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack
import numpy as np
import numpy.typing as npt

from tinytelem.errors import ProtocolError

__all__ = [
    "SCHEMA",
    "SUBPROTOCOLS",
    "SUBPROTOCOL_JSON",
    "SUBPROTOCOL_MSGPACK",
    "ByeMessage",
    "Codec",
    "DeviceInfo",
    "DroppedMessage",
    "ErrorMessage",
    "HelloMessage",
    "LayersMessage",
    "LinkMessage",
    "LogMessage",
    "MemoryMessage",
    "PowerGapMessage",
    "RawPowerMessage",
    "RunMessage",
    "SpanMessage",
    "StatsMessage",
    "StreamMessage",
    "SummaryMessage",
    "TokenMessage",
    "UnknownMessage",
    "decode",
    "encode",
    "parse_message",
]

SCHEMA = "tinytelem.stream/1"
SUBPROTOCOL_MSGPACK = "tinytelem.v1.msgpack"
SUBPROTOCOL_JSON = "tinytelem.v1.json"
SUBPROTOCOLS = (SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON)

Codec = Literal["msgpack", "json"]


def codec_of(subprotocol: str | None) -> Codec:
    """The codec a negotiated subprotocol means (none negotiated: msgpack, the default)."""
    return "json" if subprotocol == SUBPROTOCOL_JSON else "msgpack"


def subprotocol_of(codec: Codec) -> str:
    """The subprotocol name of a codec."""
    return SUBPROTOCOL_JSON if codec == "json" else SUBPROTOCOL_MSGPACK


def _json_default(value: object) -> object:
    if isinstance(value, bytes | bytearray | memoryview):
        # Raw samples: JSON has no binary type, so float32 bytes become numbers.
        return np.frombuffer(value, dtype="<f4").tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot encode {type(value).__name__} in a stream message")


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: they become null (msgpack keeps them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def encode(message: dict[str, Any], codec: Codec) -> bytes | str:
    """One message map -> websocket payload (bytes for msgpack, str for JSON)."""
    if codec == "json":
        return json.dumps(_finite(message), default=_json_default, separators=(",", ":"),
                          allow_nan=False)
    packed: bytes = msgpack.packb(message, use_bin_type=True, default=_json_default)
    return packed


def decode(payload: bytes | str) -> dict[str, Any]:
    """Websocket payload -> message map (binary payloads are msgpack, text is JSON).

    Raises:
        ProtocolError: not a map with a string ``type``.
    """
    try:
        value = json.loads(payload) if isinstance(payload, str) else msgpack.unpackb(
            payload, raw=False, strict_map_key=False)
    except (ValueError, RecursionError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"stream message is not valid {'JSON' if isinstance(payload, str) else 'msgpack'}: {exc}") from exc  # noqa: E501
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ProtocolError("stream message must be a map with a string 'type'")
    return value


# ------------------------------------------------------------------------- typed messages


def _f(value: Any) -> float:
    return math.nan if value is None else float(value)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """The device's HELLO facts."""

    platform: str
    firmware_version: str
    model_name: str
    model_sha256: str
    cpu_hz: int
    tick_hz: int
    ram_bytes: int
    flash_bytes: int
    psram_bytes: int
    capabilities: int
    device_id: str | None = None
    """In a lab stream: the device the message is about (docs/lab.md)."""

    @classmethod
    def from_map(cls, m: dict[str, Any]) -> DeviceInfo:
        return cls(
            str(m.get("platform", "")), str(m.get("firmware_version", "")),
            str(m.get("model_name", "")), str(m.get("model_sha256", "")),
            int(m.get("cpu_hz", 0)), int(m.get("tick_hz", 0)), int(m.get("ram_bytes", 0)),
            int(m.get("flash_bytes", 0)), int(m.get("psram_bytes", 0)),
            int(m.get("capabilities", 0)),
        )


@dataclass(frozen=True, slots=True)
class HelloMessage:
    """First server message: who is streaming, and the levels a client may subscribe to."""

    schema: str
    server: str
    session: dict[str, Any]
    device: DeviceInfo | None
    levels: tuple[str, ...]
    level_seconds: tuple[float, ...]
    sample_rate_hz: float
    queue: int
    device_id: str | None = None
    """In a lab stream: the device the message is about (docs/lab.md)."""


@dataclass(frozen=True, slots=True)
class SummaryMessage:
    """A batch of consecutive power buckets at one level (columns, one entry per bucket)."""

    level: str
    level_s: float
    sample_rate_hz: float
    voltage_v: float
    first_index: tuple[int, ...]
    n: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    min: tuple[float, ...]
    max: tuple[float, ...]
    device_id: str | None = None
    """In a lab stream: the device the message is about (docs/lab.md)."""

    def times_s(self) -> list[float]:
        """Sensor-clock start time of each bucket."""
        return [i / self.sample_rate_hz for i in self.first_index]

    def power_w(self) -> list[float]:
        """Mean power of each bucket (mean current x supply voltage)."""
        return [m * self.voltage_v for m in self.mean]


@dataclass(frozen=True, slots=True)
class RawPowerMessage:
    """Raw samples: a live block (``live``) or the answer to a ``raw_request``."""

    first_index: int
    sample_rate_hz: float
    voltage_v: float
    current_a: npt.NDArray[np.float32] = field(compare=False)
    live: bool
    device_id: str | None = None
    """In a lab stream: the device the message is about (docs/lab.md)."""


@dataclass(frozen=True, slots=True)
class TokenMessage:
    """A TOKEN frame: ``host_s`` is server host monotonic time of arrival."""

    host_s: float
    device_s: float
    index: int
    token_id: int
    phase: int
    device_id: str | None = None
    """In a lab stream: the device the message is about (docs/lab.md)."""


@dataclass(frozen=True, slots=True)
class SpanMessage:
    """An operator span (SPAN_BEGIN .. SPAN_END paired by the server), device seconds."""

    begin_s: float
    end_s: float
    layer: int
    op: int
    op_name: str
    device_id: str | None = None
    """In a lab stream: the device the message is about (docs/lab.md)."""


@dataclass(frozen=True, slots=True)
class LayersMessage:
    """Operator spans aggregated per token (the default instead of one ``span`` per pair).

    Covers the spans that ended since the previous token up to token ``index``. Per layer
    (``layer``; 65535 = outside layers) the time inside its LAYER spans; per operator
    (``op``/``op_name``) the summed span time and count over all layers. Device seconds.
    """

    index: int
    begin_s: float
    end_s: float
    spans: int
    layer: tuple[int, ...]
    layer_s: tuple[float, ...]
    op: tuple[int, ...]
    op_name: tuple[str, ...]
    op_s: tuple[float, ...]
    op_count: tuple[int, ...]
    device_id: str | None = None
    """In a lab stream: the device the message is about (docs/lab.md)."""


@dataclass(frozen=True, slots=True)
class MemoryMessage:
    """A MEMORY frame (bytes)."""

    device_s: float
    heap_used: int
    heap_peak: int
    stack_peak: int
    arena_bytes: int
    kv_bytes: int
    device_id: str | None = None
    """In a lab stream: the device the message is about (docs/lab.md)."""


@dataclass(frozen=True, slots=True)
class RunMessage:
    """INFER_BEGIN (``event="begin"``) or INFER_END (``"end"``)."""

    event: str
    host_s: float
    device_s: float
    run_id: int
    n_prompt: int
    n_tokens: int
    n_generated: int
    status: int
    device_id: str | None = None
    """In a lab stream: the device the message is about (docs/lab.md)."""


@dataclass(frozen=True, slots=True)
class LinkMessage:
    """The device link went down or came back."""

    host_s: float
    up: bool
    reason: str
    device_id: str | None = None
    """In a lab stream: the device the message is about (docs/lab.md)."""


@dataclass(frozen=True, slots=True)
class LogMessage:
    """A firmware LOG line."""

    device_s: float
    level: int
    text: str
    device_id: str | None = None
    """In a lab stream: the device the message is about (docs/lab.md)."""


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    """A firmware ERROR or bytes the decoder rejected."""

    host_s: float
    text: str
    device_id: str | None = None
    """In a lab stream: the device the message is about (docs/lab.md)."""


@dataclass(frozen=True, slots=True)
class PowerGapMessage:
    """Power samples known lost upstream of the streamer."""

    first_index: int
    n_missing: int
    device_id: str | None = None
    """In a lab stream: the device the message is about (docs/lab.md)."""


@dataclass(frozen=True, slots=True)
class StatsMessage:
    """Periodic link, pipeline and per-client drop statistics."""

    host_s: float
    records_in: int
    server_dropped: int
    """Records the streamer itself missed (its hub mailbox overflowed)."""
    sent: int
    dropped: int
    """Messages this client lost so far (its own queue overflowed)."""
    clients: int
    link_up: bool
    link_outages: int
    decode_errors: int
    power_samples: int
    power_gaps: int
    device_tx_dropped: int
    dropped_by_class: dict[str, int] = field(default_factory=dict, compare=False)
    device_id: str | None = None
    """In a lab stream: the device the message is about (docs/lab.md)."""
    """``dropped`` per stream class (``{"span": 120}``)."""


@dataclass(frozen=True, slots=True)
class DroppedMessage:
    """``count`` messages meant for this client were dropped just before the next one.

    ``classes`` says which stream classes they were of (``{"span": 120, "raw": 3}``) and
    ``totals`` the running totals per class (docs/streaming.md, "Stream classes").
    ``server`` is true when the streamer itself lost them (its hub mailbox overflowed) rather
    than this client's queue.
    """

    count: int
    total: int
    classes: dict[str, int] = field(default_factory=dict, compare=False)
    totals: dict[str, int] = field(default_factory=dict, compare=False)
    server: bool = False
    device_id: str | None = None
    """In a lab stream: the device the message is about (docs/lab.md)."""


@dataclass(frozen=True, slots=True)
class ByeMessage:
    """The server is ending the stream (the recording finished, or it is shutting down)."""

    reason: str
    device_id: str | None = None
    """In a lab stream: the device the message is about (docs/lab.md)."""


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A message type this client does not know (a newer server): kept, not an error."""

    type: str
    data: dict[str, Any] = field(compare=False)


StreamMessage = (
    HelloMessage | DeviceInfo | SummaryMessage | RawPowerMessage | TokenMessage | SpanMessage
    | LayersMessage | MemoryMessage | RunMessage | LinkMessage | LogMessage | ErrorMessage
    | PowerGapMessage | StatsMessage | DroppedMessage | ByeMessage | UnknownMessage
)


def _cols(m: dict[str, Any], key: str, cast: type) -> tuple[Any, ...]:
    return tuple(cast(_f(v)) if cast is float else cast(v) for v in m.get(key, ()))


def _raw(m: dict[str, Any]) -> npt.NDArray[np.float32]:
    data = m.get("current_a", b"")
    if isinstance(data, bytes | bytearray):
        return np.frombuffer(bytes(data), dtype="<f4").astype(np.float32)
    return np.asarray(data, dtype=np.float32)


def parse_message(m: dict[str, Any]) -> StreamMessage:
    """Message map -> typed message (unknown types -> :class:`UnknownMessage`).

    Raises:
        ProtocolError: a known type with missing or mistyped fields.
    """
    kind = m["type"]
    try:
        message = _PARSERS[kind](m) if kind in _PARSERS else UnknownMessage(kind, m)
        device_id = m.get("device_id")
        if isinstance(device_id, str) and not isinstance(message, UnknownMessage):
            message = dataclasses.replace(message, device_id=device_id)
        return message
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed {kind!r} stream message: {exc!r}") from exc


def _hello(m: dict[str, Any]) -> HelloMessage:
    dev = m.get("device")
    return HelloMessage(
        str(m["schema"]), str(m.get("server", "")), dict(m.get("session") or {}),
        DeviceInfo.from_map(dev) if isinstance(dev, dict) else None,
        tuple(str(x) for x in m.get("levels", ())),
        tuple(float(x) for x in m.get("level_seconds", ())),
        _f(m.get("sample_rate_hz")), int(m.get("queue", 0)),
    )


_PARSERS: dict[str, Any] = {
    "hello": _hello,
    "device": DeviceInfo.from_map,
    "summary": lambda m: SummaryMessage(
        str(m["level"]), float(m["level_s"]), float(m["sample_rate_hz"]), _f(m["voltage_v"]),
        _cols(m, "first_index", int), _cols(m, "n", int), _cols(m, "mean", float),
        _cols(m, "std", float), _cols(m, "min", float), _cols(m, "max", float)),
    "raw": lambda m: RawPowerMessage(int(m["first_index"]), float(m["sample_rate_hz"]),
                                     _f(m["voltage_v"]), _raw(m), bool(m.get("live", True))),
    "token": lambda m: TokenMessage(float(m["host_s"]), _f(m["device_s"]), int(m["index"]),
                                    int(m["token_id"]), int(m["phase"])),
    "span": lambda m: SpanMessage(_f(m["begin_s"]), _f(m["end_s"]), int(m["layer"]),
                                  int(m["op"]), str(m.get("op_name", ""))),
    "memory": lambda m: MemoryMessage(_f(m["device_s"]), int(m["heap_used"]),
                                      int(m["heap_peak"]), int(m["stack_peak"]),
                                      int(m["arena_bytes"]), int(m["kv_bytes"])),
    "run": lambda m: RunMessage(str(m["event"]), float(m["host_s"]), _f(m["device_s"]),
                                int(m["run_id"]), int(m.get("n_prompt", 0)),
                                int(m.get("n_tokens", 0)), int(m.get("n_generated", 0)),
                                int(m.get("status", -1))),
    "link": lambda m: LinkMessage(float(m["host_s"]), bool(m["up"]), str(m.get("reason", ""))),
    "log": lambda m: LogMessage(_f(m["device_s"]), int(m["level"]), str(m["text"])),
    "error": lambda m: ErrorMessage(float(m["host_s"]), str(m["text"])),
    "power_gap": lambda m: PowerGapMessage(int(m["first_index"]), int(m["n_missing"])),
    "stats": lambda m: StatsMessage(
        float(m["host_s"]), int(m["records_in"]), int(m["server_dropped"]), int(m["sent"]),
        int(m["dropped"]), int(m["clients"]), bool(m["link_up"]), int(m["link_outages"]),
        int(m["decode_errors"]), int(m["power_samples"]), int(m["power_gaps"]),
        int(m["device_tx_dropped"]),
        {str(k): int(v) for k, v in (m.get("dropped_by_class") or {}).items()}),
    "layers": lambda m: LayersMessage(
        int(m["index"]), _f(m["begin_s"]), _f(m["end_s"]), int(m["spans"]),
        _cols(m, "layer", int), _cols(m, "layer_s", float), _cols(m, "op", int),
        _cols(m, "op_name", str), _cols(m, "op_s", float), _cols(m, "op_count", int)),
    "dropped": lambda m: DroppedMessage(
        int(m["count"]), int(m["total"]),
        {str(k): int(v) for k, v in (m.get("classes") or {}).items()},
        {str(k): int(v) for k, v in (m.get("totals") or {}).items()},
        bool(m.get("server", False))),
    "bye": lambda m: ByeMessage(str(m.get("reason", ""))),
}

