"""``tinytelem emulate``: run the device twin as its own process.

The first line on stdout is the bound addresses (the host side, ``emu:`` devices, parses it), so
it is printed and flushed before anything else; the twin then serves until SIGTERM/SIGINT, which
end it cleanly with status 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from tinytelem.errors import ConfigError

FAULT_KINDS = ("drop",)


def parse_fault(text: str) -> tuple[str, int]:
    """``drop@20`` -> ("drop", 20).

    Raises:
        ConfigError: anything else.
    """
    kind, sep, count = text.partition("@")
    if not sep or kind not in FAULT_KINDS or not count.isdigit() or int(count) < 1:
        raise ConfigError(
            f"bad --fault {text!r}; use drop@N (close the link after the N-th TOKEN of a run)"
        )
    return kind, int(count)


@click.command("emulate")
@click.option("--platform", "platform_name", required=True, help="Platform name (esp32s3, ...).")
@click.option("--listen", default="tcp://127.0.0.1:0", show_default=True,
              help="tcp://HOST:PORT (port 0 = any free port) or pty.")
@click.option("--power-listen", default=None,
              help="tcp://HOST:PORT for the power waveform side channel.")
@click.option("--model", "model_path", type=click.Path(path_type=Path),
              default=None, help="Model file of any format `tinytelem model` reads (.bin, "
              ".tlm, .gguf, .onnx, a Hugging Face folder) or builtin[:SHAPE][:SEED] "
              "(default: the built-in random 260K model). A .tlm runs on the integer "
              "reference, like the firmware.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the built-in model.")
@click.option("--weight-bits", type=click.Choice(["2", "3", "4", "8", "16", "32"]),
              help="Stored weight width the cost model assumes [default: the model's own; 4 "
                   "for the generated demo model].")
@click.option("--drift-ppm", type=float, default=25.0, show_default=True,
              help="Device crystal error relative to host time.")
@click.option("--tick-offset", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Device ticks at boot (near 4294967295 to exercise the wrap).")
@click.option("--trace-level", type=click.Choice(["off", "tokens", "spans"]), default="spans",
              show_default=True, help="Initial trace level (CONFIG changes it).")
@click.option("--fault", "faults", multiple=True, metavar="drop@N",
              help="Close the host connection after the N-th TOKEN frame of a run (once).")
@click.option("--link-baud", metavar="BAUD", default=None,
              help="Drain frames at a UART's byte rate (8N1) through a transmit ring; frames "
                   "that find it full are dropped and counted in HEARTBEAT tx_dropped. "
                   "Default: a free link.")
@click.option("--link-tx-buffer", type=click.IntRange(64), default=4096, show_default=True,
              help="Transmit ring size in bytes (the ESP-IDF port's UART tx buffer).")
@click.option("--once", is_flag=True,
              help="Exit when the first host disconnects after a completed run.")
@click.option("--json", "as_json", is_flag=True, help="Print the addresses line as JSON.")
@click.option("--exit-with-stdin", is_flag=True,
              help="Exit when stdin reaches end of file (a parent process holding the pipe "
                   "died); used when the profiler spawns the twin.")
def emulate(
    platform_name: str, listen: str, power_listen: str | None, model_path: Path | None,
    seed: int, weight_bits: str | None, drift_ppm: float, tick_offset: int, trace_level: str,
    faults: tuple[str, ...], link_baud: str | None, link_tx_buffer: int, once: bool,
    as_json: bool, exit_with_stdin: bool,
) -> None:
    """Run a device twin: wire protocol v1 with a real token loop and a platform cost model."""
    import trio

    from tinytelem.emulator.link import TxRing, parse_baud
    from tinytelem.emulator.server import ServerAddresses, parse_listen_url, serve
    from tinytelem.emulator.twin import TwinDevice
    from tinytelem.models.formats import open_model
    from tinytelem.platforms import get_platform
    from tinytelem.protocol.messages import TraceLevel

    fault_list = [parse_fault(f) for f in faults]
    baud = parse_baud(link_baud)
    parse_listen_url(listen)
    if power_listen is not None:
        parse_listen_url(power_listen)
    platform = get_platform(platform_name)
    lm = open_model(model_path if model_path is not None else f"builtin:{seed}")
    model = lm.runnable
    bits = int(weight_bits) if weight_bits else lm.weight_bits
    device = TwinDevice(
        platform, model, seed=seed, drift_ppm=drift_ppm, tick_offset=tick_offset,
        trace_level=TraceLevel[trace_level.upper()], weight_bits=bits,
        model_sha256=lm.sha256,
        link=TxRing(baud, link_tx_buffer) if baud is not None else None,
    )

    def announce(addrs: ServerAddresses) -> None:
        if as_json:
            line = json.dumps({"link": addrs.link, "power": addrs.power,
                               "platform": platform.name, "model": model.name,
                               "weight_bits": bits})
        else:
            line = f"link {addrs.link}" + (f" power {addrs.power}" if addrs.power else "")
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def run_server(task_status: trio.TaskStatus[ServerAddresses]) -> None:
                    await serve(device, listen, power_listen, faults=fault_list, once=once,
                                task_status=task_status)
                    nursery.cancel_scope.cancel()

                announce(await nursery.start(run_server))
                if exit_with_stdin:
                    nursery.start_soon(_exit_on_stdin_eof, nursery.cancel_scope)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)


async def _exit_on_stdin_eof(scope: Any) -> None:
    """End the twin when its parent goes away (the pipe to our stdin closes), even by SIGKILL."""
    import trio

    def wait_for_eof() -> None:
        while os.read(0, 4096):
            pass

    await trio.to_thread.run_sync(wait_for_eof, abandon_on_cancel=True)
    scope.cancel()
