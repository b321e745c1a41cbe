"""The ``tinytelem`` command.

Sub-commands live in their own modules and are imported only when invoked, so ``tinytelem
--help`` does not pay for numpy, h5py or numba.
"""

from __future__ import annotations

import importlib
import sys

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

import click

from tinytelem import __version__
from tinytelem.errors import TinyTelemError, first_error

# verb -> (module, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "profile": ("tinytelem.cli.profile", "profile", "Run a complete profiling session."),
    "record": ("tinytelem.cli.record", "record", "Record a device's telemetry to a trace."),
    "emulate": ("tinytelem.cli.emulate", "emulate", "Run the device twin (emulated device)."),
    "trace": ("tinytelem.cli.trace", "trace", "Inspect and replay trace files."),
    "platforms": ("tinytelem.cli.platforms", "platforms", "List and show supported platforms."),
    "model": ("tinytelem.cli.model", "model", "Quantize, convert, validate, evaluate models."),
    "firmware": ("tinytelem.cli.firmware", "firmware", "Build firmware and measure footprints."),
    "doctor": ("tinytelem.cli.doctor", "doctor", "Check toolchains, QEMU, serial ports, sensors."),
    "sensors": ("tinytelem.cli.sensors", "sensors", "Discover and read power sensors."),
    "calibrate": ("tinytelem.cli.calibrate", "calibrate", "Fit sensor calibration files."),
    "serve": ("tinytelem.cli.serve", "serve", "Stream a device live over websocket."),
    "monitor": ("tinytelem.cli.monitor", "monitor", "Live terminal view of a stream or device."),
    "report": ("tinytelem.cli.report", "report", "HTML / CSV / JSON / Perfetto reports."),
    "compare": ("tinytelem.cli.compare", "compare", "Compare runs side by side."),
    "collect": ("tinytelem.cli.collect", "collect",
                "Keep a fleet's run summaries from an MQTT broker."),
    "recommend": ("tinytelem.cli.recommend", "recommend", "Rank platform x quantization."),
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(entry[0])
        command: click.Command = getattr(module, entry[1])
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Use the static help lines so --help imports nothing.
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="tinytelem")
def cli() -> None:
    """Profile quantized tiny LLMs on edge devices: latency, memory, power, energy per token."""


def main() -> None:
    """Console-script entry point: typed errors become one clear line and exit status 1."""
    try:
        rv = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except TinyTelemError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except BaseExceptionGroup as group:
        found = first_error(group)
        if found is None:
            raise
        click.echo(f"error: {found}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    if isinstance(rv, int) and rv:
        sys.exit(rv)
