"""Shared HDF5 helpers for the trace writer and reader: attribute codecs and error translation.

Kept apart so that writer and reader agree on one attribute encoding: values HDF5 stores
natively (numbers, strings, numeric arrays) are written as they are; anything else (dicts, None,
mixed lists, objects) becomes a JSON string whose key is listed in the ``_json_keys`` attribute,
so the reader can turn it back into the Python value.

Strings may come from a device (HELLO platform and model names, LOG lines) and are untrusted:
HDF5 cannot store an embedded NUL or a lone surrogate, so :func:`escape_text` writes those (and
other control characters) as backslash escapes before anything reaches HDF5.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from tinytelem.errors import TraceError

JSON_KEYS_ATTR = "_json_keys"


class TraceNeedsRepair(TraceError):
    """A trace still flagged "open for write" by a recorder that was killed.

    ``tinytelem trace repair FILE`` (:func:`tinytelem.trace.repair.repair_trace`) clears the
    flags; the data up to the recorder's last flush is kept.
    """


def needs_repair(exc: BaseException) -> bool:
    """Whether an h5py open error is HDF5's "already open / consistency flags" refusal."""
    text = str(exc)
    return "consistency flags" in text or "already open for" in text


def needs_repair_error(path: object, action: str) -> TraceNeedsRepair:
    """The typed error for a trace a killed recorder left flagged open."""
    return TraceNeedsRepair(
        f"cannot {action} trace {path}: it is still flagged open for write (its recorder was "
        f"killed, or is still running); once no recorder writes it, run "
        f"'tinytelem trace repair {path}' (keeps everything up to the last flush)"
    )

# C0 controls except tab/newline/carriage return, DEL, and C1 controls: what HDF5 refuses (NUL)
# or what would drive a terminal when the value is printed later.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

# h5py folds the OS errno into its message ("errno = 28, error message = 'No space left...'").
_ERRNO_RE = re.compile(r"errno = (\d+)")


def escape_text(text: str) -> str:
    """``text`` as HDF5 can store it: control characters become ``\\xNN``, lone surrogates
    ``\\udcNN`` (Python's ``backslashreplace`` convention); other text is unchanged."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _native(value: Any) -> Any | None:
    """Return ``value`` in a form HDF5 stores natively, or None when it needs JSON."""
    if isinstance(value, bool | np.bool_):
        return np.bool_(value)
    if isinstance(value, str):
        return escape_text(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return value
    if isinstance(value, bytes):
        return np.void(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and value.size > 0:
        return value
    if (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        return np.asarray(value)
    return None


def write_attrs(attrs: Any, values: Mapping[str, Any]) -> None:
    """Write ``values`` into an h5py AttributeManager, JSON-encoding what HDF5 cannot hold."""
    json_keys: set[str] = set(json.loads(attrs.get(JSON_KEYS_ATTR, "[]")))
    for key, value in values.items():
        if key == JSON_KEYS_ATTR:
            continue
        native = _native(value)
        if native is None:
            attrs[key] = json.dumps(value, default=str, sort_keys=True)
            json_keys.add(key)
        else:
            attrs[key] = native
            json_keys.discard(key)
    if json_keys:
        attrs[JSON_KEYS_ATTR] = json.dumps(sorted(json_keys))
    elif JSON_KEYS_ATTR in attrs:
        del attrs[JSON_KEYS_ATTR]


def read_attrs(attrs: Any) -> dict[str, Any]:
    """Read an h5py AttributeManager into plain Python values (JSON attributes decoded)."""
    json_keys = set(json.loads(_plain(attrs.get(JSON_KEYS_ATTR, "[]"))))
    out: dict[str, Any] = {}
    for key in attrs:
        if key == JSON_KEYS_ATTR:
            continue
        value = _plain(attrs[key])
        if key in json_keys and isinstance(value, str):
            with contextlib.suppress(ValueError):  # keep the raw string if it is not JSON
                value = json.loads(value)
        out[key] = value
    return out


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, bytes -> str; arrays stay arrays."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.void):
        return value.tobytes()
    if isinstance(value, np.generic):
        return value.item()
    return value


def translate_error(exc: BaseException, path: object, action: str) -> TraceError:
    """Turn an h5py / OS error into a TraceError that names the file and the remedy."""
    code = getattr(exc, "errno", None)
    if code is None:
        match = _ERRNO_RE.search(str(exc))
        code = int(match.group(1)) if match else None
    text = str(exc)
    if code == errno.ENOSPC or "No space left" in text:
        remedy = "the disk is full; free space or record to another disk"
    elif code == errno.EFBIG or "File too large" in text:
        remedy = ("the file reached the size limit (ulimit -f, or the filesystem's); raise the "
                  "limit or record to another disk")
    elif code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        remedy = "permission denied; choose a writable directory or fix the file's permissions"
    elif code == errno.ENOENT:
        remedy = "the directory does not exist; create it first"
    elif code == errno.EEXIST or "file exists" in text.lower():
        remedy = "the file exists; pass overwrite=True (--overwrite) or choose another name"
    elif "lock" in text.lower():
        remedy = (
            "the file is locked by another process (or the filesystem cannot lock); close the "
            "other writer, or set HDF5_USE_FILE_LOCKING=FALSE on network filesystems"
        )
    else:
        remedy = "see the HDF5 message in the cause"
    return TraceError(f"cannot {action} trace {path}: {remedy} ({text})")
