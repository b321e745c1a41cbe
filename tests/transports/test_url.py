"""Device URL parsing: every accepted form, the canonical string form, and the errors."""

from __future__ import annotations

import pytest

from tinytelem.errors import ConfigError
from tinytelem.transports.url import (
    DEFAULT_BAUD,
    DeviceURL,
    EmuURL,
    ExecURL,
    SerialURL,
    TcpURL,
    parse_device_url,
)

GOOD: list[tuple[str, DeviceURL, str]] = [
    ("emu:esp32s3", EmuURL("esp32s3"), "emu:esp32s3"),
    ("EMU:rp2040", EmuURL("rp2040"), "emu:rp2040"),
    ("emu:stm32h7.m7", EmuURL("stm32h7.m7"), "emu:stm32h7.m7"),
    ("tcp://127.0.0.1:5555", TcpURL("127.0.0.1", 5555), "tcp://127.0.0.1:5555"),
    ("tcp://localhost:1/", TcpURL("localhost", 1), "tcp://localhost:1"),
    ("tcp://127.0.0.1:0", TcpURL("127.0.0.1", 0), "tcp://127.0.0.1:0"),
    ("tcp://[::1]:7000", TcpURL("::1", 7000), "tcp://[::1]:7000"),
    (
        "serial:///dev/ttyACM0",
        SerialURL("/dev/ttyACM0", DEFAULT_BAUD),
        "serial:///dev/ttyACM0?baud=921600",
    ),
    (
        "serial:///dev/ttyUSB1?baud=115200",
        SerialURL("/dev/ttyUSB1", 115200),
        "serial:///dev/ttyUSB1?baud=115200",
    ),
    ("serial:/dev/ttyS0", SerialURL("/dev/ttyS0"), "serial:///dev/ttyS0?baud=921600"),
    ("serial:COM3?baud=460800", SerialURL("COM3", 460800), "serial:COM3?baud=460800"),
    ("serial:com12", SerialURL("COM12"), "serial:COM12?baud=921600"),
    ("serial:///COM4", SerialURL("COM4"), "serial:COM4?baud=921600"),
    (
        "serial:///dev/serial/by-id/usb-Espressif_JTAG_F4:12:FA-if00",
        SerialURL("/dev/serial/by-id/usb-Espressif_JTAG_F4:12:FA-if00"),
        "serial:///dev/serial/by-id/usb-Espressif_JTAG_F4:12:FA-if00?baud=921600",
    ),
    (
        "serial:///dev/my%20port?baud=9600",
        SerialURL("/dev/my port", 9600),
        "serial:///dev/my%20port?baud=9600",
    ),
    ("exec:cat", ExecURL(("cat",)), "exec:cat"),
    (
        "exec:ssh board 'cat /dev/ttyACM0'",
        ExecURL(("ssh", "board", "cat /dev/ttyACM0")),
        "exec:ssh board 'cat /dev/ttyACM0'",
    ),
]


@pytest.mark.parametrize(("text", "expected", "canonical"), GOOD)
def test_parse_and_format(text: str, expected: DeviceURL, canonical: str) -> None:
    parsed = parse_device_url(text)
    assert parsed == expected
    assert parsed.format() == canonical
    assert str(parsed) == canonical
    assert parse_device_url(canonical) == parsed


def test_scheme_attribute_tells_kinds_apart() -> None:
    kinds = [parse_device_url(u).scheme for u in ("emu:a", "tcp://h:1", "serial:COM1", "exec:x")]
    assert kinds == ["emu", "tcp", "serial", "exec"]


def test_urls_are_frozen_and_hashable() -> None:
    url = parse_device_url("tcp://127.0.0.1:5555")
    assert isinstance(url, TcpURL)
    with pytest.raises(AttributeError):
        url.port = 1  # type: ignore[misc]
    assert len({url, parse_device_url("tcp://127.0.0.1:5555")}) == 1


BAD: list[tuple[str, str]] = [
    ("", "unknown scheme"),
    ("esp32s3", "unknown scheme"),
    ("http://example.com:80", "unknown scheme"),
    ("emu:", "platform name"),
    ("emu:esp 32", "platform name"),
    ("tcp:127.0.0.1:5555", "tcp://host:port"),
    ("tcp://127.0.0.1", "both host and port"),
    ("tcp://:5555", "both host and port"),
    ("tcp://127.0.0.1:99999", "0-65535"),
    ("tcp://127.0.0.1:abc", "0-65535"),
    ("tcp://127.0.0.1:5555/path", "no path or query"),
    ("tcp://127.0.0.1:5555?x=1", "no path or query"),
    ("serial:", "need a port"),
    ("serial://", "need a port"),
    ("serial://ttyACM0", "three slashes"),
    ("serial:///dev/ttyACM0?baud=fast", "positive integer"),
    ("serial:///dev/ttyACM0?baud=0", "positive integer"),
    ("serial:///dev/ttyACM0?parity=E", "only baud=N"),
    ("exec:", "needs a command"),
    ("exec:   ", "needs a command"),
    ("exec:cat 'unterminated", "cannot split"),
]


@pytest.mark.parametrize(("text", "why"), BAD)
def test_bad_urls_name_the_accepted_forms(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_device_url(text)
    message = str(info.value)
    assert why in message
    assert "accepted forms" in message
    assert "serial:///dev/ttyACM0?baud=921600" in message


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("/dev/ttyACM0", "did you mean serial:///dev/ttyACM0?"),
        ("COM3", "did you mean serial:COM3?"),
        ("localhost:5555", "did you mean tcp://localhost:5555?"),
        ("C:\\firmware.elf", "unknown scheme"),
    ],
)
def test_bare_names_get_a_hint(text: str, hint: str) -> None:
    with pytest.raises(ConfigError, match="accepted forms") as info:
        parse_device_url(text)
    assert hint in str(info.value)


def test_firmware_schemes() -> None:
    from tinytelem.transports.url import NativeURL, QemuURL

    assert parse_device_url("qemu:cortex-m4") == QemuURL("cortex-m4")
    assert parse_device_url("native:") == NativeURL()
    for url in (QemuURL("riscv32"), NativeURL()):
        assert parse_device_url(url.format()) == url
