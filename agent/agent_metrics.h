/* agent_metrics.h: the agent's GET /metrics (Prometheus text): intake,
 * tail, selector, spool and shipper counters. */
#ifndef CAIRN_AGENT_METRICS_H
#define CAIRN_AGENT_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>

#include "cairn_http.h"
#include "intake.h"
#include "shipper.h"
#include "spool.h"
#include "tail.h"

/* What /metrics reads. The intake starts serving before the shipper exists,
 * so the pointers are atomics, set as the objects are made (NULL = not yet). */
typedef struct {
    _Atomic(intake_t *) intake;
    _Atomic(shipper_t *) shipper;
    _Atomic(tail_t *) tail; /* NULL when no [tail] paths are configured */
    spool_t *spool;
    const char *agent_id;
    const char *region;
} agent_metrics_t;

/* An intake_fallback_fn: answers GET /metrics; false for other paths. */
bool agent_metrics_handle(void *ctx, const cairn_http_request_t *request,
                          cairn_http_response_t *response);

#endif
