/* store.c: the aggregator's deduplicated event store in one LMDB environment.
 *
 * DESIGN: four databases (see store.h). events holds packed StoredEvents under
 * their ingest seq, 8 bytes big-endian so that LMDB's byte order is seq order
 * and MDB_APPEND applies; the value is written in place with MDB_RESERVE. ids
 * maps eventID -> seq and is the dedup guard: a put with MDB_NOOVERWRITE that
 * answers MDB_KEYEXIST means "already stored", checked and claimed in one
 * B-tree descent. agents keeps each agent's progress so that a whole resent
 * batch costs one lookup. meta keeps the delivery cursor.
 *
 * THREADS: the receiver's thread is the only writer of events; it alone
 * touches next_seq and last_ingest_ms. The delivery actor reads events and
 * writes the cursor in its own write transaction; LMDB's writer lock orders
 * the two writers. The env is opened MDB_NOTLS so that read transactions are
 * not tied to a thread's slot. The watermark is the only field shared
 * between threads and it is atomic.
 *
 * RULES that always hold:
 *   - ingest times are non-decreasing in seq: each call stamps its events
 *     with max(now_ms, last_ingest_ms), and last_ingest_ms only rises;
 *   - the watermark is published only after the commit that makes every
 *     event below it visible, so a reader that loads the watermark and then
 *     begins a read transaction sees every event below it;
 *   - on open, last_ingest_ms is raised to the cursor's window end, so no
 *     new event can land in a window that was already delivered, whatever
 *     the clock did during the restart. */
#include "store.h"

#include "cairn_fs.h"
#include "cairn_log.h"
#include "cairn_mem.h"

#include <errno.h>
#include <lmdb.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#define STORE_MAX_DBS    8
#define STORE_CURSOR_KEY "delivery_cursor"

struct store {
    char *dir; /* for log lines */
    MDB_env *env;
    MDB_dbi events_dbi;           /* seq (u64 BE) -> packed StoredEvent */
    MDB_dbi ids_dbi;              /* eventID -> seq (u64 BE) */
    MDB_dbi agents_dbi;           /* agent id -> last agent seq (u64 BE) */
    MDB_dbi meta_dbi;             /* "delivery_cursor" -> u64 BE seq, i64 BE end ms */
    uint64_t next_seq;            /* seq of the next new event (writer thread) */
    int64_t last_ingest_ms;       /* floor for the next ingest time (writer thread) */
    bool is_full;                 /* last put hit MDB_MAP_FULL (writer thread) */
    size_t key_max_bytes;         /* longest eventID or agent id LMDB takes as a key */
    _Atomic int64_t watermark_ms; /* every event below it is committed */
};

static void s_put_u64(uint8_t out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t s_get_u64(const uint8_t in[8])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | in[i];
    return v;
}

/* Reads field 1 (ingest_time_ms, a varint) of a packed StoredEvent without
 * unpacking the rest: store_read_events hands every event's ingest time to
 * its callback, and a full unpack of each event (the record JSON included)
 * only for that would double the delivery's decoding work. protobuf-c has no
 * reader for a single field, hence these few lines of wire format. An absent
 * field is proto3's default, 0. Returns -1 if the bytes are not a message. */
static int s_varint(const uint8_t *p, size_t len, size_t *at, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && *at < len; shift += 7) {
        uint8_t b = p[(*at)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

static int s_peek_ingest_time(const uint8_t *p, size_t len, int64_t *ingest_ms)
{
    size_t at = 0;
    *ingest_ms = 0;
    while (at < len) {
        uint64_t tag, value, skip = 0;
        if (s_varint(p, len, &at, &tag) != 0)
            return -1;
        switch (tag & 7) {
        case 0: /* varint */
            if (s_varint(p, len, &at, &value) != 0)
                return -1;
            if (tag >> 3 == 1) {
                *ingest_ms = (int64_t)value;
                return 0;
            }
            break;
        case 1: /* fixed64 */
            skip = 8;
            break;
        case 2: /* length-delimited */
            if (s_varint(p, len, &at, &skip) != 0)
                return -1;
            break;
        case 5: /* fixed32 */
            skip = 4;
            break;
        default:
            return -1;
        }
        if (skip > len - at)
            return -1;
        at += (size_t)skip;
    }
    return 0;
}

static void s_raise_watermark(store_t *self, int64_t ms)
{
    int64_t seen = atomic_load(&self->watermark_ms);
    while (seen < ms && !atomic_compare_exchange_weak(&self->watermark_ms, &seen, ms))
        ;
}

/* Restores next_seq and last_ingest_ms from the last event and the cursor. */
static int s_load_progress(store_t *self)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cursor = NULL;
    MDB_val key, val;
    int rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_cursor_open(txn, self->events_dbi, &cursor);
    if (rc == 0)
        rc = mdb_cursor_get(cursor, &key, &val, MDB_LAST);
    if (rc == 0) {
        int64_t ingest_ms;
        if (key.mv_size != 8 || s_peek_ingest_time(val.mv_data, val.mv_size, &ingest_ms) != 0)
            rc = MDB_CORRUPTED;
        else {
            self->next_seq = s_get_u64(key.mv_data) + 1;
            self->last_ingest_ms = ingest_ms;
        }
    } else if (rc == MDB_NOTFOUND)
        rc = 0;
    if (cursor)
        mdb_cursor_close(cursor);
    if (txn)
        mdb_txn_abort(txn);
    if (rc != 0) {
        cairn_log_error("store %s: cannot read the last event: %s", self->dir, mdb_strerror(rc));
        return -1;
    }
    store_cursor_t delivered;
    if (store_get_cursor(self, &delivered) != 0)
        return -1; /* logged */
    if (delivered.window_end_ms > self->last_ingest_ms)
        self->last_ingest_ms = delivered.window_end_ms;
    return 0;
}

store_t *store_new(const char *dir, int64_t map_bytes, bool is_durable)
{
    store_t *self = cairn_calloc(1, sizeof *self);
    self->dir = cairn_strdup(dir);
    self->next_seq = 1;
    MDB_txn *txn = NULL;
    int rc = 0;
    if (cairn_mkdir_p(dir, 0755) != 0) {
        cairn_log_error("store %s: cannot create the directory: %s", dir, strerror(errno));
        store_destroy(&self);
        return NULL;
    }
    if (map_bytes <= 0)
        rc = EINVAL;
    if (rc == 0)
        rc = mdb_env_create(&self->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(self->env, STORE_MAX_DBS);
    if (rc == 0)
        rc = mdb_env_set_mapsize(self->env, (size_t)map_bytes);
    if (rc == 0)
        rc = mdb_env_open(self->env, dir, MDB_NOTLS | (is_durable ? 0 : MDB_NOSYNC), 0600);
    if (rc == 0) {
        self->key_max_bytes = (size_t)mdb_env_get_maxkeysize(self->env);
        rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    }
    if (rc == 0)
        rc = mdb_dbi_open(txn, "events", MDB_CREATE, &self->events_dbi);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "ids", MDB_CREATE, &self->ids_dbi);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "agents", MDB_CREATE, &self->agents_dbi);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &self->meta_dbi);
    if (rc == 0)
        rc = mdb_txn_commit(txn); /* frees txn even when it fails */
    else if (txn)
        mdb_txn_abort(txn);
    if (rc != 0) {
        cairn_log_error("store %s: cannot open: %s", dir, mdb_strerror(rc));
        store_destroy(&self);
        return NULL;
    }
    if (s_load_progress(self) != 0) {
        store_destroy(&self); /* logged */
        return NULL;
    }
    /* Not now: until the receiver calls store_advance_watermark, an event
     * could still be stamped with any time from last_ingest_ms on. */
    atomic_store(&self->watermark_ms, self->last_ingest_ms);
    cairn_log_info("store %s: opened: next seq %llu, last ingest time %lld ms", dir,
                   (unsigned long long)self->next_seq, (long long)self->last_ingest_ms);
    return self;
}

void store_destroy(store_t **self_p)
{
    store_t *self = *self_p;
    if (!self)
        return;
    if (self->env)
        mdb_env_close(self->env);
    free(self->dir);
    free(self);
    *self_p = NULL;
}

/* Stores one new event, or counts it as a duplicate. Returns an LMDB code. */
static int s_put_event(store_t *self, MDB_txn *txn, const Cairn__Batch *batch, size_t index,
                       int64_t ingest_ms, uint64_t *seq, store_batch_result_t *result)
{
    const Cairn__Event *event = batch->events[index];
    uint8_t seq_be[8];
    s_put_u64(seq_be, *seq);
    MDB_val id = {.mv_size = strlen(event->event_id), .mv_data = event->event_id};
    MDB_val seq_val = {.mv_size = sizeof seq_be, .mv_data = seq_be};
    int rc = mdb_put(txn, self->ids_dbi, &id, &seq_val, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST) {
        result->duplicate_count++;
        return 0;
    }
    if (rc != 0)
        return rc;
    Cairn__StoredEvent stored = CAIRN__STORED_EVENT__INIT;
    stored.ingest_time_ms = (uint64_t)ingest_ms;
    stored.agent_id = batch->agent_id;
    stored.agent_seq = batch->first_seq + index;
    stored.event = (Cairn__Event *)event; /* pack only reads it */
    MDB_val val = {.mv_size = cairn__stored_event__get_packed_size(&stored)};
    rc = mdb_put(txn, self->events_dbi, &seq_val, &val, MDB_APPEND | MDB_RESERVE);
    if (rc == 0) {
        cairn__stored_event__pack(&stored, val.mv_data);
        result->stored_count++;
        (*seq)++;
    }
    return rc;
}

/* Progress is kept per agent AND spool: "agent-id/spool-id". A spool made
 * anew (wiped data dir) numbers from 1 again and must not look like a resend
 * of what the old spool sent. Returns the key length (capped to size). */
static size_t s_agent_key(const char *agent_id, const char *spool_id, char *out, size_t size)
{
    int n = snprintf(out, size, "%s/%s", agent_id, spool_id ? spool_id : "");
    return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

/* Stores one batch inside the caller's transaction. Returns an LMDB code, or
 * EINVAL (logged) for an event without eventID. */
static int s_put_batch(store_t *self, MDB_txn *txn, const Cairn__Batch *batch, int64_t ingest_ms,
                       uint64_t *seq, store_batch_result_t *result)
{
    size_t count = batch->n_events;
    bool has_agent = batch->agent_id && batch->agent_id[0] && count > 0;
    uint64_t last_agent_seq = batch->first_seq + count - 1;
    uint64_t progress = 0;
    bool has_progress = false;
    uint8_t seq_be[8];
    char agent_key[1024];
    MDB_val agent = {.mv_size = has_agent ? s_agent_key(batch->agent_id, batch->spool_id,
                                                        agent_key, sizeof agent_key)
                                          : 0,
                     .mv_data = agent_key};
    MDB_val val;
    int rc = 0;
    if (agent.mv_size > self->key_max_bytes) {
        cairn_log_error("store %s: batch %llu+%zu: agent id of %zu bytes is over %zu", self->dir,
                        (unsigned long long)batch->first_seq, count, agent.mv_size,
                        self->key_max_bytes);
        return EINVAL;
    }
    if (has_agent) {
        /* Read inside the write txn: an earlier batch of this same call
         * already raised the progress it sees. */
        rc = mdb_get(txn, self->agents_dbi, &agent, &val);
        if (rc == 0 && val.mv_size == 8) {
            progress = s_get_u64(val.mv_data);
            has_progress = true;
        } else if (rc == MDB_NOTFOUND)
            rc = 0;
        else if (rc == 0)
            rc = MDB_CORRUPTED;
    }
    if (rc == 0 && has_progress && last_agent_seq <= progress) {
        result->is_resend = true; /* the cheap path: nothing to look up */
        result->duplicate_count = (uint32_t)count;
        return 0;
    }
    for (size_t i = 0; rc == 0 && i < count; i++) {
        const Cairn__Event *event = batch->events[i];
        size_t id_len = event && event->event_id ? strlen(event->event_id) : 0;
        if (id_len == 0 || id_len > self->key_max_bytes) {
            cairn_log_error("store %s: batch %llu+%zu from agent %s: event %zu has %s", self->dir,
                            (unsigned long long)batch->first_seq, count,
                            batch->agent_id ? batch->agent_id : "", i,
                            id_len ? "an eventID too long for a key" : "no eventID");
            return EINVAL;
        }
        rc = s_put_event(self, txn, batch, i, ingest_ms, seq, result);
    }
    if (rc == 0 && has_agent) {
        s_put_u64(seq_be, last_agent_seq);
        val = (MDB_val){.mv_size = sizeof seq_be, .mv_data = seq_be};
        rc = mdb_put(txn, self->agents_dbi, &agent, &val, 0);
    }
    return rc;
}

int store_put_batches(store_t *self, const Cairn__Batch *const *batches, size_t batch_count,
                      int64_t now_ms, store_batch_result_t *results)
{
    int64_t ingest_ms = now_ms > self->last_ingest_ms ? now_ms : self->last_ingest_ms;
    uint64_t seq = self->next_seq;
    MDB_txn *txn = NULL;
    memset(results, 0, batch_count * sizeof *results);
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    for (size_t i = 0; rc == 0 && i < batch_count; i++)
        rc = s_put_batch(self, txn, batches[i], ingest_ms, &seq, &results[i]);
    if (rc == 0)
        rc = mdb_txn_commit(txn); /* frees txn even when it fails */
    else if (txn)
        mdb_txn_abort(txn);

    if (rc == 0) {
        self->next_seq = seq;
        self->last_ingest_ms = ingest_ms;
        s_raise_watermark(self, ingest_ms);
        if (self->is_full) {
            cairn_log_notice("store %s: storing again after the map was full", self->dir);
            self->is_full = false;
        }
        return 0;
    }
    memset(results, 0, batch_count * sizeof *results); /* nothing of the call stored */
    if (rc == MDB_MAP_FULL) {
        if (!self->is_full)
            cairn_log_warning("store %s: map full (%s): refusing batches until there is room",
                              self->dir, mdb_strerror(rc));
        self->is_full = true;
        return STORE_FULL;
    }
    if (rc != EINVAL) /* EINVAL was logged where the bad event was found */
        cairn_log_error("store %s: cannot store %zu batches, none stored: %s", self->dir,
                        batch_count, mdb_strerror(rc));
    return -1;
}

uint64_t store_agent_last_seq(store_t *self, const char *agent_id, const char *spool_id)
{
    MDB_txn *txn = NULL;
    char agent_key[1024];
    MDB_val key = {.mv_size = s_agent_key(agent_id, spool_id, agent_key, sizeof agent_key),
                   .mv_data = agent_key};
    MDB_val val;
    uint64_t last_seq = 0;
    if (!*agent_id || key.mv_size > self->key_max_bytes)
        return 0;
    int rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_get(txn, self->agents_dbi, &key, &val);
    if (rc == 0 && val.mv_size == 8)
        last_seq = s_get_u64(val.mv_data);
    else if (rc != 0 && rc != MDB_NOTFOUND)
        cairn_log_error("store %s: cannot read agent %s: %s", self->dir, agent_id,
                        mdb_strerror(rc));
    if (txn)
        mdb_txn_abort(txn);
    return last_seq;
}

void store_advance_watermark(store_t *self, int64_t now_ms)
{
    if (now_ms > self->last_ingest_ms)
        self->last_ingest_ms = now_ms;
    s_raise_watermark(self, now_ms);
}

int64_t store_watermark(const store_t *self)
{
    /* atomic_load needs a non-const object in C11 (fixed only in C17). */
    return atomic_load(&((store_t *)self)->watermark_ms);
}

long store_read_events(store_t *self, uint64_t after_seq, store_event_fn *fn, void *ctx)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cursor = NULL;
    uint8_t first_be[8];
    s_put_u64(first_be, after_seq + 1);
    MDB_val key = {.mv_size = sizeof first_be, .mv_data = first_be};
    MDB_val val;
    long count = 0;
    int fn_rc = 0;
    int rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_cursor_open(txn, self->events_dbi, &cursor);
    if (rc == 0)
        rc = mdb_cursor_get(cursor, &key, &val, MDB_SET_RANGE);
    while (rc == 0 && fn_rc == 0) {
        int64_t ingest_ms;
        if (key.mv_size != 8 || s_peek_ingest_time(val.mv_data, val.mv_size, &ingest_ms) != 0) {
            rc = MDB_CORRUPTED;
            break;
        }
        fn_rc = fn(ctx, s_get_u64(key.mv_data), ingest_ms, val.mv_data, val.mv_size);
        count++;
        if (fn_rc == 0)
            rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (cursor)
        mdb_cursor_close(cursor);
    if (txn)
        mdb_txn_abort(txn);
    if (rc != 0) {
        cairn_log_error("store %s: cannot read events after seq %llu: %s", self->dir,
                        (unsigned long long)after_seq, mdb_strerror(rc));
        return -1;
    }
    return fn_rc < 0 ? -1 : count;
}

int store_get_cursor(store_t *self, store_cursor_t *cursor)
{
    MDB_txn *txn = NULL;
    MDB_val key = {.mv_size = strlen(STORE_CURSOR_KEY), .mv_data = STORE_CURSOR_KEY};
    MDB_val val;
    *cursor = (store_cursor_t){0, 0};
    int rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_get(txn, self->meta_dbi, &key, &val);
    if (rc == 0 && val.mv_size == 16) {
        cursor->last_seq = s_get_u64(val.mv_data);
        cursor->window_end_ms = (int64_t)s_get_u64((const uint8_t *)val.mv_data + 8);
    } else if (rc == 0)
        rc = MDB_CORRUPTED;
    else if (rc == MDB_NOTFOUND)
        rc = 0;
    if (txn)
        mdb_txn_abort(txn);
    if (rc != 0)
        cairn_log_error("store %s: cannot read the delivery cursor: %s", self->dir,
                        mdb_strerror(rc));
    return rc == 0 ? 0 : -1;
}

int store_set_cursor(store_t *self, const store_cursor_t *cursor)
{
    MDB_txn *txn = NULL;
    uint8_t buf[16];
    s_put_u64(buf, cursor->last_seq);
    s_put_u64(buf + 8, (uint64_t)cursor->window_end_ms);
    MDB_val key = {.mv_size = strlen(STORE_CURSOR_KEY), .mv_data = STORE_CURSOR_KEY};
    MDB_val val = {.mv_size = sizeof buf, .mv_data = buf};
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_put(txn, self->meta_dbi, &key, &val, 0);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc != 0)
        cairn_log_error("store %s: cannot write the delivery cursor (seq %llu): %s", self->dir,
                        (unsigned long long)cursor->last_seq, mdb_strerror(rc));
    return rc == 0 ? 0 : -1;
}

uint64_t store_event_count(store_t *self)
{
    MDB_txn *txn = NULL;
    MDB_stat stat = {0};
    int rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_stat(txn, self->events_dbi, &stat);
    if (txn)
        mdb_txn_abort(txn);
    if (rc != 0)
        cairn_log_error("store %s: cannot count events: %s", self->dir, mdb_strerror(rc));
    return rc == 0 ? stat.ms_entries : 0;
}
