/* The transmit ring (see tt_txring.h). Single-threaded: called from the device core only. */
#include "tt_txring.h"

#include "tt_proto.h"
#include "tt_string.h"

int tt_tx_droppable(uint8_t type)
{
    return type == TT_SPAN_BEGIN || type == TT_SPAN_END || type == TT_SPAN_BATCH ||
           type == TT_COUNTER || type == TT_MEMORY || type == TT_MARKER;
}

#if TT_LINK_BAUD > 0

#define RING_BYTES (TT_TX_RING + TT_TX_RESERVE)
#define BITS_PER_BYTE 10u

static uint8_t ring_[RING_BYTES];
static size_t head_, used_;      /* next byte to leave; bytes queued */
static uint32_t last_;           /* device ticks when the wire was last accounted */
static uint64_t credit_;         /* bit-ticks not yet a whole byte: bytes x 10 x tick_hz */

void tt_tx_pump(void)
{
    uint32_t now = port_ticks();
    uint64_t per_byte = (uint64_t)BITS_PER_BYTE * port_info()->tick_hz;
    size_t n;
    if (used_ == 0) { /* an idle wire saves no time for later */
        last_ = now;
        credit_ = 0;
        return;
    }
    credit_ += (uint64_t)(uint32_t)(now - last_) * TT_LINK_BAUD;
    last_ = now;
    n = (size_t)(credit_ / per_byte);
    if (n == 0) return;
    if (n > used_) n = used_;
    credit_ -= (uint64_t)n * per_byte;
    if (n == used_) credit_ = 0;
    while (n) { /* at most two pieces: up to the ring's end, then from its start */
        size_t piece = RING_BYTES - head_ < n ? RING_BYTES - head_ : n;
        port_write(ring_ + head_, piece);
        head_ = (head_ + piece) % RING_BYTES;
        used_ -= piece;
        n -= piece;
    }
    port_flush();
}

int tt_tx_write(const uint8_t *buf, size_t n, uint8_t type)
{
    size_t tail, first, limit;
#if defined(TT_TX_POLICY_BLOCK)
    int droppable = 0;
    (void)type;
#else
    int droppable = tt_tx_droppable(type);
#endif
    limit = droppable ? TT_TX_RING : RING_BYTES;
    if (n > RING_BYTES) n = RING_BYTES; /* cannot happen: frames are < 1.1 KiB */
    tt_tx_pump();
    if (droppable && used_ + n > limit) return 0;
    while (used_ + n > limit) tt_tx_pump(); /* wait for the wire (an empty ring restarts it) */
    tail = (head_ + used_) % RING_BYTES;
    first = RING_BYTES - tail < n ? RING_BYTES - tail : n;
    memcpy(ring_ + tail, buf, first);
    memcpy(ring_, buf + first, n - first);
    used_ += n;
    return 1;
}

#endif
