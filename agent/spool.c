/* spool.c: the agent's durable queue (see spool.h).
 *
 * DESIGN: appends and acks are LMDB write transactions; LMDB's writer lock
 * serializes intake threads against each other and against the shipper, so
 * next_seq, read and advanced while the write transaction is held, needs no
 * lock of its own. next_seq and acked_seq are atomics so that status calls
 * read them without a transaction. Keys are big-endian so LMDB's byte order is
 * sequence order and MDB_APPEND applies. */
#include "spool.h"

#include "cairn_log.h"
#include "cairn_fs.h"
#include "cairn_mem.h"
#include "event.h"

#include <errno.h>
#include <lmdb.h>
#include <stdatomic.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>

#define SPOOL_RESERVE_BYTES (64 * 4096) /* kept free for the deletes of acks */

struct spool {
    MDB_env *env;
    MDB_dbi events;
    MDB_dbi meta;
    char *dir;
    char id[37];               /* spool id, UUID text */
    atomic_uint_fast64_t next_seq;  /* seq of the next append */
    atomic_uint_fast64_t acked_seq; /* highest acked seq */
};

static void s_key(uint64_t seq, uint8_t out[8])
{
    for (int i = 7; i >= 0; i--, seq >>= 8)
        out[i] = (uint8_t)seq;
}

static uint64_t s_seq(const MDB_val *key)
{
    uint64_t seq = 0;
    const uint8_t *p = key->mv_data;
    for (size_t i = 0; i < 8 && i < key->mv_size; i++)
        seq = seq << 8 | p[i];
    return seq;
}

/* Reads the last seq and the acked seq to restore the counters. */
static int s_restore(spool_t *self)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "events", MDB_CREATE, &self->events);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &self->meta);
    uint64_t last = 0, acked = 0;
    if (rc == 0)
        rc = mdb_cursor_open(txn, self->events, &cur);
    if (rc == 0) {
        MDB_val k, v;
        int r = mdb_cursor_get(cur, &k, &v, MDB_LAST);
        if (r == 0)
            last = s_seq(&k);
        else if (r != MDB_NOTFOUND)
            rc = r;
        mdb_cursor_close(cur);
    }
    if (rc == 0) {
        MDB_val k = {5, "acked"}, v;
        int r = mdb_get(txn, self->meta, &k, &v);
        if (r == 0 && v.mv_size == 8)
            acked = s_seq(&v);
        else if (r != 0 && r != MDB_NOTFOUND)
            rc = r;
    }
    if (rc == 0) {
        MDB_val k = {2, "id"}, v;
        int r = mdb_get(txn, self->meta, &k, &v);
        if (r == 0 && v.mv_size == 36)
            memcpy(self->id, v.mv_data, 36);
        else if (r == MDB_NOTFOUND) {
            event_uuid_v4(self->id);
            v = (MDB_val){36, self->id};
            rc = mdb_put(txn, self->meta, &k, &v, 0);
        } else
            rc = r ? r : MDB_CORRUPTED;
    }
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc != 0) {
        cairn_log_error("spool %s: cannot open databases: %s", self->dir, mdb_strerror(rc));
        return -1;
    }
    uint64_t next = (last > acked ? last : acked) + 1;
    atomic_store(&self->next_seq, next);
    atomic_store(&self->acked_seq, acked);
    return 0;
}

/* Pages the map can still give: never used ones plus the free list (LMDB's
 * database 0, whose values are page-number lists led by their count, as
 * mdb_stat -f reads them). LMDB opens database 0 only to read-only
 * transactions, hence a short one of its own (allowed beside the write
 * transaction thanks to MDB_NOTLS). Read only when the file's high-water mark
 * is past half the map, so the common case costs one mdb_env_info. */
static size_t s_available_bytes(spool_t *self)
{
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(self->env, &info);
    mdb_env_stat(self->env, &st);
    size_t total_pages = info.me_mapsize / st.ms_psize;
    size_t unused = total_pages > info.me_last_pgno + 1 ? total_pages - info.me_last_pgno - 1 : 0;
    if (unused > total_pages / 2)
        return unused * st.ms_psize;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    if (mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn) == 0 &&
        mdb_cursor_open(txn, 0, &cur) == 0) {
        MDB_val k, v;
        int r = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        while (r == 0) {
            unused += (size_t)*(const size_t *)v.mv_data;
            r = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(cur);
    }
    if (txn)
        mdb_txn_abort(txn);
    return unused * st.ms_psize;
}

spool_t *spool_new(const char *dir, int64_t map_bytes, bool is_durable)
{
    spool_t *self = cairn_calloc(1, sizeof *self);
    self->dir = cairn_strdup(dir);
    int rc = cairn_mkdir_p(dir, 0750) == 0 ? 0 : errno;
    if (rc == 0)
        rc = mdb_env_create(&self->env);
    if (rc == 0)
        rc = mdb_env_set_mapsize(self->env, (size_t)map_bytes);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(self->env, 4);
    if (rc == 0)
        rc = mdb_env_open(self->env, dir, MDB_NOTLS | (is_durable ? 0 : MDB_NOSYNC), 0600);
    if (rc != 0) {
        cairn_log_error("spool %s: cannot open: %s", dir, mdb_strerror(rc));
        spool_destroy(&self);
    } else if (s_restore(self) != 0)
        spool_destroy(&self);
    else
        cairn_log_info("spool %s: opened (id %s), %llu events pending, next seq %llu", dir, self->id,
                       (unsigned long long)spool_pending_count(self),
                       (unsigned long long)spool_next_seq(self));
    return self;
}

void spool_destroy(spool_t **self_p)
{
    spool_t *self = *self_p;
    if (!self)
        return;
    if (self->env)
        mdb_env_close(self->env);
    free(self->dir);
    free(self);
    *self_p = NULL;
}

int spool_append(spool_t *self, const uint8_t *const *events, const size_t *lens, size_t count,
                 uint64_t *first_seq)
{
    if (count == 0)
        return 0;
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc != 0) {
        cairn_log_error("spool %s: cannot begin append: %s", self->dir, mdb_strerror(rc));
        return rc == MDB_MAP_RESIZED || rc == MDB_MAP_FULL ? SPOOL_FULL : -1;
    }
    /* Keep headroom: deleting acknowledged events copies B-tree pages, so a
     * spool filled to the last page could never be drained. */
    size_t bytes = 0;
    for (size_t i = 0; i < count; i++)
        bytes += lens[i] + 64;
    if (s_available_bytes(self) < 2 * bytes + SPOOL_RESERVE_BYTES) {
        mdb_txn_abort(txn);
        return SPOOL_FULL;
    }
    /* The write transaction is held: no other append can interleave, so the
     * seq read here is the one this commit makes permanent. */
    uint64_t seq = atomic_load(&self->next_seq);
    uint8_t key[8];
    for (size_t i = 0; rc == 0 && i < count; i++) {
        s_key(seq + i, key);
        MDB_val k = {8, key}, v = {lens[i], (void *)events[i]};
        rc = mdb_put(txn, self->events, &k, &v, MDB_APPEND);
    }
    if (rc == 0) {
        /* Advanced before the commit releases the writer lock, so the next
         * append cannot read a stale value. A failed commit leaves a gap in
         * the numbering, which readers and acks tolerate. */
        atomic_store(&self->next_seq, seq + count);
        rc = mdb_txn_commit(txn);
    } else
        mdb_txn_abort(txn);
    if (rc == MDB_MAP_FULL)
        return SPOOL_FULL;
    if (rc != 0) {
        cairn_log_error("spool %s: append of %zu events failed: %s", self->dir, count,
                        mdb_strerror(rc));
        return -1;
    }
    if (first_seq)
        *first_seq = seq;
    return 0;
}

long spool_read(spool_t *self, uint64_t from_seq, size_t max_count, size_t max_bytes,
                spool_read_fn *fn, void *ctx)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    long passed = 0;
    int rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_cursor_open(txn, self->events, &cur);
    if (rc == 0) {
        uint8_t key[8];
        s_key(from_seq, key);
        MDB_val k = {8, key}, v;
        size_t bytes = 0;
        int r = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        while (r == 0 && (size_t)passed < max_count) {
            if (passed > 0 && bytes + v.mv_size > max_bytes)
                break;
            bytes += v.mv_size;
            passed++;
            if (fn(ctx, s_seq(&k), v.mv_data, v.mv_size) != 0)
                break;
            r = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        if (r != 0 && r != MDB_NOTFOUND)
            rc = r;
        mdb_cursor_close(cur);
    }
    if (txn)
        mdb_txn_abort(txn);
    if (rc != 0) {
        cairn_log_error("spool %s: read from %llu failed: %s", self->dir,
                        (unsigned long long)from_seq, mdb_strerror(rc));
        return -1;
    }
    return passed;
}

int spool_ack_through(spool_t *self, uint64_t through_seq)
{
    uint64_t last = atomic_load(&self->next_seq) - 1;
    if (through_seq > last)
        through_seq = last; /* an ack can never cover what was not appended */
    if (through_seq <= atomic_load(&self->acked_seq))
        return 0;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_cursor_open(txn, self->events, &cur);
    if (rc == 0) {
        MDB_val k, v;
        int r = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        while (r == 0 && s_seq(&k) <= through_seq) {
            r = mdb_cursor_del(cur, 0);
            if (r == 0)
                r = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        if (r != 0 && r != MDB_NOTFOUND)
            rc = r;
        mdb_cursor_close(cur);
    }
    uint8_t acked[8];
    s_key(through_seq, acked);
    if (rc == 0) {
        MDB_val k = {5, "acked"}, v = {8, acked};
        rc = mdb_put(txn, self->meta, &k, &v, 0);
    }
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc != 0) {
        cairn_log_error("spool %s: ack through %llu failed: %s", self->dir,
                        (unsigned long long)through_seq, mdb_strerror(rc));
        return -1;
    }
    atomic_store(&self->acked_seq, through_seq);
    return 0;
}

const char *spool_id(const spool_t *self)
{
    return self->id;
}

uint64_t spool_next_seq(spool_t *self)
{
    return atomic_load(&self->next_seq);
}

uint64_t spool_acked_seq(spool_t *self)
{
    return atomic_load(&self->acked_seq);
}

uint64_t spool_pending_count(spool_t *self)
{
    return atomic_load(&self->next_seq) - 1 - atomic_load(&self->acked_seq);
}
