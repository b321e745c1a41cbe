"""Options and helpers shared by the CLI modules."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

F = TypeVar("F", bound=Callable[..., Any])


def device_option(default: str | None = None, required: bool | None = None
                  ) -> Callable[[F], F]:
    """``--device URL`` with the accepted forms in its help (required when it has no default,
    unless ``required`` says otherwise)."""
    return click.option(
        "--device", default=default, required=default is None if required is None else required,
        show_default=True,
        help="Device URL: emu:<platform> (device twin), qemu:<target> (real firmware under "
             "QEMU), native: (firmware built for this host), tcp://host:port, "
             "serial:///dev/ttyACM0?baud=921600, exec:<command>.",
    )


def trace_level_option() -> Callable[[F], F]:
    """``--trace-level off|tokens|spans``."""
    return click.option(
        "--trace-level", type=click.Choice(["off", "tokens", "spans"]), default="spans",
        show_default=True, help="What the firmware reports: spans adds per-layer timing.",
    )


def sensor_setting_options() -> Callable[[F], F]:
    """``--calibration``, ``--sensor-rate`` and ``--power-store``, shared by every command
    that takes ``--sensor`` (the default rate is SessionOptions' own)."""
    from pathlib import Path

    from tinytelem.session.options import SessionOptions

    rate = SessionOptions(device="").sensor_rate_hz

    def decorate(fn: F) -> F:
        fn = click.option("--sensor-rate", type=click.FloatRange(1.0, 2e6), default=rate,
                          show_default=True, help="Sensor sample rate in samples/s.")(fn)
        fn = click.option("--power-store", type=click.Choice(["all", "stats"]), default="all",
                          show_default=True,
                          help="all: every power sample plus its statistics; stats: only the "
                               "statistics (min/mean/max/std per 1 ms, 10 ms, 100 ms, 1 s), "
                               "about 1/40 of the size at 1 MS/s.")(fn)
        fn = click.option("--calibration",
                          type=click.Path(exists=True, dir_okay=False, path_type=Path),
                          help="Per-unit calibration file for the sensor (tinytelem calibrate "
                               "writes it).")(fn)
        return fn

    return decorate


def run_trio(fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async main under trio; Ctrl-C cancels it cleanly (files are closed).

    The one TinyTelemError inside a nursery's exception group is raised as itself, so callers
    (and click's test runner) see "refused: HTTP 401", not "1 sub-exception".
    """
    import trio

    from tinytelem.errors import first_error

    try:
        return trio.run(fn)
    except BaseExceptionGroup as group:
        found = first_error(group)
        if found is None:
            raise
        raise found from group


async def stop_on_signals(stop: Any, say: Callable[[str], object], message: str) -> None:
    """Set ``stop`` (a ``trio.Event``) on SIGINT or SIGTERM, saying ``message`` each time.

    The command then finishes its files cleanly instead of being torn down mid-write.
    """
    import signal

    import trio

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            say(message)
            stop.set()


RUN_PARAMS = ("model", "tokenizer", "prompt", "n_tokens", "seed", "temperature", "trace_level",
              "weight_bits", "faults", "link_baud", "run_timeout_s")


def run_options(tokens_help: str = "Tokens to generate.") -> Callable[[F], F]:
    """The options of the inference a session asks for, shared by profile, record, serve and
    monitor (in the manner of pyOCD's CommonOptions).

    The command receives them as one ``run`` dict of :class:`~tinytelem.session.options.
    SessionOptions` fields, ready for ``XOptions(device=..., **run)``; every default is
    SessionOptions' own.
    """
    import functools
    from pathlib import Path

    from tinytelem.session.options import DEFAULT_PROMPT, SessionOptions

    defaults = SessionOptions(device="")

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from tinytelem.protocol.enums import TraceLevel

            values = {k: kwargs.pop(k) for k in RUN_PARAMS}
            values["trace_level"] = TraceLevel[values["trace_level"].upper()]
            values["weight_bits"] = int(values["weight_bits"]) if values["weight_bits"] else None
            values["faults"] = list(values["faults"])
            from tinytelem.emulator.link import parse_baud

            values["link_baud"] = parse_baud(values["link_baud"])
            return fn(*args, run=values, **kwargs)

        options = [
            click.option("--model", type=click.Path(exists=True, path_type=Path),
                         help="Model file (llama2.c .bin, .tlm, GGUF, ONNX) or Hugging Face "
                              "checkpoint folder for the device twin, "
                              "or the .tlm to link into qemu:/native: firmware (default: the "
                              "built-in 260K model)."),
            click.option("--tokenizer",
                         type=click.Path(exists=True, dir_okay=False, path_type=Path),
                         help="Tokenizer for --model when the model stores none (llama2.c "
                              "tokenizer .bin, tokenizer.json or tokenizer.model)."),
            click.option("--prompt", default=DEFAULT_PROMPT, show_default=True),
            click.option("--tokens", "n_tokens", type=click.IntRange(1, 65535),
                         default=defaults.n_tokens, show_default=True, help=tokens_help),
            click.option("--seed", type=click.IntRange(1, 2**32 - 1), default=defaults.seed,
                         show_default=True, help="Sampling seed (used when --temperature > 0)."),
            click.option("--temperature", type=click.FloatRange(0.0),
                         default=defaults.temperature, show_default=True),
            trace_level_option(),
            click.option("--weight-bits", type=click.Choice(["2", "3", "4", "8", "16", "32"]),
                         help="Weight precision the twin's cost model assumes [default: the "
                              "model's own: 32 for an fp32 checkpoint, a .tlm's stored bits; 4 "
                              "for the generated demo model]."),
            click.option("--fault", "faults", multiple=True, metavar="drop@N",
                         help="Twin fault injection (repeatable, emu: devices only): drop the "
                              "link after the N-th token."),
            click.option("--link-baud", metavar="BAUD",
                         help="Give the link a UART's byte rate: the twin's (emu:) or the "
                              "firmware's built here (qemu:, native:); 8N1, 4 KiB transmit "
                              "ring, trace frames that find it full are dropped and counted. "
                              "Default: a free link."),
            click.option("--run-timeout", "run_timeout_s",
                         type=click.FloatRange(0.0, min_open=True),
                         default=defaults.run_timeout_s, show_default=True, metavar="SECONDS",
                         help="Give up on a run whose INFER_END has not arrived this long after "
                              "its RUN (what arrived stays recorded)."),
        ]
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


def publish_options() -> Callable[[F], F]:
    """``--publish mqtt://...`` and its settings (record); the command receives them as one
    ``publish`` dict (None without ``--publish``)."""
    import functools
    from pathlib import Path

    names = ("publish", "publish_format", "fleet_host", "mqtt_password_file", "mqtt_ca",
             "mqtt_cert", "mqtt_key")

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {k: kwargs.pop(k) for k in names}
            return fn(*args, publish=values if values["publish"] else None, **kwargs)

        file_type = click.Path(exists=True, dir_okay=False, path_type=Path)
        options = [
            click.option("--publish", metavar="mqtt[s]://[USER@]HOST[:PORT]/PREFIX",
                         help="Also publish the live stream, run summaries and the session "
                              "summary to an MQTT broker, under PREFIX/<host>/<device>/<class> "
                              "(docs/lab.md). Password: TINYTELEM_MQTT_PASSWORD or "
                              "--mqtt-password-file (not the URL: command lines are visible).")
            ,
            click.option("--publish-format", type=click.Choice(["msgpack", "json"]),
                         default="msgpack", show_default=True, help="MQTT payload encoding."),
            click.option("--host", "fleet_host", metavar="NAME",
                         help="This host's name in MQTT topics [default: the hostname]."),
            click.option("--mqtt-password-file", type=file_type,
                         help="File whose first line is the MQTT password."),
            click.option("--mqtt-ca", type=file_type,
                         help="CA certificate (PEM) to verify an mqtts:// broker with."),
            click.option("--mqtt-cert", type=file_type,
                         help="Client certificate (PEM) for an mqtts:// broker."),
            click.option("--mqtt-key", type=file_type, help="Key of --mqtt-cert (PEM)."),
        ]
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


def broker_config(url: str, values: dict[str, Any]) -> Any:
    """The :class:`~tinytelem.live.mqtt.BrokerConfig` of a broker URL and the mqtt options."""
    from tinytelem.live.mqtt import parse_broker_url

    return parse_broker_url(url, password_file=values.get("mqtt_password_file"),
                            cafile=values.get("mqtt_ca"), certfile=values.get("mqtt_cert"),
                            keyfile=values.get("mqtt_key"))
