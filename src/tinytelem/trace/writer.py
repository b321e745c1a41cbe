"""Write a tinytelem HDF5 trace (schema: docs/trace-format.md).

One idea, hence one module over 500 lines: :class:`TraceWriter`, the object a recording writes
through, with the chunk buffer of its tables. Storing results into a closed trace lives in
:mod:`tinytelem.trace.store`.

Design, driven by measurements (see the trace-format page):

- **SWMR, bounded to HDF5 1.10-1.14 structures.** The file is written with
  ``libver=("v110", "v114")`` so 1.10-era tools read it, and in SWMR mode so that a writer killed
  with SIGKILL leaves a file that opens (with ``swmr=True``, which the reader does for you)
  holding everything up to the last :meth:`TraceWriter.flush`. A non-SWMR file with these
  bounds is left flagged "open for write" and does not open at all.
- **Whole chunks.** Rows are buffered in memory and written when a chunk fills, so a chunk is
  written once; partial buffers go out only at flush time (every ``flush_interval_s``).
- **Checksums everywhere.** Every dataset is chunked, resizable and has the fletcher32 filter.
- **Small, mutable tables are updated in place.** Runs and link gaps change after they are first
  seen (a run ends, a link comes back). Link gaps are kept in memory and written whole at each
  flush. Runs are written at the flush after they change, each at its own row; only runs not
  yet ended are remembered, so a recording of runs without end (``record --repeat forever``)
  keeps its memory and its flushes bounded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np

import tinytelem
from tinytelem.errors import TraceError
from tinytelem.trace._h5 import (
    escape_text,
    translate_error,
    write_attrs,
)
from tinytelem.trace.schema import (
    GROUPS,
    LINK_GAP_DTYPE,
    POWER_BLOCK_DTYPE,
    POWER_GAP_DTYPE,
    POWER_SAMPLE_DTYPE,
    POWER_SAMPLES_PATH,
    RUN_DTYPE,
    SCHEMA,
    SCHEMA_VERSION,
    TABLES,
    TEXT_DTYPE,
    file_dtype,
)
from tinytelem.trace.store import LIBVER, write_summary_attrs

_ROW_CHUNK = {"events": 4096, "tokens": 4096, "spans": 8192, "errors": 256, "logs": 256}
_DEFAULT_ROW_CHUNK = 1024
_BUFFER_CHUNKS = 16
"""Largest write (in chunks) gathered in a table's reusable buffer; larger ones get their own."""


@dataclass(frozen=True, slots=True)
class WriterStatistics:
    """What a writer has accepted so far (the recorder actor reports it)."""

    rows: Mapping[str, int]
    power_samples: int
    power_gaps: int
    power_missing: int
    flushes: int
    closed: bool


class _Table:
    """An append-only dataset plus the rows not yet written to it.

    Rows of fixed-size types go to HDF5 through h5py's low-level API (``DatasetID.write`` of
    one hyperslab, the extent kept here instead of asked for): the high-level slice
    assignment spent about 75 us of Python per call on selections and dtype checks, a tenth of
    the writer's CPU at 1 MS/s (``bench/vs_pyjls.py``). The HDF5 memory type is made once
    here: h5py otherwise builds it from the array's dtype at every write, about 45 us for a
    compound row type, half the cost of writing a few summary rows. Variable-length text
    keeps the high-level path, which converts Python strings.
    """

    def __init__(self, dataset: Any, chunk: int, batch_chunks: int = 1) -> None:
        from h5py import h5s, h5t  # h5py is loaded: the dataset is one of its objects

        self.dataset = dataset
        self.dtype: np.dtype[Any] = dataset.dtype
        self.chunk = chunk
        self.extent = int(dataset.shape[0])
        self.written = self.extent
        self._pending: list[np.ndarray] = []
        self.n_pending = 0
        self._buffer = np.empty(0, dtype=self.dtype)
        """Where rows from several pending arrays are gathered for one write (reused)."""
        self._create_space = None if self.dtype.hasobject else h5s.create_simple
        self._mtype = None if self.dtype.hasobject else h5t.py_create(self.dtype)
        self.batch_chunks = batch_chunks
        """Whole chunks gathered before they are written (more per HDF5 call, fewer calls)."""

    @property
    def rows(self) -> int:
        return self.written + self.n_pending

    def append(self, rows: np.ndarray) -> None:
        if rows.shape[0] == 0:
            return
        self._pending.append(rows)
        self.n_pending += rows.shape[0]
        end = ((self.written + self.n_pending) // self.chunk) * self.chunk
        if end - self.written >= self.chunk * self.batch_chunks:
            # Write up to the last whole-chunk boundary of the dataset (once `batch_chunks`
            # chunks are complete), keep the tail buffered.
            self._write(end - self.written)

    def flush(self) -> None:
        """Write every pending row; keep the rows of the last, partly filled chunk in memory.

        They are written again with the rest of their chunk, so HDF5 always writes whole
        chunks and never reads a checksummed chunk back to merge new rows into it (which cost
        about a tenth of the writer's time at 1 MS/s with a flush every second). Not for tables
        of variable-length text: rewriting a row gives its string a new heap object, and a
        writer killed before the next flush would leave the already flushed rows of that chunk
        pointing at a heap that never reached the file.
        """
        n = self.n_pending
        if n <= 0:
            return
        start = self.written
        head = self._write(n)
        chunk_start = (self.written // self.chunk) * self.chunk
        if start <= chunk_start < self.written and not self.dtype.hasobject:
            self._pending = [head[chunk_start - start :].copy()]  # head may be the buffer
            self.n_pending = self.written - chunk_start
            self.written = chunk_start

    def drop_pending(self) -> None:
        """Forget rows that were never written (the file is being given up)."""
        self._pending = []
        self.n_pending = 0

    def _gather(self, n: int) -> np.ndarray:
        """The first ``n`` pending rows as one contiguous array (they stay pending).

        Rows spread over several pending arrays are copied into a buffer the table keeps (the
        result is valid until the next call). A new array per write cost a page fault per
        4 KiB: two thirds of the writer's page faults, about 9,000 per minute at 1 MS/s
        (``bench/vs_pyjls.py``).
        """
        first = self._pending[0]
        if first.shape[0] >= n:  # one array holds them: no copy
            return first[:n]
        if self.dtype.hasobject or n > _BUFFER_CHUNKS * self.chunk:
            return _join(self._pending)[:n]
        if self._buffer.shape[0] < n:
            self._buffer = np.empty(n, dtype=self.dtype)
        out = self._buffer[:n]
        pos = 0
        for part in self._pending:
            k = min(int(part.shape[0]), n - pos)
            _copy_rows(out[pos : pos + k], part[:k])
            pos += k
            if pos == n:
                break
        return out

    def _drop(self, n: int) -> None:
        """Forget the first ``n`` pending rows (written)."""
        self.n_pending -= n
        while n:
            part = self._pending[0]
            if part.shape[0] > n:
                self._pending[0] = part[n:]
                return
            n -= int(part.shape[0])
            del self._pending[0]

    def _write(self, n: int) -> np.ndarray:
        """Write the first ``n`` pending rows at ``written``; return them (until the next
        write: they may live in the table's buffer)."""
        if n <= 0:
            return np.empty(0, dtype=self.dtype)
        head = self._gather(n)
        end = self.written + n
        if self.extent < end:
            self.dataset.id.set_extent((end,))
            self.extent = end
        if self._create_space is None:
            self.dataset[self.written : end] = head
        else:
            file_space = self.dataset.id.get_space()
            file_space.select_hyperslab((self.written,), (n,))
            # Rows have the table's layout (enum metadata aside, which stores the same
            # integers); anything else would get a memory type of its own.
            mtype = self._mtype if head.dtype == self.dtype else None
            self.dataset.id.write(self._create_space((n,)), file_space,
                                  np.ascontiguousarray(head), mtype=mtype)
        self.written = end
        self._drop(n)  # only now: after a failed write the rows are still pending
        return head


def _copy_rows(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[:] = src`` for rows of the same layout; compound rows are copied as bytes."""
    if dst.dtype.names is None or src.dtype != dst.dtype:
        dst[:] = src
    else:
        dst.view(np.uint8)[:] = np.ascontiguousarray(src).view(np.uint8)


def _join(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate pending rows; rows of a compound type are joined as bytes.

    ``np.concatenate`` promotes structured dtypes field by field, 20-40 us per call, more than
    copying the few rows a flush writes; the parts all have the table's layout.
    """
    dtype = parts[0].dtype
    if dtype.names is None or dtype.hasobject or any(p.dtype != dtype for p in parts):
        return np.concatenate(parts)
    return np.concatenate([np.ascontiguousarray(p).view(np.uint8) for p in parts]).view(dtype)


def _as_rows(rows: np.ndarray, dtype: np.dtype[Any], table: str) -> np.ndarray:
    """Accept rows of exactly ``dtype`` or with the same field names (converted)."""
    rows = np.asarray(rows)
    if rows.dtype == dtype:
        return np.ascontiguousarray(rows).reshape(-1)
    if rows.dtype.names is None or set(rows.dtype.names) != set(dtype.names or ()):
        raise TraceError(
            f"{table} rows must have the schema dtype {dtype} (fields {dtype.names}); "
            f"got {rows.dtype}; build them with tinytelem.trace.schema"
        )
    out = np.empty(rows.shape[0] if rows.ndim else 1, dtype=dtype)
    for name in dtype.names or ():
        out[name] = rows[name]
    return out


def _iso_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class TraceWriter:
    """Appends telemetry to one trace file; not thread-safe (one recorder owns it).

    Create with :meth:`create`. ``host_s`` values are stored as given: the recorder writes
    host monotonic seconds minus :attr:`host_t0` (a root attribute).
    """

    def __init__(
        self, path: Path, h5file: Any, power_chunk: int, flush_interval_s: float,
        extra_tables: Sequence[str] = (),
        *,
        power_samples: bool = True,
    ):
        self.path = path
        self.power_samples = power_samples
        """False: samples are counted (``n_received`` at close) but not stored."""
        self._received = 0
        self.flush_interval_s = flush_interval_s
        self._file = h5file
        self._closed = False
        self._flushes = 0
        self._last_flush = time.monotonic()
        self.host_t0 = float(h5file.attrs["host_t0"])
        self._tables = {
            name: _Table(h5file[dpath], _ROW_CHUNK.get(name, _DEFAULT_ROW_CHUNK))
            for name, (dpath, _) in TABLES.items()
            if name not in ("runs", "link_gaps")
        }
        # Samples go out 4 chunks (1 MiB by default) per write: about 4 % less CPU at 1 MS/s
        # than a write per chunk (bench/vs_pyjls.py); a flush still writes everything.
        self._samples = _Table(h5file[POWER_SAMPLES_PATH], power_chunk, batch_chunks=4)
        # Extra tables (the power summaries) get their rows just before a flush: gathering up
        # to 16 chunks makes that flush the only write of a second, instead of a write per
        # filled chunk plus one at the flush (each write of a few rows costs ~0.1 ms).
        self._extra = {p: _Table(h5file[p], _DEFAULT_ROW_CHUNK, batch_chunks=16)
                       for p in extra_tables}
        self._runs: dict[int, np.void] = {}
        """Runs changed since the last flush."""
        self._run_pos: dict[int, int] = {}
        """Row of each written run that has not ended (it will change again)."""
        self._run_rows = 0
        self._max_run_id = -1
        self._link_gaps: dict[float, tuple[float, float]] = {}
        self._dirty = False
        self._next_index: int | None = None
        self._gap_count = 0
        self._missing = 0
        self._index_resets = 0

    # ------------------------------------------------------------------ creation

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        attrs: Mapping[str, Any],
        power_chunk: int = 65536,
        flush_interval_s: float = 1.0,
        overwrite: bool = False,
        extra_tables: Mapping[str, np.dtype[Any]] | None = None,
        power_samples: bool = True,
    ) -> TraceWriter:
        """Create a new trace file with every dataset, then switch it to SWMR mode.

        Args:
            path: the .h5 file to create; refused if it exists unless ``overwrite``.
            attrs: root attributes (platform, device, model_name, tick_hz, ...). ``host_t0``
                defaults to ``time.monotonic()`` now.
            power_chunk: samples per /power/current_a chunk (one write when full).
            flush_interval_s: the period :meth:`maybe_flush` flushes at.
            overwrite: replace an existing file.
            extra_tables: additional append-only datasets (path -> row dtype), e.g. the power
                summaries; created now because a SWMR file gets no new datasets later.
                Append to them with :meth:`add_rows`.
            power_samples: False keeps no samples (``--power-store stats``): blocks and gaps
                are still recorded, /power/current_a stays empty, and the power summaries (an
                extra table) are what is kept of the current. /power attribute ``store`` says
                which (``"all"`` or ``"stats"``).
        """
        import h5py  # lazy: h5py costs 35 MB; only trace users pay

        path = Path(path)
        if path.exists() and not overwrite:
            raise TraceError(
                f"trace {path} already exists; pass overwrite=True (--overwrite) or choose "
                "another name"
            )
        if power_chunk <= 0 or flush_interval_s <= 0:
            raise TraceError("power_chunk and flush_interval_s must be positive")
        try:
            # No chunk cache: rows go out in whole chunks anyway, and a chunk left dirty in the
            # cache by a failed write (disk full) could never be flushed, so the file could not
            # be closed and h5py crashed (SIGSEGV) finalising it. Now a write error is raised
            # by the write itself and leaves nothing behind.
            h5file = h5py.File(path, "w" if overwrite else "w-", libver=LIBVER, rdcc_nbytes=0)
        except (OSError, ValueError) as exc:
            raise translate_error(exc, path, "create") from exc
        try:
            root = {
                "host_t0": time.monotonic(),
                **dict(attrs),
                "schema": SCHEMA,
                "schema_version": SCHEMA_VERSION,
                "tool_version": tinytelem.__version__,
                "created": _iso_now(),
                "complete": False,
            }
            write_attrs(h5file.attrs, root)
            for group in GROUPS:
                h5file.require_group(group)
            for name, (dpath, dtype) in TABLES.items():
                chunk = _ROW_CHUNK.get(name, _DEFAULT_ROW_CHUNK)
                h5file.create_dataset(
                    dpath,
                    shape=(0,),
                    maxshape=(None,),
                    chunks=(chunk,),
                    dtype=file_dtype(name, dtype),
                    fletcher32=True,
                )
            h5file.create_dataset(
                POWER_SAMPLES_PATH,
                shape=(0,),
                maxshape=(None,),
                chunks=(power_chunk,),
                dtype=POWER_SAMPLE_DTYPE,
                fletcher32=True,
            )
            h5file["power"].attrs["units"] = "A"
            h5file["power"].attrs["store"] = "all" if power_samples else "stats"
            for dpath, dtype in (extra_tables or {}).items():
                h5file.create_dataset(
                    dpath, shape=(0,), maxshape=(None,), chunks=(_DEFAULT_ROW_CHUNK,),
                    dtype=dtype, fletcher32=True,
                )
            h5file.swmr_mode = True
            h5file.flush()
        except (OSError, ValueError, RuntimeError) as exc:
            h5file.close()
            raise translate_error(exc, path, "initialise") from exc
        return cls(path, h5file, power_chunk, flush_interval_s, tuple(extra_tables or ()),
                   power_samples=power_samples)

    # ------------------------------------------------------------------ row tables

    def _append(self, table: str, rows: np.ndarray) -> None:
        self._check_open()
        tab = self._tables[table]
        data = _as_rows(rows, tab.dtype, table)
        self._guard(tab.append, data)

    def add_events(self, rows: np.ndarray) -> None:
        """Append EVENT_DTYPE rows (every decoded frame, arrival order)."""
        self._append("events", rows)

    def add_tokens(self, rows: np.ndarray) -> None:
        """Append TOKEN_DTYPE rows."""
        self._append("tokens", rows)

    def add_spans(self, rows: np.ndarray) -> None:
        """Append SPAN_DTYPE rows."""
        self._append("spans", rows)

    def add_memory(self, rows: np.ndarray) -> None:
        """Append MEMORY_DTYPE rows."""
        self._append("memory", rows)

    def add_pings(self, rows: np.ndarray) -> None:
        """Append PING_DTYPE rows (clock-alignment round trips)."""
        self._append("pings", rows)

    def add_text(
        self,
        table: Literal["errors", "logs"],
        host_s: float,
        device_s: float,
        code: int,
        text: str,
    ) -> None:
        """Append one protocol-error or firmware log line (``device_s`` NaN when unknown).

        The text comes from the device: control characters and invalid code points are
        stored as backslash escapes (:func:`tinytelem.trace._h5.escape_text`).
        """
        if table not in ("errors", "logs"):
            raise TraceError(f"text table must be 'errors' or 'logs', not {table!r}")
        row = np.empty(1, dtype=TEXT_DTYPE)
        row[0] = (host_s, device_s, code, escape_text(text))
        self._append(table, row)

    def add_rows(self, dpath: str, rows: np.ndarray) -> None:
        """Append rows to an extra table declared with ``create(extra_tables=...)``."""
        self._check_open()
        tab = self._extra.get(dpath)
        if tab is None:
            raise TraceError(
                f"{dpath} is not an extra table of {self.path}; declare it in "
                "TraceWriter.create(extra_tables=...)"
            )
        self._guard(tab.append, _as_rows(rows, tab.dtype, dpath))

    # ------------------------------------------------------------------ runs and link gaps

    def add_runs(self, rows: np.ndarray) -> None:
        """Add or replace runs (keyed by run_id); the runs table is rewritten at each flush."""
        self._check_open()
        for row in _as_rows(rows, RUN_DTYPE, "runs"):
            self._runs[int(row["run_id"])] = row.copy()
        self._dirty = True

    def update_run(self, run_id: int, **fields: Any) -> None:
        """Change fields of a run (e.g. at INFER_END); an unknown run_id starts a new row.

        A new row starts with status -1 (not ended), zero counts and NaN times.
        """
        self._check_open()
        unknown = set(fields) - set(RUN_DTYPE.names or ()) - {"run_id"}
        if unknown:
            raise TraceError(f"unknown runs fields {sorted(unknown)}; fields: {RUN_DTYPE.names}")
        row = self._runs.get(run_id)
        if row is None:
            row = self._written_run(run_id)
            if row is not None:
                self._runs[run_id] = row
        if row is None:
            new = np.zeros(1, dtype=RUN_DTYPE)
            new["run_id"] = run_id
            new["status"] = -1
            new["begin_s"] = new["end_s"] = math.nan
            row = new[0]
            self._runs[run_id] = row
        for key, value in fields.items():
            row[key] = value
        self._dirty = True

    def add_link_gap(self, lost_host_s: float, restored_host_s: float = math.nan) -> None:
        """Record a link outage; call again with the same ``lost_host_s`` once it is restored."""
        self._check_open()
        self._link_gaps[float(lost_host_s)] = (float(lost_host_s), float(restored_host_s))
        self._dirty = True

    # ------------------------------------------------------------------ power

    def add_power(self, first_index: int, current_a: np.ndarray, host_s: float) -> None:
        """Append a block of samples that starts at sensor sample ``first_index``.

        A jump forward in the index (relative to the end of the previous block or gap) is
        recorded as a power gap automatically. A jump backwards (sensor restarted its counter)
        is counted in the /power ``index_resets`` attribute and accepted.
        """
        self._check_open()
        samples = np.ascontiguousarray(current_a, dtype=POWER_SAMPLE_DTYPE).reshape(-1)
        first_index = int(first_index)
        expected = self._next_index
        if expected is not None:
            if first_index > expected:
                self._record_gap(expected, first_index - expected, host_s)
            elif first_index < expected:
                self._index_resets += 1
        n = int(samples.shape[0])
        block = np.empty(1, dtype=POWER_BLOCK_DTYPE)
        block[0] = (first_index, n, host_s, self._samples.rows)
        if self.power_samples:
            self._guard(self._samples.append, samples)
        self._received += n
        self._guard(self._tables["power_blocks"].append, block)
        self._next_index = first_index + n

    def add_power_gap(self, first_index: int, n_missing: int, host_s: float) -> None:
        """Record samples known to be lost (e.g. the pipeline dropped a block)."""
        self._check_open()
        self._record_gap(int(first_index), int(n_missing), host_s)
        end = int(first_index) + int(n_missing)
        self._next_index = end if self._next_index is None else max(self._next_index, end)

    def _record_gap(self, first_index: int, n_missing: int, host_s: float) -> None:
        gap = np.empty(1, dtype=POWER_GAP_DTYPE)
        gap[0] = (first_index, n_missing, host_s)
        self._guard(self._tables["power_gaps"].append, gap)
        self._gap_count += 1
        self._missing += n_missing

    # ------------------------------------------------------------------ attributes

    def set_attrs(self, group: str, attrs: Mapping[str, Any]) -> None:
        """Set attributes on a group ("/" for the root, "link", "clock", "power", ...).

        A group that does not exist yet is created. Values HDF5 cannot hold become JSON.
        """
        self._check_open()
        name = group.strip("/")
        try:
            target = self._file if not name else self._file.require_group(name)
            write_attrs(target.attrs, attrs)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise translate_error(exc, self.path, "write attributes to") from exc

    def set_summary(self, summary: Mapping[str, Any]) -> None:
        """Store the run summary: whole as JSON (``json`` attr), numeric leaves flattened; its
        clock fits also go to /clock.

        Flattened keys join nested keys with dots (``energy.total_j``), so plain HDF5 tools
        see the headline numbers without parsing JSON.
        """
        self._check_open()
        write_summary_attrs(self._file, self.path, summary)

    # ------------------------------------------------------------------ flushing

    def flush(self) -> None:
        """Write every buffered row and flush the file: a crash after this keeps it all."""
        self._check_open()
        for table in self._tables.values():
            self._guard(table.flush)
        self._guard(self._samples.flush)
        for extra in self._extra.values():
            self._guard(extra.flush)
        if self._dirty:
            self._guard(self._write_mutable)
        self._guard(self._file.flush)
        self._flushes += 1
        self._last_flush = time.monotonic()

    def maybe_flush(self, now: float | None = None) -> bool:
        """Flush when ``flush_interval_s`` has passed since the last flush; say whether it did.

        Args:
            now: ``time.monotonic()`` (taken when None).
        """
        if now is None:
            now = time.monotonic()
        if now - self._last_flush >= self.flush_interval_s:
            self.flush()
            return True
        return False

    def _written_run(self, run_id: int) -> np.void | None:
        """The stored row of ``run_id`` (None if it was never written)."""
        pos = self._run_row(run_id)
        if pos is None:
            return None
        row: np.void = np.asarray(self._file[TABLES["runs"][0]][pos : pos + 1])[0]
        return row

    def _run_row(self, run_id: int) -> int | None:
        """Where ``run_id`` is stored: remembered while it is open, else searched (rare)."""
        pos = self._run_pos.get(run_id)
        if pos is not None or run_id > self._max_run_id or self._run_rows == 0:
            return pos
        ids = np.asarray(self._file[TABLES["runs"][0]]["run_id"][: self._run_rows])
        found = np.flatnonzero(ids == run_id)
        return int(found[0]) if found.size else None

    def _write_mutable(self) -> None:
        runs_dset = self._file[TABLES["runs"][0]]
        for run_id in sorted(self._runs):
            row = self._runs[run_id]
            pos = self._run_row(run_id)
            if pos is None:
                pos = self._run_rows
                self._run_rows += 1
                runs_dset.resize((self._run_rows,))
                self._max_run_id = max(self._max_run_id, run_id)
            runs_dset[pos] = row
            if int(row["status"]) == -1:
                self._run_pos[run_id] = pos
            else:
                self._run_pos.pop(run_id, None)
        self._runs = {}
        gaps = np.array([self._link_gaps[k] for k in sorted(self._link_gaps)], dtype=LINK_GAP_DTYPE)
        dset = self._file[TABLES["link_gaps"][0]]
        dset.resize((gaps.shape[0],))
        if gaps.shape[0]:
            dset[:] = gaps
        self._dirty = False

    def close(self) -> None:
        """Flush, write the final statistics, mark the trace complete and close (idempotent)."""
        if self._closed:
            return
        try:
            self.flush()
            write_attrs(self._file["power"].attrs, self._power_stats())
            write_attrs(self._file.attrs, {"complete": True, "closed": _iso_now()})
            self._file.flush()
        except (OSError, ValueError, RuntimeError) as exc:
            raise translate_error(exc, self.path, "finish") from exc
        finally:
            self._closed = True
            self._release()

    def _release(self) -> None:
        """Close every HDF5 object in a defined order (datasets, then the file) and forget it.

        Runs after a write error too: whatever fails to close here is not left for the garbage
        collector to finalise at some later moment.
        """
        tables = [*self._tables.values(), self._samples, *self._extra.values()]
        for table in tables:
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                table.dataset.id.close()
            table.dataset = None
            table.drop_pending()
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            self._file.close()  # the error that matters was raised by close()

    def _power_stats(self) -> dict[str, Any]:
        return {
            "n_samples": self._samples.rows,
            "n_received": self._received,
            "n_blocks": self._tables["power_blocks"].rows,
            "n_gaps": self._gap_count,
            "n_missing": self._missing,
            "index_resets": self._index_resets,
        }

    def statistics(self) -> WriterStatistics:
        """An immutable snapshot of what has been accepted (buffered or written)."""
        rows = {name: t.rows for name, t in self._tables.items()}
        rows["runs"] = self._run_rows + sum(1 for k in self._runs if self._run_row(k) is None)
        rows["link_gaps"] = len(self._link_gaps)
        return WriterStatistics(
            rows=rows,
            power_samples=self._samples.rows,
            power_gaps=self._gap_count,
            power_missing=self._missing,
            flushes=self._flushes,
            closed=self._closed,
        )

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers

    def _check_open(self) -> None:
        if self._closed:
            raise TraceError(f"trace writer for {self.path} is closed; create a new one")

    def _guard(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except (OSError, RuntimeError) as exc:
            raise translate_error(exc, self.path, "write to") from exc
