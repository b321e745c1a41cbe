"""The shipped platform files load and hold sane, sourced figures; bad files are rejected."""

from __future__ import annotations

import dataclasses
import json
import math
from importlib import resources
from pathlib import Path

import pytest

from tinytelem.errors import ConfigError
from tinytelem.platforms import (
    FIGURE_FIELDS,
    Platform,
    Registry,
    all_platforms,
    default_registry,
    get_platform,
    load_registry,
)

EXPECTED = {
    "bl602",
    "esp32",
    "esp32s3",
    "jetson-nano",
    "k210",
    "nrf52840",
    "rp2040",
    "rp2350",
    "rpi4",
    "rpi5",
    "stm32f4",
    "stm32h7",
}
DATA = resources.files("tinytelem.platforms") / "data"


def test_every_shipped_file_loads_and_validates() -> None:
    names = [p.name for p in all_platforms()]
    assert names == sorted(EXPECTED)
    shipped = {e.name for e in DATA.iterdir() if e.name.endswith(".toml")}
    assert shipped == {f"{n}.toml" for n in EXPECTED}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_platform_is_sourced_and_plausible(name: str) -> None:
    p = get_platform(name)
    assert set(FIGURE_FIELDS) <= set(p.sources)
    assert set(p.estimates) <= set(FIGURE_FIELDS)
    # Anything marked as an estimate must say so in its source and be explained in the notes.
    for figure in p.estimates:
        assert "estimate" in p.sources[figure]
    assert "estimate" in p.notes.lower()
    assert 1e6 <= p.cpu_hz <= 5e9
    assert 1 <= p.cores <= 8
    assert 0.01 <= p.int8_macs_per_cycle <= 64
    assert 0.01 <= p.fp32_flops_per_cycle <= 32
    assert 0 < p.idle_power_w <= p.active_power_w < 15
    assert p.supply_voltage_v in (3.0, 3.3, 5.0)
    is_sbc = p.dram_bytes > 0
    # MCUs run from on-chip SRAM; Linux boards from DRAM. Each has the matching bandwidth.
    assert (p.sram_bytes > 0) != is_sbc
    assert (p.sram_bandwidth_bytes_per_s > 0) != is_sbc
    assert (p.dram_bandwidth_bytes_per_s > 0) == is_sbc
    assert (p.psram_bytes > 0) == (p.psram_bandwidth_bytes_per_s > 0)
    assert p.tick_hz == (1_000_000_000 if is_sbc else p.tick_hz)
    assert all(a == a.lower() for a in p.aliases)


def test_known_datasheet_figures() -> None:
    """Spot checks against the datasheets, so an edit that breaks a headline number fails."""
    assert get_platform("stm32f4").cpu_hz == 168_000_000
    assert get_platform("stm32h7").cpu_hz == 480_000_000
    assert get_platform("nrf52840").cpu_hz == 64_000_000
    assert get_platform("rp2350").cpu_hz == 150_000_000
    assert get_platform("rp2350").core == "Arm Cortex-M33"
    assert get_platform("k210").cores == 2
    assert get_platform("k210").isa.startswith("RV64IMAFDC")
    assert get_platform("bl602").isa == "RV32IMAFC"
    assert get_platform("rpi4").core == "Arm Cortex-A72"
    assert get_platform("rpi5").cpu_hz == 2_400_000_000
    assert get_platform("jetson-nano").cpu_hz == 1_430_000_000
    assert get_platform("esp32s3").psram_bytes == 8 * 2**20
    assert "pie-128" in get_platform("esp32s3").simd
    assert get_platform("stm32f4").qemu_machine == "netduinoplus2"
    assert get_platform("stm32h7").qemu_machine == "mps2-an500"
    assert get_platform("nrf52840").qemu_machine == "mps2-an386"
    for name in ("esp32", "esp32s3"):
        p = get_platform(name)
        assert p.qemu_machine == ""
        assert "espressif/qemu" in p.notes


def test_rp2040_is_m0plus_without_dsp() -> None:
    p = get_platform("rp2040")
    assert p.core == "Arm Cortex-M0+"
    assert p.isa.startswith("Armv6-M")
    assert not any("dsp" in s or "fpu" in s for s in p.simd)
    assert p.int8_macs_per_cycle < 1


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ESP32-S3", "esp32s3"),
        ("esp32_s3", "esp32s3"),
        ("  Pico ", "rp2040"),
        ("pico2", "rp2350"),
        ("JETSON_NANO", "jetson-nano"),
        ("stm32f407", "stm32f4"),
        ("nucleo-h743zi2", "stm32h7"),
        ("raspberry-pi-5", "rpi5"),
    ],
)
def test_aliases_and_case(query: str, expected: str) -> None:
    assert get_platform(query).name == expected


def test_unknown_name_suggests_closest_match() -> None:
    with pytest.raises(ConfigError) as info:
        get_platform("esp32s4")
    text = str(info.value)
    assert "did you mean 'esp32s3'?" in text
    for name in EXPECTED:
        assert name in text


def test_alias_suggestion_names_the_platform() -> None:
    with pytest.raises(ConfigError, match="did you mean 'rp2350'"):
        get_platform("pico-3")


def test_unknown_name_without_close_match() -> None:
    with pytest.raises(ConfigError) as info:
        get_platform("zzzzzzzzzz")
    assert "did you mean" not in str(info.value)
    assert "tinytelem platforms list" in str(info.value)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_to_dict_round_trips_through_json(name: str) -> None:
    p = get_platform(name)
    data = json.loads(json.dumps(p.to_dict()))
    assert Platform.from_dict(data) == p


def test_registry_is_cached_and_platforms_are_frozen_and_hashable() -> None:
    assert default_registry() is default_registry()
    p = get_platform("esp32")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.cpu_hz = 1  # type: ignore[misc]
    assert {p: 1}[p] == 1


def test_derived_rates() -> None:
    p = get_platform("esp32s3")
    assert p.int8_macs_per_s == pytest.approx(2 * 240e6 * p.int8_macs_per_cycle)
    assert p.fp32_flops_per_s == pytest.approx(2 * 240e6 * p.fp32_flops_per_cycle)
    assert p.is_estimate("int8_macs_per_cycle")
    assert not p.is_estimate("cpu_hz")


# --- malformed files -----------------------------------------------------------------------


def _good_text() -> str:
    return (DATA / "esp32s3.toml").read_text(encoding="utf-8")


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _replace_line(text: str, key: str, new: str | None) -> str:
    """Replace (or drop, when new is None) the top-level line that sets ``key``."""
    out, done = [], False
    for line in text.splitlines():
        if not done and line.startswith(f"{key} = "):
            done = True
            if new is not None:
                out.append(new)
            continue
        out.append(line)
    assert done, key
    return "\n".join(out) + "\n"


def test_good_copy_loads_from_a_directory(tmp_path: Path) -> None:
    _write(tmp_path, "esp32s3", _good_text())
    registry = load_registry(str(tmp_path))
    assert isinstance(registry, Registry)
    assert registry.names == ["esp32s3"]
    assert registry.get("esp32-s3") == get_platform("esp32s3")


@pytest.mark.parametrize(
    ("key", "new", "field", "why"),
    [
        ("cpu_hz", None, "cpu_hz", "is missing"),
        ("cpu_hz", 'cpu_hz = "240 MHz"', "cpu_hz", "must be an integer"),
        ("cores", "cores = true", "cores", "must be an integer"),
        ("cores", "cores = 0", "cores", "must be > 0"),
        ("sram_bytes", "sram_bytes = -1", "sram_bytes", "must be >= 0"),
        ("active_power_w", 'active_power_w = "0.3 W"', "active_power_w", "must be a number"),
        ("active_power_w", "active_power_w = nan", "active_power_w", "must be finite"),
        ("idle_power_w", "idle_power_w = 9.0", "idle_power_w", "must not exceed"),
        ("aliases", 'aliases = "esp32-s3"', "aliases", "list of strings"),
        ("aliases", 'aliases = ["ESP32_S3"]', "aliases", "lower-case"),
        ("simd", "simd = [1, 2]", "simd", "list of strings"),
        ("efficiency_on", 'efficiency_on = "cache"', "efficiency_on",
         "must be one of compute, memory"),
        ("toolchain", "toolchain = 3", "toolchain", "must be a string"),
        ("name", 'name = "ESP32S3"', "name", "lower-case"),
        ("name", 'name = "other"', "name", "must match the file name"),
    ],
)
def test_malformed_field_names_file_and_field(
    tmp_path: Path, key: str, new: str | None, field: str, why: str
) -> None:
    _write(tmp_path, "esp32s3", _replace_line(_good_text(), key, new))
    with pytest.raises(ConfigError) as info:
        load_registry(tmp_path)
    text = str(info.value)
    assert "esp32s3.toml" in text
    assert repr(field) in text
    assert why in text


def test_unknown_key_is_rejected_as_a_typo(tmp_path: Path) -> None:
    text = _good_text().replace("cores = 2\n", "cores = 2\ncpu_mhz = 240\n", 1)
    _write(tmp_path, "esp32s3", text)
    with pytest.raises(ConfigError, match=r"'cpu_mhz' is not a platform field"):
        load_registry(tmp_path)


def test_missing_source_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path, "esp32s3", _drop_source(_good_text(), "tick_hz"))
    with pytest.raises(ConfigError, match=r"'sources.tick_hz' is missing"):
        load_registry(tmp_path)


def _drop_source(text: str, key: str) -> str:
    head, sources = text.split("[sources]\n", 1)
    kept = [ln for ln in sources.splitlines() if not ln.startswith(f"{key} = ")]
    return head + "[sources]\n" + "\n".join(kept) + "\n"


def test_estimate_must_name_a_figure(tmp_path: Path) -> None:
    text = _good_text().replace("estimates = [\n", 'estimates = ["vibes",\n', 1)
    _write(tmp_path, "esp32s3", text)
    with pytest.raises(ConfigError, match=r"'estimates' entry 'vibes' is not a numeric figure"):
        load_registry(tmp_path)


def test_source_for_unknown_field_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path, "esp32s3", _good_text() + 'clock = "somewhere"\n')
    with pytest.raises(ConfigError, match=r"'sources.clock' does not name a platform field"):
        load_registry(tmp_path)


def test_empty_source_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path, "esp32s3", _good_text() + 'qemu_machine = ""\n')
    with pytest.raises(ConfigError, match=r"'sources.qemu_machine' must be a non-empty string"):
        load_registry(tmp_path)


def test_sources_must_be_a_table() -> None:
    data = get_platform("esp32").to_dict()
    data["sources"] = "datasheet"
    with pytest.raises(ConfigError, match=r"'sources' must be a table"):
        Platform.from_dict(data, origin="inline")


def test_invalid_toml_syntax(tmp_path: Path) -> None:
    _write(tmp_path, "esp32s3", _good_text().replace("cores = 2", "cores = = 2"))
    with pytest.raises(ConfigError, match=r"esp32s3.toml: not valid TOML") as info:
        load_registry(tmp_path)
    assert info.value.__cause__ is not None


def test_unreadable_bytes(tmp_path: Path) -> None:
    (tmp_path / "esp32s3.toml").write_bytes(b'name = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match=r"esp32s3\.toml: cannot be read"):
        load_registry(tmp_path)


def test_alias_claimed_twice(tmp_path: Path) -> None:
    _write(tmp_path, "esp32s3", _good_text())
    other = _good_text().replace('name = "esp32s3"', 'name = "esp32s3b"')
    _write(tmp_path, "esp32s3b", other)
    with pytest.raises(ConfigError, match="used by both 'esp32s3' and 'esp32s3b'"):
        load_registry(tmp_path)


def test_empty_and_missing_directories(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds no"):
        load_registry(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_registry(tmp_path / "nope")


def test_non_toml_files_are_ignored(tmp_path: Path) -> None:
    _write(tmp_path, "rp2040", (DATA / "rp2040.toml").read_text(encoding="utf-8"))
    (tmp_path / "README.md").write_text("not a platform", encoding="utf-8")
    assert load_registry(tmp_path).names == ["rp2040"]
    assert math.isclose(load_registry(tmp_path).get("pico").cpu_hz, 133e6)
