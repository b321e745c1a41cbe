"""Per-platform cost model of the device twin: time, power and memory of every operator.

The twin runs the real token loop on the host and asks this model how long each operator would
take on the target, how much power it would draw and how much memory the firmware would hold.
Everything here is a pure function of (platform, model shape, weight width, position), so two
twins built alike produce bit-identical schedules. docs/emulator.md states the formulas; keep the
two in step.

Duration of one operator::

    t_op      = OP_OVERHEAD_CYCLES / cpu_hz + max(t_compute, t_memory)
    t_compute = macs / (int8_macs_per_cycle * cpu_hz)          (weight_bits <= 8)
              = macs / (fp32_flops_per_cycle / 2 * cpu_hz)     (fp32: one MAC = two flops)
    t_memory  = weight_bytes / bw(weight placement)
              + (act_bytes + kv_bytes_read + kv_bytes_written) / bw(arena placement)

Power of one operator (``u`` is the utilisation of the core)::

    u = MEMORY_BOUND_UTILISATION + (1 - MEMORY_BOUND_UTILISATION) * t_compute / t_busy
    P = idle_power_w + (active_power_w - idle_power_w) * u

so a purely compute-bound operator draws ``active_power_w`` and a purely memory-bound one draws
less (the core stalls on the bus but the memories and bus are busy, so not idle power either).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tinytelem.errors import ConfigError
from tinytelem.models import cost as model_cost
from tinytelem.models.llama2c import LlamaConfig
from tinytelem.protocol.messages import NO_LAYER, MsgType, Op, TraceLevel

__all__ = [
    "FRAME_COST_CYCLES",
    "MEMORY_BOUND_UTILISATION",
    "OP_OVERHEAD_CYCLES",
    "CostModel",
    "MemoryState",
    "OpTiming",
    "Placement",
    "PlatformSpec",
]

OP_OVERHEAD_CYCLES = 200
"""Fixed cycles per operator: call, loop set-up and pointer arithmetic of a C kernel."""

MEMORY_BOUND_UTILISATION = 0.55
"""Core utilisation of an operator that does nothing but wait for memory (see module docs)."""

INSTRUMENTATION_UTILISATION = 0.7
"""Utilisation while the firmware encodes a frame (CRC, COBS, copying into the UART FIFO)."""

SAMPLE_CYCLES_PER_LOGIT = 6
"""Sampling cost when the op list has no SAMPLE entry: max/softmax/top-p pass per logit."""

FRAME_COST_CYCLES: dict[MsgType, int] = {
    MsgType.TOKEN: 150,
    MsgType.SPAN_BEGIN: 60,
    MsgType.SPAN_END: 60,
    MsgType.MEMORY: 120,
    MsgType.COUNTER: 80,
    MsgType.INFER_BEGIN: 100,
}
"""Cycles the firmware spends building and queueing one frame of each type (CRC-32 over ~20
bytes, COBS, ring-buffer copy). They are added to device time, so tracing overhead shows up in
the measured latency exactly as it would on hardware."""

RUNTIME_HEAP_BYTES = 4096
"""Heap the runtime holds besides the arena (tokenizer state, sampler, I/O buffers)."""

STACK_BASE_BYTES = 1536
"""Stack of the firmware main loop and telemetry encoder, before the kernels' locals."""


class PlatformSpec(Protocol):
    """The fields of ``tinytelem.platforms.Platform`` the cost model reads."""

    @property
    def name(self) -> str: ...
    @property
    def cpu_hz(self) -> int: ...
    @property
    def sram_bytes(self) -> int: ...
    @property
    def psram_bytes(self) -> int: ...
    @property
    def flash_bytes(self) -> int: ...
    @property
    def int8_macs_per_cycle(self) -> float: ...
    @property
    def fp32_flops_per_cycle(self) -> float: ...
    @property
    def sram_bandwidth_bytes_per_s(self) -> float: ...
    @property
    def psram_bandwidth_bytes_per_s(self) -> float: ...
    @property
    def flash_bandwidth_bytes_per_s(self) -> float: ...
    @property
    def active_power_w(self) -> float: ...
    @property
    def idle_power_w(self) -> float: ...
    @property
    def supply_voltage_v(self) -> float: ...
    @property
    def tick_hz(self) -> int: ...


@dataclass(frozen=True)
class _MainMemory:
    """A platform whose main memory is DRAM (Linux boards) seen through the "sram" tier."""

    base: Any
    sram_bytes: int
    sram_bandwidth_bytes_per_s: float

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)


def main_memory_view(platform: PlatformSpec) -> PlatformSpec:
    """Linux boards (Raspberry Pi, Jetson) have no SRAM tier but DRAM: the model uses that.

    The cost model counts one core: the firmware's kernels are single-threaded.
    """
    dram = int(getattr(platform, "dram_bytes", 0) or 0)
    if platform.sram_bytes > 0 or dram <= 0:
        return platform
    bandwidth = float(getattr(platform, "dram_bandwidth_bytes_per_s", 0.0) or 0.0)
    view: PlatformSpec = _MainMemory(platform, dram, bandwidth)
    return view


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the firmware keeps its data; ``"sram"``, ``"psram"`` or ``"flash"`` (XIP)."""

    weights: str
    arena: str
    weight_bytes: int
    arena_bytes: int


@dataclass(frozen=True, slots=True)
class OpTiming:
    """Cost of one operator of one forward pass (or of sampling)."""

    layer: int
    op: Op
    duration_s: float
    compute_s: float
    memory_s: float
    macs: int
    watts: float

    @property
    def bound(self) -> str:
        """``"compute"`` or ``"memory"``: which of the two limits the operator."""
        return "compute" if self.compute_s >= self.memory_s else "memory"


@dataclass(frozen=True, slots=True)
class MemoryState:
    """What a MEMORY frame reports, in bytes."""

    heap_used: int
    heap_peak: int
    stack_peak: int
    arena_bytes: int
    kv_bytes: int


class CostModel:
    """Deterministic timing, power and memory of a model shape on a platform.

    Args:
        platform: the target (``tinytelem.platforms.get_platform(name)``).
        config: the llama2.c model configuration.
        weight_bits: width of the stored weights; 32 means fp32 kernels, <= 8 integer kernels.
        trace_level: what the firmware emits; only :meth:`token_seconds` depends on it.
        context: tokens of KV cache the firmware allocates (default: the model's seq_len, or
            the longest context whose arena fits the platform's largest RAM).

    Raises:
        ConfigError: the model cannot be placed in any memory of the platform.
    """

    def __init__(
        self,
        platform: PlatformSpec,
        config: LlamaConfig,
        weight_bits: int = 4,
        trace_level: TraceLevel = TraceLevel.SPANS,
        context: int | None = None,
    ) -> None:
        if weight_bits not in (2, 3, 4, 8, 16, 32):
            raise ConfigError(f"weight_bits={weight_bits}; use one of 2, 3, 4, 8, 16 or 32")
        platform = main_memory_view(platform)
        self.platform = platform
        self.config = config
        self.weight_bits = weight_bits
        self.trace_level = TraceLevel(trace_level)
        self.kv_elem_bytes = 4 if weight_bits > 8 else 2
        self.stack_peak = STACK_BASE_BYTES + 4 * (config.dim + 8 * config.n_heads)
        self.context = (
            min(context, config.seq_len) if context else self._fitting_context(platform, config)
        )
        self.activation_bytes = model_cost.activation_bytes(config, 4, self.context)
        self.kv_capacity_bytes = model_cost.kv_cache_bytes(config, self.context, self.kv_elem_bytes)
        self.placement = self._place()
        self._timings: dict[int, tuple[OpTiming, ...]] = {}
        self._sample = self._sample_timing()

    # -- placement ---------------------------------------------------------------------------

    def _arena_for(self, config: LlamaConfig, ctx: int) -> int:
        return model_cost.activation_bytes(config, 4, ctx) + model_cost.kv_cache_bytes(
            config, ctx, self.kv_elem_bytes
        )

    def _fitting_context(self, platform: PlatformSpec, config: LlamaConfig) -> int:
        """The longest context whose arena fits the largest RAM, as firmware would size it.

        The arena grows linearly with the context (KV cache and attention scores), so a board
        with less RAM than the model's full seq_len needs simply gets a shorter context.
        """
        room = max(platform.sram_bytes - RUNTIME_HEAP_BYTES - self.stack_peak,
                   platform.psram_bytes)
        lo, hi = 0, config.seq_len
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._arena_for(config, mid) <= room:
                lo = mid
            else:
                hi = mid - 1
        if lo < 1:
            raise ConfigError(
                f"{platform.name}: not even a 1-token arena fits in {room} B of RAM; "
                "pick a larger platform or a smaller model"
            )
        return lo

    def weight_bytes_total(self) -> int:
        """Bytes of stored weights (the classifier counted only when not shared, llama2.c style)."""
        c = self.config
        kv_dim = c.dim * c.n_kv_heads // c.n_heads
        per_layer = 2 * c.dim * c.dim + 2 * c.dim * kv_dim + 3 * c.dim * c.hidden_dim
        params = c.vocab_size * c.dim + c.n_layers * per_layer
        if not getattr(c, "shared_classifier", True):
            params += c.vocab_size * c.dim
        norms = (2 * c.n_layers + 1) * c.dim * 4  # norm weights stay fp32
        return math.ceil(params * self.weight_bits / 8) + norms

    def _place(self) -> Placement:
        p = self.platform
        weights = self.weight_bytes_total()
        arena = self.activation_bytes + self.kv_capacity_bytes
        fixed = RUNTIME_HEAP_BYTES + self.stack_peak
        if arena + fixed > p.sram_bytes:
            if arena > p.psram_bytes:
                raise ConfigError(
                    f"{p.name}: the {arena} B arena (activations + KV cache for "
                    f"{self.context} tokens) fits neither SRAM ({p.sram_bytes} B) nor PSRAM "
                    f"({p.psram_bytes} B); shorten the context or pick a larger platform"
                )
            arena_at = "psram"
            sram_left = p.sram_bytes - fixed
            psram_left = p.psram_bytes - arena
        else:
            arena_at = "sram"
            sram_left = p.sram_bytes - fixed - arena
            psram_left = p.psram_bytes
        if weights <= sram_left:
            weights_at = "sram"
        elif weights <= psram_left:
            weights_at = "psram"
        elif weights <= p.flash_bytes:
            weights_at = "flash"
        else:
            raise ConfigError(
                f"{p.name}: {weights} B of {self.weight_bits}-bit weights fit in no memory "
                f"(flash {p.flash_bytes} B); use fewer weight bits or a smaller model"
            )
        return Placement(weights_at, arena_at, weights, arena)

    def _bandwidth(self, where: str) -> float:
        p = self.platform
        bw = {
            "sram": p.sram_bandwidth_bytes_per_s,
            "psram": p.psram_bandwidth_bytes_per_s,
            "flash": p.flash_bandwidth_bytes_per_s,
        }[where]
        if bw <= 0:
            raise ConfigError(f"{p.name}: {where} bandwidth is {bw}; fix the platform file")
        return float(bw)

    # -- timing ------------------------------------------------------------------------------

    def _macs_per_s(self) -> float:
        p = self.platform
        per_cycle = p.int8_macs_per_cycle if self.weight_bits <= 8 else p.fp32_flops_per_cycle / 2
        if per_cycle <= 0:
            raise ConfigError(f"{p.name}: no MAC throughput for {self.weight_bits}-bit kernels")
        return float(per_cycle) * p.cpu_hz

    def _watts(self, compute_s: float, busy_s: float) -> float:
        p = self.platform
        share = compute_s / busy_s if busy_s > 0 else 1.0
        u = MEMORY_BOUND_UTILISATION + (1.0 - MEMORY_BOUND_UTILISATION) * share
        return p.idle_power_w + (p.active_power_w - p.idle_power_w) * u

    def _timing(
        self, layer: int, op: Op, macs: int, weight_b: int, other_b: int, *, extra_cycles: int = 0
    ) -> OpTiming:
        compute = macs / self._macs_per_s() + extra_cycles / self.platform.cpu_hz
        memory = weight_b / self._bandwidth(self.placement.weights) + other_b / self._bandwidth(
            self.placement.arena
        )
        busy = max(compute, memory)
        duration = OP_OVERHEAD_CYCLES / self.platform.cpu_hz + busy
        return OpTiming(layer, op, duration, compute, memory, macs, self._watts(compute, busy))

    def forward_ops(self, pos: int) -> tuple[OpTiming, ...]:
        """Timed operators of one forward pass at position ``pos``, in execution order."""
        cached = self._timings.get(pos)
        if cached is not None:
            return cached
        out: list[OpTiming] = []
        costs = model_cost.op_costs(
            self.config, pos, self.weight_bits, kv_bytes_per_elem=self.kv_elem_bytes
        )
        for c in costs:
            op = Op(int(c.op))
            if op in (Op.LAYER, Op.SAMPLE):  # layer spans are ours; sampling is timed apart
                continue
            other = int(c.act_bytes) + int(c.kv_bytes_read) + int(c.kv_bytes_written)
            out.append(self._timing(int(c.layer), op, int(c.macs), int(c.weight_bytes), other))
        timed = tuple(out)
        self._timings[pos] = timed
        return timed

    def _sample_timing(self) -> OpTiming:
        logits = self.config.vocab_size * 4
        cycles = SAMPLE_CYCLES_PER_LOGIT * self.config.vocab_size
        return self._timing(NO_LAYER, Op.SAMPLE, 0, 0, logits, extra_cycles=cycles)

    def sample_op(self) -> OpTiming:
        """Timed sampling step (argmax or temperature/top-p over the logits)."""
        return self._sample

    def frame_cost_s(self, msg_type: MsgType) -> float:
        """Device seconds spent emitting one frame of ``msg_type`` (0 for untimed types)."""
        return FRAME_COST_CYCLES.get(msg_type, 0) / self.platform.cpu_hz

    def instrumentation_watts(self) -> float:
        """Power while the firmware encodes frames."""
        p = self.platform
        return p.idle_power_w + (p.active_power_w - p.idle_power_w) * INSTRUMENTATION_UTILISATION

    def token_seconds(self, pos: int, sample: bool = True) -> float:
        """Device time of one forward pass at ``pos`` (plus sampling) at the trace level.

        Includes the frames the firmware emits for the token (spans, TOKEN, MEMORY), which is
        what makes tracing overhead measurable: compare two trace levels.
        """
        ops = self.forward_ops(pos)
        total = sum(t.duration_s for t in ops)
        if sample:
            total += self._sample.duration_s
        if self.trace_level >= TraceLevel.TOKENS:
            total += self.frame_cost_s(MsgType.TOKEN)
            if sample:
                total += self.frame_cost_s(MsgType.MEMORY)
        if self.trace_level >= TraceLevel.SPANS:
            n_layers = len({t.layer for t in ops if t.layer != NO_LAYER})
            spans = len(ops) + n_layers + (1 if sample else 0)
            total += spans * (
                self.frame_cost_s(MsgType.SPAN_BEGIN) + self.frame_cost_s(MsgType.SPAN_END)
            )
        return total

    # -- memory ------------------------------------------------------------------------------

    def kv_bytes(self, n_positions: int) -> int:
        """KV cache bytes holding ``n_positions`` positions."""
        n = min(n_positions, self.context)
        return model_cost.kv_cache_bytes(self.config, n, self.kv_elem_bytes)

    def memory(self, n_positions: int, heap_peak: int = 0) -> MemoryState:
        """Memory state after ``n_positions`` positions are in the KV cache.

        The arena is allocated once for the whole context (what ``arena_bytes`` reports); the
        heap in use grows with the KV positions actually written.
        """
        kv = self.kv_bytes(n_positions)
        used = RUNTIME_HEAP_BYTES + self.activation_bytes + kv
        return MemoryState(used, max(used, heap_peak), self.stack_peak, self.placement.arena_bytes,
                           kv)


def total_macs(timings: Sequence[OpTiming]) -> int:
    """Sum of MACs over ``timings``."""
    return sum(t.macs for t in timings)
