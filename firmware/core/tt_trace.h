/* Operator spans from the engine; the device core sends them when the trace level asks. */
#ifndef TT_TRACE_H
#define TT_TRACE_H

#include <stdint.h>

extern uint8_t tt_trace_spans; /* non-zero at TraceLevel SPANS: lets the engine skip calls */

/* One span event: tag = op, | 0x80 for an end (a SPAN_BATCH record's tag, docs/protocol.md). */
void tt_span_(uint16_t layer, uint8_t tag);

#define tt_span_begin(layer, op) do { if (tt_trace_spans) tt_span_((layer), (uint8_t)(op)); } while (0)
#define tt_span_end(layer, op) \
    do { if (tt_trace_spans) tt_span_((layer), (uint8_t)((op) | 0x80u)); } while (0)

#endif
