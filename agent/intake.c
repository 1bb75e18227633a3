/* intake.c: the agent's HTTP intake (see intake.h).
 *
 * DESIGN: a request is all-or-nothing. The body is parsed record by record
 * into packed protobuf Events, collected in a per-request buffer; only when
 * every record is valid are they appended to the spool, in one transaction,
 * and only after that commit is 200 sent. Any bad record means 400 and
 * nothing stored. Valid events the selectors drop are counted (after the
 * commit, so a 503 counts nothing) and never spooled; a request is matched
 * against one set of rules, borrowed for its duration, so a SIGHUP reload
 * never splits it. POST /PutAuditEvents is CloudTrail Lake's partial-success
 * API, served by audit_api. Each HTTP pool thread keeps its own event parser
 * and audit_api in thread-local storage (neither is thread-safe, and both are
 * costly to make per request). Counters are atomics read by status and
 * metrics.
 *
 * Order of checks on a POST: signature (when keys are configured; before
 * anything else, so an unsigned caller learns nothing and changes nothing),
 * then Content-Type, then the body. The signature is checked over the raw
 * request target (cairn_http_request_t.uri), not the decoded path. */
#include "intake.h"

#include "audit_api.h"
#include "cairn_http.h"
#include "cairn_log.h"
#include "cairn_mem.h"
#include "cairn_time.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define INTAKE_DEFAULT_REQUEST_TIMEOUT_S 10
#define INTAKE_SIGNING_SERVICE           "cloudtrail-data"

struct intake {
    cairn_http_t *http;
    spool_t *spool;
    event_defaults_t defaults;
    char *region;
    char *account_id;
    const sigv4_keys_t *keys; /* NULL: no signature needed */
    pthread_key_t worker_key;
    bool is_key_ready;
    atomic_uint_fast64_t requests;
    atomic_uint_fast64_t events_accepted;
    atomic_uint_fast64_t events_rejected;
    atomic_uint_fast64_t requests_rejected;
    atomic_uint_fast64_t spool_full;
    atomic_bool is_spool_full;     /* the last append found the spool full */
    intake_fallback_fn *fallback;  /* other endpoints (/metrics), or NULL */
    void *fallback_ctx;
    atomic_uint_fast64_t audit_calls;
    atomic_uint_fast64_t bad_content_type;
    atomic_uint_fast64_t bad_method;
    atomic_uint_fast64_t auth_missing;
    atomic_uint_fast64_t auth_incomplete;
    atomic_uint_fast64_t auth_unknown_key;
    atomic_uint_fast64_t auth_bad_signature;
    atomic_uint_fast64_t auth_expired;
    selector_t *selector; /* borrowed; NULL keeps all */
    atomic_uint_fast64_t events_filtered[SELECTOR_REASON_COUNT];
};

/* What each HTTP pool thread keeps: made on its first request. */
typedef struct {
    event_parser_t *parser;
    audit_api_t *audit_api;
} s_worker_t;

/* The packed events of one request, kept until the spool commit. */
typedef struct {
    uint8_t *data; /* packed events, back to back */
    size_t len;
    size_t cap;
    size_t *offsets; /* start of each event in data */
    size_t count;
    size_t offsets_cap;
    const selector_rules_t *rules;            /* borrowed for the request */
    uint64_t filtered[SELECTOR_REASON_COUNT]; /* valid events dropped, by reason */
    size_t filtered_count;
} s_pending_t;

/* Runs when an HTTP pool thread exits. */
static void s_worker_free(void *worker)
{
    s_worker_t *w = worker;
    event_parser_destroy(&w->parser);
    audit_api_destroy(&w->audit_api);
    free(w);
    /* UUIDs, hashes and signatures came from OpenSSL, which keeps per-thread
     * state; free it with the thread rather than leave it to process teardown. */
    OPENSSL_thread_stop();
}

static s_worker_t *s_worker(intake_t *self)
{
    s_worker_t *worker = pthread_getspecific(self->worker_key);
    if (!worker) {
        worker = cairn_calloc(1, sizeof *worker);
        worker->parser = event_parser_new(&self->defaults);
        worker->audit_api = audit_api_new(&self->defaults);
        pthread_setspecific(self->worker_key, worker);
    }
    return worker;
}

static int s_collect(void *ctx, size_t index, const Cairn__Event *event)
{
    s_pending_t *pending = ctx;
    selector_reason_t reason = selector_match(pending->rules, event);
    if (reason != SELECTOR_KEEP) {
        pending->filtered[reason]++;
        pending->filtered_count++;
        return 0;
    }
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

/* Logs the spool's change of state once per change: full, then room again. */
static void s_note_spool(intake_t *self, bool is_full)
{
    if (is_full)
        atomic_fetch_add(&self->spool_full, 1);
    if (atomic_exchange(&self->is_spool_full, is_full) == is_full)
        return;
    if (is_full)
        cairn_log_warning("intake: spool full; answering 503 until the aggregator drains it");
    else
        cairn_log_notice("intake: spool has room again; accepting events");
}

/* Adds a committed request's filtered events to the counters. */
static void s_count_filtered(intake_t *self, const uint64_t filtered[SELECTOR_REASON_COUNT])
{
    for (int r = SELECTOR_KEEP + 1; r < SELECTOR_REASON_COUNT; r++)
        if (filtered[r])
            atomic_fetch_add(&self->events_filtered[r], filtered[r]);
}

static void s_post_events(intake_t *self, const cairn_http_request_t *request,
                          cairn_http_response_t *response)
{
    s_pending_t pending = {.rules = selector_acquire(self->selector)};
    char err[512];
    long count = event_parser_parse_body(s_worker(self)->parser, request->body, request->body_len,
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
        if (pending.count)
            s_note_spool(self, false);
        atomic_fetch_add(&self->events_accepted, pending.count);
        s_count_filtered(self, pending.filtered);
        cairn_http_respond(response, 200, "{\"accepted\":%zu,\"filtered\":%zu}", pending.count,
                           pending.filtered_count);
    } else if (rc == SPOOL_FULL) {
        s_note_spool(self, true);
        cairn_http_respond_error(response, 503, "spool full; retry later");
        response->retry_after_s = 1;
    } else
        cairn_http_respond_error(response, 500, "spool write failed; nothing was stored");
out:
    selector_release(self->selector, &pending.rules);
    free(pending.data);
    free(pending.offsets);
}

/* What a PutAuditEvents call's filter counts, for its duration. */
typedef struct {
    const selector_rules_t *rules;
    uint64_t filtered[SELECTOR_REASON_COUNT];
} s_audit_filter_t;

static bool s_audit_filter(void *ctx, const Cairn__Event *event)
{
    s_audit_filter_t *filter = ctx;
    selector_reason_t reason = selector_match(filter->rules, event);
    filter->filtered[reason]++;
    return reason == SELECTOR_KEEP;
}

static void s_put_audit_events(intake_t *self, const cairn_http_request_t *request,
                               cairn_http_response_t *response)
{
    s_audit_filter_t filter = {.rules = selector_acquire(self->selector)};
    audit_api_request_t call = {cairn_http_query(request, "channelArn"),
                                cairn_http_query(request, "externalId"),
                                request->body,
                                request->body_len,
                                filter.rules ? s_audit_filter : NULL,
                                &filter};
    audit_api_outcome_t outcome;
    audit_api_put_audit_events(s_worker(self)->audit_api, self->spool, &call, response, &outcome);
    selector_release(self->selector, &filter.rules);
    atomic_fetch_add(&self->events_accepted, outcome.accepted_count);
    atomic_fetch_add(&self->events_rejected, outcome.failed_count);
    if (outcome.is_rejected)
        atomic_fetch_add(&self->requests_rejected, 1);
    else if (outcome.is_spool_full)
        s_note_spool(self, true);
    else if (!outcome.is_spool_error) {
        if (outcome.accepted_count)
            s_note_spool(self, false);
        filter.filtered[SELECTOR_KEEP] = 0;
        s_count_filtered(self, filter.filtered);
        atomic_fetch_add(&self->audit_calls, 1);
    }
}

static const char *s_header(void *ctx, const char *name)
{
    return cairn_http_header(ctx, name);
}

/* An AWS-shaped error: {"__type":CODE,"message":MESSAGE}. Messages quote
 * what the client sent (a header, a Content-Type), which may not be UTF-8:
 * bytes outside ASCII become '?' so the body stays valid JSON. */
static void s_respond_aws_error(cairn_http_response_t *response, int status, const char *code,
                                const char *message)
{
    char ascii[512], escaped[1024];
    size_t n = 0;
    for (; message[n] && n + 1 < sizeof ascii; n++)
        ascii[n] = (unsigned char)message[n] < 0x80 ? message[n] : '?';
    ascii[n] = '\0';
    cairn_json_escape(escaped, sizeof escaped, 0, ascii);
    cairn_http_respond(response, status, "{\"__type\":\"%s\",\"message\":\"%s\"}", code, escaped);
}

/* Checks the request's SigV4 signature when keys are configured. Returns 0
 * to go on, or -1 after answering 403. */
static int s_authenticate(intake_t *self, const cairn_http_request_t *request,
                          cairn_http_response_t *response)
{
    if (!self->keys)
        return 0;
    /* The raw request target: MHD has decoded request->path in place. */
    char target[SIGV4_MAX_PATH_BYTES + 1];
    const char *uri = request->uri ? request->uri : request->path;
    const char *question = strchr(uri, '?');
    size_t path_len = question ? (size_t)(question - uri) : strlen(uri);
    sigv4_error_t error;
    int rc;
    if (path_len > SIGV4_MAX_PATH_BYTES) {
        memset(&error, 0, sizeof error);
        error.reason = SIGV4_INCOMPLETE;
        error.code = "IncompleteSignature";
        snprintf(error.message, sizeof error.message, "request path is over %d bytes",
                 SIGV4_MAX_PATH_BYTES);
        rc = -1;
    } else {
        memcpy(target, uri, path_len);
        target[path_len] = '\0';
        sigv4_request_t signed_request = {
            request->method,  target,          question ? question + 1 : "",
            s_header,         (void *)request, request->body,
            request->body_len};
        rc = sigv4_verify(self->keys, &signed_request, INTAKE_SIGNING_SERVICE, NULL,
                          cairn_time_now_ms(), &error);
    }
    if (rc == 0)
        return 0;
    switch (error.reason) {
    case SIGV4_MISSING:
        atomic_fetch_add(&self->auth_missing, 1);
        break;
    case SIGV4_INCOMPLETE:
        atomic_fetch_add(&self->auth_incomplete, 1);
        break;
    case SIGV4_UNKNOWN_KEY:
        atomic_fetch_add(&self->auth_unknown_key, 1);
        break;
    case SIGV4_BAD_SIGNATURE:
        atomic_fetch_add(&self->auth_bad_signature, 1);
        break;
    case SIGV4_EXPIRED:
        atomic_fetch_add(&self->auth_expired, 1);
        break;
    }
    cairn_log_debug("intake: %s %s refused (403 %s, key \"%s\"): %s", request->method,
                    request->path, error.code, error.access_key_id, error.message);
    s_respond_aws_error(response, 403, error.code, error.message);
    return -1;
}

/* Accepts no Content-Type, application/json, application/...+json and
 * text/plain, with no charset or utf-8. Returns 0, or -1 after answering 415. */
static int s_check_content_type(intake_t *self, const cairn_http_request_t *request,
                                cairn_http_response_t *response)
{
    const char *type = cairn_http_header(request, "Content-Type");
    if (!type)
        return 0;
    while (*type == ' ' || *type == '\t')
        type++;
    size_t len = strcspn(type, "; \t");
    bool is_ok = (len == 16 && strncasecmp(type, "application/json", len) == 0) ||
                 (len == 10 && strncasecmp(type, "text/plain", len) == 0) ||
                 (len > 17 && strncasecmp(type, "application/", 12) == 0 &&
                  strncasecmp(type + len - 5, "+json", 5) == 0);
    const char *charset = strcasestr(type + len, "charset=");
    if (is_ok && charset) {
        charset += 8;
        if (*charset == '"')
            charset++;
        is_ok = strncasecmp(charset, "utf-8", 5) == 0 || strncasecmp(charset, "utf8", 4) == 0;
    }
    if (is_ok)
        return 0;
    atomic_fetch_add(&self->bad_content_type, 1);
    char message[256];
    snprintf(message, sizeof message,
             "Content-Type \"%.100s\" is not accepted: send JSON as application/json "
             "(UTF-8)",
             type);
    for (char *c = message; *c; c++)
        if ((unsigned char)*c >= 0x80)
            *c = '?'; /* keep the JSON answer valid UTF-8 */
    if (strcmp(request->path, "/PutAuditEvents") == 0)
        s_respond_aws_error(response, 415, "UnsupportedMediaTypeException", message);
    else
        cairn_http_respond_error(response, 415, message);
    return -1;
}

static void s_handle(void *ctx, const cairn_http_request_t *request,
                     cairn_http_response_t *response)
{
    intake_t *self = ctx;
    atomic_fetch_add(&self->requests, 1);
    bool is_events = strcmp(request->path, "/v1/events") == 0;
    bool is_audit = strcmp(request->path, "/PutAuditEvents") == 0;
    if (is_events || is_audit) {
        if (strcmp(request->method, "POST") != 0) {
            atomic_fetch_add(&self->bad_method, 1);
            cairn_http_respond_error(response, 405,
                                     is_events ? "use POST for /v1/events"
                                               : "use POST for /PutAuditEvents");
        } else if (s_authenticate(self, request, response) == 0 &&
                   s_check_content_type(self, request, response) == 0) {
            if (is_events)
                s_post_events(self, request, response);
            else
                s_put_audit_events(self, request, response);
        }
    } else if (strcmp(request->path, "/health") == 0) {
        if (atomic_load(&self->is_spool_full))
            cairn_http_respond(response, 503,
                               "{\"status\":\"unhealthy\",\"reason\":\"spool full: the "
                               "aggregator is not draining it\",\"spool_pending\":%llu}",
                               (unsigned long long)spool_pending_count(self->spool));
        else
            cairn_http_respond(response, 200, "{\"status\":\"ok\",\"spool_pending\":%llu}",
                               (unsigned long long)spool_pending_count(self->spool));
    } else if (self->fallback && self->fallback(self->fallback_ctx, request, response))
        ;
    else
        cairn_http_respond_error(response, 404,
                                 "no such endpoint (try POST /v1/events or POST /PutAuditEvents)");
}

intake_t *intake_new(spool_t *spool, const intake_options_t *options)
{
    intake_t *self = cairn_calloc(1, sizeof *self);
    self->fallback = options->fallback;
    self->fallback_ctx = options->fallback_ctx;
    self->spool = spool;
    self->region = cairn_strdup(options->defaults.region);
    self->account_id =
        cairn_strdup(options->defaults.account_id ? options->defaults.account_id : "");
    self->defaults.region = self->region;
    self->defaults.account_id = self->account_id;
    self->keys = options->keys;
    self->selector = options->selector;
    self->is_key_ready = pthread_key_create(&self->worker_key, s_worker_free) == 0;
    unsigned timeout_s =
        options->request_timeout_s ? options->request_timeout_s : INTAKE_DEFAULT_REQUEST_TIMEOUT_S;
    self->http = cairn_http_new_timed("intake", options->listen, options->thread_count,
                                      options->max_body_bytes, timeout_s, s_handle, self);
    if (!self->http || !self->is_key_ready)
        intake_destroy(&self);
    else if (self->keys)
        cairn_log_info("intake: POST endpoints require SigV4 signatures (%zu access keys, "
                       "service " INTAKE_SIGNING_SERVICE ")",
                       sigv4_keys_count(self->keys));
    return self;
}

void intake_destroy(intake_t **self_p)
{
    intake_t *self = *self_p;
    if (!self)
        return;
    cairn_http_destroy(&self->http); /* joins the pool threads: their parsers are freed */
    if (self->is_key_ready)
        pthread_key_delete(self->worker_key);
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
    stats->audit_calls = atomic_load(&self->audit_calls);
    stats->bad_content_type = atomic_load(&self->bad_content_type);
    stats->bad_method = atomic_load(&self->bad_method);
    stats->auth_missing = atomic_load(&self->auth_missing);
    stats->auth_incomplete = atomic_load(&self->auth_incomplete);
    stats->auth_unknown_key = atomic_load(&self->auth_unknown_key);
    stats->auth_bad_signature = atomic_load(&self->auth_bad_signature);
    stats->auth_expired = atomic_load(&self->auth_expired);
    stats->timeouts = self->http ? cairn_http_timeout_count(self->http) : 0;
    for (int r = 0; r < SELECTOR_REASON_COUNT; r++)
        stats->events_filtered[r] = atomic_load(&self->events_filtered[r]);
}
