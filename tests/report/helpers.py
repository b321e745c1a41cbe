"""Synthetic traces with a known bottleneck, and real traces from the device twin."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import trio

from tinytelem.costing.model import CostModel
from tinytelem.models.llama2c import LlamaConfig
from tinytelem.platforms import get_platform
from tinytelem.protocol.enums import NO_LAYER, MsgType, Op, TraceLevel
from tinytelem.trace.schema import EVENT_DTYPE, MEMORY_DTYPE, PING_DTYPE, SPAN_DTYPE, TOKEN_DTYPE
from tinytelem.trace.writer import TraceWriter

CONFIG = LlamaConfig(dim=96, hidden_dim=256, n_layers=3, n_heads=6, n_kv_heads=3,
                     vocab_size=256, seq_len=128, shared_classifier=True)
TICK_HZ = 10_000_000  # 0.1 µs ticks keep span rounding negligible
FFN_SLOWDOWN = 2.0
FFN_WATTS, OTHER_WATTS = 1.0, 0.2




def _add_power(w: Any, power: np.ndarray, rate: float, block: int) -> None:
    """``power`` (watts at 5 V) as current samples in blocks of ``block``."""
    for k in range(0, power.size, block):
        chunk = (power[k:k + block] / 5.0).astype(np.float32)
        w.add_power(k, chunk, host_s=(k + chunk.size) / rate + 1e-6)
    w.set_attrs("power", {"sample_rate_hz": rate, "voltage_v": 5.0, "sensor": "synthetic"})

def _pings(end: float) -> np.ndarray:
    """40 clock-sync pings spread over ``[0, end]``, each answered 20 us after it was sent."""
    pings = np.zeros(40, dtype=PING_DTYPE)
    send = np.linspace(0.0, end + 0.004, 40)
    pings["nonce"] = np.arange(40)
    pings["send_host_s"] = send
    pings["recv_host_s"] = send + 2e-5
    pings["ticks"] = np.round((send + 1e-5) * TICK_HZ).astype(np.uint64)
    return pings

def write_synthetic(path: Path, *, platform: str = "esp32s3", bits: int = 8, n_prompt: int = 4,
                    n_gen: int = 6, extra_frames: int = 1000) -> dict[str, float]:
    """A trace whose op spans follow the cost model except FFN, which takes FFN_SLOWDOWN x
    longer and draws FFN_WATTS (others OTHER_WATTS). Device, host and sensor clocks agree.

    Returns the truth: run begin/end, total FFN time and energy, and the number of extra
    SPAN_BEGIN frames placed inside the run (for the tracing overhead).
    """
    cm = CostModel(get_platform(platform), CONFIG, bits, TraceLevel.SPANS)
    t = 0.010
    begin = t
    spans, tokens, watts_at = [], [], []
    ffn_time = 0.0
    for pos in range(n_prompt + n_gen - 1):
        layer_start = None
        for timing in cm.forward_ops(pos):
            dur = timing.duration_s * (FFN_SLOWDOWN if timing.op == Op.FFN else 1.0)
            if timing.layer != NO_LAYER and layer_start is None:
                layer_start = t
            spans.append((timing.layer, int(timing.op), t, t + dur))
            watts_at.append((t, t + dur, FFN_WATTS if timing.op == Op.FFN else OTHER_WATTS))
            if timing.op == Op.FFN:
                ffn_time += dur
                spans.append((timing.layer, int(Op.LAYER), layer_start, t + dur))
                layer_start = None
            t += dur
        phase = 0 if pos < n_prompt - 1 else 1
        if pos >= n_prompt - 1:
            s = cm.sample_op().duration_s
            spans.append((NO_LAYER, int(Op.SAMPLE), t, t + s))
            watts_at.append((t, t + s, OTHER_WATTS))
            t += s
        tokens.append((pos, phase, t))
    end = t + 1e-5
    rate = 1_000_000.0
    n_samples = int((end + 0.005) * rate)
    ts = np.arange(n_samples) / rate
    power = np.full(n_samples, 0.05)
    for a, b, w in watts_at:
        power[(ts >= a) & (ts < b)] = w
    with TraceWriter.create(path, attrs={
        "platform": platform, "device": f"synthetic:{platform}", "tick_hz": TICK_HZ,
        "model_name": "synthetic", "model_sha256": "00" * 32, "sensor": "synthetic",
        "model_config": json.dumps(asdict(CONFIG)), "weight_bits": bits,
        "trace_level": "spans", "cpu_hz": get_platform(platform).cpu_hz,
    }) as w:
        rows = np.zeros(len(spans), dtype=SPAN_DTYPE)
        for i, (layer, op, a, b) in enumerate(spans):
            rows[i] = (1, layer, op, round(a * TICK_HZ), round(b * TICK_HZ), a, b)
        w.add_spans(rows)
        tok = np.zeros(len(tokens), dtype=TOKEN_DTYPE)
        for i, (idx, phase, tt) in enumerate(tokens):
            tok[i] = (1, idx, 5 + idx, phase, round(tt * TICK_HZ), tt, tt + 1e-4)
        w.add_tokens(tok)
        mem = np.zeros(len(tokens), dtype=MEMORY_DTYPE)
        for i, (_, _, tt) in enumerate(tokens):
            mem[i] = (round(tt * TICK_HZ), tt, 5000 + 100 * i, 6000 + 100 * i, 1024, 40000,
                      100 * i)
        w.add_memory(mem)
        w.add_pings(_pings(end))
        ev = np.zeros(extra_frames, dtype=EVENT_DTYPE)
        ev["type"] = int(MsgType.SPAN_BEGIN)
        ev["device_s"] = np.linspace(begin, end, extra_frames + 2)[1:-1]
        w.add_events(ev)
        w.update_run(1, n_prompt=n_prompt, n_tokens=n_prompt + n_gen, n_generated=n_gen,
                     status=0, begin_s=begin, end_s=end, begin_ticks=round(begin * TICK_HZ),
                     end_ticks=round(end * TICK_HZ))
        _add_power(w, power, rate, block=1000)
        w.set_attrs("link", {"frames": 1234, "crc_errors": 0, "gaps": 0})
    return {"begin": begin, "end": end, "ffn_time": ffn_time,
            "ffn_energy": ffn_time * FFN_WATTS, "extra_frames": extra_frames}


def profile_twin(platform: str, out: Path, n_tokens: int, bits: int = 4) -> Path:
    """A real trace from the device twin (the same path as `tinytelem profile`)."""
    from tinytelem.session.options import ProfileOptions
    from tinytelem.session.profile import run_profile

    options = ProfileOptions(device=f"emu:{platform}", out_dir=out, n_tokens=n_tokens,
                             prompt="Once", weight_bits=bits, sensor_rate_hz=50_000.0)

    async def main() -> None:
        with trio.fail_after(60):
            await run_profile(options)

    trio.run(main)
    return out / "trace.h5"


def read_png(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes) to (h, w, c)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and interlace == 0 and color in (2, 6), header
    ch = 3 if color == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + width * ch)
    out = np.zeros((height, width * ch), dtype=np.int32)
    prev = np.zeros(width * ch, dtype=np.int32)
    for y in range(height):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        cur = np.zeros_like(line)
        if f == 0:
            cur = line
        elif f == 2:
            cur = (line + prev) & 0xFF
        else:
            for x in range(line.size):
                a = cur[x - ch] if x >= ch else 0
                b = prev[x]
                c = prev[x - ch] if x >= ch else 0
                if f == 1:
                    pred = a
                elif f == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                cur[x] = (line[x] + pred) & 0xFF
        out[y] = cur
        prev = cur
    return out.reshape(height, width, ch)[:, :, :3].astype(np.uint8)


def write_many_runs(path: Path, n_runs: int, *, passes: int = 3) -> dict[str, float]:
    """A monitoring-like trace: ``n_runs`` identical runs of ``passes`` forward passes (EMBED,
    one layer of QKV and FFN inside a LAYER span, SAMPLE), each run 10 ms of work then 10 ms
    idle, FFN at FFN_WATTS and everything else at OTHER_WATTS; power at 20 kS/s.

    Returns the truth: spans, tokens and frames per run, FFN seconds per pass, and the energy
    of all the runs together.
    """
    op_s = 0.0005
    ops = [(NO_LAYER, Op.EMBED), (0, Op.QKV), (0, Op.FFN), (NO_LAYER, Op.SAMPLE)]
    period = 0.020
    spans, tokens, runs, watts = [], [], [], []
    for r in range(n_runs):
        begin = 0.010 + r * period
        t = begin
        for k in range(passes):
            spans.append((r, 0, int(Op.LAYER), t + op_s, t + 3 * op_s))
            for layer, op in ops:
                spans.append((r, layer, int(op), t, t + op_s))
                watts.append((t, t + op_s, FFN_WATTS if op == Op.FFN else OTHER_WATTS))
                t += op_s
            tokens.append((r, k, 0 if k == 0 else 1, t))
        runs.append((r, begin, t + 1e-5))
    end = 0.010 + n_runs * period
    rows = np.zeros(len(spans), dtype=SPAN_DTYPE)
    for i, (rid, layer, op, a, b) in enumerate(spans):
        rows[i] = (rid, layer, op, round(a * TICK_HZ), round(b * TICK_HZ), a, b)
    tok = np.zeros(len(tokens), dtype=TOKEN_DTYPE)
    for i, (rid, idx, phase, tt) in enumerate(tokens):
        tok[i] = (rid, idx, 5 + idx, phase, round(tt * TICK_HZ), tt, tt + 1e-4)
    mem = np.zeros(len(tokens), dtype=MEMORY_DTYPE)
    mem["device_s"] = tok["device_s"]
    mem["ticks"] = tok["ticks"]
    mem["heap_used"] = mem["heap_peak"] = 5000
    mem["arena_bytes"], mem["kv_bytes"] = 40000, 100
    ev = np.zeros(2 * len(spans), dtype=EVENT_DTYPE)
    ev["type"] = np.repeat([int(MsgType.SPAN_BEGIN), int(MsgType.SPAN_END)], len(spans))
    ev["device_s"] = np.concatenate([rows["begin_s"], rows["end_s"]])
    ev = ev[np.argsort(ev["device_s"], kind="stable")]
    rate = 20_000.0
    n_samples = int((end + 0.005) * rate)
    ts = np.arange(n_samples) / rate
    power = np.full(n_samples, 0.05)
    for a, b, w in watts:
        power[round(a * rate):round(b * rate)] = w
    with TraceWriter.create(path, attrs={
        "platform": "esp32s3", "device": "synthetic:esp32s3", "tick_hz": TICK_HZ,
        "model_name": "synthetic", "model_sha256": "00" * 32, "sensor": "synthetic",
        "model_config": json.dumps(asdict(CONFIG)), "weight_bits": 8,
        "trace_level": "spans", "cpu_hz": get_platform("esp32s3").cpu_hz,
    }) as w:
        w.add_spans(rows)
        w.add_tokens(tok)
        w.add_memory(mem)
        w.add_events(ev)
        w.add_pings(_pings(end))
        for rid, b, e in runs:
            w.update_run(rid, n_prompt=1, n_tokens=passes + 1, n_generated=passes - 1,
                         status=0, begin_s=b, end_s=e, begin_ticks=round(b * TICK_HZ),
                         end_ticks=round(e * TICK_HZ))
        _add_power(w, power, rate, block=2000)
        w.set_attrs("link", {"frames": int(ev.size), "crc_errors": 0, "gaps": 0})
    in_runs = np.zeros(n_samples, dtype=bool)
    for _, b, e in runs:
        in_runs[round(b * rate):round(e * rate)] = True
    return {"spans_per_run": len(spans) / n_runs, "tokens_per_run": float(passes),
            "frames_per_run": 2 * len(spans) / n_runs, "ffn_s_per_pass": op_s,
            "runs_energy_j": float(power[in_runs].sum() / rate), "ts_end": float(ts[-1])}
