/* agent_metrics.c: the agent's Prometheus exposition (see agent_metrics.h).
 * Runs on HTTP pool threads; reads only atomics and snapshots. */
#include "agent_metrics.h"

#include "cairn_metrics.h"
#include "cairn_time.h"
#include "cairn.pb-c.h"

#include <string.h>

/* The eventTime of the oldest event still in the spool, or 0. */
static int s_oldest(void *ctx, uint64_t seq, const uint8_t *data, size_t len)
{
    Cairn__Event *event = cairn__event__unpack(NULL, len, data);
    if (event) {
        *(int64_t *)ctx = event->event_time_ms;
        cairn__event__free_unpacked(event, NULL);
    }
    return 1;
}

bool agent_metrics_handle(void *ctx, const cairn_http_request_t *request,
                          cairn_http_response_t *response)
{
    agent_metrics_t *self = ctx;
    if (strcmp(request->path, "/metrics") != 0)
        return false;
    if (strcmp(request->method, "GET") != 0) {
        cairn_http_respond_error(response, 405, "use GET for /metrics");
        return true;
    }
    intake_t *intake = atomic_load(&self->intake);
    shipper_t *shipper = atomic_load(&self->shipper);
    tail_t *tail = atomic_load(&self->tail);
    intake_stats_t in = {0};
    shipper_stats_t out = {0};
    tail_stats_t tl = {0};
    if (intake)
        intake_get_stats(intake, &in);
    if (tail)
        tail_get_stats(tail, &tl);
    if (shipper)
        shipper_get_stats(shipper, &out);
    uint64_t used = 0, map = 0;
    spool_size(self->spool, &used, &map);
    int64_t oldest_ms = 0;
    uint64_t pending = spool_pending_count(self->spool);
    if (pending)
        spool_read(self->spool, spool_acked_seq(self->spool) + 1, 1, 1 << 30, s_oldest, &oldest_ms);
    double oldest_age_s = oldest_ms ? (cairn_time_now_ms() - oldest_ms) / 1000.0 : 0;

    cairn_buf_t m;
    cairn_buf_init(&m);
    cairn_metrics_family(&m, "cairn_agent_info", "gauge", "The agent's identity.");
    cairn_metrics_sample(&m, "cairn_agent_info",
                         (const char *[]){"agent", self->agent_id, "region", self->region, NULL},
                         1);
    cairn_metrics_one(&m, "cairn_http_requests_total", "counter", "HTTP requests answered.",
                      (double)in.requests);
    cairn_metrics_one(&m, "cairn_events_accepted_total", "counter",
                      "Events committed to the spool.", (double)in.events_accepted);
    cairn_metrics_family(&m, "cairn_events_rejected_total", "counter",
                         "Events and requests rejected, by reason.");
    const struct {
        const char *reason;
        uint64_t value;
    } rejected[] = {
        {"bad_record", in.events_rejected},     {"spool_full", in.spool_full},
        {"content_type", in.bad_content_type},  {"method", in.bad_method},
        {"auth_missing", in.auth_missing},      {"auth_incomplete", in.auth_incomplete},
        {"auth_unknown_key", in.auth_unknown_key}, {"auth_bad_signature", in.auth_bad_signature},
        {"auth_expired", in.auth_expired},      {"timeout", in.timeouts},
    };
    for (size_t i = 0; i < sizeof rejected / sizeof rejected[0]; i++)
        cairn_metrics_sample(&m, "cairn_events_rejected_total",
                             (const char *[]){"reason", rejected[i].reason, NULL},
                             (double)rejected[i].value);
    cairn_metrics_one(&m, "cairn_put_audit_events_calls_total", "counter",
                      "PutAuditEvents calls answered 200.", (double)in.audit_calls);
    cairn_metrics_family(&m, "cairn_events_filtered_total", "counter",
                         "Valid events the selectors dropped (counted, never spooled), by capture "
                         "path and the rule that dropped them.");
    for (int r = SELECTOR_KEEP + 1; r < SELECTOR_REASON_COUNT; r++) {
        const char *reason = selector_reason_name((selector_reason_t)r);
        cairn_metrics_sample(&m, "cairn_events_filtered_total",
                             (const char *[]){"source", "http", "reason", reason, NULL},
                             (double)in.events_filtered[r]);
        cairn_metrics_sample(&m, "cairn_events_filtered_total",
                             (const char *[]){"source", "tail", "reason", reason, NULL},
                             (double)tl.filtered[r]);
    }
    cairn_metrics_one(&m, "cairn_tail_lines_total", "counter",
                      "Lines the tail consumed: spooled, filtered, bad or blank.",
                      (double)tl.lines_read);
    cairn_metrics_one(&m, "cairn_tail_events_spooled_total", "counter",
                      "Events from tailed files committed to the spool.",
                      (double)tl.events_spooled);
    cairn_metrics_one(&m, "cairn_tail_bad_lines_total", "counter",
                      "Tailed lines that were not a valid record (skipped, logged).",
                      (double)tl.bad_lines);
    cairn_metrics_one(&m, "cairn_tail_rotations_total", "counter",
                      "Tailed files finished after being moved or deleted away.",
                      (double)tl.rotations);
    cairn_metrics_one(&m, "cairn_tail_truncations_total", "counter",
                      "Tailed files read again from the start (truncated or rewritten).",
                      (double)tl.truncations);
    cairn_metrics_one(&m, "cairn_tail_spool_full_total", "counter",
                      "Times a tail batch found the spool full (the tail pauses and retries).",
                      (double)tl.spool_full);
    cairn_metrics_one(&m, "cairn_tail_files", "gauge", "Files the tail follows now.",
                      (double)tl.files);
    cairn_metrics_one(&m, "cairn_tail_paused", "gauge",
                      "1 while the tail waits for room in the spool.", tl.is_paused ? 1 : 0);
    cairn_metrics_one(&m, "cairn_spool_events", "gauge",
                      "Events spooled and not yet acknowledged.", (double)pending);
    cairn_metrics_one(&m, "cairn_spool_bytes", "gauge", "Bytes of the spool in use.",
                      (double)used);
    cairn_metrics_one(&m, "cairn_spool_capacity_bytes", "gauge", "Size limit of the spool.",
                      (double)map);
    cairn_metrics_one(&m, "cairn_spool_corrupt_blocks_total", "counter",
                      "Spool blocks found corrupt since start; their events are lost (logged).",
                      (double)spool_corrupt_blocks(self->spool));
    cairn_metrics_one(&m, "cairn_spool_oldest_event_age_seconds", "gauge",
                      "Age (by eventTime) of the oldest unacknowledged event; 0 when empty.",
                      oldest_age_s);
    cairn_metrics_one(&m, "cairn_batches_sent_total", "counter", "Batches sent, resends included.",
                      (double)out.batches_sent);
    cairn_metrics_one(&m, "cairn_events_shipped_total", "counter",
                      "Events sent to the aggregator, resends included.", (double)out.events_sent);
    cairn_metrics_one(&m, "cairn_batches_acked_total", "counter", "Batches acknowledged.",
                      (double)out.batches_acked);
    cairn_metrics_one(&m, "cairn_events_acked_total", "counter",
                      "Events acknowledged by the aggregator.", (double)out.events_acked);
    cairn_metrics_one(&m, "cairn_resends_total", "counter",
                      "Times the shipper went back to the oldest unacknowledged batch.",
                      (double)out.resends);
    cairn_metrics_one(&m, "cairn_reconnects_total", "counter", "Connections made anew.",
                      (double)out.reconnects);
    cairn_metrics_one(&m, "cairn_refusals_total", "counter", "Refusals from the aggregator.",
                      (double)out.refusals);
    cairn_metrics_one(&m, "cairn_aggregator_connected", "gauge",
                      "1 while welcomed by the aggregator.", out.is_connected ? 1 : 0);
    cairn_metrics_one(&m, "cairn_inflight_batches", "gauge",
                      "Batches sent and not yet acknowledged (at most [aggregator] window).",
                      (double)out.inflight_batches);
    cairn_metrics_one(&m, "cairn_inflight_bytes", "gauge",
                      "Bytes of the batches in flight (a batch goes out while under "
                      "[aggregator] window_bytes).",
                      (double)out.inflight_bytes);
    cairn_metrics_one(&m, "cairn_inflight_bytes_max", "gauge",
                      "Most bytes in flight at once since start: at most window_bytes plus "
                      "the last batch sent.",
                      (double)out.inflight_bytes_max);
    response->status = 200;
    response->content_type = "text/plain; version=0.0.4";
    response->body = cairn_buf_take(&m, &response->body_len);
    return true;
}
