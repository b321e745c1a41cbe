"""session/core.py: which devices a link rate applies to, and when it is predicted."""

from __future__ import annotations

import pytest

from tinytelem.errors import ConfigError
from tinytelem.session.core import check_link, predict_link
from tinytelem.session.options import SessionOptions


def _options(device: str, baud: int | None = 115_200) -> SessionOptions:
    return SessionOptions(device=device, link_baud=baud)


@pytest.mark.parametrize("device", ["emu:stm32f4", "qemu:cortex-m4", "native:"])
def test_link_baud_applies_to_the_twin_and_to_firmware_built_here(device: str) -> None:
    check_link(_options(device))


def test_link_baud_of_a_real_link_names_the_url_instead() -> None:
    with pytest.raises(ConfigError, match=r"serial:///dev/ttyUSB0\?baud="):
        check_link(_options("serial:///dev/ttyACM0"))


def test_only_the_twin_predicts_the_link_fit() -> None:
    assert predict_link(_options("qemu:cortex-m4")) is None
    assert predict_link(_options("emu:stm32f4", None)) is None
    fit = predict_link(_options("emu:stm32f4"))
    assert fit is not None and fit.baud == 115_200
