"""Flash and static RAM of a firmware image, read from its ELF sections (pyelftools).

flash = .text + .rodata + .data (+ .ARM.exidx): what is programmed into flash (.data's initial
values are stored there and copied at reset). static RAM = .data + .bss. The stack is its own
NOLOAD section (reported separately); its high-water mark and the arena peak come from the
firmware at run time (MEMORY frames), not from the ELF.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tinytelem.errors import ConfigError

__all__ = ["Footprint", "footprint"]

FLASH_SECTIONS = (".text", ".rodata", ".data", ".ARM.exidx")
RAM_SECTIONS = (".data", ".bss")


@dataclass(frozen=True)
class Footprint:
    """Section sizes of one image, in bytes."""

    text: int
    rodata: int
    data: int
    bss: int
    stack: int
    flash: int
    static_ram: int

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON output)."""
        return asdict(self)


def footprint(elf: Path) -> Footprint:
    """Sizes of ``elf``'s sections.

    Sections are matched by name prefix (``.text.startup`` counts as ``.text``, ``.srodata``
    as ``.rodata``, ``.sbss`` as ``.bss``), which also covers the native build's ELF.

    Raises:
        ConfigError: the file is missing or not an ELF.
    """
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    sizes = {"text": 0, "rodata": 0, "data": 0, "bss": 0, "stack": 0, "exidx": 0}
    try:
        with elf.open("rb") as fh:
            for section in ELFFile(fh).iter_sections():
                name = section.name
                size = int(section["sh_size"])
                if not section["sh_flags"] & 0x2:  # SHF_ALLOC: only what the image occupies
                    continue
                if name.startswith(".text") or name in (".init", ".fini", ".plt"):
                    sizes["text"] += size
                elif name.startswith((".rodata", ".srodata")):
                    sizes["rodata"] += size
                elif name.startswith(".ARM.exidx"):
                    sizes["exidx"] += size
                elif name.startswith((".data", ".sdata")):
                    sizes["data"] += size
                elif name.startswith((".bss", ".sbss")):
                    sizes["bss"] += size
                elif name == ".stack":
                    sizes["stack"] += size
    except FileNotFoundError as exc:
        raise ConfigError(f"{elf} does not exist; build it first (tinytelem firmware build)"
                          ) from exc
    except ELFError as exc:
        raise ConfigError(f"{elf} is not an ELF file: {exc}") from exc
    flash = sizes["text"] + sizes["rodata"] + sizes["data"] + sizes["exidx"]
    return Footprint(text=sizes["text"], rodata=sizes["rodata"], data=sizes["data"],
                     bss=sizes["bss"], stack=sizes["stack"], flash=flash,
                     static_ram=sizes["data"] + sizes["bss"])
