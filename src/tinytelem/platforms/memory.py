"""The one memory budget: what a model needs on a platform, used by ``model validate``, the twin's
cost model, ``recommend`` and bottleneck analysis, so they all answer "does it fit?" alike.

* **weights**: stored bytes (run in place from flash / XIP on MCUs; in DRAM on Linux boards).
* **code**: engine + runtime code in flash, per platform family (:data:`CODE_ESTIMATES`).
* **KV cache**: ``2 * layers * context * kv_dim * kv_bytes``.
* **activations**: run.c's RunState buffers at that context (x, xb, xb2, q, hb, hb2, the
  attention scores and the logits), float32.
* **scratch**: one float row of the widest matrix for dequantisation, the int8-quantised
  activation vector and the telemetry buffers.
* **reserve**: RAM the system keeps for itself (stacks, heap of the runtime), per family.

The *arena* is KV + activations + scratch: the firmware allocates it once for the whole context.
RAM need = arena + reserve. Only the shape fields of the config are read, so this module imports
nothing from ``models`` (which imports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Protocol

__all__ = [
    "CODE_ESTIMATES",
    "MemoryNeed",
    "activation_bytes",
    "family_of",
    "kv_cache_bytes",
    "memory_need",
]

#: family -> (engine + runtime code bytes in flash, RAM reserved for the system/stack).
#: Estimates: a minimal ESP-IDF app with UART telemetry is ~200 KiB of flash and keeps ~64 KiB
#: of heap/stacks for itself; a bare-metal Cortex-M / RISC-V engine is ~40-60 KiB and 8-16 KiB
#: (the firmware driver keeps 8 KiB of RAM beside the arena, firmware/build.py RAM_RESERVE).
CODE_ESTIMATES: Final[dict[str, tuple[int, int]]] = {
    "esp32": (220 * 1024, 64 * 1024),
    "cortex-m": (48 * 1024, 8 * 1024),
    "riscv": (64 * 1024, 16 * 1024),
    "linux": (0, 256 * 1024 * 1024),
}
SCRATCH_FIXED: Final = 4096
"""Telemetry ring + frame buffer."""


class Shape(Protocol):
    """The llama2.c config fields the budget reads."""

    @property
    def dim(self) -> int: ...
    @property
    def hidden_dim(self) -> int: ...
    @property
    def n_layers(self) -> int: ...
    @property
    def n_heads(self) -> int: ...
    @property
    def n_kv_heads(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def seq_len(self) -> int: ...


def kv_cache_bytes(config: Shape, context: int | None = None, bytes_per_elem: int = 4) -> int:
    """Bytes of the key and value caches for ``context`` positions (default: seq_len)."""
    ctx = config.seq_len if context is None else context
    kv_dim = config.dim * config.n_kv_heads // config.n_heads
    return 2 * config.n_layers * ctx * kv_dim * bytes_per_elem


def activation_bytes(config: Shape, bytes_per_elem: int = 4, context: int | None = None) -> int:
    """Bytes of run.c's RunState scratch buffers, KV cache excluded.

    x, xb, xb2 and q (dim each), hb and hb2 (hidden each), the attention scores
    (n_heads x context) and the logits (vocab).
    """
    ctx = config.seq_len if context is None else context
    elems = (4 * config.dim + 2 * config.hidden_dim + config.n_heads * ctx
             + config.vocab_size)
    return elems * bytes_per_elem


def family_of(platform: Any) -> str:
    """esp32, cortex-m, riscv or linux, from the platform's memories and ISA."""
    if platform.dram_bytes > 0:
        return "linux"
    if platform.name.startswith("esp32"):
        return "esp32"
    if "RV" in platform.isa.upper() or "RISC" in platform.isa.upper():
        return "riscv"
    return "cortex-m"


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes by purpose for one configuration (context, KV width)."""

    weights: int
    code: int
    kv_cache: int
    activations: int
    scratch: int
    reserve: int

    @property
    def arena(self) -> int:
        """What the firmware allocates once: KV + activations + scratch."""
        return self.kv_cache + self.activations + self.scratch

    @property
    def ram(self) -> int:
        """Working memory: the arena + the system reserve."""
        return self.arena + self.reserve

    @property
    def flash(self) -> int:
        """Flash: weights run in place plus the engine code."""
        return self.weights + self.code


def memory_need(config: Shape, weight_bytes: int, platform: Any, context: int,
                kv_bytes: int = 4) -> MemoryNeed:
    """What one model needs on one platform at ``context`` positions (see module docstring)."""
    code, reserve = CODE_ESTIMATES[family_of(platform)]
    widest = max(config.dim, config.hidden_dim)
    scratch = 4 * widest + widest + SCRATCH_FIXED
    return MemoryNeed(weight_bytes, code, kv_cache_bytes(config, context, kv_bytes),
                      activation_bytes(config, 4, context), scratch, reserve)


def longest_context(config: Shape, weight_bytes: int, platform: Any, ram: int,
                    kv_bytes: int = 4) -> int:
    """The longest context (0 if none) whose RAM need fits ``ram`` bytes."""
    lo, hi = 0, config.seq_len
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if memory_need(config, weight_bytes, platform, mid, kv_bytes).ram <= ram:
            lo = mid
        else:
            hi = mid - 1
    return lo
