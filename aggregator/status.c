/* status.c: /health, /metrics and /v1/status of the aggregator (see status.h).
 *
 * DESIGN: every handler builds its answer from one snapshot of each source
 * (receiver_snapshot, delivery_get_stats, store counters), taken at the top,
 * so the numbers of one answer agree with each other. Nothing here blocks
 * the receiving loop: the snapshots are copies made under short locks. */
#include "status.h"

#include "cairn_metrics.h"
#include "cairn_mem.h"
#include "cairn_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    receiver_stats_t receiver;
    receiver_agent_t *agents;
    size_t agent_count;
    delivery_stats_t delivery;
    uint64_t events_stored;
    int64_t now_ms;
    int64_t lag_ms;          /* age of the oldest closed, undelivered window */
} s_view_t;

static void s_view_take(const status_sources_t *src, s_view_t *view)
{
    memset(view, 0, sizeof *view);
    view->agents = cairn_calloc(RECEIVER_MAX_AGENTS, sizeof *view->agents);
    view->agent_count =
        receiver_snapshot(src->receiver, &view->receiver, view->agents, RECEIVER_MAX_AGENTS);
    delivery_get_stats(src->delivery, &view->delivery);
    view->events_stored = store_event_count(src->store);
    view->now_ms = cairn_time_now_ms();
    if (view->delivery.pending_window_end_ms)
        view->lag_ms = view->now_ms - view->delivery.pending_window_end_ms;
}

static void s_view_drop(s_view_t *view)
{
    free(view->agents);
}

/* Why the aggregator cannot do its job, or NULL. */
static const char *s_unhealthy_reason(const status_sources_t *src, const s_view_t *view)
{
    if (view->receiver.batches_deferred && view->receiver.commits == 0)
        return "store is refusing batches (full or failing)";
    if (view->lag_ms > 3 * src->interval_ms && view->delivery.put_errors)
        return "delivery is failing: closed windows are waiting for the bucket";
    return NULL;
}

static void s_health(const status_sources_t *src, const s_view_t *view,
                     cairn_http_response_t *response)
{
    const char *reason = s_unhealthy_reason(src, view);
    cairn_buf_t out;
    cairn_buf_init(&out);
    cairn_buf_printf(&out, "{\"status\":\"%s\",", reason ? "unhealthy" : "ok");
    if (reason) {
        cairn_buf_printf(&out, "\"reason\":");
        cairn_buf_json_string(&out, reason);
        cairn_buf_printf(&out, ",");
    }
    cairn_buf_printf(&out,
                     "\"events_stored\":%llu,\"windows_delivered\":%llu,\"objects_put\":%llu,"
                     "\"put_errors\":%llu,\"delivery_lag_s\":%.1f}",
                     (unsigned long long)view->events_stored,
                     (unsigned long long)view->delivery.windows_delivered,
                     (unsigned long long)view->delivery.objects_put,
                     (unsigned long long)view->delivery.put_errors, view->lag_ms / 1000.0);
    response->status = reason ? 503 : 200;
    response->body = cairn_buf_take(&out, &response->body_len);
}

static void s_metrics(const status_sources_t *src, const s_view_t *view,
                      cairn_http_response_t *response)
{
    cairn_buf_t m;
    cairn_buf_init(&m);
    const receiver_stats_t *r = &view->receiver;
    const delivery_stats_t *d = &view->delivery;
    cairn_metrics_one(&m, "cairn_aggregator_start_time_seconds", "gauge",
                      "Start time of the aggregator since the epoch.", src->started_ms / 1000.0);
    cairn_metrics_one(&m, "cairn_messages_received_total", "counter",
                      "Messages received from agents.", (double)r->messages_received);
    cairn_metrics_one(&m, "cairn_messages_garbage_total", "counter",
                      "Messages dropped because they are not cairn AgentMessages.",
                      (double)r->messages_garbage);
    cairn_metrics_one(&m, "cairn_refusals_total", "counter",
                      "Hellos or batches refused (protocol version, key binding).",
                      (double)r->refusals);
    cairn_metrics_one(&m, "cairn_batches_received_total", "counter", "Batches received.",
                      (double)r->batches_received);
    cairn_metrics_family(&m, "cairn_batches_total", "counter",
                         "Batches by outcome: rejected (invalid), deferred (store full or "
                         "failing), resent (already stored).");
    cairn_metrics_sample(&m, "cairn_batches_total", (const char *[]){"outcome", "rejected", NULL},
                         (double)r->batches_rejected);
    cairn_metrics_sample(&m, "cairn_batches_total", (const char *[]){"outcome", "deferred", NULL},
                         (double)r->batches_deferred);
    cairn_metrics_sample(&m, "cairn_batches_total", (const char *[]){"outcome", "resent", NULL},
                         (double)r->batches_resent);
    cairn_metrics_one(&m, "cairn_events_stored_total", "counter",
                      "Events stored since start (new eventIDs).", (double)r->events_stored);
    cairn_metrics_one(&m, "cairn_events_duplicate_total", "counter",
                      "Events dropped because their eventID was already stored.",
                      (double)r->events_duplicate);
    cairn_metrics_one(&m, "cairn_store_commits_total", "counter",
                      "Group-commit transactions of the store.", (double)r->commits);
    cairn_metrics_one(&m, "cairn_store_events", "gauge", "Events in the store.",
                      (double)view->events_stored);
    store_index_stats_t index;
    store_index_stats(src->store, &index);
    cairn_metrics_one(&m, "cairn_store_index_run_items", "gauge",
                      "Index entries written as runs and not yet merged into the index.",
                      (double)index.run_items);
    cairn_metrics_one(&m, "cairn_store_index_merge_passes_total", "counter",
                      "Merge passes of the index's runs completed since start.",
                      (double)index.merge_passes);
    cairn_metrics_one(&m, "cairn_store_recent_ids", "gauge",
                      "EventIDs kept in memory for dedup until their merge into the ids database.",
                      (double)index.recent_ids);
    cairn_metrics_one(&m, "cairn_events_pruned_total", "counter",
                      "Events removed by retention since start.",
                      (double)store_pruned_count(src->store));
    cairn_metrics_one(&m, "cairn_windows_delivered_total", "counter",
                      "Delivery windows written to the bucket.", (double)d->windows_delivered);
    cairn_metrics_one(&m, "cairn_objects_put_total", "counter",
                      "Objects written to the bucket, retries included.", (double)d->objects_put);
    cairn_metrics_one(&m, "cairn_events_delivered_total", "counter",
                      "Events in delivered windows.", (double)d->events_delivered);
    cairn_metrics_one(&m, "cairn_upload_errors_total", "counter",
                      "Failed writes to the bucket.", (double)d->put_errors);
    if (src->notify) {
        notify_stats_t n;
        notify_get_stats(src->notify, &n);
        cairn_metrics_one(&m, "cairn_notifications_sent_total", "counter",
                          "Webhook notifications the receiver acknowledged.",
                          (double)n.sent_count);
        cairn_metrics_one(&m, "cairn_notifications_failed_total", "counter",
                          "Webhook POSTs that failed (retried).", (double)n.failure_count);
        cairn_metrics_one(&m, "cairn_notifications_pending", "gauge",
                          "Webhook notifications queued, not yet acknowledged.",
                          (double)n.pending_count);
    }
    cairn_metrics_one(&m, "cairn_delivery_lag_seconds", "gauge",
                      "Age of the oldest closed window not yet delivered (0 when caught up).",
                      view->lag_ms / 1000.0);
    cairn_metrics_one(&m, "cairn_last_delivered_window_end_seconds", "gauge",
                      "End of the last delivered window since the epoch.",
                      d->last_window_end_ms / 1000.0);
    static const char *const families[][3] = {
        {"cairn_agent_last_seen_seconds", "gauge", "When the agent was last heard, since the epoch."},
        {"cairn_agent_last_seq", "gauge", "Last spool sequence acknowledged to the agent."},
        {"cairn_agent_spool_pending", "gauge", "Events in the agent's spool not yet acknowledged."},
        {"cairn_agent_events_stored_total", "counter", "Events of the agent stored."},
        {"cairn_agent_events_duplicate_total", "counter", "Duplicate events of the agent."},
    };
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
        cairn_metrics_family(&m, families[f][0], families[f][1], families[f][2]);
        for (size_t i = 0; i < view->agent_count; i++) {
            const receiver_agent_t *a = &view->agents[i];
            const char *labels[] = {"agent", a->agent_id, "region", a->region, NULL};
            double values[] = {a->last_seen_ms / 1000.0, (double)a->last_seq,
                               (double)a->spool_pending, (double)a->events_stored,
                               (double)a->events_duplicate};
            cairn_metrics_sample(&m, families[f][0], labels, values[f]);
        }
    }
    response->status = 200;
    response->content_type = "text/plain; version=0.0.4";
    response->body = cairn_buf_take(&m, &response->body_len);
}

static void s_status(const status_sources_t *src, const s_view_t *view,
                     cairn_http_response_t *response)
{
    cairn_buf_t out;
    cairn_buf_init(&out);
    char when[21];
    const char *reason = s_unhealthy_reason(src, view);
    cairn_buf_printf(&out, "{\"aggregator_id\":");
    cairn_buf_json_string(&out, src->aggregator_id);
    cairn_buf_printf(&out, ",\"healthy\":%s,\"reason\":", reason ? "false" : "true");
    if (reason)
        cairn_buf_json_string(&out, reason);
    else
        cairn_buf_printf(&out, "null");
    cairn_buf_printf(&out, ",\"events_stored\":%llu,\"delivery\":{\"bucket\":",
                     (unsigned long long)view->events_stored);
    cairn_buf_json_string(&out, src->bucket);
    cairn_buf_printf(&out, ",\"interval_s\":%lld,\"last_window_end\":",
                     (long long)(src->interval_ms / 1000));
    if (view->delivery.last_window_end_ms) {
        cairn_time_format_iso8601(view->delivery.last_window_end_ms, when);
        cairn_buf_json_string(&out, when);
    } else
        cairn_buf_printf(&out, "null");
    cairn_buf_printf(&out,
                     ",\"lag_s\":%.1f,\"windows_delivered\":%llu,\"events_delivered\":%llu,"
                     "\"upload_errors\":%llu,\"last_object\":",
                     view->lag_ms / 1000.0, (unsigned long long)view->delivery.windows_delivered,
                     (unsigned long long)view->delivery.events_delivered,
                     (unsigned long long)view->delivery.put_errors);
    cairn_buf_json_string(&out, view->delivery.last_key);
    cairn_buf_printf(&out, "},\"agents\":[");
    for (size_t i = 0; i < view->agent_count; i++) {
        const receiver_agent_t *a = &view->agents[i];
        int64_t age_ms = view->now_ms - a->last_seen_ms;
        cairn_time_format_iso8601(a->last_seen_ms, when);
        cairn_buf_printf(&out, "%s{\"agent_id\":", i ? "," : "");
        cairn_buf_json_string(&out, a->agent_id);
        cairn_buf_printf(&out, ",\"region\":");
        cairn_buf_json_string(&out, a->region);
        cairn_buf_printf(&out,
                         ",\"state\":\"%s\",\"last_seen\":\"%s\",\"last_seen_age_s\":%.1f,"
                         "\"last_seq\":%llu,\"spool_pending\":%llu,\"batches\":%llu,"
                         "\"events_stored\":%llu,\"events_duplicate\":%llu}",
                         age_ms > STATUS_SILENT_MS ? "silent" : "connected", when,
                         age_ms / 1000.0, (unsigned long long)a->last_seq,
                         (unsigned long long)a->spool_pending, (unsigned long long)a->batches,
                         (unsigned long long)a->events_stored,
                         (unsigned long long)a->events_duplicate);
    }
    cairn_buf_printf(&out, "]}");
    response->status = 200;
    response->body = cairn_buf_take(&out, &response->body_len);
}

bool status_handle(const status_sources_t *sources, const cairn_http_request_t *request,
                   cairn_http_response_t *response)
{
    void (*handler)(const status_sources_t *, const s_view_t *, cairn_http_response_t *) = NULL;
    if (strcmp(request->path, "/health") == 0)
        handler = s_health;
    else if (strcmp(request->path, "/metrics") == 0)
        handler = s_metrics;
    else if (strcmp(request->path, "/v1/status") == 0)
        handler = s_status;
    if (!handler)
        return false;
    if (strcmp(request->method, "GET") != 0) {
        cairn_http_respond_error(response, 405, "use GET");
        return true;
    }
    s_view_t view;
    s_view_take(sources, &view);
    handler(sources, &view, response);
    s_view_drop(&view);
    return true;
}
