"""The device twin's sans-I/O core: commands in, timed frames and power segments out.

:class:`TwinDevice` knows nothing about sockets or clocks. The server tells it the time (seconds
since boot, true host time) with every call: :meth:`TwinDevice.receive` hands it a host command,
:meth:`TwinDevice.pop_due` returns the frames whose time has come (sequence numbers and device
ticks assigned), :meth:`TwinDevice.drain_power` returns finished power segments. The same object
therefore drives a real-time TCP server and a test that walks time by hand.

Device clock: ``ticks = round(t * (1 + drift_ppm * 1e-6) * tick_hz) + tick_offset`` modulo
2**32, where ``t`` is seconds since boot. Drift and offset let host-side clock alignment be tested
against a known answer; a ``tick_offset`` near 2**32 tests the wrap.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tinytelem import __version__
from tinytelem.costing.model import CostModel, PlatformSpec
from tinytelem.emulator.schedule import (
    PowerSegment,
    RunPlan,
    RunTruth,
    plan_run,
    shift_plan,
    truncate_plan,
)
from tinytelem.errors import ModelError
from tinytelem.models.llama2c import LlamaModel
from tinytelem.models.reference import Sampler, Transformer
from tinytelem.protocol.codec import encode_frame
from tinytelem.protocol.messages import (
    HASH_LEN,
    AnyMessage,
    Capability,
    Config,
    DeviceError,
    Heartbeat,
    Hello,
    InferEnd,
    InferStatus,
    Log,
    LogLevel,
    Ping,
    Pong,
    Run,
    Stop,
    TraceLevel,
)

__all__ = [
    "BOS",
    "ERR_BAD_RUN",
    "ERR_BUSY",
    "EmittedFrame",
    "Engine",
    "TwinDevice",
]

BOS = 1
"""llama2.c's beginning-of-sequence id: an empty prompt means [BOS]; sampling it ends a run."""

ERR_BUSY = 1
ERR_BAD_RUN = 2
ERR_BAD_CONFIG = 3

TOPP = 0.9
"""Top-p of temperature sampling (llama2.c's default; RUN carries no top-p)."""

DEFAULT_SAMPLER_SEED = 42
"""Sampler seed used when RUN.seed is 0 (the xorshift state must be non-zero)."""

HEARTBEAT_PERIOD_S = 1.0


class Engine(Protocol):
    """A forward pass with its own KV cache (``tinytelem.models.reference.Transformer``)."""

    def forward(self, token: int, pos: int) -> Any: ...


@dataclass(frozen=True, slots=True)
class EmittedFrame:
    """A frame leaving the device: its header values, the message and the wire bytes."""

    time_s: float
    seq: int
    ticks: int
    message: AnyMessage

    def encode(self) -> bytes:
        """COBS-framed bytes, ready for the link."""
        return encode_frame(self.message, self.seq, self.ticks)


def _reference_engine(model: LlamaModel) -> Engine:
    engine: Engine = Transformer(model)
    return engine


class TwinDevice:
    """A device running a tiny LLM with tinytelem firmware, minus the hardware.

    Args:
        platform: the target platform (clocks, memories, power).
        model: the model whose token loop really runs (``LlamaModel``).
        seed: identifies this twin instance (firmware build seed); runs use RUN.seed.
        drift_ppm: how fast the device crystal runs relative to true time.
        tick_offset: device ticks at boot (u32; near 2**32 to test the wrap).
        trace_level: initial trace level (CONFIG changes it for later runs).
        weight_bits: stored weight width, which drives the cost model.
        engine_factory: builds a fresh forward-pass engine per run (default: the reference
            Transformer); tests may pass a cheaper one.
    """

    def __init__(
        self,
        platform: PlatformSpec,
        model: LlamaModel,
        *,
        seed: int = 0,
        drift_ppm: float = 0.0,
        tick_offset: int = 0,
        trace_level: TraceLevel = TraceLevel.SPANS,
        weight_bits: int = 4,
        engine_factory: Callable[[LlamaModel], Engine] | None = None,
    ) -> None:
        self.platform = platform
        self.model = model
        self.seed = seed
        self.drift_ppm = drift_ppm
        self.tick_offset = tick_offset & 0xFFFFFFFF
        self.trace_level = TraceLevel(trace_level)
        self.weight_bits = weight_bits
        self._engine_factory = engine_factory or _reference_engine
        self.cost = CostModel(platform, model.config, weight_bits, self.trace_level)
        self._rate = (1.0 + drift_ppm * 1e-6) * platform.tick_hz
        self._seq = 0
        self._order = itertools.count()
        self._queue: list[tuple[float, int, AnyMessage, int]] = []
        self._next_heartbeat = HEARTBEAT_PERIOD_S
        self._active: RunPlan | None = None
        self._power: deque[PowerSegment] = deque()
        self._power_cursor = 0.0
        self._heap_peak = 0
        self._macs = 0
        self._cycles = 0
        self.tx_dropped = 0
        self.truths: dict[int, RunTruth] = {}
        self.plans: dict[int, RunPlan] = {}

    # -- clock and identity ------------------------------------------------------------------

    def ticks_at(self, t: float) -> int:
        """Device ticks (u32) at ``t`` seconds since boot."""
        return (round(t * self._rate) + self.tick_offset) & 0xFFFFFFFF

    def device_seconds(self, t: float) -> float:
        """What the device's own clock says has elapsed since boot at true time ``t``."""
        return t * self._rate / self.platform.tick_hz

    def model_hash(self) -> bytes:
        """The model's SHA-256 as 32 bytes (hashing the name when the model has no hash)."""
        digest = self.model.sha256
        try:
            raw = bytes.fromhex(digest)
        except (TypeError, ValueError):
            raw = b""
        if len(raw) != HASH_LEN:
            raw = hashlib.sha256(str(digest or self.model.name).encode()).digest()
        return raw

    def hello(self) -> Hello:
        """The HELLO this device sends after boot and on every new host connection."""
        p = self.platform
        caps = Capability.SPANS | Capability.MEMORY | Capability.COUNTERS | Capability.STOP
        return Hello(
            cpu_hz=p.cpu_hz,
            tick_hz=p.tick_hz,
            ram_bytes=p.sram_bytes,
            flash_bytes=p.flash_bytes,
            psram_bytes=p.psram_bytes,
            capabilities=int(caps),
            model_hash=self.model_hash(),
            platform=p.name,
            firmware_version=f"twin-{__version__}",
            model_name=self.model.name[:255],
        )

    def stamp(self, message: AnyMessage, t: float) -> EmittedFrame:
        """Emit ``message`` now (outside the schedule): assigns the next sequence number."""
        frame = EmittedFrame(t, self._seq, self.ticks_at(t), message)
        self._seq = (self._seq + 1) & 0xFFFF
        return frame

    # -- commands ----------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """True while a run's INFER_END is still ahead."""
        return self._active is not None

    def _push(self, t: float, message: AnyMessage, run_id: int = -1) -> None:
        heapq.heappush(self._queue, (t, next(self._order), message, run_id))

    def receive(self, message: AnyMessage, t: float) -> None:
        """Handle a host command arriving at ``t`` (its replies go into the schedule)."""
        if isinstance(message, Ping):
            self._push(t, Pong(message.nonce))
        elif isinstance(message, Run):
            self.start_run(message, t)
        elif isinstance(message, Stop):
            self.stop(t)
        elif isinstance(message, Config):
            try:
                self.set_trace_level(TraceLevel(message.trace_level))
            except ValueError:
                self._push(
                    t,
                    DeviceError(ERR_BAD_CONFIG, f"unknown trace level {message.trace_level}"),
                )
        else:
            self._push(t, Log(LogLevel.WARNING, f"ignored {message.TYPE.name}: not a command"))

    def set_trace_level(self, level: TraceLevel) -> None:
        """Trace level for runs that start from now on (a running schedule is not changed)."""
        self.trace_level = level
        self.cost.trace_level = level

    def generate(self, run: Run) -> tuple[int, ...]:
        """Token ids the model generates for ``run`` (real forward passes; pure, thread-safe).

        Stops early when the model samples BOS, like llama2.c.

        Raises:
            ModelError: a prompt token is outside the vocabulary or the context is exceeded.
        """
        prompt = self._prompt(run)
        n = self._n_tokens(run, prompt)
        if n == 0:
            return ()
        cfg = self.model.config
        engine = self._engine_factory(self.model)
        seed = run.seed or DEFAULT_SAMPLER_SEED
        sampler = Sampler(cfg.vocab_size, max(float(run.temperature), 0.0), TOPP, seed)
        logits: Any = None
        for pos, tok in enumerate(prompt):
            logits = engine.forward(tok, pos)
        out: list[int] = []
        for j in range(n):
            if j > 0:
                logits = engine.forward(out[-1], len(prompt) - 1 + j)
            nxt = int(sampler.sample(logits))
            if nxt == BOS:
                break
            out.append(nxt)
        return tuple(out)

    def _prompt(self, run: Run) -> tuple[int, ...]:
        prompt = run.prompt or (BOS,)
        vocab = self.model.config.vocab_size
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise ModelError(f"prompt token {bad[0]} is outside the vocabulary 0..{vocab - 1}")
        if len(prompt) > self.cost.context:
            raise ModelError(
                f"prompt of {len(prompt)} tokens exceeds the {self.cost.context}-token context"
            )
        return prompt

    def _n_tokens(self, run: Run, prompt: Sequence[int]) -> int:
        return max(0, min(run.n_tokens, self.cost.context - len(prompt) + 1))

    def start_run(self, run: Run, t: float, generated: Sequence[int] | None = None,
                  clock: Callable[[], float] | None = None) -> None:
        """Start ``run`` at ``t``; ``generated`` may be precomputed with :meth:`generate`.

        With ``clock`` (seconds since boot, as ``t``), the run starts when its plan is ready
        rather than at ``t``: planning a long traced run takes real time, and a schedule that
        began before it would be overdue the moment it exists.
        """
        if self._active is not None:
            self._push(
                t,
                DeviceError(
                    ERR_BUSY, f"busy with run {self._active.run_id}; send STOP or wait for it"
                ),
            )
            return
        try:
            prompt = self._prompt(run)
            if generated is None:
                generated = self.generate(run)
        except ModelError as exc:
            self._push(t, DeviceError(ERR_BAD_RUN, str(exc)[:200]))
            self._push(t, InferEnd(run.run_id, 0, InferStatus.ERROR))
            return
        if self._n_tokens(run, prompt) < run.n_tokens:
            self._push(t, Log(LogLevel.WARNING, "n_tokens clipped to the context length"))
        plan = plan_run(
            self.cost,
            run_id=run.run_id,
            prompt=prompt,
            generated=generated,
            start_s=t,
            level=self.trace_level,
            heap_peak=self._heap_peak,
            macs_before=self._macs,
            cycles_before=self._cycles,
        )
        if clock is not None:
            plan = shift_plan(plan, max(0.0, clock() - t))
        self._install(plan)

    def _install(self, plan: RunPlan) -> None:
        self._active = plan
        self.plans[plan.run_id] = plan
        self.truths[plan.run_id] = plan.truth
        for frame in plan.frames:
            self._push(frame.time_s, frame.message, plan.run_id)
        self._power.extend(plan.power)

    def stop(self, t: float) -> None:
        """STOP at ``t``: cut the active run's future and end it with INFER_END(STOPPED)."""
        plan = self._active
        if plan is None or plan.end_s <= t:
            return  # nothing running, or its INFER_END is already due
        cut = truncate_plan(plan, t)
        run_id = plan.run_id
        self._queue = [q for q in self._queue if not (q[3] == run_id and q[0] > t)]
        heapq.heapify(self._queue)
        self._power = deque(
            PowerSegment(s.start_s, min(s.end_s, t), s.watts) for s in self._power if s.start_s < t
        )
        self._active = cut
        self.plans[run_id] = cut
        self.truths[run_id] = cut.truth
        self._push(t, cut.frames[-1].message, run_id)

    # -- output ------------------------------------------------------------------------------

    def next_due(self) -> float:
        """Time of the next scheduled frame (a heartbeat at the latest)."""
        if self._queue:
            return min(self._queue[0][0], self._next_heartbeat)
        return self._next_heartbeat

    def pop_due(self, t: float) -> list[EmittedFrame]:
        """Frames whose time is <= ``t``, in time order, with sequence numbers and ticks."""
        out: list[EmittedFrame] = []
        queue = self._queue
        while True:
            head = queue[0][0] if queue else float("inf")
            if self._next_heartbeat <= t and self._next_heartbeat <= head:
                hb_t = self._next_heartbeat
                uptime = int(self.device_seconds(hb_t) * 1000) & 0xFFFFFFFF
                out.append(self.stamp(Heartbeat(uptime, self.tx_dropped & 0xFFFFFFFF), hb_t))
                self._next_heartbeat += HEARTBEAT_PERIOD_S
                continue
            if head > t:
                return out
            when, _, message, _ = heapq.heappop(queue)
            out.append(self.stamp(message, when))
            active = self._active
            if isinstance(message, InferEnd) and active and message.run_id == active.run_id:
                self._finish(active)

    def _finish(self, plan: RunPlan) -> None:
        self._active = None
        self._heap_peak = max(self._heap_peak, plan.heap_peak)
        self._macs += plan.truth.macs
        self._cycles += round((plan.end_s - plan.start_s) * self.platform.cpu_hz)

    def drain_power(self, t: float) -> list[PowerSegment]:
        """Power segments that ended by ``t``, with idle segments filling every gap.

        Segments are contiguous from boot: what a current probe on the supply would integrate.
        Only finished segments leave, so a STOP can still cut the future ones.
        """
        out: list[PowerSegment] = []
        idle = self.platform.idle_power_w
        cursor = self._power_cursor
        power = self._power
        while power and power[0].end_s <= t:
            seg = power.popleft()
            if seg.start_s > cursor:
                out.append(PowerSegment(cursor, seg.start_s, idle))
            start = max(seg.start_s, cursor)
            if seg.end_s > start:
                out.append(PowerSegment(start, seg.end_s, seg.watts))
            cursor = max(cursor, seg.end_s)
        limit = min(t, power[0].start_s) if power else t
        if limit > cursor:
            out.append(PowerSegment(cursor, limit, idle))
            cursor = limit
        self._power_cursor = cursor
        return out
