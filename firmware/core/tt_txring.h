/*
 * The transmit path as a link budget: frames enter a ring and leave at the link's byte rate
 * (TT_LINK_BAUD bits per second, 8N1: ten bits a byte), timed by the device clock -- virtual
 * time under QEMU's -icount, the host's monotonic clock in the native port. The policy is
 * chosen at build time:
 *   drop  (default) a trace frame (tt_tx_droppable) that finds the ring full is dropped; the
 *         device core counts it in tx_dropped and its sequence number is already spent, so
 *         the host sees the gap. Every other frame waits for room, using a reserve the trace
 *         frames may not take, so a run's tokens and its end always arrive.
 *   block (TT_TX_POLICY_BLOCK) every frame waits for room: the stall shows in the token times.
 * TT_LINK_BAUD 0 (the default) is today's free link: tt_tx_write() is port_write() itself and
 * nothing of the ring is compiled, so instruction counts do not change.
 */
#ifndef TT_TXRING_H
#define TT_TXRING_H

#include <stddef.h>
#include <stdint.h>

#include "tt_port.h"

#ifndef TT_LINK_BAUD
#define TT_LINK_BAUD 0
#endif
#ifndef TT_TX_RING
#define TT_TX_RING 4096u    /* bytes trace frames may fill (the ESP-IDF port's UART tx buffer) */
#endif
#ifndef TT_TX_RESERVE
#define TT_TX_RESERVE 512u  /* more room only frames that are never dropped may use */
#endif

/* Frames the drop policy may discard: spans, counters, memory, markers (one place). */
int tt_tx_droppable(uint8_t type);

#if TT_LINK_BAUD > 0
/* Queue one encoded frame of message `type`: 1 when queued, 0 when dropped. */
int tt_tx_write(const uint8_t *buf, size_t n, uint8_t type);
/* Hand the port the bytes whose time on the wire has come (call it while idle). */
void tt_tx_pump(void);
#else
static inline int tt_tx_write(const uint8_t *buf, size_t n, uint8_t type)
{
    (void)type;
    port_write(buf, n);
    return 1;
}
static inline void tt_tx_pump(void) {}
#endif

#endif
