/* Stack high-water by stack painting, shared by the bare-metal ports (Cortex-M, RISC-V).
 *
 * At reset core/tt_start.c paints the stack below its frame with TT_STACK_PAINT; the deepest
 * write is then the lowest word no longer holding the paint. */
#ifndef TT_STACK_H
#define TT_STACK_H

#include <stdint.h>

#define TT_STACK_PAINT 0xA5A5A5A5u

/* Paint [bottom, sp - 64 bytes): everything the program has not used yet. */
static inline void tt_stack_paint(uint32_t *bottom, uint32_t sp)
{
    uint32_t *dst;
    for (dst = bottom; (uint32_t)dst < sp - 64u; dst++) *dst = TT_STACK_PAINT;
}

/* Bytes of stack used at the deepest point so far. The first call scans up from the bottom;
 * later calls only walk down from the previous mark, so a MEMORY report costs a few
 * instructions instead of a scan of the whole stack. */
static inline uint32_t tt_stack_peak(const uint32_t *bottom, const uint32_t *top)
{
    static const uint32_t *mark;
    const uint32_t *w = mark;
    if (!w) {
        w = bottom;
        while (w < top && *w == TT_STACK_PAINT) w++;
    }
    while (w > bottom && w[-1] != TT_STACK_PAINT) w--;
    mark = w;
    return (uint32_t)((const uint8_t *)top - (const uint8_t *)w);
}

#endif
