"""Cycles per instruction of a board from its published CoreMark score and CoreMark's instruction
count under QEMU: how ``cycles_per_instruction`` of ``k210.toml`` was measured.

A published CoreMark run gives cycles per iteration (clock / iterations per second). This builds
CoreMark the way that run was built, runs it bare-metal on QEMU ``virt`` with ``-icount
shift=0`` and reads ``minstret`` (instructions retired) around the timed loop, so::

    cycles_per_instruction = (clock_hz / iterations_per_s) / instructions_per_iteration

CoreMark is EEMBC's (https://github.com/eembc/coremark); this project does not ship it: pass a
checkout with ``--coremark``. The port (start-up, timer, ``ee_printf`` to the NS16550A UART,
exit through the SiFive test device) is written here. CoreMark's own checksums are checked: a
run whose list/matrix/state CRCs differ from the 2K performance run's is an error.

Usage::

    git clone https://github.com/eembc/coremark /tmp/coremark
    python bench/coremark_cpi.py --coremark /tmp/coremark                 # the K210 figure
    python bench/coremark_cpi.py --coremark /tmp/coremark --march rv32imafc --mabi ilp32f \\
        --opt=-O2 --iterations-per-s 0                                     # instructions only

Defaults are the K210's published run: 695.5 iterations/s at 400 MHz (Sipeed Maix Bit,
Maixduino core, GCC 8.2; https://github.com/PaulStoffregen/CoreMark/issues/1), built with
Maixduino's ``-Os -march=rv64imafc -mabi=lp64f``. Needs riscv64-unknown-elf-gcc and
qemu-system-riscv32/64 (``scripts/setup-system.sh`` installs both).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CORE_FILES = ("core_list_join.c", "core_main.c", "core_matrix.c", "core_state.c",
              "core_util.c")
GOOD_CRCS = {"crclist": 0xE714, "crcmatrix": 0x1FD7, "crcstate": 0x8E3A}
"""CoreMark's expected checksums of the 2K performance run (seeds 0, 0, 0x66)."""

PORTME_H = r"""
#ifndef CORE_PORTME_H
#define CORE_PORTME_H
#include <stddef.h>
#include <stdint.h>
#define HAS_FLOAT 0
#define HAS_TIME_H 0
#define USE_CLOCK 0
#define HAS_STDIO 0
#define HAS_PRINTF 0
#define COMPILER_VERSION "GCC" __VERSION__
#define COMPILER_FLAGS FLAGS_STR
#define MEM_LOCATION "STACK"
typedef int16_t ee_s16;
typedef uint16_t ee_u16;
typedef int32_t ee_s32;
typedef double ee_f32;
typedef uint8_t ee_u8;
typedef uint32_t ee_u32;
typedef uintptr_t ee_ptr_int;
typedef size_t ee_size_t;
#define align_mem(x) (void *)(4 + (((ee_ptr_int)(x)-1) & ~(ee_ptr_int)3))
#define CORETIMETYPE unsigned long
typedef unsigned long CORE_TICKS;
#define SEED_METHOD SEED_VOLATILE
#define MEM_METHOD MEM_STACK
#define MULTITHREAD 1
#define USE_PTHREAD 0
#define USE_FORK 0
#define USE_SOCKET 0
#define MAIN_HAS_NOARGC 1
#define MAIN_HAS_NORETURN 0
extern ee_u32 default_num_contexts;
typedef struct CORE_PORTABLE_S { ee_u8 portable_id; } core_portable;
void portable_init(core_portable *p, int *argc, char *argv[]);
void portable_fini(core_portable *p);
int ee_printf(const char *fmt, ...);
#endif
"""

PORTME_C = r"""
#include <stdarg.h>
#include "coremark.h"
volatile ee_s32 seed1_volatile = 0x0;
volatile ee_s32 seed2_volatile = 0x0;
volatile ee_s32 seed3_volatile = 0x66;
volatile ee_s32 seed4_volatile = ITERATIONS;
volatile ee_s32 seed5_volatile = 0;
ee_u32 default_num_contexts = 1;
static unsigned long t0, t1;
static unsigned long instret(void) {
    unsigned long v;
    __asm__ volatile("csrr %0, minstret" : "=r"(v));
    return v;
}
void start_time(void) { t0 = instret(); }
void stop_time(void) { t1 = instret(); }
CORE_TICKS get_time(void) { return t1 - t0; }
/* Instructions, not time: report 1e9 "ticks" per second so the printout stays readable. */
secs_ret time_in_secs(CORE_TICKS ticks) { return (secs_ret)(ticks / 1000000000ul); }
static void put(char c) {
    while (!(*(volatile unsigned char *)0x10000005u & 0x20u)) {}
    *(volatile unsigned char *)0x10000000u = (unsigned char)c;
}
static void puts_(const char *s) { while (*s) put(*s++); }
static void num(unsigned long v, unsigned base, int width) {
    char buf[24];
    int n = 0;
    do { buf[n++] = "0123456789abcdef"[v % base]; v /= base; } while (v);
    while (n < width) buf[n++] = '0';
    while (n) put(buf[--n]);
}
int ee_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') { put(*fmt); continue; }
        int width = 0, lng = 0;
        fmt++;
        while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') { lng = 1; fmt++; }
        switch (*fmt) {
        case 'd': {
            long v = lng ? va_arg(ap, long) : va_arg(ap, int);
            if (v < 0) { put('-'); v = -v; }
            num((unsigned long)v, 10, width);
            break;
        }
        case 'u': num(lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned), 10, width); break;
        case 'x': num(lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned), 16, width); break;
        case 's': puts_(va_arg(ap, const char *)); break;
        default: put(*fmt); break;
        }
    }
    va_end(ap);
    return 0;
}
void portable_init(core_portable *p, int *argc, char *argv[]) {
    (void)argc; (void)argv;
    p->portable_id = 1;
}
void portable_fini(core_portable *p) {
    p->portable_id = 0;
    ee_printf("INSTRET %lu\n", (unsigned long)(t1 - t0));
    *(volatile unsigned int *)0x100000u = 0x5555u; /* SiFive test device: exit */
}
void *memset(void *d, int c, size_t n) {
    unsigned char *p = d;
    while (n--) *p++ = (unsigned char)c;
    return d;
}
void *memcpy(void *d, const void *s, size_t n) {
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--) *p++ = *q++;
    return d;
}
"""

START_S = r"""
    .section .text.start, "ax"
    .globl _start
_start:
    .option push
    .option norelax
    la gp, __global_pointer$
    .option pop
    la sp, _stack_top
#ifdef __riscv_flen
    li t0, 0x2000
    csrs mstatus, t0
    fscsr zero
#endif
    call main
    li t0, 0x100000
    li t1, 0x5555
    sw t1, 0(t0)
1:  j 1b
"""

LINKER = r"""
MEMORY { RAM (rwx) : ORIGIN = 0x80000000, LENGTH = 16M }
ENTRY(_start)
SECTIONS {
  .text : { KEEP(*(.text.start)) *(.text .text.*) } > RAM
  .rodata : { *(.rodata .rodata.* .srodata .srodata.*) } > RAM
  .data : { *(.data .data.*) __global_pointer$ = . + 0x800; *(.sdata .sdata.*) } > RAM
  .bss : { *(.sbss .sbss.* .bss .bss.*) *(COMMON) } > RAM
  . = ALIGN(16); . += 0x10000; _stack_top = .;
}
"""


class CoreMarkError(RuntimeError):
    """The build or the run failed, or CoreMark's checksums say the run is not valid."""


def build(coremark: Path, out: Path, march: str, mabi: str, opt: str, iterations: int) -> Path:
    missing = [f for f in (*CORE_FILES, "coremark.h") if not (coremark / f).is_file()]
    if missing:
        raise CoreMarkError(f"{coremark} is not a CoreMark checkout (no {', '.join(missing)}); "
                            "clone https://github.com/eembc/coremark and pass its path")
    cc = shutil.which("riscv64-unknown-elf-gcc")
    if cc is None:
        raise CoreMarkError("riscv64-unknown-elf-gcc not found: run scripts/setup-system.sh")
    (out / "core_portme.h").write_text(PORTME_H)
    (out / "core_portme.c").write_text(PORTME_C)
    (out / "start.S").write_text(START_S)
    (out / "mem.ld").write_text(LINKER)
    elf = out / "coremark.elf"
    cmd = [cc, f"-march={march}", f"-mabi={mabi}", "-mcmodel=medany", opt, "-ffreestanding",
           "-fno-builtin", f"-I{out}", f"-I{coremark}", f"-DITERATIONS={iterations}",
           "-DPERFORMANCE_RUN=1", f'-DFLAGS_STR="{opt}"', "-nostdlib", "-nostartfiles",
           "-static", "-T", str(out / "mem.ld"), str(out / "start.S"),
           str(out / "core_portme.c"), *(str(coremark / f) for f in CORE_FILES), "-lgcc",
           "-o", str(elf)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CoreMarkError(f"build failed:\n{proc.stderr[-2000:]}")
    return elf


def run(elf: Path, march: str) -> tuple[int, int, str]:
    """(instructions of the timed loop, iterations, CoreMark's printout)."""
    qemu = "qemu-system-riscv64" if march.startswith("rv64") else "qemu-system-riscv32"
    if shutil.which(qemu) is None:
        raise CoreMarkError(f"{qemu} not found: run scripts/setup-system.sh")
    proc = subprocess.run([qemu, "-M", "virt", "-bios", "none", "-nographic", "-icount",
                           "shift=0", "-kernel", str(elf)], capture_output=True, text=True,
                          timeout=600, check=False)
    text = proc.stdout
    for name, want in GOOD_CRCS.items():
        m = re.search(rf"\[0\]{name}\s*:\s*0x([0-9a-f]+)", text)
        if m is None or int(m.group(1), 16) != want:
            raise CoreMarkError(f"{name} is not 0x{want:04x}: not a valid CoreMark run\n{text}")
    instr = re.search(r"INSTRET (\d+)", text)
    iters = re.search(r"Iterations\s*:\s*(\d+)", text)
    if instr is None or iters is None:
        raise CoreMarkError(f"no instruction count in the output\n{text}")
    return int(instr.group(1)), int(iters.group(1)), text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--coremark", type=Path, required=True, help="a CoreMark checkout")
    ap.add_argument("--march", default="rv64imafc")
    ap.add_argument("--mabi", default="lp64f")
    ap.add_argument("--opt", default="-Os")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--clock-hz", type=float, default=400e6,
                    help="clock of the published run (default: the K210's)")
    ap.add_argument("--iterations-per-s", type=float, default=695.5,
                    help="the published score; 0 prints the instruction count only")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            elf = build(a.coremark.resolve(), Path(tmp), a.march, a.mabi, a.opt, a.iterations)
            instr, iters, _ = run(elf, a.march)
    except CoreMarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    per_iter = instr / iters
    out: dict[str, object] = {"march": a.march, "opt": a.opt, "iterations": iters,
                              "instructions": instr, "instructions_per_iteration": per_iter}
    if a.iterations_per_s > 0:
        cycles = a.clock_hz / a.iterations_per_s
        out.update(cycles_per_iteration=cycles, cycles_per_instruction=cycles / per_iter)
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"CoreMark {a.march} {a.opt}: {instr:,} instructions for {iters} iterations, "
              f"{per_iter:,.0f} per iteration (checksums valid)")
        if "cycles_per_instruction" in out:
            print(f"published {a.iterations_per_s} iterations/s at {a.clock_hz / 1e6:.0f} MHz: "
                  f"{out['cycles_per_iteration']:,.0f} cycles per iteration, "
                  f"{out['cycles_per_instruction']:.2f} cycles per instruction")
    return 0


if __name__ == "__main__":
    sys.exit(main())
