"""``record``: everything a device sends, until stopped, into one trace file.

With ``run`` it drives one inference, or a schedule of them (``repeat``, ``interval_s``,
``prompts``): every run keeps its run id in the trace, the summary lists each run, and a
rolling summary across the runs (throughput, energy per token, drift) goes to ``/schedule``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import trio

from tinytelem.actors.supervisor import ExtraActor, RunRequest, RunSchedule, SessionOutcome
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

__all__ = [
    "context_limit", "load_prompts", "one_sensor", "raw_path_for", "run_record",
    "store_rolling",
]

SCHEDULE_GROUP = "schedule"


def load_prompts(path: Path) -> list[str]:
    """The prompts of ``--prompts FILE``: one per non-empty line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read --prompts {path}: {exc}; give a UTF-8 text file with "
                          "one prompt per line") from exc
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise ConfigError(f"--prompts {path} holds no prompt; write one prompt per line")
    return prompts


def context_limit(options: RecordOptions) -> tuple[int, str] | None:
    """The positions the device's model can hold, and what sets it, when the host knows.

    The twin (``emu:``) sizes its context as its cost model does: the model's ``seq_len``, or
    less when the KV cache would not fit the board's RAM. Firmware (``qemu:``, ``native:``)
    with ``--model`` holds the model's ``seq_len``. Other devices: unknown (None).
    """
    from tinytelem.models.formats import open_model

    device = options.device
    if device.startswith("emu:"):
        from tinytelem.costing.model import CostModel
        from tinytelem.platforms import get_platform

        name = device[4:].split("?", 1)[0]
        lm = open_model(options.model if options.model is not None else f"builtin:{options.seed}")
        bits = options.weight_bits or lm.weight_bits
        ctx = CostModel(get_platform(name), lm.model.config, bits).context
        seq_len = lm.model.config.seq_len
        why = (f"the model's seq_len {seq_len}" if ctx == seq_len else
               f"the {ctx} positions whose KV cache fits {name}'s RAM (seq_len {seq_len})")
        return ctx, why
    if options.model is not None and device.startswith(("qemu:", "native:")):
        seq_len = open_model(options.model).model.config.seq_len
        return seq_len, f"the model's seq_len {seq_len}"
    return None


def _check_tokens(options: RecordOptions, prompts: Sequence[list[int]]) -> None:
    """Refuse ``--tokens`` the context cannot hold, instead of a run silently cut short."""
    limit = context_limit(options)
    if limit is None:
        return
    ctx, why = limit
    longest = max(prompts, key=len)
    room = ctx - len(longest) + 1  # the last prompt position yields the first token
    if options.n_tokens > room:
        raise ConfigError(
            f"--tokens {options.n_tokens} does not fit the context: {why} leaves room for "
            f"{room} tokens after the {len(longest)}-token prompt. Ask for --tokens {room} or "
            "fewer, and use --repeat N (or forever) to generate more over several runs"
        )


def _schedule(options: RecordOptions) -> RunRequest | RunSchedule:
    prompts = options.prompts or [options.prompt]
    requests = [run_request(dataclasses.replace(options, prompt=p)) for p in prompts]
    _check_tokens(options, [r.prompt for r in requests])
    if options.repeat == 1 and options.prompts is None:
        return requests[0]

    def runs() -> Iterator[RunRequest]:
        counter = itertools.count(1) if options.repeat is None else range(1, options.repeat + 1)
        for run_id in counter:
            yield dataclasses.replace(requests[(run_id - 1) % len(requests)], run_id=run_id)

    return RunSchedule(runs(), options.interval_s)


def store_rolling(trace: Path, options: RecordOptions, summary: dict[str, Any],
                  segments: Sequence[Path] = ()) -> dict[str, Any]:
    """Compute the rolling summary of the trace's runs and store it, with the schedule, in
    ``/schedule``; return it. With ``segments`` (a rotated recording, ``trace`` its last) the
    runs of every segment count."""
    from tinytelem.analysis.rolling import rolling_summary
    from tinytelem.trace.reader import open_trace
    from tinytelem.trace.store import store_group_attrs

    begin: dict[int, float] = {}
    for path in segments or [trace]:
        with open_trace(path) as tr:
            begin.update({int(r["run_id"]): float(r["begin_s"]) for r in tr.runs})
    rolling = rolling_summary(summary.get("runs", []), begin)
    store_group_attrs(trace, SCHEDULE_GROUP, {
        "repeat": "forever" if options.repeat is None else options.repeat,
        "interval_s": options.interval_s,
        "prompts": options.prompts or [options.prompt],
        "rolling": rolling,
    })
    return rolling


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
    on_run_end: Callable[[SessionOutcome], None] | None = None,
) -> tuple[SessionOutcome, dict[str, Any]]:
    """Record a device until ``stop`` is set, ``max_tokens`` or ``duration_s`` is reached.

    With ``run`` it also starts one inference (and ends after its INFER_END), or with
    ``repeat`` / ``prompts`` a schedule of them (and ends after the last, or when stopped);
    the summary then has a ``rolling`` entry (also stored in the trace's ``/schedule``).
    """
    if not options.run and (options.repeat != 1 or options.prompts is not None):
        raise ConfigError("--repeat and --prompts schedule inference runs; add --run")
    if options.repeat is not None and options.repeat < 1:
        raise ConfigError(f"--repeat {options.repeat}: give a count of at least 1, or forever")
    if options.interval_s < 0:
        raise ConfigError("--interval must be 0 or more seconds")
    options = dataclasses.replace(options, sensor=resolve_sensor(options.sensor, options.device))
    calibration = check_sensor(options)
    raw_path = raw_path_for(options.out)
    rotation = None
    existing = [p for p in (options.out, raw_path) if p.exists()]
    if options.rotate is not None:
        from tinytelem.session.rotate import parse_rotate

        rotation = parse_rotate(options.rotate)
        out = options.out
        existing = sorted(out.parent.glob(f"{out.stem}-[0-9][0-9][0-9][0-9]{out.suffix}"))
        existing += sorted(out.parent.glob(f"{out.stem}-[0-9][0-9][0-9][0-9].ttraw.zst"))
    if existing and not options.overwrite:
        raise ConfigError(f"{existing[0]} already exists; pass --overwrite or choose another "
                          "name")
    request = _schedule(options) if options.run else None
    outputs = SessionOutputs(options.out, raw_path, overwrite=options.overwrite,
                             rotation=rotation)
    outcome, summary = await run_session(
        options, outputs, request,
        stop=stop, duration_s=options.duration_s, max_tokens=options.max_tokens,
        on_token=on_token, on_ready=on_ready, extra_actors=extra_actors, calibration=calibration,
        on_run_end=on_run_end)
    assert summary is not None
    last = outputs.segments[-1] if outputs.segments else options.out
    if isinstance(request, RunSchedule):
        summary = {**summary,
                   "rolling": store_rolling(last, options, summary, outputs.segments)}
    if outputs.segments:
        summary = {**summary, "segments": [str(p) for p in outputs.segments]}
    return outcome, summary
