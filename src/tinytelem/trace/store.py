"""Store results into a finished, closed trace: the summary (``/summary``, ``/clock``) and
whole attribute groups such as a recording's ``/schedule``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tinytelem.trace._h5 import needs_repair, needs_repair_error, translate_error, write_attrs

__all__ = ["LIBVER", "store_group_attrs", "store_summary", "write_summary_attrs"]

LIBVER = ("v110", "v114")
"""HDF5 format bounds: readable by HDF5 1.10+; ``latest`` would need HDF5 2.0 readers."""


def store_summary(path: str | os.PathLike[str], summary: Mapping[str, Any]) -> None:
    """Store (replace) the summary of a finished, closed trace, as :meth:`set_summary` does.

    Raises:
        TraceNeedsRepair: the file is still flagged open by a killed recorder (``tinytelem
            trace repair FILE`` clears that).
        TraceError: the file cannot be opened for update.
    """
    import h5py  # lazy: h5py costs 35 MB; only trace users pay

    path = Path(path)
    try:
        h5file = h5py.File(path, "r+", libver=LIBVER)
    except (OSError, ValueError) as exc:
        if needs_repair(exc):
            raise needs_repair_error(path, "store the summary in") from exc
        raise translate_error(exc, path, "store the summary in") from exc
    with h5file:
        write_summary_attrs(h5file, path, summary)


def store_group_attrs(path: str | os.PathLike[str], group: str,
                      attrs: Mapping[str, Any]) -> None:
    """Replace the attributes of ``group`` (created if missing) in a finished, closed trace.

    Nested mappings are stored whole as JSON (``json``) and flattened with dotted keys, as the
    summary is, so plain HDF5 tools see the numbers.

    Raises:
        TraceNeedsRepair: the file is still flagged open by a killed recorder.
        TraceError: the file cannot be opened for update or written.
    """
    import h5py  # lazy: h5py costs 35 MB; only trace users pay

    path = Path(path)
    try:
        h5file = h5py.File(path, "r+", libver=LIBVER)
    except (OSError, ValueError) as exc:
        if needs_repair(exc):
            raise needs_repair_error(path, f"store /{group} in") from exc
        raise translate_error(exc, path, f"store /{group} in") from exc
    flat: dict[str, Any] = {"json": json.dumps(attrs, default=str, sort_keys=True)}
    _flatten(attrs, "", flat)
    with h5file:
        try:
            target = h5file.require_group(group).attrs
            for key in list(target):
                del target[key]
            write_attrs(target, flat)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise translate_error(exc, path, f"store /{group} in") from exc


def write_summary_attrs(h5file: Any, path: Path, summary: Mapping[str, Any]) -> None:
    """The summary into /summary, and its clock fits into /clock (``device.offset_s``, ...)."""
    flat: dict[str, Any] = {"json": json.dumps(summary, default=str, sort_keys=True)}
    _flatten(summary, "", flat)
    clock: dict[str, Any] = {}
    for name, fit in (summary.get("clock") or {}).items():
        if isinstance(fit, Mapping):
            clock.update({f"{name}.{key}": value for key, value in fit.items()})
    try:
        attrs = h5file.require_group("summary").attrs
        for key in list(attrs):
            del attrs[key]
        write_attrs(attrs, flat)
        attrs = h5file.require_group("clock").attrs  # other attributes (alignment_*) stay
        for key in [k for k in attrs if k.startswith(("device.", "sensor."))]:
            del attrs[key]
        write_attrs(attrs, clock)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise translate_error(exc, path, "write the summary to") from exc


def _flatten(value: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            _flatten(item, name + ".", out)
        elif isinstance(item, bool | int | float) and name != "json":
            out[name] = item
