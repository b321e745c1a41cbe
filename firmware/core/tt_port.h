/*
 * What a port (a board or an OS) provides to the device core. Everything is polled: the core
 * never needs an RTOS, and a port may implement the hooks with interrupts or DMA.
 */
#ifndef TT_PORT_H
#define TT_PORT_H

#include <stddef.h>
#include <stdint.h>

typedef struct tt_port_info {
    const char *platform;      /* HELLO platform string, e.g. "mps2-an386" */
    uint32_t cpu_hz;           /* core clock (0 when unknown) */
    uint32_t tick_hz;          /* rate of port_ticks() */
    uint32_t ram_bytes;
    uint32_t flash_bytes;
    uint32_t psram_bytes;
} tt_port_info;

void port_init(void);
const tt_port_info *port_info(void);
/* Blocking write of n bytes to the host link. A port may hold bytes back (a TX buffer) until
 * port_flush(), a poll for input (port_read) or port_idle(). */
void port_write(const uint8_t *buf, size_t n);
/* Send what is buffered now: the host may be waiting for it. The device core calls it after
 * the frames a host waits for (HELLO, PONG, ERROR, LOG, INFER_END: after a command is handled
 * and in the main loop), never between a run's per-token frames, so a run costs no more.
 * A no-op where port_write() sends at once. */
void port_flush(void);
/* One received byte, or -1 when none is waiting (never blocks). */
int port_read(void);
/* Free-running device clock (wraps at 2^32). */
uint32_t port_ticks(void);
/* 64-bit cycle count since boot (used for COUNTER CYCLES), 0 when unknown. */
uint64_t port_cycles(void);
/* Retired instructions since boot, or UINT64_MAX when the core cannot count them. */
uint64_t port_instructions(void);
/* Milliseconds since boot (HEARTBEAT uptime). */
uint32_t port_uptime_ms(void);
/* Deepest stack use since boot in bytes (stack painting), 0 when unknown. */
uint32_t port_stack_peak(void);
/* Wait for the next scheduler tick so a run starts at a fixed phase of the timer (this makes
 * device timestamps reproducible under an instruction-counting emulator). May return at once. */
void port_align(void);
/* Nothing to do: a port may sleep briefly (it must still notice received bytes). */
void port_idle(void);
/* A new host connected (TCP accept): the core answers with HELLO. Returns 1 once per connect. */
int port_new_connection(void);

#endif
