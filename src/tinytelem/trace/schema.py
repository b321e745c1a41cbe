"""The HDF5 trace schema: table dtypes and names shared by writer, reader and analysis.

Time bases (see docs/trace-format.md):
- ``ticks``: the device counter extended to 64 bits; ``device_s`` = ticks / tick_hz.
- ``host_s``: host monotonic seconds since the recording started (attribute ``host_t0``).
- power samples are placed by their sensor sample index; ``/power/blocks`` pairs indices with
  host arrival times so the sensor clock can be fitted to the host clock.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tinytelem.protocol.enums import InferStatus, MsgType, Op, Phase

SCHEMA = "tinytelem.trace/2"
SCHEMA_VERSION = 2
"""2: the coded columns (``events.type``, ``spans.op``, ``tokens.phase``, ``runs.status``) are
HDF5 enum types that carry their names; 1 stored them as bare integers (read the same way)."""

TOKEN_DTYPE = np.dtype(
    [
        ("run_id", "<u4"),
        ("index", "<u4"),
        ("token_id", "<u4"),
        ("phase", "u1"),
        ("ticks", "<u8"),
        ("device_s", "<f8"),
        ("host_s", "<f8"),
    ]
)

SPAN_DTYPE = np.dtype(
    [
        ("run_id", "<u4"),
        ("layer", "<u2"),
        ("op", "u1"),
        ("begin_ticks", "<u8"),
        ("end_ticks", "<u8"),
        ("begin_s", "<f8"),
        ("end_s", "<f8"),
    ]
)

MEMORY_DTYPE = np.dtype(
    [
        ("ticks", "<u8"),
        ("device_s", "<f8"),
        ("heap_used", "<u4"),
        ("heap_peak", "<u4"),
        ("stack_peak", "<u4"),
        ("arena_bytes", "<u4"),
        ("kv_bytes", "<u4"),
    ]
)

RUN_DTYPE = np.dtype(
    [
        ("run_id", "<u4"),
        ("n_prompt", "<u4"),
        ("n_tokens", "<u4"),
        ("n_generated", "<u4"),
        ("status", "i1"),  # InferStatus, -1 while the run had not ended
        ("begin_ticks", "<u8"),
        ("end_ticks", "<u8"),
        ("begin_s", "<f8"),
        ("end_s", "<f8"),
    ]
)

# Every decoded frame, in arrival order. a/b/c carry the message's small integer fields:
# COUNTER (counter_id, value, 0), MARKER (marker_id, value, 0), HEARTBEAT (uptime_ms, tx_dropped,
# 0), PONG (nonce, 0, 0), INFER_BEGIN (run_id, n_prompt, n_tokens), INFER_END (run_id,
# n_generated, status), TOKEN (index, token_id, phase), SPAN_* (layer, op, 0), others 0.
EVENT_DTYPE = np.dtype(
    [
        ("host_s", "<f8"),
        ("ticks", "<u8"),
        ("device_s", "<f8"),
        ("seq", "<u2"),
        ("type", "u1"),
        ("a", "<i8"),
        ("b", "<i8"),
        ("c", "<i8"),
    ]
)

# PING/PONG round trips: the clock-alignment raw data.
PING_DTYPE = np.dtype(
    [
        ("nonce", "<u4"),
        ("send_host_s", "<f8"),
        ("recv_host_s", "<f8"),
        ("ticks", "<u8"),
    ]
)

# One row per sample block received from the power sensor: where it starts, and when it arrived.
# ``offset`` is where the block's first sample sits in /power/current_a (samples are stored
# back to back; gaps take no space), so index -> position needs no cumulative sum.
POWER_BLOCK_DTYPE = np.dtype(
    [("first_index", "<u8"), ("n", "<u4"), ("host_s", "<f8"), ("offset", "<u8")]
)

# Power samples: amperes, one per sensor sample, in arrival order.
POWER_SAMPLE_DTYPE = np.dtype("<f4")

# Samples the sensor (or the pipeline) lost: explicit, never silent.
POWER_GAP_DTYPE = np.dtype([("first_index", "<u8"), ("n_missing", "<u8"), ("host_s", "<f8")])

# Link outages: from the moment the link broke to the moment it was back (NaN while still down).
LINK_GAP_DTYPE = np.dtype([("lost_host_s", "<f8"), ("restored_host_s", "<f8")])

# Protocol errors (rejected stretches of bytes) and firmware LOG / ERROR lines are text tables:
# host_s, device_s (NaN when unknown), level or code, text (UTF-8, variable length).
# The text field is a variable-length UTF-8 string; the dtype metadata is how h5py spells that
# (``h5py.string_dtype()``), written out here so importing the schema does not import h5py.
TEXT_DTYPE = np.dtype(
    [
        ("host_s", "<f8"),
        ("device_s", "<f8"),
        ("code", "<i4"),
        ("text", np.dtype("O", metadata={"vlen": str})),
    ]
)

# Coded columns and their names, stored as HDF5 enum types so that the file names its own codes
# (h5dump prints the names; h5py gives ``h5py.check_enum_dtype(dset.dtype[field])``). The
# values stay the wire protocol's numbers, so numpy sees the same integers either way.
ENUMS: dict[tuple[str, str], dict[str, int]] = {
    ("events", "type"): {m.name: int(m) for m in MsgType},
    ("spans", "op"): {m.name: int(m) for m in Op},
    ("tokens", "phase"): {m.name: int(m) for m in Phase},
    ("runs", "status"): {"NOT_ENDED": -1, **{m.name: int(m) for m in InferStatus}},
}


def file_dtype(table: str, dtype: np.dtype) -> np.dtype:
    """``dtype`` with its coded fields as enum types (what h5py's ``enum_dtype`` makes: the
    integer type with ``{"enum": names}`` metadata; spelled out so h5py is not imported)."""
    names: Mapping[str, int] | None
    fields = []
    for field in dtype.names or ():
        names = ENUMS.get((table, field))
        base = dtype[field]
        fields.append((field, base if names is None
                       else np.dtype(base.str, metadata={"enum": dict(names)})))
    return np.dtype(fields)


# Row tables: name -> (dataset path, dtype). Power samples, blocks and gaps live under /power.
TABLES: dict[str, tuple[str, np.dtype]] = {
    "events": ("/events", EVENT_DTYPE),
    "tokens": ("/tokens", TOKEN_DTYPE),
    "spans": ("/spans", SPAN_DTYPE),
    "memory": ("/memory", MEMORY_DTYPE),
    "runs": ("/runs", RUN_DTYPE),
    "pings": ("/pings", PING_DTYPE),
    "power_blocks": ("/power/blocks", POWER_BLOCK_DTYPE),
    "power_gaps": ("/power/gaps", POWER_GAP_DTYPE),
    "link_gaps": ("/link/gaps", LINK_GAP_DTYPE),
    "errors": ("/errors", TEXT_DTYPE),
    "logs": ("/logs", TEXT_DTYPE),
}
POWER_SAMPLES_PATH = "/power/current_a"
GROUPS = ("power", "link", "clock", "session", "summary")
