"""Cost model: predicted time, power and memory of every operator of the C engine on a board.

The twin, ``recommend``, bottleneck analysis and QEMU runs all ask this model; its figures are
predictions. Everything is a pure function of (platform, model shape, weight widths, position),
so two twins built alike produce bit-identical schedules. docs/emulator.md states the formulas;
keep the two in step.

Duration of one operator::

    instr     = the engine calibration's fitted instructions of the span (measured under QEMU on
                the platform's ISA family, tinytelem.costing.calibration)
    t_compute = instr * cycles_per_instruction * efficiency_c / cpu_hz
    t_memory  = (weight_bytes / bw(weight placement)
              + (act_bytes + kv_bytes_read + kv_bytes_written) / bw(arena placement)) * efficiency_m
    t_op      = t_compute + t_stall                       (MCUs: in-order cores)
    t_op      = max(t_compute, t_memory)                  (Linux boards: out-of-order + DRAM)

``t_stall`` is the part of ``t_memory`` that comes from PSRAM or flash: a load from on-chip SRAM
is already in the core's cycles per instruction, a cache-line miss to PSRAM or a flash line
behind its wait states stalls an in-order core for the line's transfer time (the bandwidths in
the platform file are those transfer rates, with their sources).

``cycles_per_instruction`` comes from the core's documentation (platform file, with its
source); ``efficiency`` is 1 unless the platform file states it was fitted to a published point,
and it scales either compute (``efficiency_c``) or external-memory time (``efficiency_m``), as
the platform's ``efficiency_on`` says; the other factor is 1.
The instructions per forward pass outside every span (the token loop) are charged to EMBED.

Power of one operator (``u`` is the utilisation of the core)::

    u = MEMORY_BOUND_UTILISATION + (1 - MEMORY_BOUND_UTILISATION) * t_compute / t_busy
    P = idle_power_w + (active_power_w - idle_power_w) * u

so a purely compute-bound operator draws ``active_power_w`` and a purely memory-bound one draws
less (the core stalls on the bus but the memories and bus are busy, so not idle power either).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tinytelem.costing.calibration import EngineCalibration, load_calibration
from tinytelem.costing.features import WeightBits, forward_ops, sample_features
from tinytelem.errors import ConfigError
from tinytelem.models import cost as model_cost
from tinytelem.models.llama2c import LlamaConfig
from tinytelem.platforms.memory import MemoryNeed, longest_context, memory_need
from tinytelem.protocol.messages import (
    NO_LAYER,
    AnyMessage,
    Counter,
    CounterValue,
    InferBegin,
    Memory,
    MsgType,
    Op,
    SpanBegin,
    SpanEnd,
    Token,
    TraceLevel,
    varint_len,
)

__all__ = [
    "MEMORY_BOUND_UTILISATION",
    "CostModel",
    "MemoryState",
    "OpTiming",
    "Placement",
    "PlatformSpec",
    "frame_cycles",
]

MEMORY_BOUND_UTILISATION = 0.55
"""Core utilisation of an operator that does nothing but wait for memory (see module docs)."""

INSTRUMENTATION_UTILISATION = 0.7
"""Utilisation while the firmware encodes a frame (CRC, COBS, copying into the UART FIFO)."""

_SAMPLE_FRAMES: dict[MsgType, AnyMessage] = {
    MsgType.TOKEN: Token(100, 100, 1),
    MsgType.SPAN_BEGIN: SpanBegin(1, int(Op.FFN)),
    MsgType.SPAN_END: SpanEnd(1, int(Op.FFN)),
    MsgType.MEMORY: Memory(100_000, 100_000, 2000, 100_000, 10_000),
    MsgType.COUNTER: CounterValue(Counter.MACS, 1 << 32),
    MsgType.INFER_BEGIN: InferBegin(1, 1, 64),
}
"""Typical frames of each type, whose wire size prices their encoding (calibrated per byte)."""


def _wire_bytes(message: AnyMessage) -> int:
    from tinytelem.protocol.codec import encode_frame

    return len(encode_frame(message, 0x1234, 0x12345678))


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
    @property
    def isa_family(self) -> str: ...
    @property
    def cycles_per_instruction(self) -> float: ...
    @property
    def efficiency(self) -> float: ...
    @property
    def compute_factor(self) -> float: ...
    @property
    def memory_factor(self) -> float: ...


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
    instructions: float = 0.0
    """Predicted instructions of the span (the engine calibration)."""

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
        weight_bits: width of the stored layer matrices (32 = float kernels, <= 8 integer), or
            a :class:`~tinytelem.costing.features.WeightBits` for a ``.tlm`` whose embedding
            width differs (the quantizer keeps it at 8 bits).
        trace_level: what the firmware emits; only :meth:`token_seconds` depends on it.
        context: tokens of KV cache the firmware allocates (default: the model's seq_len, or
            the longest context whose arena fits the platform's largest RAM).
        calibration: the engine calibration (default: the platform's ISA family from
            ``calibration/engine.json``).

    Raises:
        ConfigError: the model cannot be placed in any memory of the platform.
    """

    def __init__(
        self,
        platform: PlatformSpec,
        config: LlamaConfig,
        weight_bits: int | WeightBits = 4,
        trace_level: TraceLevel = TraceLevel.SPANS,
        context: int | None = None,
        calibration: EngineCalibration | None = None,
    ) -> None:
        bits = WeightBits.uniform(weight_bits) if isinstance(weight_bits, int) else weight_bits
        if bits.layers not in (2, 3, 4, 8, 16, 32) or bits.embedding not in (2, 3, 4, 8, 16, 32):
            raise ConfigError(f"weight_bits={bits.layers}; use one of 2, 3, 4, 8, 16 or 32")
        platform = main_memory_view(platform)
        self.platform = platform
        self.config = config
        self.bits = bits
        self.weight_bits = bits.layers
        self.trace_level = TraceLevel(trace_level)
        self.calibration = calibration or load_calibration(platform.isa_family)
        self.kv_elem_bytes = 4  # the engine keeps a float32 KV cache
        self.stack_peak = 1536 + 4 * (config.dim + 8 * config.n_heads)
        weights = self.weight_bytes_total()
        self.context = (
            min(context, config.seq_len) if context else self._fitting_context(weights)
        )
        self.need: MemoryNeed = memory_need(config, weights, platform, self.context,
                                            self.kv_elem_bytes)
        self.activation_bytes = self.need.activations + self.need.scratch
        self.kv_capacity_bytes = self.need.kv_cache
        self.placement = self._place()
        self._out_of_order = int(getattr(platform, "dram_bytes", 0) or 0) > 0
        self._s_per_instr = (platform.cycles_per_instruction * platform.compute_factor
                             / platform.cpu_hz)
        self._memory_factor = platform.memory_factor
        self._frame_instr = {t: self.calibration.frame_instructions(_wire_bytes(m))
                             for t, m in _SAMPLE_FRAMES.items()}
        # Span events are records in a SPAN_BATCH (the batch frame is priced by its size).
        self._frame_instr[MsgType.SPAN_BEGIN] = self._frame_instr[MsgType.SPAN_END] = (
            self.calibration.span_record)
        self._timings: dict[int, tuple[OpTiming, ...]] = {}
        self._sample = self._sample_timing()

    @property
    def calibration_id(self) -> str:
        """Which engine calibration the figures come from."""
        return self.calibration.calibration_id

    # -- placement ---------------------------------------------------------------------------

    def _fitting_context(self, weights: int) -> int:
        """The longest context whose RAM need fits the largest RAM, as firmware would size it.

        The arena grows linearly with the context (KV cache and attention scores), so a board
        with less RAM than the model's full seq_len needs simply gets a shorter context.
        """
        p = self.platform
        ram = max(p.sram_bytes, p.psram_bytes + memory_need(
            self.config, weights, p, 1, self.kv_elem_bytes).reserve)
        ctx = longest_context(self.config, weights, p, ram, self.kv_elem_bytes)
        if ctx < 1:
            raise ConfigError(
                f"{p.name}: not even a 1-token arena fits in {ram} B of RAM; "
                "pick a larger platform or a smaller model"
            )
        return ctx

    def weight_bytes_total(self) -> int:
        """Bytes of stored weights, group scales included (the classifier counted only when
        not shared, llama2.c style)."""
        c = self.config
        kv_dim = c.dim * c.n_kv_heads // c.n_heads
        per_layer = 2 * c.dim * c.dim + 2 * c.dim * kv_dim + 3 * c.dim * c.hidden_dim
        emb = c.vocab_size * c.dim * (1 if getattr(c, "shared_classifier", True) else 2)
        norms = (2 * c.n_layers + 1) * c.dim * 4  # norm weights stay fp32
        return (c.n_layers * self.bits.matrix_bytes(per_layer, self.bits.layers)
                + self.bits.matrix_bytes(emb, self.bits.embedding) + norms)

    def _place(self) -> Placement:
        p = self.platform
        weights = self.weight_bytes_total()
        arena = self.need.arena
        fixed = self.need.reserve
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

    def _watts(self, compute_s: float, busy_s: float) -> float:
        p = self.platform
        share = compute_s / busy_s if busy_s > 0 else 1.0
        u = MEMORY_BOUND_UTILISATION + (1.0 - MEMORY_BOUND_UTILISATION) * share
        return p.idle_power_w + (p.active_power_w - p.idle_power_w) * u

    def _timing(self, layer: int, op: Op, instr: float, macs: int, weight_b: int,
                other_b: int) -> OpTiming:
        compute = instr * self._s_per_instr
        w_s = weight_b / self._bandwidth(self.placement.weights) * self._memory_factor
        a_s = other_b / self._bandwidth(self.placement.arena) * self._memory_factor
        memory = w_s + a_s
        if self._out_of_order:
            busy = max(compute, memory)
        else:
            stall = (w_s if self.placement.weights != "sram" else 0.0) + (
                a_s if self.placement.arena != "sram" else 0.0)
            busy = compute + stall
        return OpTiming(layer, op, busy, compute, memory, macs, self._watts(compute, busy),
                        instr)

    def op_costs(self, pos: int) -> list[model_cost.OpCost]:
        """The work of every operator at ``pos`` as stored: layer matrices at the layer width,
        the embedding row and the classifier at the embedding width, group scales included."""
        b = self.bits

        def at(bits: int) -> list[model_cost.OpCost]:
            quantized = bits <= 8
            return model_cost.op_costs(
                self.config, pos, bits, group_size=b.group if quantized else 0,
                scale_bytes=b.scale_bytes, kv_bytes_per_elem=self.kv_elem_bytes)

        layers = at(b.layers)
        if b.embedding == b.layers:
            return layers
        table = {int(Op.EMBED), int(Op.CLASSIFIER)}
        return [e if int(c.op) in table else c
                for c, e in zip(layers, at(b.embedding), strict=True)]

    def forward_ops(self, pos: int) -> tuple[OpTiming, ...]:
        """Timed operators of one forward pass at position ``pos``, in execution order."""
        cached = self._timings.get(pos)
        if cached is not None:
            return cached
        out: list[OpTiming] = []
        costs = [c for c in self.op_costs(pos) if Op(int(c.op)) not in (Op.LAYER, Op.SAMPLE)]
        feats = forward_ops(self.config, pos, self.bits)
        loop = self.calibration.residual_instructions(self.config.n_layers)
        for c, f in zip(costs, feats, strict=True):
            op = Op(int(c.op))
            instr = self.calibration.instructions(f) + (loop if op == Op.EMBED else 0.0)
            other = int(c.act_bytes) + int(c.kv_bytes_read) + int(c.kv_bytes_written)
            out.append(self._timing(int(c.layer), op, instr, int(c.macs), int(c.weight_bytes),
                                    other))
        timed = tuple(out)
        self._timings[pos] = timed
        return timed

    def _sample_timing(self) -> OpTiming:
        instr = self.calibration.instructions(sample_features(self.config))
        return self._timing(NO_LAYER, Op.SAMPLE, instr, 0, 0, self.config.vocab_size * 4)

    def sample_op(self) -> OpTiming:
        """Timed sampling step (greedy argmax as calibrated; temperature sampling costs more)."""
        return self._sample

    def frame_instructions(self, msg_type: MsgType) -> float:
        """Predicted instructions of building and sending one frame of ``msg_type``."""
        return self._frame_instr.get(msg_type, 0.0)

    def frame_cost_s(self, msg_type: MsgType) -> float:
        """Device seconds spent emitting one frame of ``msg_type`` (0 for untimed types).

        SPAN_BEGIN / SPAN_END are span events: one record appended to the pending SPAN_BATCH,
        whose frame costs :meth:`frame_bytes_cost_s` of its size when it is sent.
        """
        return self.frame_instructions(msg_type) * self._s_per_instr

    def frame_bytes_cost_s(self, wire_bytes: int) -> float:
        """Device seconds spent building and sending a frame of ``wire_bytes`` on the wire."""
        return self.calibration.frame_instructions(wire_bytes) * self._s_per_instr

    def instructions_per_token(self, pos: int, sample: bool = True) -> float:
        """Predicted instructions of one forward pass at ``pos`` (plus sampling) and its frames
        at the trace level: what ``-icount`` measures for the same firmware under QEMU."""
        total = sum(t.instructions for t in self.forward_ops(pos))
        frames = self._frames_per_token(pos, sample)
        if sample:
            total += self._sample.instructions
        total += self._batch_instructions(pos, sample)
        return total + sum(n * self.frame_instructions(t) for t, n in frames.items())

    def _batch_instructions(self, pos: int, sample: bool) -> float:
        """The token's SPAN_BATCH frame at SPANS (0 below): its size from the records the token
        makes, an end record's tick delta being its operator's duration."""
        if self.trace_level < TraceLevel.SPANS:
            return 0.0
        ticks_per_s = self.platform.tick_hz
        gap = varint_len(round(self.calibration.span_record * self._s_per_instr * ticks_per_s))
        ops = [*self.forward_ops(pos), *([self._sample] if sample else [])]
        n_layers = len({t.layer for t in ops if t.layer != NO_LAYER})
        # record number; a u16 layer where it changes; LAYER begin/end records a gap apart;
        # per operator a begin record a gap after the last one and an end record its duration
        payload = 2 + 2 * n_layers + (2 if n_layers else 0) + 2 * n_layers * (1 + gap)
        payload += sum(2 + gap + varint_len(round(t.duration_s * ticks_per_s)) for t in ops)
        wire = 12 + payload + 2 + payload // 254  # header, CRC, COBS, delimiter
        return self.calibration.frame_instructions(wire)

    def _frames_per_token(self, pos: int, sample: bool) -> dict[MsgType, int]:
        out: dict[MsgType, int] = {}
        if self.trace_level >= TraceLevel.TOKENS:
            out[MsgType.TOKEN] = 1
            if sample:
                out[MsgType.MEMORY] = 1
        if self.trace_level >= TraceLevel.SPANS:
            ops = self.forward_ops(pos)
            n_layers = len({t.layer for t in ops if t.layer != NO_LAYER})
            spans = len(ops) + n_layers + (1 if sample else 0)
            out[MsgType.SPAN_BEGIN] = out[MsgType.SPAN_END] = spans
        return out

    def instrumentation_watts(self) -> float:
        """Power while the firmware encodes frames."""
        p = self.platform
        return p.idle_power_w + (p.active_power_w - p.idle_power_w) * INSTRUMENTATION_UTILISATION

    def token_seconds(self, pos: int, sample: bool = True) -> float:
        """Device time of one forward pass at ``pos`` (plus sampling) at the trace level.

        Includes the frames the firmware emits for the token (spans, TOKEN, MEMORY), which is
        what makes tracing overhead measurable: compare two trace levels.
        """
        total = sum(t.duration_s for t in self.forward_ops(pos))
        if sample:
            total += self._sample.duration_s
        frames = self._frames_per_token(pos, sample)
        total += self._batch_instructions(pos, sample) * self._s_per_instr
        return total + sum(n * self.frame_cost_s(t) for t, n in frames.items())

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
        used = self.activation_bytes + kv
        return MemoryState(used, max(used, heap_peak), self.stack_peak, self.placement.arena_bytes,
                           kv)


SPAN_RECORD_WIRE_BYTES = 2.5
"""Bytes a span event adds to its SPAN_BATCH on the wire, typically (a tag, a 1-2 byte tick
delta, now and then a layer): its share of the batch frame's cost."""

SPAN_RECORDS_PER_BATCH = 84
"""Span events in a typical token's batch (stories260K: 5 layers)."""


def frame_cycles(cost: CostModel | None = None) -> dict[MsgType, float]:
    """Predicted core cycles per frame type: ``cost``'s platform, or (without one) the Cortex-M4
    family's calibrated instructions at one cycle each.

    SPAN_BEGIN / SPAN_END are span events sent in SPAN_BATCH frames (the decoded trace holds the
    events, not the batches): each costs its record plus its share of the batch frame.
    """
    cal = cost.calibration if cost is not None else load_calibration("cortex-m4")
    span = (cal.span_record + cal.frame["bytes"] * SPAN_RECORD_WIRE_BYTES
            + cal.frame["one"] / SPAN_RECORDS_PER_BATCH)
    if cost is not None:
        cpi = cost.platform.cycles_per_instruction * cost.platform.compute_factor
        out = {t: cost.frame_instructions(t) * cpi for t in _SAMPLE_FRAMES}
    else:
        cpi = 1.0
        out = {t: cal.frame_instructions(_wire_bytes(m)) for t, m in _SAMPLE_FRAMES.items()}
    out[MsgType.SPAN_BEGIN] = out[MsgType.SPAN_END] = max(0.0, span) * cpi
    return out


def total_macs(timings: Sequence[OpTiming]) -> int:
    """Sum of MACs over ``timings``."""
    return sum(t.macs for t in timings)
