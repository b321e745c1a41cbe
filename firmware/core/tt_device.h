/* The device core: call tt_device_main() from main(); it never returns. */
#ifndef TT_DEVICE_H
#define TT_DEVICE_H

#include "tt_proto.h"

#ifndef TT_DEFAULT_LEVEL
#define TT_DEFAULT_LEVEL TT_LEVEL_TOKENS
#endif

typedef tt_cmd tt_run_request;

void tt_device_main(void);

#endif
