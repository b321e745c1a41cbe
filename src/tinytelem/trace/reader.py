"""Read a tinytelem HDF5 trace (schema: docs/trace-format.md).

The reader opens read-only and first tries a normal open; a file whose writer is still running
or was killed is still flagged "open for SWMR write", and opens only with ``swmr=True``, so that
is tried next. Row tables come back as numpy structured arrays; power samples are sliced on
demand, so a long recording is never loaded whole.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from tinytelem.errors import TraceError
from tinytelem.trace._chunks import read_float32_checked
from tinytelem.trace._h5 import needs_repair, needs_repair_error, read_attrs
from tinytelem.trace.schema import (
    POWER_SAMPLE_DTYPE,
    POWER_SAMPLES_PATH,
    SCHEMA,
    SCHEMA_VERSION,
    TABLES,
)

_SCHEMA_PREFIX = SCHEMA.rsplit("/", 1)[0] + "/"


def segment_path(out: Path, index: int) -> Path:
    """The ``index``-th segment of ``out``: ``run.h5`` -> ``run-0001.h5``."""
    return out.with_name(f"{out.stem}-{index:04d}{out.suffix}")


def segment_paths(out: Path) -> list[Path]:
    """Every segment of the recording named ``out`` (``run.h5``: ``run-0001.h5``, ...), in order.

    The segments are numbered from 1 without holes; the list ends before the first missing
    number (a later file of the same pattern belongs to no recording this one wrote).
    """
    paths: list[Path] = []
    while (path := segment_path(out, len(paths) + 1)).exists():
        paths.append(path)
    return paths


def open_trace(path: str | os.PathLike[str]) -> Trace:
    """Open a trace for reading.

    Raises:
        TraceError: the file is missing, not HDF5, not a tinytelem trace, damaged, or written
            by a newer tinytelem. The HDF5 message is kept in ``__cause__``.
        TraceNeedsRepair: flagged open by a killed recorder in a way even a SWMR read refuses
            (``tinytelem trace repair FILE`` clears it).
    """
    import h5py  # lazy: h5py costs 35 MB; only trace users pay

    path = Path(path)
    if not path.is_file():
        raise TraceError(f"trace {path} does not exist (or is not a file); check the path")
    swmr = False
    # No chunk cache: tables and samples are read whole (or in long slices), so a cache only
    # adds a copy of every chunk; without it reading samples back costs ~10 % less CPU
    # (bench/vs_pyjls.py).
    try:
        h5file = h5py.File(path, "r", rdcc_nbytes=0)
    except OSError as first:
        try:
            h5file = h5py.File(path, "r", swmr=True, rdcc_nbytes=0)
            swmr = True
        except OSError as second:
            if needs_repair(first) or needs_repair(second):
                # Flagged open, and not even a SWMR read gets past it.
                raise needs_repair_error(path, "read") from second
            raise TraceError(
                f"{path} is not a tinytelem trace or is damaged (HDF5 cannot open it); if a "
                "recorder is still writing it, wait for it to stop"
            ) from first
    try:
        attrs = read_attrs(h5file.attrs)
        _check_schema(path, attrs)
    except BaseException:
        h5file.close()
        raise
    return Trace(path, h5file, attrs, swmr)


def _check_schema(path: Path, attrs: dict[str, Any]) -> None:
    schema = attrs.get("schema")
    if not isinstance(schema, str) or not schema.startswith(_SCHEMA_PREFIX):
        raise TraceError(
            f"{path} is HDF5 but not a tinytelem trace (no '{SCHEMA}' schema attribute)"
        )
    version = attrs.get("schema_version")
    if not isinstance(version, int):
        raise TraceError(f"{path} has no valid schema_version attribute; the trace is damaged")
    if version > SCHEMA_VERSION:
        raise TraceError(
            f"{path} was written by a newer tinytelem (trace schema version {version}, this "
            f"one reads up to {SCHEMA_VERSION}); upgrade tinytelem to read it"
        )


class Trace:
    """An open trace file. Close it (or use ``with``) to release the HDF5 handle."""

    def __init__(self, path: Path, h5file: Any, attrs: dict[str, Any], swmr: bool) -> None:
        self.path = path
        self.attrs = attrs
        """Root attributes (platform, device, model, tick_hz, host_t0, created, ...)."""
        self.opened_swmr = swmr
        """True when the file only opened in SWMR mode: its writer is running or was killed."""
        self.damaged: dict[str, int] = {}
        """Datasets with unreadable chunks -> position where the readable prefix ends."""
        self._file = h5file
        self._cache: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ tables

    def table(self, name: str) -> np.ndarray:
        """Read a whole row table by name (see ``schema.TABLES``); missing -> empty array."""
        if name not in TABLES:
            raise TraceError(f"unknown trace table {name!r}; tables: {sorted(TABLES)}")
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        dpath, dtype = TABLES[name]
        dset = self._dataset(dpath)
        if dset is None:
            data = np.empty(0, dtype=dtype)
        else:
            data = self._read(dset)
            if "text" in (dtype.names or ()):
                text = np.array(
                    [
                        t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t)
                        for t in data["text"]
                    ],
                    dtype=object,
                ).reshape(data.shape)
                out = np.empty(data.shape, dtype=dtype)
                for field in dtype.names or ():
                    out[field] = text if field == "text" else data[field]
                data = out
        if not self.opened_swmr:  # a live (SWMR) file grows: re-read it every time
            self._cache[name] = data
        return data

    def table_chunks(self, name: str, rows: int = 1_000_000) -> Iterator[np.ndarray]:
        """A row table (not a text one) ``rows`` rows at a time, for tables too long to hold
        whole (the spans and frames of an hour of monitoring); nothing is cached."""
        if name not in TABLES:
            raise TraceError(f"unknown trace table {name!r}; tables: {sorted(TABLES)}")
        cached = self._cache.get(name)
        if cached is not None:
            yield cached
            return
        dset = self._dataset(TABLES[name][0])
        if dset is None:
            return
        n = int(dset.shape[0])
        for start in range(0, n, max(rows, 1)):
            chunk = self._read(dset, start, start + rows)
            yield chunk
            if chunk.size < min(rows, n - start):  # a damaged chunk ended the read
                return

    def _dataset(self, dpath: str) -> Any:
        """The dataset at ``dpath`` (refreshed when the file may still grow), or None."""
        dset = self._file.get(dpath)
        if dset is not None and self.opened_swmr:
            dset.refresh()
        return dset

    def _read(self, dset: Any, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Read rows [start:stop); a damaged chunk ends the read at the last good chunk.

        A killed writer may leave the chunk it was writing after its last flush unreadable
        (checksum error); everything before it is still returned, and the dataset is listed
        in :attr:`damaged` with the number of rows that could be read.
        """
        stop = int(dset.shape[0]) if stop is None else min(stop, int(dset.shape[0]))
        try:
            return np.asarray(dset[start:stop])
        except OSError:
            pass
        step = int(dset.chunks[0]) if dset.chunks else 1
        parts: list[np.ndarray] = []
        pos = start
        while pos < stop:
            end = min(stop, (pos // step + 1) * step)
            try:
                parts.append(np.asarray(dset[pos:end]))
            except OSError:
                bad = (pos // step) * step  # the damaged chunk starts here
                self.damaged[dset.name] = min(bad, self.damaged.get(dset.name, bad))
                break
            pos = end
        return np.concatenate(parts) if parts else np.asarray(dset[0:0])

    @property
    def events(self) -> np.ndarray:
        """Every decoded frame (EVENT_DTYPE)."""
        return self.table("events")

    @property
    def tokens(self) -> np.ndarray:
        """TOKEN_DTYPE rows."""
        return self.table("tokens")

    @property
    def spans(self) -> np.ndarray:
        """SPAN_DTYPE rows."""
        return self.table("spans")

    @property
    def memory(self) -> np.ndarray:
        """MEMORY_DTYPE rows."""
        return self.table("memory")

    @property
    def runs(self) -> np.ndarray:
        """RUN_DTYPE rows, sorted by run_id."""
        runs = self.table("runs")
        if runs.size > 1 and np.any(np.diff(runs["run_id"].astype(np.int64)) < 0):
            runs = np.sort(runs, order="run_id", kind="stable")  # written out of order
        return runs

    @property
    def pings(self) -> np.ndarray:
        """PING_DTYPE rows (clock-alignment round trips)."""
        return self.table("pings")

    @property
    def power_blocks(self) -> np.ndarray:
        """POWER_BLOCK_DTYPE rows: one per sensor block (index, count, arrival, offset)."""
        return self.table("power_blocks")

    @property
    def power_gaps(self) -> np.ndarray:
        """POWER_GAP_DTYPE rows: samples known to be missing."""
        return self.table("power_gaps")

    @property
    def link_gaps(self) -> np.ndarray:
        """LINK_GAP_DTYPE rows (restored_host_s NaN if the link never came back)."""
        return self.table("link_gaps")

    @property
    def errors(self) -> np.ndarray:
        """TEXT_DTYPE rows: rejected byte stretches and firmware ERROR messages."""
        return self.table("errors")

    @property
    def logs(self) -> np.ndarray:
        """TEXT_DTYPE rows: firmware LOG lines."""
        return self.table("logs")

    # ------------------------------------------------------------------ power samples

    @property
    def n_power_samples(self) -> int:
        """How many samples /power/current_a holds."""
        dset = self._dataset(POWER_SAMPLES_PATH)
        return 0 if dset is None else int(dset.shape[0])

    def power_samples(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples ``[start:stop)`` of /power/current_a (positions, not sensor indices).

        Position p belongs to the block whose ``offset <= p < offset + n``; its sensor index
        is ``first_index + (p - offset)``. Only the requested slice is read from disk.
        """
        dset = self._dataset(POWER_SAMPLES_PATH)
        if dset is None:
            return np.empty(0, dtype=POWER_SAMPLE_DTYPE)
        begin, end, _ = slice(start, stop).indices(int(dset.shape[0]))
        # Raw chunks checked in numpy cost less than HDF5's own check; whatever that way
        # cannot read (a damaged chunk, another layout) is read through HDF5.
        fast = read_float32_checked(dset, begin, end)
        if fast is not None:
            return fast
        return np.asarray(self._read(dset, begin, end), dtype=POWER_SAMPLE_DTYPE)

    def power_summary_level(
        self, level: int | str = 0, samples_per_bucket: int | None = None
    ) -> tuple[np.ndarray | None, int]:
        """The rows of one /power/summary level (by position, 0 the finest, or by name) and
        its samples per bucket; ``(None, 0)`` when the trace has none (or its recorder was
        killed before it described the levels). The levels are described when the recorder
        finishes, in the file it writes then: the earlier segments of a rotated recording
        have the rows but not the description, so give ``level`` by name and
        ``samples_per_bucket`` from the last segment."""
        if isinstance(level, str) and samples_per_bucket is not None:
            dset = self._dataset(f"power/summary/{level}")
            return (None, 0) if dset is None else (self._read(dset), int(samples_per_bucket))
        attrs = self.group_attrs("power/summary")
        names = str(attrs.get("levels", "")).split(",") if attrs.get("levels") else []
        sizes = list(np.atleast_1d(attrs.get("samples_per_bucket", [])))
        if not names or len(sizes) != len(names):
            return None, 0
        pos = names.index(level) if isinstance(level, str) and level in names else level
        if not isinstance(pos, int) or not 0 <= pos < len(names):
            raise TraceError(f"no power summary level {level!r}; levels: {', '.join(names)}")
        dset = self._dataset(f"power/summary/{names[pos]}")
        if dset is None:
            return None, 0
        return self._read(dset), int(sizes[pos])

    # ------------------------------------------------------------------ attributes

    def group_attrs(self, group: str) -> dict[str, Any]:
        """Attributes of a group ("link", "clock", "power", "summary", or "/" for the root)."""
        name = group.strip("/")
        if not name:
            return dict(self.attrs)
        obj = self._file.get(name)
        return {} if obj is None else read_attrs(obj.attrs)

    @property
    def link_stats(self) -> dict[str, Any]:
        """/link attributes (link statistics written by the recorder)."""
        return self.group_attrs("link")

    @property
    def clock(self) -> dict[str, Any]:
        """/clock attributes (the device/sensor clock fit)."""
        return self.group_attrs("clock")

    @property
    def summary(self) -> dict[str, Any]:
        """The run summary (decoded from /summary's ``json`` attribute); {} if none yet."""
        raw = self.group_attrs("summary").get("json")
        if not isinstance(raw, str):
            return {}
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise TraceError(f"{self.path}: the /summary json attribute is damaged") from exc
        return value if isinstance(value, dict) else {"value": value}

    # ------------------------------------------------------------------ overview

    def info(self) -> dict[str, Any]:
        """Counts, duration and sizes: what ``tinytelem trace info`` prints."""
        duration = self._duration()  # reads the row tables, so `damaged` is known below
        tables: dict[str, int] = {}
        storage: dict[str, int] = {}
        for name, dpath in [(n, p) for n, (p, _) in TABLES.items()] + [
            ("power_samples", POWER_SAMPLES_PATH)
        ]:
            dset = self._dataset(dpath)
            tables[name] = 0 if dset is None else int(dset.shape[0])
            storage[name] = 0 if dset is None else int(dset.id.get_storage_size())
        n_samples = tables.pop("power_samples")
        gaps = self.power_gaps
        blocks = self.power_blocks
        keys = ("platform", "device", "model_name", "sensor", "tick_hz", "closed")
        return {
            "path": str(self.path),
            "schema": self.attrs.get("schema"),
            "schema_version": self.attrs.get("schema_version"),
            "tool_version": self.attrs.get("tool_version"),
            "created": self.attrs.get("created"),
            "complete": bool(self.attrs.get("complete", False)),
            "opened_swmr": self.opened_swmr,
            "damaged": dict(self.damaged),
            **{k: self.attrs[k] for k in keys if k in self.attrs},
            "file_bytes": self.path.stat().st_size,
            "duration_s": duration,
            "rows": tables,
            "storage_bytes": storage,
            "power": {
                "store": str(self.group_attrs("power").get("store", "all")),
                "samples": n_samples,
                "received": int(blocks["n"].sum()) if blocks.size else 0,
                "blocks": int(blocks.shape[0]),
                "gaps": int(gaps.shape[0]),
                "missing_samples": int(gaps["n_missing"].sum()) if gaps.size else 0,
                "first_index": int(blocks["first_index"][0]) if blocks.size else None,
                "end_index": int(blocks["first_index"][-1] + blocks["n"][-1])
                if blocks.size
                else None,
            },
        }

    def _duration(self) -> float:
        """Host-time span covered by any host_s column (0.0 for an empty trace)."""
        lo, hi = math.inf, -math.inf
        for name, (_, dtype) in TABLES.items():
            for field in ("host_s", "send_host_s", "recv_host_s", "lost_host_s"):
                if field in (dtype.names or ()):
                    col = self.table(name)[field]
                    col = col[np.isfinite(col)]
                    if col.size:
                        lo, hi = min(lo, float(col.min())), max(hi, float(col.max()))
        return hi - lo if hi >= lo else 0.0

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Release the file (idempotent)."""
        self._file.close()
        self._cache.clear()

    def __enter__(self) -> Trace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
