/* intake.c: the agent's HTTP intake (see intake.h).
 *
 * DESIGN: a request is all-or-nothing. The body is parsed record by record
 * into packed protobuf Events, collected in a per-request buffer; only when
 * every record is valid are they appended to the spool, in one transaction,
 * and only after that commit is 200 sent. Any bad record means 400 and
 * nothing stored. Each HTTP pool thread keeps its own event parser in
 * thread-local storage (the parser is not thread-safe and is costly to make
 * per request). Counters are atomics read by status and metrics. */
#include "intake.h"

#include "cairn_http.h"
#include "cairn_log.h"
#include "cairn_mem.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct intake {
    cairn_http_t *http;
    spool_t *spool;
    event_defaults_t defaults;
    char *region;
    char *account_id;
    pthread_key_t parser_key;
    bool is_key_ready;
    atomic_uint_fast64_t requests;
    atomic_uint_fast64_t events_accepted;
    atomic_uint_fast64_t events_rejected;
    atomic_uint_fast64_t requests_rejected;
    atomic_uint_fast64_t spool_full;
};

/* The packed events of one request, kept until the spool commit. */
typedef struct {
    uint8_t *data;     /* packed events, back to back */
    size_t len;
    size_t cap;
    size_t *offsets;   /* start of each event in data */
    size_t count;
    size_t offsets_cap;
} s_pending_t;

/* Runs when an HTTP pool thread exits. */
static void s_parser_free(void *parser)
{
    event_parser_t *p = parser;
    event_parser_destroy(&p);
    /* The parser's UUIDs came from OpenSSL, which keeps per-thread state;
     * free it with the thread rather than leave it to process teardown. */
    OPENSSL_thread_stop();
}

static event_parser_t *s_parser(intake_t *self)
{
    event_parser_t *parser = pthread_getspecific(self->parser_key);
    if (!parser) {
        parser = event_parser_new(&self->defaults);
        pthread_setspecific(self->parser_key, parser);
    }
    return parser;
}

static int s_collect(void *ctx, size_t index, const Cairn__Event *event)
{
    s_pending_t *pending = ctx;
    size_t size = cairn__event__get_packed_size(event);
    if (pending->len + size > pending->cap) {
        pending->cap = (pending->len + size) * 2;
        pending->data = cairn_realloc(pending->data, pending->cap);
    }
    if (pending->count == pending->offsets_cap) {
        pending->offsets_cap = pending->offsets_cap ? pending->offsets_cap * 2 : 64;
        pending->offsets =
            cairn_realloc(pending->offsets, pending->offsets_cap * sizeof *pending->offsets);
    }
    pending->offsets[pending->count++] = pending->len;
    pending->len += cairn__event__pack(event, pending->data + pending->len);
    return 0;
}

static void s_post_events(intake_t *self, const cairn_http_request_t *request,
                          cairn_http_response_t *response)
{
    s_pending_t pending = {0};
    char err[512];
    long count = event_parser_parse_body(s_parser(self), request->body, request->body_len,
                                         s_collect, &pending, err, sizeof err);
    if (count < 0) {
        atomic_fetch_add(&self->requests_rejected, 1);
        atomic_fetch_add(&self->events_rejected, 1);
        char escaped[1024];
        cairn_json_escape(escaped, sizeof escaped, 0, err);
        long record = -1;
        if (strncmp(err, "record ", 7) == 0)
            record = strtol(err + 7, NULL, 10);
        if (record >= 0)
            cairn_http_respond(response, 400, "{\"error\":\"%s\",\"record\":%ld}", escaped, record);
        else
            cairn_http_respond(response, 400, "{\"error\":\"%s\"}", escaped);
        cairn_log_debug("intake: rejected a request: %s", err);
        goto out;
    }
    const uint8_t **bufs = cairn_malloc((pending.count + 1) * sizeof *bufs);
    size_t *lens = cairn_malloc((pending.count + 1) * sizeof *lens);
    for (size_t i = 0; i < pending.count; i++) {
        size_t end = i + 1 < pending.count ? pending.offsets[i + 1] : pending.len;
        bufs[i] = pending.data + pending.offsets[i];
        lens[i] = end - pending.offsets[i];
    }
    int rc = spool_append(self->spool, bufs, lens, pending.count, NULL);
    free(bufs);
    free(lens);
    if (rc == 0) {
        atomic_fetch_add(&self->events_accepted, pending.count);
        cairn_http_respond(response, 200, "{\"accepted\":%zu}", pending.count);
    } else if (rc == SPOOL_FULL) {
        if (atomic_fetch_add(&self->spool_full, 1) == 0)
            cairn_log_warning("intake: spool full, answering 503 until the aggregator drains it");
        cairn_http_respond_error(response, 503, "spool full; retry later");
        response->retry_after_s = 1;
    } else
        cairn_http_respond_error(response, 500, "spool write failed; nothing was stored");
out:
    free(pending.data);
    free(pending.offsets);
}

static void s_handle(void *ctx, const cairn_http_request_t *request,
                     cairn_http_response_t *response)
{
    intake_t *self = ctx;
    atomic_fetch_add(&self->requests, 1);
    if (strcmp(request->path, "/v1/events") == 0) {
        if (strcmp(request->method, "POST") == 0)
            s_post_events(self, request, response);
        else
            cairn_http_respond_error(response, 405, "use POST for /v1/events");
    } else if (strcmp(request->path, "/health") == 0)
        cairn_http_respond(response, 200, "{\"status\":\"ok\",\"spool_pending\":%llu}",
                           (unsigned long long)spool_pending_count(self->spool));
    else
        cairn_http_respond_error(response, 404, "no such endpoint (try POST /v1/events)");
}

intake_t *intake_new(spool_t *spool, const intake_options_t *options)
{
    intake_t *self = cairn_calloc(1, sizeof *self);
    self->spool = spool;
    self->region = cairn_strdup(options->defaults.region);
    self->account_id = cairn_strdup(options->defaults.account_id ? options->defaults.account_id : "");
    self->defaults.region = self->region;
    self->defaults.account_id = self->account_id;
    self->is_key_ready = pthread_key_create(&self->parser_key, s_parser_free) == 0;
    self->http = cairn_http_new("intake", options->listen, options->thread_count,
                                options->max_body_bytes, s_handle, self);
    if (!self->http || !self->is_key_ready)
        intake_destroy(&self);
    return self;
}

void intake_destroy(intake_t **self_p)
{
    intake_t *self = *self_p;
    if (!self)
        return;
    cairn_http_destroy(&self->http); /* joins the pool threads: their parsers are freed */
    if (self->is_key_ready)
        pthread_key_delete(self->parser_key);
    free(self->region);
    free(self->account_id);
    free(self);
    *self_p = NULL;
}

int intake_port(const intake_t *self)
{
    return cairn_http_port(self->http);
}

void intake_get_stats(intake_t *self, intake_stats_t *stats)
{
    stats->requests = atomic_load(&self->requests);
    stats->events_accepted = atomic_load(&self->events_accepted);
    stats->events_rejected = atomic_load(&self->events_rejected);
    stats->requests_rejected = atomic_load(&self->requests_rejected);
    stats->spool_full = atomic_load(&self->spool_full);
}
