"""The platform registry: what each supported device can do, from one data file per platform.

The registry and the :class:`Platform` record live in :mod:`tinytelem.platforms.registry`; the
memory budget in :mod:`tinytelem.platforms.memory`. ``from tinytelem.platforms import
get_platform`` stays the short way in.
"""

from __future__ import annotations

from tinytelem.platforms.registry import (
    FIGURE_FIELDS,
    Platform,
    Registry,
    all_platforms,
    default_registry,
    get_platform,
    load_registry,
)

__all__ = [
    "FIGURE_FIELDS",
    "Platform",
    "Registry",
    "all_platforms",
    "default_registry",
    "get_platform",
    "load_registry",
]
