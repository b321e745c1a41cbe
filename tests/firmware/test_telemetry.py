"""The C protocol encoder/decoder against the golden vectors, compiled with the host compiler.

The test writes a C program with one call per vector (the message's own packer with the vector's
field values), runs it and compares the wire bytes with the vectors; the same program feeds
every wire string through the device's command decoder byte by byte.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.firmware.helpers import FIRMWARE, compile_c

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "protocol_v1.json"


def _cstr(text: str) -> str:
    return '"' + "".join(f"\\x{b:02x}" for b in text.encode()) + '"'


def _pack_call(vec: dict[str, Any]) -> str:
    """C statements that pack the vector's payload into ``pl`` and set ``n``."""
    f = vec["fields"]
    t = vec["type"]
    if t == "HELLO":
        digest = ", ".join(f"0x{b:02x}" for b in bytes.fromhex(f["model_hash"]))
        return (
            "{ tt_hello h = {" + f"{f['cpu_hz']}u, {f['tick_hz']}u, {f['ram_bytes']}u, "
            f"{f['flash_bytes']}u, {f['psram_bytes']}u, {f['capabilities']}u, {{{digest}}}, "
            f"{_cstr(f['platform'])}, {_cstr(f['firmware_version'])}, "
            f"{_cstr(f['model_name'])}" + "}; n = tt_pack_hello(pl, &h); }"
        )
    simple = {
        "INFER_BEGIN": ("tt_pack_infer_begin", ["run_id", "n_prompt", "n_tokens"]),
        "INFER_END": ("tt_pack_infer_end", ["run_id", "n_generated", "status"]),
        "TOKEN": ("tt_pack_token", ["index", "token_id", "phase"]),
        "SPAN_BEGIN": ("tt_pack_span", ["layer", "op"]),
        "SPAN_END": ("tt_pack_span", ["layer", "op"]),
        "MEMORY": ("tt_pack_memory",
                   ["heap_used", "heap_peak", "stack_peak", "arena_bytes", "kv_bytes"]),
        "MARKER": ("tt_pack_marker", ["marker_id", "value"]),
        "HEARTBEAT": ("tt_pack_heartbeat", ["uptime_ms", "tx_dropped"]),
        "PONG": ("tt_pack_u32", ["nonce"]),
        "PING": ("tt_pack_u32", ["nonce"]),
    }
    if t in simple:
        fn, names = simple[t]
        args = ", ".join(f"{f[k]}u" for k in names)
        return f"n = {fn}(pl, {args});"
    if t == "COUNTER":
        return f"n = tt_pack_counter(pl, {f['counter_id']}u, {f['value']}ull);"
    if t in ("LOG", "ERROR"):
        raw = f["text"].encode()
        first = f["level"] if t == "LOG" else f["code"]
        fn = "tt_pack_log" if t == "LOG" else "tt_pack_error"
        return f"n = {fn}(pl, {first}u, {_cstr(f['text'])}, {len(raw)}u);"
    if t == "RUN":
        prompt = f["prompt"]
        arr = "{" + ", ".join(f"{p}u" for p in prompt or [0]) + "}"
        return (f"{{ static const uint32_t pr[] = {arr}; n = tt_pack_run(pl, {f['run_id']}u, "
                f"{f['seed']}u, {float(f['temperature'])!r}f, {f['n_tokens']}u, {len(prompt)}u, "
                "pr); }")
    if t == "POWER_SAMPLES":
        shunt = "{" + ", ".join(str(v) for v in f["shunt"] or [0]) + "}"
        bus = "{" + ", ".join(f"{v}u" for v in f["bus"] or [0]) + "}"
        return (f"{{ static const int16_t sh[] = {shunt}; static const uint16_t bu[] = {bus}; "
                f"n = tt_pack_power_samples(pl, {f['first_index']}u, {f['period_ns']}u, "
                f"{f['chip']}u, {len(f['shunt'])}u, sh, bu); }}")
    if t == "SPAN_BATCH":
        # The record packer the device's tt_span() uses, fed the vector's records.
        calls = ["n = tt_pack_span_batch_head(pl, " + f"{f['first']}u);", "prev = TT_NO_LAYER;"]
        for end, layer, op, delta in f["records"]:
            tag = f"{op}u | TT_SPAN_END_BIT" if end else f"{op}u"
            calls.append(f"n += tt_pack_span_record(pl + n, {tag}, {layer}u, prev, {delta}u); "
                         f"prev = {layer}u;")
        return "{ uint16_t prev; " + " ".join(calls) + " (void)prev; }"
    if t == "STOP":
        return "n = 0;"
    if t == "CONFIG":
        return f"pl[0] = {f['trace_level']}u; n = 1;"
    raise AssertionError(f"vector type {t} has no packer in this test")


PROGRAM_HEAD = r"""
#include <stdio.h>
#include <string.h>
#include "tt_proto.h"

static uint8_t out[4096];
static size_t out_n;
static void sink_write(void *ctx, const uint8_t *b, size_t n) {
    (void)ctx; memcpy(out + out_n, b, n); out_n += n;
}
static void hex(const char *name, const uint8_t *b, size_t n) {
    size_t i; printf("%s ", name); for (i = 0; i < n; i++) printf("%02x", b[i]); printf("\n");
}
static void print_cmd(const tt_cmd *c) {
    unsigned i; uint32_t bits; memcpy(&bits, &c->temperature, 4);
    printf("CMD %u %u", c->type, c->seq);
    if (c->type == TT_PING) printf(" nonce=%lu", (unsigned long)c->nonce);
    if (c->type == TT_CONFIG) printf(" level=%u", c->trace_level);
    if (c->type == TT_RUN) {
        printf(" run=%lu seed=%lu temp=%08lx n_tokens=%u prompt=", (unsigned long)c->run_id,
               (unsigned long)c->seed, (unsigned long)bits, c->n_tokens);
        for (i = 0; i < c->n_prompt; i++) printf("%lu,", (unsigned long)c->prompt[i]);
    }
    printf("\n");
}
int main(void) {
    static uint8_t pl[TT_MAX_PAYLOAD], work[TT_MAX_FRAME];
    static tt_rx rx; static tt_cmd cmd;
    tt_sink sink = { sink_write, 0 };
    size_t n = 0, wire;
    int c, r; unsigned v;
    (void)n; (void)wire;
"""

PROGRAM_TAIL = r"""
    /* stdin: hex bytes of a stream; every decoder result is printed */
    tt_rx_init(&rx);
    while ((c = scanf("%2x", &v)) == 1) {
        r = tt_rx_byte(&rx, (uint8_t)v, &cmd);
        if (r == TT_RX_CMD) print_cmd(&cmd);
        else if (r == TT_RX_BAD) printf("BAD\n");
    }
    printf("STATS %lu %lu %lu\n", (unsigned long)rx.frames, (unsigned long)rx.errors,
           (unsigned long)rx.ignored);
    return 0;
}
"""


def _program(vectors: list[dict[str, Any]]) -> str:
    body = []
    for vec in vectors:
        body.append(
            f"    {_pack_call(vec)}\n"
            f"    out_n = 0; wire = tt_frame_write(work, {vec['type_code']}u, {vec['seq']}u, "
            f"{vec['ticks']}u, pl, n, &sink);\n"
            f"    if (wire != out_n) printf(\"LENGTH-MISMATCH\\n\");\n"
            f"    hex(\"{vec['name']}\", out, out_n);\n"
        )
    return PROGRAM_HEAD + "".join(body) + PROGRAM_TAIL


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text())
    return data


@pytest.fixture(scope="module")
def vector_program(tmp_path_factory: pytest.TempPathFactory, vectors: dict[str, Any]) -> Path:
    work = tmp_path_factory.mktemp("ttvec")
    src = work / "vectors_main.c"
    src.write_text(_program(vectors["frames"]))
    return compile_c([src, FIRMWARE / "telemetry" / "tt_proto.c"], work / "vectors_main",
                     [FIRMWARE / "telemetry"])


def _run(program: Path, stdin: str = "") -> list[str]:
    proc = subprocess.run([str(program)], input=stdin, capture_output=True, text=True, timeout=30,
                          check=True)
    return proc.stdout.splitlines()


def _decoded(program: Path, stdin: str) -> list[str]:
    """Only the decoder's output lines (the encoder's lines come first)."""
    return [ln for ln in _run(program, stdin) if ln.split(" ", 1)[0] in ("CMD", "BAD", "STATS")]


def test_c_encoder_reproduces_every_frame_vector(vector_program: Path,
                                                 vectors: dict[str, Any]) -> None:
    lines = _run(vector_program)
    got = dict(line.split(" ", 1) for line in lines if not line.startswith("STATS"))
    assert "LENGTH-MISMATCH" not in lines
    frames = vectors["frames"]
    assert len(frames) >= 17  # one per message type at least
    for vec in frames:
        assert got[vec["name"]] == vec["wire"], vec["name"]


def test_c_decoder_reads_host_commands_from_one_stream(vector_program: Path,
                                                       vectors: dict[str, Any]) -> None:
    """All vectors back to back (device frames too): only host commands come out, in order."""
    frames = vectors["frames"]
    stream = "".join(v["wire"] for v in frames)
    lines = _decoded(vector_program, stream)
    cmds = [line for line in lines if line.startswith("CMD")]
    expected = []
    for v in frames:
        f, code = v["fields"], v["type_code"]
        if code < 0x80:
            continue
        line = f"CMD {code} {v['seq']}"
        if v["type"] == "PING":
            line += f" nonce={f['nonce']}"
        elif v["type"] == "CONFIG":
            line += f" level={f['trace_level']}"
        elif v["type"] == "RUN":
            temp = struct.unpack("<I", struct.pack("<f", f["temperature"]))[0]
            line += (f" run={f['run_id']} seed={f['seed']} temp={temp:08x} "
                     f"n_tokens={f['n_tokens']} prompt=" + "".join(f"{p}," for p in f["prompt"]))
        expected.append(line)
    assert cmds == expected
    n_device = sum(1 for v in frames if v["type_code"] < 0x80)
    assert lines[-1] == f"STATS {len(expected)} 0 {n_device}"


def test_c_decoder_rejects_corrupt_frames(vector_program: Path, vectors: dict[str, Any]) -> None:
    ping = next(v for v in vectors["frames"] if v["type"] == "PING")
    wire = bytearray(bytes.fromhex(ping["wire"]))
    wire[3] ^= 0x40  # a payload byte: CRC mismatch
    bad_cobs = bytes([0x09, 0x01, 0x00])  # code byte runs past the end
    oversize = bytes([0x05]) * 1100 + b"\x00"
    stream = bytes(wire) + bad_cobs + oversize + b"\x00\x00" + bytes.fromhex(ping["wire"])
    lines = _decoded(vector_program, stream.hex())
    assert lines[:3] == ["BAD", "BAD", "BAD"]
    assert lines[3].startswith("CMD 128 ")
    assert lines[-1] == "STATS 1 3 0"


def test_c_decoder_rejects_bad_run_payloads(vector_program: Path) -> None:
    import zlib

    from tinytelem.protocol.cobs import encode

    def frame(type_code: int, payload: bytes) -> str:
        body = struct.pack("<BBHI", 1, type_code, 0, 0) + payload
        return (encode(body + struct.pack("<I", zlib.crc32(body))) + b"\x00").hex()

    negative = struct.pack("<IIfHH", 1, 1, -1.0, 4, 0)
    nan = struct.pack("<IIIHH", 1, 1, 0x7FC00000, 4, 0)
    short = struct.pack("<IIfHH", 1, 1, 0.0, 4, 2) + b"\x01\x00\x00\x00"
    good = struct.pack("<IIfHH", 5, 1, 0.5, 4, 1) + b"\x07\x00\x00\x00"
    version2 = "".join([frame(0x81, negative), frame(0x81, nan), frame(0x81, short),
                        frame(0x83, b""), frame(0x82, b"x"), frame(0x81, good)])
    lines = _decoded(vector_program, version2)
    assert lines[:5] == ["BAD"] * 5
    assert lines[5] == "CMD 129 0 run=5 seed=1 temp=3f000000 n_tokens=4 prompt=7,"


LINK_PROGRAM = r"""
#include <stdio.h>
#include <string.h>
#include "tt_proto.h"

static uint8_t out[65536];
static size_t out_n;
static uint32_t clock_;
static void sink_write(void *ctx, const uint8_t *b, size_t n) {
    (void)ctx; memcpy(out + out_n, b, n); out_n += n;
}
static uint32_t now(void) { return clock_; }
int main(void) {
    static tt_link l;
    tt_sink sink = { sink_write, 0 };
    size_t i;
    tt_link_init(&l, sink, now);
    l.level = TT_LEVEL_SPANS;
    clock_ = 0xFFFFFF00u;
    tt_span(&l, TT_OP_EMBED, TT_NO_LAYER);
    clock_ += 300; tt_span(&l, TT_OP_EMBED | TT_SPAN_END_BIT, TT_NO_LAYER);
    clock_ += 5; tt_span(&l, TT_OP_LAYER, 0);
    clock_ += 70000; tt_span(&l, TT_OP_LAYER | TT_SPAN_END_BIT, 0);
    clock_ += 10; tt_send_token(&l, 3, 77, TT_DECODE);   /* the batch leaves first */
    tt_span_flush(&l);                                    /* nothing pending: no frame */
    for (i = 0; i < 300; i++) {                           /* 300 x 7 bytes: two full batches */
        clock_ += 0x01000000u; tt_span(&l, TT_OP_QKV, 1000);
    }
    clock_ += 1; tt_send_infer_end(&l, 9, 1, TT_STATUS_OK);
    for (i = 0; i < out_n; i++) printf("%02x", out[i]);
    printf("\n");
    return 0;
}
"""


def test_c_link_batches_spans_until_the_next_frame(tmp_path: Path) -> None:
    """tt_span appends to one SPAN_BATCH that leaves before the next frame or when full; the
    host decodes it to the span events, in order, with their own timestamps."""
    from tinytelem.protocol.codec import Frame, FrameDecoder
    from tinytelem.protocol.messages import (
        InferEnd,
        Op,
        SpanBatch,
        SpanBegin,
        SpanEnd,
        Token,
    )

    src = tmp_path / "link_main.c"
    src.write_text(LINK_PROGRAM)
    prog = compile_c([src, FIRMWARE / "telemetry" / "tt_proto.c"], tmp_path / "link_main",
                     [FIRMWARE / "telemetry"])
    wire = bytes.fromhex(_run(prog)[0])
    raw = FrameDecoder(expand_spans=False)
    raw.receive_data(wire)
    frames = [e for e in raw.events() if isinstance(e, Frame)]
    kinds = [type(f.message) for f in frames]
    assert kinds == [SpanBatch, Token, SpanBatch, SpanBatch, InferEnd]
    assert [f.seq for f in frames] == [0, 1, 2, 3, 4]
    first = frames[0].message
    assert isinstance(first, SpanBatch) and first.first == 0 and len(first.records) == 4
    assert frames[0].ticks == 0xFFFFFF00  # the first record's time, delta 0
    sizes = [len(f.message.records) for f in frames[2:4] if isinstance(f.message, SpanBatch)]
    assert sum(sizes) == 300 and sizes[0] > 100  # flushed when full, nothing lost
    second = frames[3].message
    assert isinstance(second, SpanBatch) and second.first == 4 + sizes[0]
    dec = FrameDecoder()
    dec.receive_data(wire)
    events = [(e.ticks, e.message) for e in dec.events() if isinstance(e, Frame)]
    assert events[:5] == [
        (0xFFFFFF00, SpanBegin(0xFFFF, Op.EMBED)),
        (0x2C, SpanEnd(0xFFFF, Op.EMBED)),
        (0x31, SpanBegin(0, Op.LAYER)),
        (0x31 + 70000, SpanEnd(0, Op.LAYER)),
        (0x31 + 70010, Token(3, 77, 1)),
    ]
    qkv = [t for t, m in events if isinstance(m, SpanBegin) and m.op == Op.QKV]
    assert qkv == [(0x31 + 70010 + 0x01000000 * k) & 0xFFFFFFFF for k in range(1, 301)]
    assert dec.statistics().lost_spans == 0
