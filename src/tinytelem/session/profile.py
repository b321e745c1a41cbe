"""``profile``: one inference into a directory: trace, raw capture and summary.json."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinytelem.actors.supervisor import ExtraActor, SessionOutcome
from tinytelem.devices import DeviceHandle
from tinytelem.errors import ConfigError
from tinytelem.session.core import (
    SessionOutputs,
    check_sensor,
    resolve_sensor,
    run_request,
    run_session,
    tokenize_prompt,
)
from tinytelem.session.options import ProfileOptions

__all__ = ["RAW_NAME", "SUMMARY_NAME", "TRACE_NAME", "ProfileResult", "run_profile"]

TRACE_NAME = "trace.h5"
SUMMARY_NAME = "summary.json"
RAW_NAME = "raw.zst"


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


def _prepare_out(options: ProfileOptions) -> tuple[Path, Path, Path]:
    out = options.out_dir
    paths = (out / TRACE_NAME, out / SUMMARY_NAME, out / RAW_NAME)
    existing = [p for p in paths if p.exists()]
    if existing and not options.overwrite:
        raise ConfigError(
            f"{existing[0]} already exists; pass --overwrite or choose another --out directory"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output directory {out}: {exc.strerror}") from exc
    for p in existing:
        p.unlink()
    return paths


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
    trace_path, summary_path, raw_path = _prepare_out(options)
    outcome, summary = await run_session(
        options, SessionOutputs(trace_path, raw_path, summary_path), request,
        on_token=on_token, on_ready=on_ready, extra_actors=extra_actors, calibration=calibration)
    assert summary is not None
    text = decode(outcome.token_ids) if decode is not None else None
    return ProfileResult(options.out_dir, trace_path, summary_path, raw_path, summary, outcome,
                         text)
