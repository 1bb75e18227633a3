/* delivery.c: the delivery actor, from closed windows to log files.
 *
 * DESIGN: one czmq actor thread. Each turn it looks at the first event after
 * the cursor; that event's window (floor(ingest time / interval)) is the next
 * one to deliver, so empty windows cost nothing. When the window's end is at
 * or below the store's watermark the window is closed and is delivered in
 * passes over the store:
 *   1. one pass over the window's events collects the distinct groups
 *      (account, region), each with its first and last seq, and the window's
 *      last seq (events of a window are contiguous in seq because ingest
 *      time never goes backwards);
 *   2. one pass per group, from its first to its last seq, appends its
 *      records to the part buffer and puts a part whenever the next record
 *      would not fit in part_max_bytes.
 * Memory is one part buffer, its gzip buffer and the group list, whatever
 * the size of the window; the buffers are kept for the next window. Each
 * read transaction ends before a part is put, so a slow bucket never pins
 * old pages of the store.
 *
 * Object names depend only on (aggregator id, window end, account, region,
 * part), and the parts of a group are cut at the same records on every try,
 * so a retry or a restart overwrites the same objects. The cursor moves only
 * after every part of the window is in the bucket; a failure retries the
 * whole window after an exponential backoff. A window is named by its end in
 * log lines, as in object names (its delivery time).
 *
 * THREADS: everything below s_actor runs on the actor's thread; the only
 * shared state is the stats, behind the mutex of delivery_t. */
#include "delivery.h"

#include "cairn_log.h"
#include "cairn_mem.h"
#include "cairn_time.h"

#include <czmq.h>
#include <libdeflate.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DELIVERY_DEFAULT_INTERVAL_MS 300000
#define DELIVERY_DEFAULT_PART_MAX    (64 * 1024 * 1024)
#define DELIVERY_DEFAULT_GZIP_LEVEL  6
#define DELIVERY_DEFAULT_POLL_MS     100
#define DELIVERY_BACKOFF_FIRST_MS    500
#define DELIVERY_BACKOFF_MAX_MS      60000
#define DELIVERY_NAME_MAX            64 /* bytes of account or region in a key */
#define DELIVERY_UNKNOWN_ACCOUNT     "000000000000"
#define DELIVERY_UNKNOWN_REGION      "unknown"
#define DELIVERY_STOPPED             1 /* a window abandoned because $TERM is waiting */

static const char s_records_open[] = "{\"Records\":[";
static const char s_records_close[] = "]}";

struct delivery {
    zactor_t *actor;
    pthread_mutex_t mutex; /* guards stats */
    delivery_stats_t stats;
};

typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} s_buf_t;

/* A bump allocator for protobuf-c: one event is unpacked at a time and the
 * arena is reset before the next, so decoding allocates nothing once the
 * arena has grown to the largest event (what does not fit is malloc'd and
 * the arena grows at the next reset). */
typedef struct {
    uint8_t *base;
    size_t cap;           /* bytes at base */
    size_t used;          /* bytes handed out since the last reset */
    size_t spilled_bytes; /* asked beyond cap since the last reset */
    void **spills;        /* blocks malloc'd because the arena was full */
    size_t spill_count;
    size_t spill_cap;
} s_arena_t;

typedef struct {
    char account[DELIVERY_NAME_MAX + 1]; /* as in the key */
    char region[DELIVERY_NAME_MAX + 1];  /* as in the key */
    uint64_t first_seq;                  /* of the group's first event in the window */
    uint64_t last_seq;                   /* of its last event in the window */
} s_group_t;

typedef struct {
    delivery_t *owner; /* for its stats and mutex */
    zsock_t *pipe;     /* the actor's end of the pipe */
    store_t *store;    /* borrowed */
    bucket_t *bucket;  /* owned */
    char *aggregator_id;
    int64_t interval_ms;
    size_t part_max_bytes;
    int64_t poll_ms;
    struct libdeflate_compressor *compressor;
    s_arena_t arena;
    ProtobufCAllocator allocator; /* over arena */
    store_cursor_t cursor;
    bool has_cursor; /* cursor was read from the store */

    /* The window being delivered. */
    int64_t window_end_ms;
    uint64_t window_last_seq; /* seq of its last event */
    uint64_t window_event_count;
    uint32_t window_object_count;
    uint64_t window_gzip_bytes;
    s_group_t *groups;
    size_t group_count;
    size_t group_cap;
    zhashx_t *group_index; /* "account/region" -> group index + 1 */

    /* The part being filled. */
    const s_group_t *group; /* whose records go into it */
    s_buf_t json;           /* {"Records":[ ... */
    s_buf_t gzip;
    size_t record_count;
    bool is_part_full;     /* the read stopped at a record that did not fit */
    uint64_t resume_after; /* then: read on after this seq */

    /* Failures. */
    char error[1024];        /* why the last attempt failed */
    char logged_error[1024]; /* the failure last logged as a warning */
    uint32_t failure_count;  /* failed attempts at the current window */
    int64_t backoff_ms;      /* before the next attempt, before jitter */
    uint64_t random_state;   /* xorshift64 state for the jitter */
} s_self_t;

static void s_buf_reserve(s_buf_t *buf, size_t more)
{
    if (buf->cap - buf->len >= more)
        return;
    size_t cap = buf->cap ? buf->cap : 4096;
    while (cap - buf->len < more)
        cap *= 2;
    buf->data = cairn_realloc(buf->data, cap);
    buf->cap = cap;
}

static void s_buf_append(s_buf_t *buf, const void *data, size_t len)
{
    s_buf_reserve(buf, len);
    memcpy(buf->data + buf->len, data, len);
    buf->len += len;
}

static void *s_arena_alloc(void *data, size_t size)
{
    s_arena_t *arena = data;
    size = (size + 15) & ~(size_t)15; /* malloc's alignment on x86-64 */
    if (size <= arena->cap - arena->used) {
        void *p = arena->base + arena->used;
        arena->used += size;
        return p;
    }
    if (arena->spill_count == arena->spill_cap) {
        arena->spill_cap = arena->spill_cap ? arena->spill_cap * 2 : 16;
        arena->spills = cairn_realloc(arena->spills, arena->spill_cap * sizeof *arena->spills);
    }
    arena->spilled_bytes += size;
    return arena->spills[arena->spill_count++] = cairn_malloc(size);
}

static void s_arena_free(void *data, void *p)
{
    (void)data; /* everything goes at the next reset */
    (void)p;
}

static void s_arena_reset(s_arena_t *arena)
{
    for (size_t i = 0; i < arena->spill_count; i++)
        free(arena->spills[i]);
    if (arena->spilled_bytes) {
        arena->cap = 2 * (arena->used + arena->spilled_bytes);
        free(arena->base);
        arena->base = cairn_malloc(arena->cap);
    }
    arena->used = 0;
    arena->spilled_bytes = 0;
    arena->spill_count = 0;
}

static void s_arena_fini(s_arena_t *arena)
{
    s_arena_reset(arena);
    free(arena->base);
    free(arena->spills);
    *arena = (s_arena_t){0};
}

static int64_t s_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Copies name as it goes into a key: bytes outside [0-9A-Za-z._-] become
 * '_' (a key must stay one path segment: no '/', no ".."), at most
 * DELIVERY_NAME_MAX bytes, and fallback when name is empty. */
static void s_key_name(const char *name, const char *fallback, char out[DELIVERY_NAME_MAX + 1])
{
    if (!name || !name[0])
        name = fallback;
    size_t len = 0;
    bool is_all_dots = true;
    for (; name[len] && len < DELIVERY_NAME_MAX; len++) {
        char c = name[len];
        bool is_safe = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                       c == '.' || c == '_' || c == '-';
        out[len] = is_safe ? c : '_';
        is_all_dots = is_all_dots && c == '.';
    }
    out[len] = '\0';
    if (is_all_dots)
        memset(out, '_', len);
}

/* Unpacks one StoredEvent into the arena; valid until the next call. */
static Cairn__StoredEvent *s_unpack(s_self_t *self, uint64_t seq, const uint8_t *packed, size_t len)
{
    s_arena_reset(&self->arena);
    Cairn__StoredEvent *stored = cairn__stored_event__unpack(&self->allocator, len, packed);
    if (!stored || !stored->event) {
        snprintf(self->error, sizeof self->error, "event seq %llu in the store cannot be decoded",
                 (unsigned long long)seq);
        return NULL;
    }
    return stored;
}

static uint64_t s_random(s_self_t *self)
{
    uint64_t x = self->random_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return self->random_state = x;
}

static void s_self_destroy(s_self_t **self_p)
{
    s_self_t *self = *self_p;
    if (!self)
        return;
    bucket_destroy(&self->bucket);
    if (self->compressor)
        libdeflate_free_compressor(self->compressor);
    zhashx_destroy(&self->group_index);
    s_arena_fini(&self->arena);
    free(self->groups);
    free(self->json.data);
    free(self->gzip.data);
    free(self->aggregator_id);
    free(self);
    *self_p = NULL;
}

/* ---- pass 1: the window's groups ---- */

static int s_on_collect(void *ctx, uint64_t seq, int64_t ingest_time_ms, const uint8_t *packed,
                        size_t len)
{
    s_self_t *self = ctx;
    if (ingest_time_ms >= self->window_end_ms)
        return 1; /* the next window starts here */
    Cairn__StoredEvent *stored = s_unpack(self, seq, packed, len);
    if (!stored)
        return -1;
    char account[DELIVERY_NAME_MAX + 1], region[DELIVERY_NAME_MAX + 1];
    char name[2 * DELIVERY_NAME_MAX + 2];
    s_key_name(stored->event->recipient_account_id, DELIVERY_UNKNOWN_ACCOUNT, account);
    s_key_name(stored->event->aws_region, DELIVERY_UNKNOWN_REGION, region);
    snprintf(name, sizeof name, "%s/%s", account, region);
    size_t index = (size_t)(uintptr_t)zhashx_lookup(self->group_index, name);
    if (index == 0) {
        if (self->group_count == self->group_cap) {
            self->group_cap = self->group_cap ? self->group_cap * 2 : 16;
            self->groups = cairn_realloc(self->groups, self->group_cap * sizeof *self->groups);
        }
        s_group_t *group = &self->groups[self->group_count++];
        memcpy(group->account, account, sizeof account);
        memcpy(group->region, region, sizeof region);
        group->first_seq = seq;
        index = self->group_count;
        zhashx_insert(self->group_index, name, (void *)(uintptr_t)index);
    }
    self->groups[index - 1].last_seq = seq;
    self->window_last_seq = seq;
    self->window_event_count++;
    return 0;
}

static int s_group_compare(const void *a, const void *b)
{
    const s_group_t *ga = a, *gb = b;
    int rc = strcmp(ga->account, gb->account);
    return rc ? rc : strcmp(ga->region, gb->region);
}

/* ---- pass 2: a group's parts ---- */

static void s_part_reset(s_self_t *self)
{
    self->json.len = 0;
    s_buf_append(&self->json, s_records_open, sizeof s_records_open - 1);
    self->record_count = 0;
    self->is_part_full = false;
}

static int s_on_append(void *ctx, uint64_t seq, int64_t ingest_time_ms, const uint8_t *packed,
                       size_t len)
{
    s_self_t *self = ctx;
    const s_group_t *group = self->group;
    if (seq > group->last_seq)
        return 1;
    Cairn__StoredEvent *stored = s_unpack(self, seq, packed, len);
    if (!stored)
        return -1;
    char account[DELIVERY_NAME_MAX + 1], region[DELIVERY_NAME_MAX + 1];
    s_key_name(stored->event->recipient_account_id, DELIVERY_UNKNOWN_ACCOUNT, account);
    s_key_name(stored->event->aws_region, DELIVERY_UNKNOWN_REGION, region);
    ProtobufCBinaryData json = stored->event->json;
    if (strcmp(account, group->account) != 0 || strcmp(region, group->region) != 0 || json.len == 0)
        return 0;
    size_t need = (self->record_count ? 1 : 0) + json.len + sizeof s_records_close - 1;
    if (self->record_count > 0 && self->json.len + need > self->part_max_bytes) {
        self->is_part_full = true;
        self->resume_after = seq - 1; /* this record starts the next part */
        return 1;
    }
    if (self->record_count > 0)
        s_buf_append(&self->json, ",", 1);
    s_buf_append(&self->json, json.data, json.len);
    self->record_count++;
    return 0;
}

/* unique16: 16 characters of [0-9A-Za-z] from SHA-256 of
 * "aggregator_id|window_end_ms|account|region|part". */
static void s_unique16(s_self_t *self, const s_group_t *group, uint32_t part, char out[17])
{
    static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    char tail[256];
    int n = snprintf(tail, sizeof tail, "|%lld|%s|%s|%u", (long long)self->window_end_ms,
                     group->account, group->region, part);
    unsigned char md[EVP_MAX_MD_SIZE];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int is_ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
                EVP_DigestUpdate(ctx, self->aggregator_id, strlen(self->aggregator_id)) &&
                EVP_DigestUpdate(ctx, tail, (size_t)n) && EVP_DigestFinal_ex(ctx, md, NULL);
    EVP_MD_CTX_free(ctx);
    if (!is_ok) {
        /* SHA-256 fails only when OpenSSL cannot allocate: fatal, as everywhere */
        cairn_log_error("delivery: SHA-256 failed");
        abort();
    }
    for (int i = 0; i < 16; i++)
        out[i] = alphabet[md[i] % (sizeof alphabet - 1)];
    out[16] = '\0';
}

static void s_make_key(s_self_t *self, const s_group_t *group, uint32_t part, char *key,
                       size_t size)
{
    char date[16], stamp[24], unique[17];
    cairn_time_format(self->window_end_ms, "%Y/%m/%d", date, sizeof date);
    cairn_time_format(self->window_end_ms, "%Y%m%dT%H%MZ", stamp, sizeof stamp);
    s_unique16(self, group, part, unique);
    snprintf(key, size, "AWSLogs/%s/CloudTrail/%s/%s/%s_CloudTrail_%s_%s_%s.json.gz",
             group->account, group->region, date, group->account, group->region, stamp, unique);
}

static int s_put_part(s_self_t *self, uint32_t part)
{
    const s_group_t *group = self->group;
    char key[512];
    char err[512];
    s_make_key(self, group, part, key, sizeof key);
    s_buf_append(&self->json, s_records_close, sizeof s_records_close - 1);
    size_t bound = libdeflate_gzip_compress_bound(self->compressor, self->json.len);
    self->gzip.len = 0;
    s_buf_reserve(&self->gzip, bound);
    size_t gzip_len = libdeflate_gzip_compress(self->compressor, self->json.data, self->json.len,
                                               self->gzip.data, bound);
    if (gzip_len == 0) {
        snprintf(self->error, sizeof self->error, "%s: gzip failed", key);
        return -1;
    }
    int rc = bucket_put(self->bucket, key, self->gzip.data, gzip_len, "application/json", err,
                        sizeof err);
    pthread_mutex_lock(&self->owner->mutex);
    if (rc == 0) {
        self->owner->stats.objects_put++;
        snprintf(self->owner->stats.last_key, sizeof self->owner->stats.last_key, "%s", key);
    } else
        self->owner->stats.put_errors++;
    pthread_mutex_unlock(&self->owner->mutex);
    if (rc != 0) {
        snprintf(self->error, sizeof self->error, "cannot put an object: %s", err);
        return -1;
    }
    cairn_log_debug("delivery: put %s: %zu records, %zu bytes gzip", key, self->record_count,
                    gzip_len);
    self->window_object_count++;
    self->window_gzip_bytes += gzip_len;
    return 0;
}

static bool s_is_stop_requested(s_self_t *self)
{
    return (zsock_events(self->pipe) & ZMQ_POLLIN) != 0;
}

/* Puts the parts of one group. Returns 0, -1 (self->error says why) or
 * DELIVERY_STOPPED. */
static int s_deliver_group(s_self_t *self, const s_group_t *group)
{
    uint64_t after_seq = group->first_seq - 1;
    uint32_t part = 0;
    self->group = group;
    s_part_reset(self);
    while (true) {
        if (store_read_events(self->store, after_seq, s_on_append, self) < 0) {
            if (!self->error[0])
                snprintf(self->error, sizeof self->error, "cannot read events from the store");
            return -1;
        }
        bool has_more = self->is_part_full;
        if (self->record_count > 0 && s_put_part(self, part++) != 0)
            return -1;
        if (!has_more)
            return 0;
        if (s_is_stop_requested(self))
            return DELIVERY_STOPPED;
        after_seq = self->resume_after;
        s_part_reset(self);
    }
}

/* Delivers the window ending at window_end_ms. Returns 0 after the cursor
 * moved past it, -1 (self->error says why) or DELIVERY_STOPPED. */
static int s_deliver_window(s_self_t *self)
{
    self->window_last_seq = 0;
    self->window_event_count = 0;
    self->window_object_count = 0;
    self->window_gzip_bytes = 0;
    self->group_count = 0;
    zhashx_purge(self->group_index);
    if (store_read_events(self->store, self->cursor.last_seq, s_on_collect, self) < 0) {
        if (!self->error[0])
            snprintf(self->error, sizeof self->error, "cannot read events from the store");
        return -1;
    }
    qsort(self->groups, self->group_count, sizeof *self->groups, s_group_compare);
    for (size_t i = 0; i < self->group_count; i++) {
        int rc = s_deliver_group(self, &self->groups[i]);
        if (rc != 0)
            return rc;
    }
    store_cursor_t cursor = {.last_seq = self->window_last_seq,
                             .window_end_ms = self->window_end_ms};
    if (store_set_cursor(self->store, &cursor) != 0) {
        snprintf(self->error, sizeof self->error, "cannot move the cursor (logged above)");
        return -1;
    }
    self->cursor = cursor;
    return 0;
}

static int s_on_first(void *ctx, uint64_t seq, int64_t ingest_time_ms, const uint8_t *packed,
                      size_t len)
{
    int64_t *first_ingest_ms = ctx;
    *first_ingest_ms = ingest_time_ms;
    return 1;
}

/* Logs a failed attempt and returns the backoff delay, with +-20 % jitter so
 * that several aggregators that failed together do not retry together. A
 * failure is logged as a warning once; the same failure again (a bucket
 * that stays down, a wrong key) only at debug level, until it changes or
 * the window is delivered. */
static int64_t s_backoff(s_self_t *self, const char *what)
{
    self->failure_count++;
    int64_t jitter = (int64_t)(s_random(self) % 401) - 200; /* per mille */
    int64_t delay_ms = self->backoff_ms + self->backoff_ms * jitter / 1000;
    if (strcmp(self->error, self->logged_error) != 0) {
        cairn_log_warning("delivery: %s%s; retrying in %.1f s (attempt %u; the same failure "
                          "again is logged at debug level)",
                          what, self->error, (double)delay_ms / 1000, self->failure_count + 1);
        memcpy(self->logged_error, self->error, sizeof self->logged_error);
    } else {
        cairn_log_debug("delivery: %s%s; retrying in %.1f s (attempt %u)", what, self->error,
                        (double)delay_ms / 1000, self->failure_count + 1);
    }
    self->backoff_ms *= 2;
    if (self->backoff_ms > DELIVERY_BACKOFF_MAX_MS)
        self->backoff_ms = DELIVERY_BACKOFF_MAX_MS;
    return delay_ms;
}

/* One turn: delivers the next closed window if there is one. Returns how
 * long to wait before the next turn. */
static int64_t s_deliver_next(s_self_t *self)
{
    int64_t first_ingest_ms = 0;
    self->error[0] = '\0';
    if (!self->has_cursor) {
        if (store_get_cursor(self->store, &self->cursor) != 0) {
            snprintf(self->error, sizeof self->error, "cannot read the cursor");
            return s_backoff(self, "");
        }
        self->has_cursor = true;
    }
    long count =
        store_read_events(self->store, self->cursor.last_seq, s_on_first, &first_ingest_ms);
    if (count < 0) {
        snprintf(self->error, sizeof self->error, "cannot read events from the store");
        return s_backoff(self, "");
    }
    if (count > 0)
        self->window_end_ms =
            (s_floor_div(first_ingest_ms, self->interval_ms) + 1) * self->interval_ms;
    bool is_closed = count > 0 && self->window_end_ms <= store_watermark(self->store);
    pthread_mutex_lock(&self->owner->mutex);
    self->owner->stats.pending_window_end_ms = is_closed ? self->window_end_ms : 0;
    pthread_mutex_unlock(&self->owner->mutex);
    if (!is_closed)
        return self->poll_ms; /* nothing after the cursor, or its window is still open */

    int rc = s_deliver_window(self);
    char what[64];
    char when[21];
    cairn_time_format_iso8601(self->window_end_ms, when);
    snprintf(what, sizeof what, "window %s: ", when);
    if (rc == DELIVERY_STOPPED)
        return 0; /* the loop reads the pipe next */
    if (rc != 0)
        return s_backoff(self, what);
    if (self->failure_count)
        cairn_log_notice("delivery: window %s delivered after %u failed attempts", when,
                         self->failure_count);
    self->failure_count = 0;
    self->logged_error[0] = '\0';
    self->backoff_ms = DELIVERY_BACKOFF_FIRST_MS;
    pthread_mutex_lock(&self->owner->mutex);
    self->owner->stats.windows_delivered++;
    self->owner->stats.events_delivered += self->window_event_count;
    self->owner->stats.last_window_end_ms = self->window_end_ms;
    pthread_mutex_unlock(&self->owner->mutex);
    cairn_log_info("delivery: window %s delivered: %u objects, %llu events, %llu KiB gzip", when,
                   self->window_object_count, (unsigned long long)self->window_event_count,
                   (unsigned long long)(self->window_gzip_bytes + 1023) / 1024);
    return 0; /* the next window may be closed already: look again at once */
}

static void s_actor(zsock_t *pipe, void *args)
{
    s_self_t *self = args;
    self->pipe = pipe;
    zpoller_t *poller = zpoller_new(pipe, NULL);
    zsock_signal(pipe, 0);
    int64_t timeout_ms = 0;
    while (true) {
        void *which = zpoller_wait(poller, (int)timeout_ms);
        if (which == pipe) {
            zmsg_t *msg = zmsg_recv(pipe);
            char *command = msg ? zmsg_popstr(msg) : NULL;
            bool is_term = !command || streq(command, "$TERM");
            if (!is_term)
                cairn_log_warning("delivery: unknown command \"%s\" ignored", command);
            zstr_free(&command);
            zmsg_destroy(&msg);
            if (is_term)
                break;
            continue;
        }
        if (zpoller_terminated(poller))
            break;
        timeout_ms = s_deliver_next(self);
    }
    zpoller_destroy(&poller);
    s_self_destroy(&self);
    /* Frees OpenSSL's per-thread state now: its own thread-exit hook may run
     * after the process began tearing OpenSSL down. */
    OPENSSL_thread_stop();
}

delivery_t *delivery_new(store_t *store, bucket_t **bucket_p, const delivery_options_t *options)
{
    s_self_t *state = cairn_calloc(1, sizeof *state);
    state->bucket = *bucket_p;
    *bucket_p = NULL;
    state->store = store;
    state->interval_ms = options->interval_ms ? options->interval_ms : DELIVERY_DEFAULT_INTERVAL_MS;
    state->part_max_bytes =
        options->part_max_bytes ? options->part_max_bytes : DELIVERY_DEFAULT_PART_MAX;
    state->poll_ms = options->poll_ms > 0 ? options->poll_ms : DELIVERY_DEFAULT_POLL_MS;
    int level = options->gzip_level ? options->gzip_level : DELIVERY_DEFAULT_GZIP_LEVEL;
    if (!options->aggregator_id || !options->aggregator_id[0]) {
        cairn_log_error("delivery: no aggregator id: object names need one");
        s_self_destroy(&state);
        return NULL;
    }
    if (state->interval_ms < 0 || state->poll_ms > INT32_MAX) {
        cairn_log_error("delivery: interval %lld ms or poll %lld ms out of range",
                        (long long)state->interval_ms, (long long)state->poll_ms);
        s_self_destroy(&state);
        return NULL;
    }
    state->compressor = libdeflate_alloc_compressor(level);
    if (!state->compressor) {
        cairn_log_error("delivery: gzip level %d is not 1..12", level);
        s_self_destroy(&state);
        return NULL;
    }
    state->aggregator_id = cairn_strdup(options->aggregator_id);
    state->allocator = (ProtobufCAllocator){
        .alloc = s_arena_alloc, .free = s_arena_free, .allocator_data = &state->arena};
    state->group_index = zhashx_new();
    state->backoff_ms = DELIVERY_BACKOFF_FIRST_MS;
    state->random_state = (uint64_t)cairn_time_now_ms() ^ (uint64_t)(uintptr_t)state ^ 1;

    delivery_t *self = cairn_calloc(1, sizeof *self);
    pthread_mutex_init(&self->mutex, NULL);
    state->owner = self;
    self->actor = zactor_new(s_actor, state); /* returns once the actor signalled */
    return self;
}

void delivery_destroy(delivery_t **self_p)
{
    delivery_t *self = *self_p;
    if (!self)
        return;
    zactor_destroy(&self->actor); /* sends $TERM, waits for the thread */
    pthread_mutex_destroy(&self->mutex);
    free(self);
    *self_p = NULL;
}

void delivery_get_stats(delivery_t *self, delivery_stats_t *stats)
{
    pthread_mutex_lock(&self->mutex);
    *stats = self->stats;
    pthread_mutex_unlock(&self->mutex);
}
