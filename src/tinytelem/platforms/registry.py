"""The platform registry and the Platform record, from one data file per platform.

Each platform is a TOML file in ``tinytelem/platforms/data/`` (shipped as package data). The
numbers feed the device twin's cost model, deployment advice and reports, so every file is
validated when it is loaded: a missing key, a wrong type, an unknown key (usually a typo) or a
figure without a source is a :class:`~tinytelem.errors.ConfigError` that names the file and the
key. Units live in the key names (``_hz``, ``_bytes``, ``_bytes_per_s``, ``_w``, ``_v``) so a
reader of a data file never has to guess them.

Typical use::

    from tinytelem.platforms import get_platform

    p = get_platform("ESP32-S3")          # case-insensitive, aliases accepted
    p.cpu_hz, p.psram_bytes, p.int8_macs_per_s

The default registry is parsed once and cached; :func:`load_registry` reads any directory,
which is how tests (and users trying out a new platform file) load files that are not shipped.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinytelem.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:  # pragma: no cover
        from importlib.abc import Traversable

__all__ = [
    "FIGURE_FIELDS",
    "Platform",
    "Registry",
    "all_platforms",
    "default_registry",
    "get_platform",
    "load_registry",
]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")

# Field groups, by the type a data file must give them. Integers are exact quantities (bytes,
# hertz, counts); floats are measured or estimated rates and powers (an int is accepted there).
_STR_FIELDS = (
    "name", "display_name", "vendor", "core", "isa", "toolchain", "qemu_machine", "isa_family",
)
_STR_LIST_FIELDS = ("aliases", "simd", "estimates")
_INT_FIELDS = (
    "cores",
    "cpu_hz",
    "sram_bytes",
    "psram_bytes",
    "flash_bytes",
    "dram_bytes",
    "tick_hz",
)
_FLOAT_FIELDS = (
    "int8_macs_per_cycle",
    "fp32_flops_per_cycle",
    "sram_bandwidth_bytes_per_s",
    "psram_bandwidth_bytes_per_s",
    "flash_bandwidth_bytes_per_s",
    "dram_bandwidth_bytes_per_s",
    "active_power_w",
    "idle_power_w",
    "supply_voltage_v",
    "cycles_per_instruction",
    "efficiency",
)
#: Every numeric figure; each must have an entry in the file's ``[sources]`` table.
FIGURE_FIELDS: tuple[str, ...] = _INT_FIELDS + _FLOAT_FIELDS
# Figures that must be strictly positive (a zero clock or core count is always a mistake).
_POSITIVE_FIELDS = frozenset({"cores", "cpu_hz", "tick_hz", "supply_voltage_v",
                              "cycles_per_instruction", "efficiency"})


@dataclass(frozen=True)
class Platform:
    """One supported device: clocks, memories, compute, power, toolchain and emulation.

    Per-core figures (``int8_macs_per_cycle``, ``fp32_flops_per_cycle``) are sustained
    estimates for a well-written kernel, not peaks; bandwidths are sustained single-stream
    figures. A value of 0 means "not present / not applicable" (e.g. PSRAM on an STM32,
    SRAM bandwidth on a Linux board). Which figures are estimates is listed in ``estimates``
    and the reasoning is in ``notes``; ``sources`` maps each figure to its document.
    """

    name: str
    display_name: str
    aliases: tuple[str, ...]
    vendor: str
    core: str
    isa: str
    cores: int
    cpu_hz: int
    sram_bytes: int
    psram_bytes: int
    flash_bytes: int
    dram_bytes: int
    simd: tuple[str, ...]
    int8_macs_per_cycle: float
    fp32_flops_per_cycle: float
    sram_bandwidth_bytes_per_s: float
    psram_bandwidth_bytes_per_s: float
    flash_bandwidth_bytes_per_s: float
    dram_bandwidth_bytes_per_s: float
    active_power_w: float
    idle_power_w: float
    supply_voltage_v: float
    tick_hz: int
    toolchain: str
    qemu_machine: str
    isa_family: str
    """The engine calibration family whose instruction counts stand for this core."""
    cycles_per_instruction: float
    """Core cycles per calibration-family instruction (documented derivation in ``sources``)."""
    efficiency: float
    """1.0, or the one factor fitted to a published point (``sources`` says which)."""
    estimates: tuple[str, ...]
    notes: str
    # Excluded from hashing so a Platform can still be a dict key or set member.
    sources: dict[str, str] = field(hash=False)
    efficiency_on: str = "compute"
    """What ``efficiency`` scales: "compute" (the core's time) or "memory" (the time spent
    waiting for external memory: PSRAM, flash, DRAM), whichever the published points show."""

    @property
    def compute_factor(self) -> float:
        """Factor on predicted compute time (``efficiency`` when it applies to compute)."""
        return self.efficiency if self.efficiency_on == "compute" else 1.0

    @property
    def memory_factor(self) -> float:
        """Factor on predicted external-memory time (``efficiency`` when it applies there)."""
        return self.efficiency if self.efficiency_on == "memory" else 1.0

    @property
    def int8_macs_per_s(self) -> float:
        """Sustained int8 MAC rate of the whole chip (all cores), for roofline estimates."""
        return self.int8_macs_per_cycle * self.cpu_hz * self.cores

    @property
    def fp32_flops_per_s(self) -> float:
        """Sustained fp32 rate of the whole chip (all cores)."""
        return self.fp32_flops_per_cycle * self.cpu_hz * self.cores

    def is_estimate(self, figure: str) -> bool:
        """Whether ``figure`` is our estimate rather than a documented value."""
        return figure in self.estimates

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` turns it back into an equal Platform."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str = "<dict>") -> Platform:
        """Validate a mapping (a parsed data file or :meth:`to_dict` output) into a Platform.

        Args:
            data: the platform's fields.
            origin: where the data came from, quoted in error messages.

        Raises:
            ConfigError: a field is missing, unknown, ill-typed or out of range.
        """
        return _validate(data, origin)


def _fail(origin: str, key: str, problem: str) -> ConfigError:
    return ConfigError(
        f"platform file {origin}: field {key!r} {problem}; "
        "see docs/platforms.md ('Adding a platform') for the expected fields and units"
    )


def _check_str(data: Mapping[str, Any], key: str, origin: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise _fail(origin, key, f"must be a string, got {type(value).__name__}")
    return value


def _check_str_list(data: Mapping[str, Any], key: str, origin: str) -> tuple[str, ...]:
    value = data[key]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise _fail(origin, key, "must be a list of strings")
    return tuple(value)


def _check_int(data: Mapping[str, Any], key: str, origin: str) -> int:
    value = data[key]
    # bool is an int subclass; `cores = true` is a typo, not a count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(origin, key, f"must be an integer, got {type(value).__name__}")
    return value


def _check_float(data: Mapping[str, Any], key: str, origin: str) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(origin, key, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise _fail(origin, key, "must be finite")
    return float(value)


def _check_range(values: Mapping[str, float], origin: str) -> None:
    for key, value in values.items():
        if key in _POSITIVE_FIELDS and value <= 0:
            raise _fail(origin, key, f"must be > 0, got {value}")
        if value < 0:
            raise _fail(origin, key, f"must be >= 0, got {value}")
    if values["idle_power_w"] > values["active_power_w"]:
        raise _fail(origin, "idle_power_w", "must not exceed active_power_w")


def _check_sources(data: Mapping[str, Any], origin: str, known: frozenset[str]) -> dict[str, str]:
    raw = data["sources"]
    if not isinstance(raw, Mapping):
        raise _fail(origin, "sources", "must be a table of field = document strings")
    sources: dict[str, str] = {}
    for key, value in raw.items():
        if key not in known or key in {"sources", "notes", "estimates"}:
            raise _fail(origin, f"sources.{key}", "does not name a platform field")
        if not isinstance(value, str) or not value.strip():
            raise _fail(origin, f"sources.{key}", "must be a non-empty string")
        sources[key] = value
    for key in FIGURE_FIELDS:
        if key not in sources:
            raise _fail(origin, f"sources.{key}", "is missing: every figure needs a source")
    return sources


_OPTIONAL_FIELDS = {"efficiency_on": "compute"}
_EFFICIENCY_TARGETS = ("compute", "memory")


def _validate(data: Mapping[str, Any], origin: str) -> Platform:
    known = frozenset(f.name for f in fields(Platform))
    for key in sorted(known - _OPTIONAL_FIELDS.keys()):
        if key not in data:
            raise _fail(origin, key, "is missing")
    for key in data:
        if key not in known:
            raise _fail(origin, key, "is not a platform field (typo?)")

    values: dict[str, Any] = {}
    for key in (*_STR_FIELDS, "notes"):
        values[key] = _check_str(data, key, origin)
    for key in _STR_LIST_FIELDS:
        values[key] = _check_str_list(data, key, origin)
    numbers: dict[str, float] = {}
    for key in _INT_FIELDS:
        values[key] = numbers[key] = _check_int(data, key, origin)
    for key in _FLOAT_FIELDS:
        values[key] = numbers[key] = _check_float(data, key, origin)
    _check_range(numbers, origin)

    name = values["name"]
    if not _NAME_RE.match(name):
        raise _fail(origin, "name", "must be lower-case letters, digits and '-'")
    for alias in values["aliases"]:
        if _normalise(alias) != alias:
            raise _fail(origin, "aliases", f"entry {alias!r} must be lower-case, '-' not '_'")
    for figure in values["estimates"]:
        if figure not in FIGURE_FIELDS:
            raise _fail(origin, "estimates", f"entry {figure!r} is not a numeric figure")
    values["sources"] = _check_sources(data, origin, known)
    values["efficiency_on"] = data.get("efficiency_on", _OPTIONAL_FIELDS["efficiency_on"])
    if values["efficiency_on"] not in _EFFICIENCY_TARGETS:
        raise _fail(origin, "efficiency_on", f"must be one of {', '.join(_EFFICIENCY_TARGETS)}")
    return Platform(**values)


def _normalise(name: str) -> str:
    """Lookup key for a user-typed name: 'ESP32_S3 ' and 'esp32-s3' are the same."""
    return name.strip().lower().replace("_", "-")


@dataclass(frozen=True)
class Registry:
    """A validated set of platforms with a name/alias index."""

    platforms: tuple[Platform, ...]
    _index: dict[str, Platform] = field(repr=False, hash=False)

    @classmethod
    def from_platforms(cls, platforms: Iterable[Platform], origin: str = "registry") -> Registry:
        """Index ``platforms`` by name and alias, rejecting any name claimed twice."""
        ordered = tuple(sorted(platforms, key=lambda p: p.name))
        index: dict[str, Platform] = {}
        for platform in ordered:
            for key in (platform.name, *platform.aliases):
                other = index.get(key)
                if other is not None and other.name != platform.name:
                    raise ConfigError(
                        f"{origin}: name {key!r} is used by both {other.name!r} and "
                        f"{platform.name!r}; remove it from one of the two files"
                    )
                index[key] = platform
        return cls(ordered, index)

    @property
    def names(self) -> list[str]:
        """Canonical platform names, sorted."""
        return [p.name for p in self.platforms]

    def get(self, name: str) -> Platform:
        """The platform called ``name`` (case-insensitive; aliases accepted).

        Raises:
            ConfigError: no such platform; the message suggests the closest known name.
        """
        key = _normalise(name)
        found = self._index.get(key)
        if found is not None:
            return found
        close = difflib.get_close_matches(key, list(self._index), n=1, cutoff=0.5)
        hint = f"did you mean {self._index[close[0]].name!r}? " if close else ""
        raise ConfigError(
            f"unknown platform {name!r}; {hint}known platforms: {', '.join(self.names)} "
            "(run 'tinytelem platforms list' for details)"
        )


def _load_file(entry: Traversable | Path) -> Platform:
    origin = entry.name
    try:
        data = tomllib.loads(entry.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"platform file {origin}: not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"platform file {origin}: cannot be read: {exc}") from exc
    platform = _validate(data, origin)
    stem = origin.removesuffix(".toml")
    if platform.name != stem:
        raise _fail(origin, "name", f"is {platform.name!r} but must match the file name {stem!r}")
    return platform


def load_registry(directory: Traversable | Path | str) -> Registry:
    """Load and validate every ``*.toml`` file in ``directory``.

    Raises:
        ConfigError: the directory is missing or empty, or any file is invalid.
    """
    root: Traversable | Path = Path(directory) if isinstance(directory, str) else directory
    if not root.is_dir():
        raise ConfigError(f"platform directory {root} does not exist")
    entries = sorted(
        (e for e in root.iterdir() if e.name.endswith(".toml") and e.is_file()),
        key=lambda e: e.name,
    )
    if not entries:
        raise ConfigError(f"platform directory {root} holds no *.toml platform files")
    return Registry.from_platforms((_load_file(e) for e in entries), origin=str(root))


@functools.cache
def default_registry() -> Registry:
    """The shipped platforms, parsed once per process."""
    return load_registry(resources.files("tinytelem.platforms") / "data")


def get_platform(name: str) -> Platform:
    """The shipped platform called ``name`` (case-insensitive; aliases accepted).

    Raises:
        ConfigError: unknown name; the message lists the known names and the closest match.
    """
    return default_registry().get(name)


def all_platforms() -> list[Platform]:
    """Every shipped platform, sorted by name."""
    return list(default_registry().platforms)
