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
from collections.abc import Callable
from dataclasses import dataclass

from tinytelem import __version__
from tinytelem.costing.model import CostModel, PlatformSpec
from tinytelem.emulator.link import DROPPABLE, TxRing
from tinytelem.emulator.schedule import (
    PowerSegment,
    RunLayout,
    RunPlan,
    RunTruth,
    ScheduledMessage,
    SpanDraft,
    truncate_plan,
)
from tinytelem.emulator.tokenloop import (
    BOS,
    Engine,
    PreparedRun,
    RunStream,
    TwinModel,
    make_sampler,
    reference_engine,
)
from tinytelem.errors import ModelError
from tinytelem.models.quant import QuantizedModel
from tinytelem.protocol.codec import encode_frame
from tinytelem.protocol.commands import Config, Ping, Run, Stop
from tinytelem.protocol.messages import (
    HASH_LEN,
    AnyMessage,
    Capability,
    DeviceError,
    Heartbeat,
    Hello,
    InferEnd,
    InferStatus,
    Log,
    LogLevel,
    Pong,
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


ERR_BUSY = 1
ERR_BAD_RUN = 2
ERR_BAD_CONFIG = 3


DEFAULT_SAMPLER_SEED = 42
"""Sampler seed used when RUN.seed is 0 (the xorshift state must be non-zero)."""

HEARTBEAT_PERIOD_S = 1.0

RUN_HISTORY = 32
"""How many finished runs' plans and truths a twin keeps (the oldest are forgotten)."""

LOOKAHEAD_S = 0.25
"""How far ahead of the present a run is computed and laid out (seconds of device time): far
enough that frames are ready when due, near enough that a STOP wastes few forward passes."""


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


class TwinDevice:
    """A device running a tiny LLM with tinytelem firmware, minus the hardware.

    Args:
        platform: the target platform (clocks, memories, power).
        model: the model whose token loop really runs (see :data:`TwinModel`).
        seed: identifies this twin instance (firmware build seed); runs use RUN.seed.
        drift_ppm: how fast the device crystal runs relative to true time.
        tick_offset: device ticks at boot (u32; near 2**32 to test the wrap).
        trace_level: initial trace level (CONFIG changes it for later runs).
        weight_bits: stored weight width, which drives the cost model.
        engine_factory: builds a fresh forward-pass engine per run (default: the float
            reference Transformer, or the integer QTransformer for a quantized model); tests
            may pass a cheaper one.
        model_sha256: hex digest HELLO carries (the model file's, like the firmware's);
            default: the model's own hash.
        link: the link to the host as a budget (:class:`~tinytelem.emulator.link.TxRing`):
            frames leave at its byte rate and are dropped (counted in ``tx_dropped``) when its
            ring is full; None: a free link, every frame leaves when it is made.
    """

    def __init__(
        self,
        platform: PlatformSpec,
        model: TwinModel,
        *,
        seed: int = 0,
        drift_ppm: float = 0.0,
        tick_offset: int = 0,
        trace_level: TraceLevel = TraceLevel.SPANS,
        weight_bits: int = 4,
        engine_factory: Callable[[TwinModel], Engine] | None = None,
        model_sha256: str | None = None,
        link: TxRing | None = None,
    ) -> None:
        self.platform = platform
        self.link = link
        self._wire: deque[tuple[float, EmittedFrame]] = deque()
        self.model = model
        self.seed = seed
        self.drift_ppm = drift_ppm
        self.tick_offset = tick_offset & 0xFFFFFFFF
        self.trace_level = TraceLevel(trace_level)
        self.weight_bits = weight_bits
        self._engine_factory = engine_factory or reference_engine
        self._model_sha256 = model_sha256
        self.cost = CostModel(platform, model.config, weight_bits, self.trace_level)
        self._rate = (1.0 + drift_ppm * 1e-6) * platform.tick_hz
        self._seq = 0
        self._order = itertools.count()
        self._queue: list[tuple[float, int, ScheduledMessage, int]] = []
        self._span_records = 0
        """Span records made since boot (a SPAN_BATCH's record number), dropped ones too."""
        self._next_heartbeat = HEARTBEAT_PERIOD_S
        self._active: RunStream | None = None
        self._power_frontier = 0.0
        self._power: deque[PowerSegment] = deque()
        self._power_cursor = 0.0
        self._heap_peak = 0
        self._macs = 0
        self._cycles = 0
        self.tx_dropped = 0
        self.truths: dict[int, RunTruth] = {}
        """The ground truth of the last :data:`RUN_HISTORY` runs (for tests and fidelity checks)."""
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
        digest = self._model_sha256 or (self.model.source_sha256
                                        if isinstance(self.model, QuantizedModel)
                                        else self.model.sha256)
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

    def stamp(self, message: ScheduledMessage, t: float) -> EmittedFrame:
        """Emit ``message`` now (outside the schedule): assigns the next sequence number.

        A span batch gets its ticks here: the first record's in the header, each record the
        ticks since the one before (so the frame's timestamp is older than ``t``, its send time).
        """
        if isinstance(message, SpanDraft):
            ticks, batch = message.resolve(self.ticks_at, self._span_records)
            self._span_records += len(batch.records)
            frame = EmittedFrame(t, self._seq, ticks, batch)
        else:
            frame = EmittedFrame(t, self._seq, self.ticks_at(t), message)
        self._seq = (self._seq + 1) & 0xFFFF
        return frame

    # -- commands ----------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """True while a run's INFER_END is still ahead."""
        return self._active is not None

    def _push(self, t: float, message: ScheduledMessage, run_id: int = -1) -> None:
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

    def prepare_run(self, run: Run) -> PreparedRun:
        """Check ``run`` and build its engine and sampler (pure: safe in a worker thread, and
        worth it there, since a large model's engine takes real time to set up).

        Raises:
            ModelError: a prompt token is outside the vocabulary or the prompt exceeds the
                context.
        """
        prompt = run.prompt or (BOS,)
        vocab = self.model.config.vocab_size
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise ModelError(f"prompt token {bad[0]} is outside the vocabulary 0..{vocab - 1}")
        ctx = self.cost.context
        if len(prompt) > ctx:
            raise ModelError(f"prompt of {len(prompt)} tokens exceeds the {ctx}-token context")
        seed = run.seed or DEFAULT_SAMPLER_SEED
        return PreparedRun(run, prompt, max(0, min(run.n_tokens, ctx - len(prompt) + 1)),
                           self._engine_factory(self.model),
                           make_sampler(self.model, max(float(run.temperature), 0.0), seed))

    def generate(self, run: Run) -> tuple[int, ...]:
        """Token ids the model generates for ``run`` (real forward passes; pure, thread-safe).

        Stops early when the model samples BOS, like llama2.c.

        Raises:
            ModelError: as :meth:`prepare_run`.
        """
        stream = RunStream(self.prepare_run(run), None)
        out: list[int] = []
        while not stream.finished:
            value = stream.compute()
            if stream.step >= len(stream.prompt) and value != BOS:
                out.append(value)
            stream.commit(value)
        return tuple(out)

    def _clip_warning(self, prep: PreparedRun) -> str:
        ctx, seq_len = self.cost.context, self.model.config.seq_len
        why = f"the model's seq_len {seq_len}" if ctx == seq_len else \
            f"the {ctx} positions whose KV cache fits this board's RAM (seq_len {seq_len})"
        return (f"RUN asked for {prep.run.n_tokens} tokens; the context ends at {why}, which "
                f"leaves room for {prep.n} after the {len(prep.prompt)}-token prompt: the run "
                "stops there, as llama2.c stops at seq_len")[:255]

    def start_run(self, run: Run, t: float, prepared: PreparedRun | None = None) -> None:
        """Start ``run`` at ``t`` (``prepared`` may come from :meth:`prepare_run`).

        Nothing is computed here: :meth:`advance` (or a server through :meth:`next_step` and
        :meth:`commit`) runs the forward passes as time goes on, so a long run streams.
        """
        if self._active is not None:
            self._push(t, DeviceError(
                ERR_BUSY, f"busy with run {self._active.run_id}; send STOP or wait for it"))
            return
        try:
            prep = prepared or self.prepare_run(run)
        except ModelError as exc:
            self._push(t, DeviceError(ERR_BAD_RUN, str(exc)[:200]))
            self._push(t, InferEnd(run.run_id, 0, InferStatus.ERROR))
            return
        if prep.n < run.n_tokens:
            self._push(t, Log(LogLevel.WARNING, self._clip_warning(prep)))
        layout = RunLayout(self.cost, run_id=run.run_id, n_prompt=len(prep.prompt),
                           n_tokens=prep.n, start_s=t, level=self.trace_level,
                           heap_peak=self._heap_peak, macs_before=self._macs,
                           cycles_before=self._cycles)
        self._active = RunStream(prep, layout)
        self._power_frontier = t
        self._collect()

    def next_step(self, t: float) -> RunStream | None:
        """The active run when it needs its next token computed to cover ``t`` plus
        :data:`LOOKAHEAD_S`; call its ``compute()`` (any thread), then :meth:`commit`."""
        a = self._active
        if a is None or a.finished or a.layout is None:
            return None
        return a if a.layout.horizon_s < t + LOOKAHEAD_S else None

    def commit(self, stream: RunStream, value: int) -> None:
        """Lay out the token ``stream.compute()`` gave (ignored when that run was stopped)."""
        if stream is self._active and not stream.finished:
            stream.commit(value)
            self._collect()

    def advance(self, t: float) -> None:
        """Compute and lay out the active run up to ``t`` (``math.inf``: to its end)."""
        while (stream := self.next_step(t)) is not None:
            self.commit(stream, stream.compute())

    def _collect(self) -> None:
        a = self._active
        assert a is not None and a.layout is not None
        frames, power = a.layout.take()
        for frame in frames:
            self._push(frame.time_s, frame.message, a.run_id)
        if power:
            self._power.extend(power)
            self._power_frontier = power[-1].end_s
        if a.layout.done:
            a.final = a.layout.plan()
            self._remember(a.run_id, a.final)

    def _remember(self, run_id: int, plan: RunPlan) -> None:
        """Keep ``plan`` and its truth; forget the oldest beyond :data:`RUN_HISTORY` runs.

        A twin that runs for days (``record --repeat forever``) makes thousands of runs; each
        plan holds every frame and power segment of its run, so an unbounded history is a leak.
        """
        self.plans.pop(run_id, None)
        self.truths.pop(run_id, None)
        self.plans[run_id] = plan
        self.truths[run_id] = plan.truth
        while len(self.plans) > RUN_HISTORY:
            oldest = next(iter(self.plans))
            del self.plans[oldest]
            self.truths.pop(oldest, None)

    def stop(self, t: float) -> None:
        """STOP at ``t``: cut the active run's future and end it with INFER_END(STOPPED)."""
        a = self._active
        if a is None or a.layout is None or (a.final is not None and a.final.end_s <= t):
            return  # nothing running, or its INFER_END is already due
        plan = a.final or a.layout.plan()
        cut = truncate_plan(plan, t)
        run_id = a.run_id
        self._queue = [q for q in self._queue if not (q[3] == run_id and q[0] > t)]
        heapq.heapify(self._queue)
        self._power = deque(
            PowerSegment(s.start_s, min(s.end_s, t), s.watts) for s in self._power if s.start_s < t
        )
        a.final = cut
        a.finished = True
        self._remember(run_id, cut)
        laid_out = {id(f) for f in plan.frames}
        for f in cut.frames:  # INFER_END, after the spans of a batch that was still to be sent
            if id(f) not in laid_out:
                self._push(f.time_s, f.message, run_id)

    # -- output ------------------------------------------------------------------------------

    def next_due(self) -> float:
        """Time of the next scheduled frame (a heartbeat at the latest)."""
        due = min(self._queue[0][0], self._next_heartbeat) if self._queue \
            else self._next_heartbeat
        return min(due, self._wire[0][0]) if self._wire else due

    def pop_due(self, t: float) -> list[EmittedFrame]:
        """Frames whose time is <= ``t``, in time order, with sequence numbers and ticks.

        With a :attr:`link`, a frame is made at its time but leaves when its last byte is on
        the wire, and a frame that finds the transmit ring full is dropped (its sequence number
        spent, ``tx_dropped`` counted), as in firmware built with the drop policy.
        """
        made = self._pop_made(t)
        ring = self.link
        if ring is None:
            return made
        for frame in made:
            left = ring.offer(frame.time_s, len(frame.encode()),
                              frame.message.TYPE in DROPPABLE)
            if left is None:
                self.tx_dropped += 1
            else:
                self._wire.append((left, frame))
        out: list[EmittedFrame] = []
        while self._wire and self._wire[0][0] <= t:
            out.append(self._wire.popleft()[1])
        return out

    def _pop_made(self, t: float) -> list[EmittedFrame]:
        out: list[EmittedFrame] = []
        queue = self._queue
        t = min(t, self._frame_frontier())
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
                assert active.final is not None
                self._finish(active.final)

    def _frame_frontier(self) -> float:
        """Frames up to here are final: a run still being laid out may add frames after it."""
        a = self._active
        if a is None or a.finished or a.layout is None:
            return float("inf")
        return a.layout.horizon_s

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
        if self._frame_frontier() < float("inf"):  # a run being laid out: its power is to come
            limit = min(limit, self._power_frontier)
        if limit > cursor:
            out.append(PowerSegment(cursor, limit, idle))
            cursor = limit
        self._power_cursor = cursor
        return out
