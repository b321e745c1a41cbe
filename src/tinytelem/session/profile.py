"""``profile``: one inference into a directory: trace, raw capture and summary.json."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinytelem.actors.supervisor import ExtraActor, SessionOutcome
from tinytelem.devices import DeviceHandle
from tinytelem.errors import ConfigError, TraceError
from tinytelem.session.core import (
    SessionOutputs,
    check_sensor,
    resolve_sensor,
    run_request,
    run_session,
    tokenize_prompt,
)
from tinytelem.session.options import ProfileOptions

__all__ = [
    "LEGACY_RAW_NAME", "RAW_NAME", "SUMMARY_NAME", "TRACE_NAME", "ProfileResult",
    "profile_paths", "remove_empty_outputs", "run_profile",
]

TRACE_NAME = "trace.h5"
SUMMARY_NAME = "summary.json"
RAW_NAME = "raw.ttraw.zst"
LEGACY_RAW_NAME = "raw.zst"
"""What tinytelem 0.1 called the raw capture; ``trace replay`` reads it like any capture."""


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


def profile_paths(options: ProfileOptions) -> tuple[Path, Path, Path]:
    """The trace, summary and raw capture a profile writes (``<stem>.*`` for a lab device)."""
    out, stem = options.out_dir, options.stem
    if stem is None:
        return out / TRACE_NAME, out / SUMMARY_NAME, out / RAW_NAME
    return out / f"{stem}.h5", out / f"{stem}.{SUMMARY_NAME}", out / f"{stem}.ttraw.zst"


def _prepare_out(options: ProfileOptions) -> tuple[Path, Path, Path]:
    out = options.out_dir
    paths = profile_paths(options)
    existing = [p for p in paths if p.exists()]
    if existing and not options.overwrite:
        raise ConfigError(
            f"{existing[0]} already exists; pass --overwrite or choose another --out directory"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output directory {out}: {exc.strerror}") from exc
    if options.overwrite and options.stem is None and (out / LEGACY_RAW_NAME).is_file():
        existing.append(out / LEGACY_RAW_NAME)  # an older tinytelem's capture of this run
    for p in existing:
        p.unlink()
    return paths


def remove_empty_outputs(out_dir: Path, paths: Sequence[Path], created_dir: bool) -> list[Path]:
    """After a failed session: delete the files it created that hold no data, and ``out_dir``
    when this session created it and it is now empty. Files holding data stay."""
    removed = []
    for p in paths:
        if p.is_file() and not _holds_data(p):
            try:
                p.unlink()
            except OSError:
                continue
            removed.append(p)
    if created_dir:
        with contextlib.suppress(OSError):
            out_dir.rmdir()  # only succeeds when empty
    return removed


def _holds_data(path: Path) -> bool:
    """Whether a trace has rows or samples, a raw capture a record (unsure: True)."""
    if path.stat().st_size == 0:
        return False
    try:
        if path.suffix == ".h5":
            from tinytelem.trace.reader import open_trace

            with open_trace(path) as trace:
                return trace.events.size > 0 or trace.n_power_samples > 0
        if path.name.endswith(".zst"):
            from tinytelem.trace.raw import RawCaptureReader

            return next(iter(RawCaptureReader(path)), None) is not None
    except TraceError:
        return True  # damaged, not empty: it may still be recovered (h5clear -s)
    return True


async def run_profile(
    options: ProfileOptions,
    on_token: Callable[[int], None] | None = None,
    on_ready: Callable[[DeviceHandle], None] | None = None,
    extra_actors: Sequence[ExtraActor] = (),
) -> ProfileResult:
    """Profile one inference on ``options.device``; write trace, raw capture and summary.

    ``extra_actors`` are started beside the recorder once the hub exists; the power summaries
    go into the trace when a sensor runs.
    """
    options = dataclasses.replace(options, sensor=resolve_sensor(options.sensor, options.device))
    calibration = check_sensor(options)
    if options.n_tokens < 1:
        raise ConfigError("--tokens must be at least 1")
    _, decode = tokenize_prompt(options)
    request = run_request(options)
    created = not options.out_dir.exists()
    paths = _prepare_out(options)
    trace_path, summary_path, raw_path = paths
    try:
        outcome, summary = await run_session(
            options, SessionOutputs(trace_path, raw_path, summary_path), request,
            on_token=on_token, on_ready=on_ready, extra_actors=extra_actors,
            calibration=calibration)
    except BaseException:
        remove_empty_outputs(options.out_dir, paths, created)
        raise
    assert summary is not None
    text = decode(outcome.token_ids) if decode is not None else None
    return ProfileResult(options.out_dir, trace_path, summary_path, raw_path, summary, outcome,
                         text)
