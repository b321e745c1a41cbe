"""``record``: everything a device sends, until stopped, into one trace file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from tinytelem.actors.supervisor import ExtraActor, SessionOutcome
from tinytelem.devices import DeviceHandle
from tinytelem.errors import ConfigError
from tinytelem.session.core import (
    SessionOutputs,
    check_sensor,
    resolve_sensor,
    run_request,
    run_session,
)
from tinytelem.session.options import RecordOptions

__all__ = ["one_sensor", "raw_path_for", "run_record"]


def one_sensor(specs: Sequence[str]) -> str:
    """The one ``--sensor`` of a recording (``none`` when none is given).

    A trace holds one power channel (``/power``, one sample index, one clock fit), so two
    sensors are refused rather than one of them silently dropped.
    """
    if len(specs) > 1:
        raise ConfigError(
            f"record takes one --sensor per trace (got {len(specs)}: {', '.join(specs)}): a "
            "trace has one /power channel; record the other sensor in a second session, or "
            "keep the one on the rail you want to measure"
        )
    return specs[0] if specs else "none"


def raw_path_for(trace: Path) -> Path:
    """The raw capture that goes beside a trace: ``run.h5`` -> ``run.ttraw.zst``."""
    return trace.with_suffix(".ttraw.zst")


async def run_record(
    options: RecordOptions,
    stop: trio.Event,
    on_token: Callable[[int], None] | None = None,
    on_ready: Callable[[DeviceHandle], None] | None = None,
    extra_actors: Sequence[ExtraActor] = (),
) -> tuple[SessionOutcome, dict[str, Any]]:
    """Record a device until ``stop`` is set, ``max_tokens`` or ``duration_s`` is reached.

    With ``run`` it also starts one inference (and ends after its INFER_END).
    """
    import dataclasses

    options = dataclasses.replace(options, sensor=resolve_sensor(options.sensor, options.device))
    calibration = check_sensor(options)
    raw_path = raw_path_for(options.out)
    for p in (options.out, raw_path):
        if p.exists() and not options.overwrite:
            raise ConfigError(f"{p} already exists; pass --overwrite or choose another name")
    request = run_request(options) if options.run else None
    outcome, summary = await run_session(
        options, SessionOutputs(options.out, raw_path, overwrite=options.overwrite), request,
        stop=stop, duration_s=options.duration_s, max_tokens=options.max_tokens,
        on_token=on_token, on_ready=on_ready, extra_actors=extra_actors, calibration=calibration)
    assert summary is not None
    return outcome, summary
