/* status.h: the aggregator's operational HTTP endpoints.
 *
 *   GET /health      200 {"status":"ok",...} when the aggregator can do its
 *                    job; 503 {"status":"unhealthy","reason":...} when the
 *                    store is refusing batches or delivery is stuck.
 *   GET /metrics     Prometheus text exposition.
 *   GET /v1/status   JSON: per-agent state, lag and backlog; the delivery
 *                    cursor and the last delivered object (`cairn status`).
 *
 * Handlers run on HTTP pool threads and read only thread-safe snapshots of
 * the receiver, delivery and store. */
#ifndef CAIRN_STATUS_H
#define CAIRN_STATUS_H

#include <stdbool.h>
#include <stdint.h>

#include "cairn_http.h"
#include "delivery.h"
#include "notify.h"
#include "receiver.h"
#include "store.h"

#define STATUS_SILENT_MS 5000 /* an agent not heard for this long is "silent" */

typedef struct {
    store_t *store;
    receiver_t *receiver;
    delivery_t *delivery;
    notify_t *notify;         /* the webhook's notifier, or NULL */
    const char *aggregator_id;
    const char *bucket;       /* human-readable bucket location */
    int64_t interval_ms;      /* delivery window */
    int64_t started_ms;       /* wall clock at start */
} status_sources_t;

/* Answers request if its path is one of the endpoints above; returns true
 * if it did. */
bool status_handle(const status_sources_t *sources, const cairn_http_request_t *request,
                   cairn_http_response_t *response);

#endif
