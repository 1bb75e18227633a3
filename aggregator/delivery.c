/* delivery.c: the delivery actor, from closed windows to log files.
 *
 * DESIGN: one czmq actor thread, with gzip_threads small worker actors that
 * only compress. Each turn the actor looks at the first event after the
 * cursor; that event's window (floor(ingest time / interval)) is the next
 * one to deliver, so empty windows cost nothing. When the window's end is at
 * or below the store's watermark the window is closed and is delivered in
 * ONE pass over its events, in seq order (events of a window are contiguous
 * in seq because ingest time never goes backwards). Each record is appended
 * to the part being filled for its group (account, region). A group's part
 * is closed as soon as its next record would not fit in part_max_bytes,
 * when the parts being filled would together hold more than
 * buffer_max_bytes of JSON (then the group with the most is closed early),
 * and when the window's events end. A closed part goes to an idle worker to
 * be gzip'd (its buffer is swapped with the worker's previous one, so no
 * JSON is copied and no memory is allocated once warm); the actor puts the
 * compressed parts as the workers hand them back, and meanwhile reads on.
 *
 * Only three fields of each packed StoredEvent are needed (the record JSON,
 * recipientAccountId, awsRegion), and unpacking the whole message (a dozen
 * strings, the resources, a copy of the JSON) cost more than gzip did:
 * s_peek_event reads just those fields off the wire format.
 *
 * The pass is read in chunks of at most S_CHUNK_BYTES of JSON, one short
 * read transaction each, and every put happens between transactions: a long
 * read transaction keeps the writer from reusing the pages it frees (the
 * store file grows and ingest slows down), and a slow bucket must never pin
 * old pages.
 *
 * INGEST FIRST: the actor and the workers lower their own thread priority
 * (nice +DELIVERY_NICE), so on a busy machine the receiving threads get the
 * CPU and delivery takes what is left; on an idle one delivery uses every
 * core (gzip_threads, default 2).
 *
 * EXACTLY ONCE: object names depend only on (aggregator id, window end,
 * account, region, part), and where parts are cut depends only on the
 * window's events in seq order and the options (part_max_bytes,
 * buffer_max_bytes count JSON bytes, never buffer capacities or timings), so
 * a retry or a restart overwrites the same objects with the same bytes. The
 * cursor moves only after every part of the window is in the bucket (and
 * its notification, if any, is queued on disk); a failure retries the whole
 * window after an exponential backoff. A window is named by its end in log
 * lines, as in object names (its delivery time).
 *
 * MEMORY: at most buffer_max_bytes of JSON being filled, and the JSON
 * buffers (the groups' and one per worker, swapped as parts are closed) are
 * kept, for the next part and the next window, only while their capacity
 * stays within 1.5 x buffer_max_bytes; past that, an emptied buffer is
 * freed. A buffer's capacity is at most twice its content and a part at
 * most part_max_bytes, so the peak is below 2 x buffer_max_bytes + one
 * part per worker, plus each worker's gzip output (about a sixth of a part,
 * in touched pages).
 *
 * THREADS: everything below s_actor runs on the actor's thread, except
 * s_worker, which sees only the job it was sent until it sends it back. The
 * shared state is the stats, behind the mutex of delivery_t, and the
 * bucket's cancel flag, which delivery_destroy raises to cut a slow put
 * short; so delivery_t owns the bucket (the actor may end first, on
 * SIGTERM) and frees it after the actor's thread has ended. */
#include "delivery.h"

#include "cairn_log.h"
#include "cairn_mem.h"
#include "cairn_wire.h"
#include "cairn_time.h"

#include <czmq.h>
#include <errno.h>
#include <libdeflate.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <malloc.h>
#include <sys/syscall.h>
#include <unistd.h>

#define DELIVERY_DEFAULT_INTERVAL_MS  300000
#define DELIVERY_DEFAULT_PART_MAX     (8 * 1024 * 1024)
#define DELIVERY_DEFAULT_BUFFER_MAX   (16 * 1024 * 1024)
#define DELIVERY_DEFAULT_GZIP_LEVEL   6
#define DELIVERY_DEFAULT_GZIP_THREADS 2
#define DELIVERY_MAX_GZIP_THREADS     16
#define DELIVERY_DEFAULT_POLL_MS      100
#define DELIVERY_BACKOFF_FIRST_MS     500
#define DELIVERY_BACKOFF_MAX_MS       60000
#define DELIVERY_NICE                 10 /* added to the threads' nice value */
#define DELIVERY_NAME_MAX             64 /* bytes of account or region in a key */
#define DELIVERY_KEY_MAX              512
#define DELIVERY_UNKNOWN_ACCOUNT      "000000000000"
#define DELIVERY_UNKNOWN_REGION       "unknown"
#define DELIVERY_STOPPED              1 /* a window abandoned because $TERM is waiting */
#define S_CHUNK_BYTES                 (8 * 1024 * 1024) /* JSON read per read transaction */
#define S_NO_GROUP                    SIZE_MAX

/* Field numbers in cairn.proto. */
#define S_FIELD_STORED_EVENT  4  /* StoredEvent.event */
#define S_FIELD_EVENT_REGION  5  /* Event.aws_region */
#define S_FIELD_EVENT_ACCOUNT 6  /* Event.recipient_account_id */
#define S_FIELD_EVENT_JSON    13 /* Event.json */

static const char s_records_open[] = "{\"Records\":[";
static const char s_records_close[] = "]}";

struct delivery {
    zactor_t *actor;
    bucket_t *bucket;      /* owned; the actor uses it, bucket_cancel may cut it short */
    pthread_mutex_t mutex; /* guards stats */
    delivery_stats_t stats;
};

typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} s_buf_t;

/* Three fields of a packed StoredEvent; pointers into the packed bytes. */
typedef struct {
    const uint8_t *account;
    size_t account_len;
    const uint8_t *region;
    size_t region_len;
    const uint8_t *json;
    size_t json_len;
} s_peek_t;

typedef struct {
    char account[DELIVERY_NAME_MAX + 1]; /* as in the key */
    char region[DELIVERY_NAME_MAX + 1];  /* as in the key */
    uint32_t part_count;                 /* parts closed in this window */
    size_t record_count;                 /* records in the part being filled */
    s_buf_t json;                        /* the part being filled: {"Records":[ ... */
} s_group_t;

/* One part on its way to the bucket; one per worker. */
typedef struct {
    struct libdeflate_compressor *compressor; /* the worker's */
    zactor_t *worker;
    bool is_busy;  /* sent to the worker, not back yet */
    bool is_done;  /* back, compressed, not put yet */
    s_buf_t json;  /* the closed part: {"Records":[...]} */
    s_buf_t gzip;  /* its gzip, gzip.len 0 if compression failed */
    size_t group;  /* index in groups */
    uint32_t part; /* its part number in the group */
    size_t record_count;
    uint64_t ticket; /* parts are put in the order they were closed */
} s_job_t;

typedef struct {
    delivery_t *owner; /* for its stats and mutex */
    zsock_t *pipe;     /* the actor's end of the pipe */
    zpoller_t *poller; /* pipe and the workers */
    store_t *store;    /* borrowed */
    bucket_t *bucket;  /* owned until the actor starts, then delivery_t's */
    notify_t *notify;  /* borrowed; NULL: no webhook */
    char *aggregator_id;
    int64_t interval_ms;
    size_t part_max_bytes;
    size_t buffer_max_bytes;
    size_t memory_max_bytes; /* JSON buffers kept, in capacity: 1.5 x buffer_max_bytes */
    int gzip_level;
    int64_t poll_ms;
    s_job_t *jobs;
    size_t job_count;      /* = gzip_threads */
    uint64_t next_ticket;  /* of the next part closed */
    uint64_t put_ticket;   /* of the next part to put */
    bool is_window_failed; /* a put failed or $TERM came: put nothing more */
    store_cursor_t cursor;
    bool has_cursor; /* cursor was read from the store */

    /* The window being delivered. */
    int64_t window_end_ms;
    uint64_t window_last_seq; /* seq of its last event */
    uint64_t window_event_count;
    uint32_t window_object_count;
    uint64_t window_gzip_bytes;
    s_group_t *groups; /* slots beyond group_count keep their buffers */
    size_t group_count;
    size_t group_cap;
    size_t filling_bytes;  /* JSON in the parts being filled: what the budget counts */
    size_t capacity_bytes; /* capacity of every JSON buffer (groups' and jobs'): memory */
    zhashx_t *group_index; /* "account/region" -> group index + 1 */
    size_t last_group;     /* the previous record's group (S_NO_GROUP: none) */
    zlistx_t *keys;        /* object keys put in this window, for the notification */

    /* The read in progress (one chunk, one read transaction). */
    size_t chunk_bytes;    /* JSON appended in this chunk */
    bool is_window_read;   /* the read reached the window's end */
    size_t close_group;    /* the read stopped to close this group's part (or S_NO_GROUP) */
    uint64_t resume_after; /* the next read starts after this seq */

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

static void s_buf_fini(s_buf_t *buf)
{
    free(buf->data);
    *buf = (s_buf_t){0};
}

static int64_t s_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Lowers the calling thread's priority (Linux: nice is per thread). */
static void s_lower_priority(const char *who)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    errno = 0;
    int nice_now = getpriority(PRIO_PROCESS, (id_t)tid);
    if (errno == 0 && setpriority(PRIO_PROCESS, (id_t)tid, nice_now + DELIVERY_NICE) != 0)
        cairn_log_debug("delivery: %s keeps its priority: %s", who, strerror(errno));
}

/* ---- reading three fields of a packed StoredEvent ---- */

/* Walks the fields of one message. For each length-delimited field calls
 * on_bytes(ctx, field, data, len); skips the others. Returns 0, or -1 when
 * the bytes are not a message. */
static int s_walk(const uint8_t *p, size_t len,
                  void (*on_bytes)(void *, uint32_t, const uint8_t *, size_t), void *ctx)
{
    size_t at = 0;
    cairn_wire_field_t field;
    int r;
    while ((r = cairn_wire_next(p, len, &at, &field)) == 1)
        if (field.wire_type == CAIRN_WIRE_BYTES)
            on_bytes(ctx, field.number, field.data, field.len);
    return r;
}

typedef struct {
    s_peek_t *peek;
    int rc;
} s_peek_ctx_t;

static void s_on_event_field(void *ctx, uint32_t field, const uint8_t *data, size_t len)
{
    s_peek_t *peek = ((s_peek_ctx_t *)ctx)->peek;
    /* A field seen twice: the last one wins, as protobuf's parsers do. */
    if (field == S_FIELD_EVENT_REGION) {
        peek->region = data;
        peek->region_len = len;
    } else if (field == S_FIELD_EVENT_ACCOUNT) {
        peek->account = data;
        peek->account_len = len;
    } else if (field == S_FIELD_EVENT_JSON) {
        peek->json = data;
        peek->json_len = len;
    }
}

static void s_on_stored_field(void *ctx, uint32_t field, const uint8_t *data, size_t len)
{
    s_peek_ctx_t *peek_ctx = ctx;
    /* An embedded message seen twice is merged, which is what walking
     * both into the same s_peek_t does for these scalar fields. */
    if (field == S_FIELD_STORED_EVENT && s_walk(data, len, s_on_event_field, ctx) != 0)
        peek_ctx->rc = -1;
}

/* Reads the record JSON, recipientAccountId and awsRegion of a packed
 * StoredEvent (absent fields are empty). Returns 0, or -1 if it is not a
 * StoredEvent. */
static int s_peek_event(const uint8_t *packed, size_t len, s_peek_t *peek)
{
    *peek = (s_peek_t){0};
    s_peek_ctx_t ctx = {peek, 0};
    if (s_walk(packed, len, s_on_stored_field, &ctx) != 0)
        return -1;
    return ctx.rc;
}

/* Copies name as it goes into a key: bytes outside [0-9A-Za-z._-] become
 * '_' (a key must stay one path segment: no '/', no ".."), at most
 * DELIVERY_NAME_MAX bytes, and fallback when name is empty. */
static void s_key_name(const uint8_t *name, size_t len, const char *fallback,
                       char out[DELIVERY_NAME_MAX + 1])
{
    if (len == 0) {
        name = (const uint8_t *)fallback;
        len = strlen(fallback);
    }
    if (len > DELIVERY_NAME_MAX)
        len = DELIVERY_NAME_MAX;
    bool is_all_dots = true;
    for (size_t i = 0; i < len; i++) {
        char c = (char)name[i];
        bool is_safe = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                       c == '.' || c == '_' || c == '-';
        out[i] = is_safe ? c : '_';
        is_all_dots = is_all_dots && c == '.';
    }
    out[len] = '\0';
    if (is_all_dots)
        memset(out, '_', len);
}

static uint64_t s_random(s_self_t *self)
{
    uint64_t x = self->random_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return self->random_state = x;
}

/* ---- the gzip workers ---- */

/* A worker: receives a job pointer, gzips its json into its gzip, sends
 * the pointer back. Nothing else; the job is the actor's again once sent. */
static void s_worker(zsock_t *pipe, void *args)
{
    (void)args;
    s_lower_priority("a gzip worker");
    zsock_signal(pipe, 0);
    while (true) {
        zmsg_t *msg = zmsg_recv(pipe);
        if (!msg)
            break; /* interrupted */
        char *command = zmsg_popstr(msg);
        zframe_t *frame = zmsg_pop(msg);
        bool is_job =
            command && streq(command, "GZIP") && frame && zframe_size(frame) == sizeof(s_job_t *);
        if (is_job) {
            s_job_t *job;
            memcpy(&job, zframe_data(frame), sizeof job);
            size_t bound = libdeflate_gzip_compress_bound(job->compressor, job->json.len);
            job->gzip.len = 0;
            s_buf_reserve(&job->gzip, bound);
            job->gzip.len = libdeflate_gzip_compress(job->compressor, job->json.data, job->json.len,
                                                     job->gzip.data, bound);
            zsock_send(pipe, "p", job);
        }
        bool is_term = !command || streq(command, "$TERM");
        zframe_destroy(&frame);
        zstr_free(&command);
        zmsg_destroy(&msg);
        if (is_term)
            break;
    }
}

static void s_free_key(void **item)
{
    free(*item);
    *item = NULL;
}

static void s_self_destroy(s_self_t **self_p)
{
    s_self_t *self = *self_p;
    if (!self)
        return;
    zpoller_destroy(&self->poller);
    for (size_t i = 0; i < self->job_count; i++) {
        s_job_t *job = &self->jobs[i];
        zactor_destroy(&job->worker); /* waits for a compression in progress */
        if (job->compressor)
            libdeflate_free_compressor(job->compressor);
        s_buf_fini(&job->json);
        s_buf_fini(&job->gzip);
    }
    free(self->jobs);
    if (!self->owner)
        bucket_destroy(&self->bucket); /* delivery_new failed before the actor */
    zhashx_destroy(&self->group_index);
    zlistx_destroy(&self->keys);
    for (size_t i = 0; i < self->group_cap; i++)
        s_buf_fini(&self->groups[i].json);
    free(self->groups);
    free(self->aggregator_id);
    free(self);
    *self_p = NULL;
}

/* ---- parts ---- */

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

/* Puts a compressed job. Returns 0 or -1 (self->error says why). */
static int s_put_job(s_self_t *self, s_job_t *job)
{
    const s_group_t *group = &self->groups[job->group];
    char key[DELIVERY_KEY_MAX];
    char err[512];
    job->is_done = false;
    s_make_key(self, group, job->part, key, sizeof key);
    if (job->gzip.len == 0) {
        snprintf(self->error, sizeof self->error, "%s: gzip failed", key);
        return -1;
    }
    int rc = bucket_put(self->bucket, key, job->gzip.data, job->gzip.len, "application/json", err,
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
    cairn_log_debug("delivery: put %s: %zu records, %zu bytes gzip", key, job->record_count,
                    job->gzip.len);
    if (self->notify) {
        char object_key[DELIVERY_KEY_MAX + 1024];
        if (bucket_object_key(self->bucket, key, object_key, sizeof object_key) != 0)
            snprintf(object_key, sizeof object_key, "%s", key);
        zlistx_add_end(self->keys, cairn_strdup(object_key));
    }
    self->window_object_count++;
    self->window_gzip_bytes += job->gzip.len;
    return 0;
}

static bool s_is_stop_requested(s_self_t *self)
{
    return (zsock_events(self->pipe) & ZMQ_POLLIN) != 0;
}

/* Takes back the job a worker finished. */
static void s_take_back(s_self_t *self, zactor_t *worker)
{
    s_job_t *job = NULL;
    if (zsock_recv(worker, "p", &job) != 0 || !job || job < self->jobs ||
        job >= self->jobs + self->job_count) {
        /* Only our workers write there, only our pointers: cannot happen. */
        cairn_log_error("delivery: a gzip worker answered nonsense");
        abort();
    }
    job->is_busy = false;
    job->is_done = true;
}

/* Waits until a worker is done (or returns at once when none is busy):
 * blocking when is_waiting, else only what is already there. Takes back
 * every finished job and puts them in the order their parts were closed
 * (so that a failing bucket fails on the same object every time, and the
 * same failure is recognised as such). Returns 0, -1 (a put failed; the
 * other jobs are still taken back) or DELIVERY_STOPPED (while waiting,
 * $TERM came; every job was taken back, none put). After either, the jobs
 * of this window are only taken back, never put. */
static int s_collect(s_self_t *self, bool is_waiting)
{
    size_t busy_count = 0;
    for (size_t i = 0; i < self->job_count; i++)
        busy_count += self->jobs[i].is_busy;
    bool is_stopping = false;
    while (busy_count > 0) {
        bool has_ready = false;
        for (size_t i = 0; i < self->job_count; i++) {
            s_job_t *job = &self->jobs[i];
            if (job->is_busy && (zsock_events(job->worker) & ZMQ_POLLIN)) {
                s_take_back(self, job->worker);
                busy_count--;
                has_ready = true;
            }
        }
        if (has_ready || !is_waiting)
            break;
        void *which = zpoller_wait(self->poller, -1);
        if (which == self->pipe || (!which && zpoller_terminated(self->poller)))
            is_stopping = true; /* but the workers still hold our buffers */
        if (is_stopping) {
            for (size_t i = 0; i < self->job_count; i++)
                if (self->jobs[i].is_busy)
                    s_take_back(self, self->jobs[i].worker); /* blocks; gzip is bounded */
            break;
        }
    }
    int rc = is_stopping ? DELIVERY_STOPPED : 0;
    bool has_put = true;
    while (rc == 0 && !self->is_window_failed && has_put) {
        has_put = false;
        for (size_t i = 0; i < self->job_count && !has_put; i++) {
            s_job_t *job = &self->jobs[i];
            if (job->is_done && job->ticket == self->put_ticket) {
                rc = s_put_job(self, job);
                self->put_ticket++;
                has_put = true;
            }
        }
    }
    if (rc != 0)
        self->is_window_failed = true;
    for (size_t i = 0; self->is_window_failed && i < self->job_count; i++)
        self->jobs[i].is_done = false; /* not put: the window is retried whole */
    return rc;
}

/* Waits for every worker, putting what they finish. */
static int s_collect_all(s_self_t *self)
{
    int rc = 0;
    for (size_t i = 0; i <= self->job_count; i++) {
        int collect_rc = s_collect(self, true);
        if (rc == 0)
            rc = collect_rc;
    }
    return rc;
}

/* Closes the group's part and hands it to an idle worker, waiting for one
 * if needed. The group gets the worker's previous buffer back, emptied.
 * Returns 0, -1 or DELIVERY_STOPPED (see s_collect). */
static int s_close_part(s_self_t *self, size_t group_index)
{
    s_job_t *job = NULL;
    while (!job) {
        for (size_t i = 0; i < self->job_count && !job; i++)
            if (!self->jobs[i].is_busy && !self->jobs[i].is_done)
                job = &self->jobs[i];
        if (!job) {
            int rc = s_collect(self, true);
            if (rc != 0)
                return rc;
        }
    }
    s_group_t *group = &self->groups[group_index];
    size_t old_cap = group->json.cap;
    s_buf_append(&group->json, s_records_close, sizeof s_records_close - 1);
    self->capacity_bytes += group->json.cap - old_cap;
    self->filling_bytes -= group->json.len - (sizeof s_records_close - 1);
    s_buf_t spare = job->json;
    job->json = group->json;
    job->group = group_index;
    job->part = group->part_count++;
    job->record_count = group->record_count;
    job->ticket = self->next_ticket++;
    /* Keeps the spare buffer for the group unless memory is over its bound
     * (which only decides what is freed, never where parts are cut). */
    if (self->capacity_bytes > self->memory_max_bytes) {
        self->capacity_bytes -= spare.cap;
        s_buf_fini(&spare);
    }
    spare.len = 0;
    group->json = spare;
    group->record_count = 0;
    job->is_busy = true;
    zsock_send(job->worker, "sp", "GZIP", job);
    return 0;
}

/* ---- the pass over a window ---- */

/* The group of (account, region), added if new. */
static size_t s_group_of(s_self_t *self, const s_peek_t *peek)
{
    char account[DELIVERY_NAME_MAX + 1], region[DELIVERY_NAME_MAX + 1];
    s_key_name(peek->account, peek->account_len, DELIVERY_UNKNOWN_ACCOUNT, account);
    s_key_name(peek->region, peek->region_len, DELIVERY_UNKNOWN_REGION, region);
    if (self->last_group != S_NO_GROUP) {
        const s_group_t *last = &self->groups[self->last_group];
        if (strcmp(last->account, account) == 0 && strcmp(last->region, region) == 0)
            return self->last_group;
    }
    char name[2 * DELIVERY_NAME_MAX + 2];
    snprintf(name, sizeof name, "%s/%s", account, region);
    size_t index = (size_t)(uintptr_t)zhashx_lookup(self->group_index, name);
    if (index == 0) {
        if (self->group_count == self->group_cap) {
            size_t cap = self->group_cap ? self->group_cap * 2 : 16;
            self->groups = cairn_realloc(self->groups, cap * sizeof *self->groups);
            memset(self->groups + self->group_cap, 0,
                   (cap - self->group_cap) * sizeof *self->groups);
            self->group_cap = cap;
        }
        s_group_t *group = &self->groups[self->group_count++];
        memcpy(group->account, account, sizeof account);
        memcpy(group->region, region, sizeof region);
        group->part_count = 0;
        group->record_count = 0;
        group->json.len = 0;
        index = self->group_count;
        zhashx_insert(self->group_index, name, (void *)(uintptr_t)index);
    }
    return self->last_group = index - 1;
}

/* When the parts being filled would hold more than buffer_max_bytes of JSON
 * with need more bytes, returns the group whose part to close first: the
 * one holding the most (the first such group on a tie). Else S_NO_GROUP.
 * Counts JSON only, so that the cut is the same on every try. */
static size_t s_group_to_evict(const s_self_t *self, size_t need)
{
    if (self->filling_bytes + need <= self->buffer_max_bytes)
        return S_NO_GROUP;
    size_t largest = S_NO_GROUP;
    for (size_t i = 0; i < self->group_count; i++)
        if (self->groups[i].record_count > 0 &&
            (largest == S_NO_GROUP || self->groups[i].json.len > self->groups[largest].json.len))
            largest = i;
    return largest; /* S_NO_GROUP: one record bigger than the budget, let through */
}

/* Frees the empty buffers of other groups while memory is over its bound. */
static void s_trim_memory(s_self_t *self, size_t keep_group)
{
    for (size_t i = 0; i < self->group_cap && self->capacity_bytes > self->memory_max_bytes; i++) {
        s_group_t *group = &self->groups[i];
        if (i != keep_group && group->record_count == 0 && group->json.cap) {
            self->capacity_bytes -= group->json.cap;
            s_buf_fini(&group->json);
        }
    }
}

static int s_on_record(void *ctx, uint64_t seq, int64_t ingest_time_ms, const uint8_t *packed,
                       size_t len)
{
    s_self_t *self = ctx;
    if (ingest_time_ms >= self->window_end_ms) {
        self->is_window_read = true; /* the next window starts here */
        return 1;
    }
    s_peek_t peek;
    if (s_peek_event(packed, len, &peek) != 0) {
        snprintf(self->error, sizeof self->error, "event seq %llu in the store cannot be decoded",
                 (unsigned long long)seq);
        return -1;
    }
    if (peek.json_len > 0) {
        size_t index = s_group_of(self, &peek);
        s_group_t *group = &self->groups[index];
        bool is_first = group->record_count == 0;
        size_t need = (is_first ? sizeof s_records_open - 1 : 1) + peek.json_len;
        if (!is_first && group->json.len + need + sizeof s_records_close - 1 > self->part_max_bytes)
            self->close_group = index; /* this record starts the group's next part */
        else
            self->close_group = s_group_to_evict(self, need);
        if (self->close_group != S_NO_GROUP) {
            self->resume_after = seq - 1; /* read this record again after the close */
            return 1;
        }
        size_t old_cap = group->json.cap;
        if (is_first)
            s_buf_append(&group->json, s_records_open, sizeof s_records_open - 1);
        else
            s_buf_append(&group->json, ",", 1);
        s_buf_append(&group->json, peek.json, peek.json_len);
        self->filling_bytes += need;
        if (group->json.cap != old_cap) {
            self->capacity_bytes += group->json.cap - old_cap;
            s_trim_memory(self, index);
        }
        group->record_count++;
        self->chunk_bytes += peek.json_len;
    }
    self->window_last_seq = seq;
    self->window_event_count++;
    self->resume_after = seq;
    return self->chunk_bytes >= S_CHUNK_BYTES ? 1 : 0;
}

/* Starts a window afresh (also after a failed attempt). */
static void s_window_reset(s_self_t *self)
{
    self->window_last_seq = 0;
    self->window_event_count = 0;
    self->window_object_count = 0;
    self->window_gzip_bytes = 0;
    for (size_t i = 0; i < self->group_count; i++) {
        self->groups[i].json.len = 0;
        self->groups[i].record_count = 0;
    }
    self->group_count = 0;
    self->filling_bytes = 0;
    self->last_group = S_NO_GROUP;
    zhashx_purge(self->group_index);
    zlistx_purge(self->keys);
    self->put_ticket = self->next_ticket;
    self->is_window_failed = false;
    self->is_window_read = false;
    self->resume_after = self->cursor.last_seq;
}

static int s_compare_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Queues the window's notification (keys sorted: the same on every try). */
static int s_notify(s_self_t *self)
{
    size_t count = zlistx_size(self->keys);
    if (!self->notify || count == 0)
        return 0;
    const char **keys = cairn_calloc(count, sizeof *keys);
    size_t n = 0;
    for (const char *key = zlistx_first(self->keys); key; key = zlistx_next(self->keys))
        keys[n++] = key;
    qsort(keys, n, sizeof *keys, s_compare_keys);
    int rc = notify_enqueue(self->notify, self->window_end_ms, bucket_name(self->bucket), keys, n);
    free(keys);
    if (rc != 0)
        snprintf(self->error, sizeof self->error, "cannot queue its notification (logged above)");
    return rc;
}

/* Delivers the window ending at window_end_ms. Returns 0 after the cursor
 * moved past it, -1 (self->error says why) or DELIVERY_STOPPED. */
static int s_deliver_window(s_self_t *self)
{
    s_window_reset(self);
    int rc = 0;
    while (rc == 0 && !self->is_window_read) {
        self->chunk_bytes = 0;
        self->close_group = S_NO_GROUP;
        uint64_t after_seq = self->resume_after;
        long count = store_read_events(self->store, after_seq, s_on_record, self);
        if (count < 0) {
            if (!self->error[0])
                snprintf(self->error, sizeof self->error, "cannot read events from the store");
            rc = -1;
            break;
        }
        if (self->resume_after == after_seq && self->close_group == S_NO_GROUP)
            self->is_window_read = true; /* no event after after_seq */
        if (self->close_group != S_NO_GROUP)
            rc = s_close_part(self, self->close_group);
        if (rc == 0)
            rc = s_collect(self, false);
        if (rc == 0 && s_is_stop_requested(self))
            rc = DELIVERY_STOPPED;
    }
    for (size_t i = 0; rc == 0 && i < self->group_count; i++)
        if (self->groups[i].record_count > 0)
            rc = s_close_part(self, i);
    int collect_rc = s_collect_all(self); /* also after a failure: the workers hold buffers */
    if (rc == 0)
        rc = collect_rc;
    if (rc != 0)
        return rc;
    if (s_notify(self) != 0)
        return -1;
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
    malloc_trim(0); /* a window's buffers, freed by now: back to the OS, not kept 5 minutes */
    cairn_log_info("delivery: window %s delivered: %u objects, %llu events, %llu KiB gzip", when,
                   self->window_object_count, (unsigned long long)self->window_event_count,
                   (unsigned long long)(self->window_gzip_bytes + 1023) / 1024);
    return 0; /* the next window may be closed already: look again at once */
}

static void s_actor(zsock_t *pipe, void *args)
{
    s_self_t *self = args;
    self->pipe = pipe;
    s_lower_priority("the actor");
    zpoller_t *poller = zpoller_new(pipe, NULL);
    self->poller = zpoller_new(pipe, NULL);
    for (size_t i = 0; i < self->job_count; i++) {
        self->jobs[i].worker = zactor_new(s_worker, NULL);
        zpoller_add(self->poller, self->jobs[i].worker);
    }
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
    state->notify = options->notify;
    state->interval_ms = options->interval_ms ? options->interval_ms : DELIVERY_DEFAULT_INTERVAL_MS;
    state->part_max_bytes =
        options->part_max_bytes ? options->part_max_bytes : DELIVERY_DEFAULT_PART_MAX;
    state->buffer_max_bytes =
        options->buffer_max_bytes ? options->buffer_max_bytes : DELIVERY_DEFAULT_BUFFER_MAX;
    if (state->buffer_max_bytes < 2 * state->part_max_bytes)
        state->buffer_max_bytes = 2 * state->part_max_bytes; /* a full part and its doubling */
    state->memory_max_bytes = state->buffer_max_bytes + state->buffer_max_bytes / 2;
    state->poll_ms = options->poll_ms > 0 ? options->poll_ms : DELIVERY_DEFAULT_POLL_MS;
    state->gzip_level = options->gzip_level ? options->gzip_level : DELIVERY_DEFAULT_GZIP_LEVEL;
    state->job_count =
        options->gzip_threads ? (size_t)options->gzip_threads : DELIVERY_DEFAULT_GZIP_THREADS;
    if (!options->aggregator_id || !options->aggregator_id[0]) {
        cairn_log_error("delivery: no aggregator id: object names need one");
        s_self_destroy(&state);
        return NULL;
    }
    if (state->interval_ms < 0 || state->poll_ms > INT32_MAX ||
        state->job_count > DELIVERY_MAX_GZIP_THREADS) {
        cairn_log_error("delivery: interval %lld ms, poll %lld ms or gzip threads %zu out of range",
                        (long long)state->interval_ms, (long long)state->poll_ms, state->job_count);
        state->job_count = 0;
        s_self_destroy(&state);
        return NULL;
    }
    state->jobs = cairn_calloc(state->job_count, sizeof *state->jobs);
    for (size_t i = 0; i < state->job_count; i++) {
        state->jobs[i].compressor = libdeflate_alloc_compressor(state->gzip_level);
        if (!state->jobs[i].compressor) {
            cairn_log_error("delivery: gzip level %d is not 1..12", state->gzip_level);
            s_self_destroy(&state);
            return NULL;
        }
    }
    state->aggregator_id = cairn_strdup(options->aggregator_id);
    state->group_index = zhashx_new();
    state->keys = zlistx_new();
    zlistx_set_destructor(state->keys, s_free_key);
    state->last_group = S_NO_GROUP;
    state->backoff_ms = DELIVERY_BACKOFF_FIRST_MS;
    state->random_state = (uint64_t)cairn_time_now_ms() ^ (uint64_t)(uintptr_t)state ^ 1;

    delivery_t *self = cairn_calloc(1, sizeof *self);
    pthread_mutex_init(&self->mutex, NULL);
    /* The bucket outlives the actor: the actor also ends on its own (on
     * SIGTERM, zsys_interrupted), and delivery_destroy cancels it later. */
    self->bucket = state->bucket;
    state->owner = self;
    self->actor = zactor_new(s_actor, state); /* returns once the actor signalled */
    return self;
}

void delivery_destroy(delivery_t **self_p)
{
    delivery_t *self = *self_p;
    if (!self)
        return;
    /* The bucket lives until the actor ends, which zactor_destroy waits for:
     * cancelling it first cuts a slow put short, and the window is put
     * again, under the same names, by the next start. */
    bucket_cancel(self->bucket);
    zactor_destroy(&self->actor); /* sends $TERM, waits for the thread */
    bucket_destroy(&self->bucket);
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
