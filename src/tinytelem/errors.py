"""One error tree for the whole project.

::

    TinyTelemError
    ├── ConfigError            bad user input: URLs, options, platform names
    │   ├── ConstraintError    a constraint or battery string that does not parse
    │   │                      (analysis/recommend.py)
    │   └── TracesNeeded       collected summaries given where traces are needed;
    │                          names where they are (analysis/fleet.py)
    ├── LinkError              the device link
    │   ├── LinkClosed         we closed it
    │   │   └── StreamClosed   ... a transport stream (also trio.ClosedResourceError;
    │   │                      transports/base.py)
    │   ├── LinkBroken         the world broke it (cause in __cause__)
    │   │   └── StreamBroken   ... a transport stream (also trio.BrokenResourceError;
    │   │                      transports/base.py)
    │   ├── StreamRefused      a live-stream server refused the client (live/client.py)
    │   ├── RunTimeout         a run's INFER_END did not come within --run-timeout
    │   │                      (actors/supervisor.py)
    │   └── BrokerRefused      an MQTT broker refused the connection (live/mqtt.py)
    │       └── BrokerTLSError ... its TLS certificate is not trusted (--mqtt-ca), or it
    │                          wants a client certificate (--mqtt-cert; live/mqtt.py)
    ├── ProtocolError          bytes that are not protocol v1
    │   └── FrameRejected      a frame failed a check; its kind says which
    │                          (protocol/codec.py)
    ├── SensorError            power sensors
    ├── ModelError             model files and inference
    └── TraceError             trace files (HDF5, raw captures)
        └── TraceNeedsRepair   still flagged open by a killed recorder; names
                               'tinytelem trace repair FILE' (trace/_h5.py)

Subclasses live beside the code that raises them; this drawing names every one of them
(tests/test_structure.py fails when one is missing).

Lower-level errors (OSError, serial.SerialException, h5py errors) are translated at the
boundary that sees them and re-raised ``from`` the original, so ``__cause__`` keeps the detail.
Every message should name the remedy when there is one.
"""

from __future__ import annotations

import sys

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup


class TinyTelemError(Exception):
    """Root of every error tinytelem raises on purpose."""


class ConfigError(TinyTelemError):
    """Invalid user input: a device URL, an option value, an unknown platform."""


class LinkError(TinyTelemError):
    """Something went wrong with the device link."""


class LinkClosed(LinkError):
    """The link was closed by us; using it again is a bug in the caller."""


class LinkBroken(LinkError):
    """The link was broken by the outside world (device reset, cable, peer closed)."""


class ProtocolError(TinyTelemError):
    """Bytes or payloads that do not follow wire protocol v1."""


class SensorError(TinyTelemError):
    """A power sensor failed or spoke something unexpected."""


class ModelError(TinyTelemError):
    """A model file is unreadable or inconsistent, or inference failed."""


class TraceError(TinyTelemError):
    """A trace file or raw capture is unreadable or inconsistent."""


def first_error(exc: BaseException) -> TinyTelemError | None:
    """The first TinyTelemError inside ``exc`` (itself, or a leaf of nested exception groups).

    trio nurseries wrap errors in exception groups; the CLI and the public entry points show the
    user the one error that explains the failure.
    """
    if isinstance(exc, TinyTelemError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_error(inner)
            if found is not None:
                return found
    return None
