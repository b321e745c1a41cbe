/* Operator spans from the engine; the device core sends them when the trace level asks. */
#ifndef TT_TRACE_H
#define TT_TRACE_H

#include <stdint.h>

extern uint8_t tt_trace_spans; /* non-zero at TraceLevel SPANS: lets the engine skip calls */

void tt_span_begin_(uint16_t layer, uint8_t op);
void tt_span_end_(uint16_t layer, uint8_t op);

#define tt_span_begin(layer, op) do { if (tt_trace_spans) tt_span_begin_((layer), (op)); } while (0)
#define tt_span_end(layer, op) do { if (tt_trace_spans) tt_span_end_((layer), (op)); } while (0)

#endif
