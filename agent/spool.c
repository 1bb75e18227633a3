/* spool.c: the agent's durable queue (see spool.h).
 *
 * DESIGN: appends and acks are LMDB write transactions; LMDB's writer lock
 * serializes intake threads against each other and against the shipper, so
 * next_seq, read and advanced while the write transaction is held, needs no
 * lock of its own. next_seq and acked_seq are atomics so that status calls
 * read them without a transaction.
 *
 * Group commit: concurrent spool_append calls share one transaction, so one
 * fsync makes many HTTP requests durable. Each caller queues its request; a
 * caller that finds no leader becomes it, takes the whole queue, writes and
 * commits it, marks every request done and wakes the others. Requests that
 * arrive meanwhile form the next group. No answer leaves before its commit.
 * Keys are big-endian so LMDB's byte order is sequence order and MDB_APPEND
 * applies.
 *
 * Blocks: a record holds a run of consecutive events, not one (key: the
 * first one's seq; value: a block, see s_block_t), up to SPOOL_BLOCK_BYTES
 * of one request. Stored one per record, events of ~1.5 KB filled leaf pages
 * that LMDB took one by one from its free list, wherever acked events had
 * freed them: nearly every page of a commit was its own 4 KB write, and the
 * disk's random-write rate (~22,000 pages/s on the benchmark VM, against
 * 360,000 sequential) bounded the agent. A block is one value of many pages,
 * which LMDB keeps contiguous (overflow pages): one write per block, and one
 * B-tree insert and delete per block instead of per event. An ack deletes
 * the blocks it covers whole; a block it covers in part stays until a later
 * ack covers the rest, and reads skip its acked head. A record written one
 * event per value by an older agent reads as a block of one (an older agent
 * cannot read blocks: there is no way back). A block whose header does not
 * fit its size (LMDB keeps no checksums) is logged and counted, its events
 * are lost: reads skip it, an ack past its first seq deletes it, and if it
 * is the newest, seqs go on after the most it could hold, so that no seq is
 * ever handed out twice.
 *
 * Page cache: appends grow the file, and every page written is a new page
 * of the page cache. When the aggregator is away the spool grows by GBs,
 * written once and read once, much later. Kept cached, that backlog takes
 * fresh memory for every commit, and fresh memory can be dear: on a VM
 * whose freed memory goes back to the host (virtio-balloon free page
 * reporting, as on the benchmark machine), a first touch can be a fault in
 * the host. There, at times, the copy in pwrite ran 3 to 10 times slower
 * (28 % of the agent's time in copy_folio_from_iter_atomic against 1.5 %),
 * halving the agent's rate in any run that outgrew the memory freed just
 * before it, whatever the spool held: 71,732 events/s into a fresh spool
 * right after 1.8 GB of page cache was taken, 143,000 to 168,000
 * otherwise. So after each durable group commit, the leader
 * tells the kernel to drop the committed pages that lie more than
 * SPOOL_CACHE_KEEP_BYTES below the end of the file (POSIX_FADV_DONTNEED,
 * as PostgreSQL does for WAL segments it will not read again): the kernel
 * reuses those pages for the next commits, and the shipper, which reads
 * near the end while it keeps up, still finds its events cached. They are
 * clean (fdatasync'd) and only unmapped ones are dropped, so this changes
 * nothing but where a later read comes from. */
#include "spool.h"

#include "cairn_fs.h"
#include "cairn_log.h"
#include "cairn_mem.h"
#include "cairn_time.h"
#include "event.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define SPOOL_RESERVE_BYTES (64 * 4096) /* kept free for the deletes of acks */
#define SPOOL_CACHE_KEEP_BYTES (128 << 20) /* newest part of the file left in the page cache */
#define SPOOL_CACHE_STEP_BYTES (32 << 20)  /* dropped from the page cache at a time */
#define SPOOL_UNMAP_EVENTS 64 /* events read or deleted between two unmaps */
#define SPOOL_UNMAP_ALL_MS 100 /* the whole map is unmapped at most this often... */
#define SPOOL_UNMAP_ALL_CHEAP_US 50 /* ...unless that takes less than this */
#define SPOOL_UNMAP_ALIGN (2 << 20) /* what one fault may map around it, at most */
#define SPOOL_DROP_GAP (64 << 10)   /* deleted blocks this close are dropped as one range */
#define SPOOL_DROP_BYTES (32 << 20) /* deleted bytes dropped from the page cache at a time */
#define SPOOL_PREFETCH_READS 3 /* a read asks for this many reads' bytes of blocks */
#define SPOOL_DROP_BACKLOG 100000   /* events left after an ack that make it drop what it deletes */
#define SPOOL_BLOCK_BYTES (256 << 10) /* events of one block, at most (one event may be more) */
#define SPOOL_BLOCK_MAGIC 0x00 /* a block's first byte: never a packed Event's (field 0) */
#define SPOOL_BLOCK_KIND  'B'
#define SPOOL_BLOCK_HEAD  8    /* magic, kind, version, 0, count (u32 LE); then the lengths */
#define SPOOL_BLOCK_MAX_EVENTS 4096 /* events of one block, at most */
#define SPOOL_CORRUPT (-30000) /* s_block_parse: the header does not fit the value */

/* One caller's spool_append, queued for the next group commit. Lives on the
 * caller's stack until is_done. */
typedef struct s_append s_append_t;
struct s_append {
    const uint8_t *const *events;
    const size_t *lens;
    size_t count;
    size_t bytes;          /* room it needs, with per-entry overhead */
    const spool_state_t *state; /* written in the same transaction, or NULL */
    uint64_t first_seq;    /* set by the leader */
    int rc;                /* set by the leader */
    bool is_done;          /* set by the leader, under queue_lock */
    s_append_t *next;
};

struct spool {
    MDB_env *env;
    MDB_dbi events;
    MDB_dbi meta;
    char *dir;
    char id[37];               /* spool id, UUID text */
    bool is_durable;           /* commits are fdatasync'd */
    size_t page_bytes;         /* LMDB's page size */
    void *map_addr;              /* LMDB's map of data.mdb (s_find_map), or NULL */
    size_t map_len;
    uint64_t cache_kept_from;  /* file offset below which committed pages were dropped
                                * from the page cache; the leader's (see Page cache) */
    pthread_mutex_t queue_lock; /* guards the append queue and has_leader */
    pthread_cond_t queue_done;  /* a group was committed */
    bool is_queue_ready;
    s_append_t *queue_head;    /* appends waiting for the next group commit */
    s_append_t *queue_tail;
    bool has_leader;           /* a thread is committing a group */
    uint64_t group_commits;    /* transactions made by spool_append */
    atomic_uint_fast64_t next_seq;  /* seq of the next append */
    atomic_uint_fast64_t acked_seq; /* highest acked seq */
    atomic_uint_fast64_t corrupt_blocks; /* blocks found corrupt (see Blocks) */
    atomic_int_fast64_t unmapped_all_us;   /* when spool_unmap last ran from inside */
    atomic_int_fast64_t unmap_all_cost_us; /* and how long it took */
    uint64_t drop_from;        /* file range of deleted blocks not yet dropped from the */
    uint64_t drop_to;          /* page cache (see s_drop_deleted); the acker's */
    uint64_t drop_backlog;     /* SPOOL_DROP_BACKLOG, or spool_set_drop_backlog's */
    uint64_t prefetch_seq;     /* records from this key on were not prefetched yet */
    uint64_t prefetch_from;    /* the last read's first record (both the reader's; see
                                * s_prefetch) */
    pthread_mutex_t read_lock; /* guards read_buf; made with queue_lock */
    uint8_t *read_buf;         /* the record spool_read is at, copied (see s_copy_value) */
    size_t read_cap;
};

/* Mapped bytes a read or an ack went through since its last unmap. */
typedef struct {
    uintptr_t lo, hi;
} s_span_t;

#define S_SPAN_EMPTY ((s_span_t){UINTPTR_MAX, 0})

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

/* A record of the events database, parsed: count events, the i-th of
 * lens[i] bytes (u32 LE at lens + 4 i), back to back from data. */
typedef struct {
    size_t count;
    const uint8_t *lens;
    const uint8_t *data;
    size_t data_len;
    bool is_single; /* an older agent's record: one event, the whole value */
} s_block_t;

static uint32_t s_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void s_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

/* Parses a record; SPOOL_CORRUPT if its header does not fit its size. */
static int s_block_parse(const MDB_val *v, s_block_t *block)
{
    const uint8_t *p = v->mv_data;
    *block = (s_block_t){0};
    if (v->mv_size < 2 || p[0] != SPOOL_BLOCK_MAGIC || p[1] != SPOOL_BLOCK_KIND) {
        *block = (s_block_t){.count = 1, .data = p, .data_len = v->mv_size, .is_single = true};
        return 0;
    }
    if (v->mv_size < SPOOL_BLOCK_HEAD || p[2] != 1)
        return SPOOL_CORRUPT;
    size_t count = s_u32(p + 4);
    if (count == 0 || count > SPOOL_BLOCK_MAX_EVENTS || count > (v->mv_size - SPOOL_BLOCK_HEAD) / 4)
        return SPOOL_CORRUPT;
    *block = (s_block_t){.count = count, .lens = p + SPOOL_BLOCK_HEAD,
                         .data = p + SPOOL_BLOCK_HEAD + 4 * count,
                         .data_len = v->mv_size - SPOOL_BLOCK_HEAD - 4 * count};
    size_t total = 0;
    for (size_t i = 0; i < count; i++)
        total += s_u32(block->lens + 4 * i);
    return total == block->data_len ? 0 : SPOOL_CORRUPT;
}

/* Logs and counts the corrupt block of key (see Blocks). */
static void s_block_corrupt(spool_t *self, const MDB_val *key, const MDB_val *v, const char *what)
{
    atomic_fetch_add(&self->corrupt_blocks, 1);
    cairn_log_error("spool %s: the block at seq %llu is corrupt (a header that does not fit its "
                    "%zu bytes): its events are lost; %s",
                    self->dir, (unsigned long long)s_seq(key), v->mv_size, what);
}

static size_t s_block_len(const s_block_t *block, size_t i)
{
    return block->is_single ? block->data_len : s_u32(block->lens + 4 * i);
}

/* Writes events[from, to) as one block under seq, in place (MDB_RESERVE). */
static int s_put_block(spool_t *self, MDB_txn *txn, uint64_t seq, const s_append_t *r,
                       size_t from, size_t to)
{
    size_t count = to - from, len = SPOOL_BLOCK_HEAD + 4 * count;
    for (size_t i = from; i < to; i++)
        len += r->lens[i];
    uint8_t key[8];
    s_key(seq, key);
    MDB_val k = {8, key}, v = {len, NULL};
    int rc = mdb_put(txn, self->events, &k, &v, MDB_APPEND | MDB_RESERVE);
    if (rc != 0)
        return rc;
    uint8_t *p = v.mv_data;
    p[0] = SPOOL_BLOCK_MAGIC;
    p[1] = SPOOL_BLOCK_KIND;
    p[2] = 1;
    p[3] = 0;
    s_put_u32(p + 4, (uint32_t)count);
    uint8_t *out = p + SPOOL_BLOCK_HEAD + 4 * count;
    for (size_t i = from; i < to; i++) {
        s_put_u32(p + SPOOL_BLOCK_HEAD + 4 * (i - from), (uint32_t)r->lens[i]);
        memcpy(out, r->events[i], r->lens[i]);
        out += r->lens[i];
    }
    return 0;
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
        s_block_t block;
        int r = mdb_cursor_get(cur, &k, &v, MDB_LAST);
        if (r == 0)
            r = s_block_parse(&v, &block);
        if (r == 0)
            last = s_seq(&k) + block.count - 1;
        else if (r == SPOOL_CORRUPT) {
            s_block_corrupt(self, &k, &v, "seqs go on after the most it could hold");
            last = s_seq(&k) + SPOOL_BLOCK_MAX_EVENTS - 1;
        } else if (r != MDB_NOTFOUND)
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

/* Bytes of the file that committed transactions reach. */
static uint64_t s_file_end(spool_t *self)
{
    MDB_envinfo info;
    mdb_env_info(self->env, &info);
    return ((uint64_t)info.me_last_pgno + 1) * self->page_bytes;
}

/* Drops old committed pages from the page cache (see the page cache note at
 * the top). Only after a durable commit: then the pages are clean. The
 * leader's. */
static void s_drop_cache(spool_t *self)
{
    mdb_filehandle_t fd;
    if (mdb_env_get_fd(self->env, &fd) == 0)
        cairn_fs_drop_cache(fd, s_file_end(self), &self->cache_kept_from, SPOOL_CACHE_KEEP_BYTES,
                            SPOOL_CACHE_STEP_BYTES);
}

/* Reading events back maps their pages, and a mapped page counts in the
 * agent's RSS until it is unmapped: without this, RSS grew with everything
 * ever shipped, up to the whole spool (hundreds of MB for a process whose
 * own memory is ~20 MB). MADV_DONTNEED on a shared file mapping only drops
 * the page table entries: the pages stay in the page cache, and a later read
 * (LMDB's, from any thread, even one reading right now) faults them back
 * unchanged. But the kernel walks every page table the map has had, and
 * they stay: once a 16 GB spool had been read through, the whole-map call
 * took 27 % of the shipper's time and a 6,000,000-event drain fell from
 * 103,000 to 58,000 events/s. So reads copy blocks with pread, mapping
 * none of them (s_copy_value), acks unmap just the span of the block heads
 * they went through (s_span_t), and the whole map, for the tree
 * pages LMDB's descents map (each maps its large folio, up to 2 MB: 41 MB
 * of peak RSS in a steady run with the whole map unmapped only every
 * 100 ms), after each read, ack and commit while that is cheap (a small
 * spool), and at most ten times a second once it is not (a 16 GB map read
 * through takes ~0.2 ms): s_unmap_now_and_then. */
void spool_unmap(spool_t *self)
{
    if (self->map_addr)
        madvise(self->map_addr, self->map_len, MADV_DONTNEED); /* advice: failing changes nothing */
}

static int64_t s_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The whole map, when the last call took under SPOOL_UNMAP_ALL_CHEAP_US
 * (a small spool: every call, as the steady state's RSS wants), else at
 * most every SPOOL_UNMAP_ALL_MS. */
static void s_unmap_now_and_then(spool_t *self)
{
    int64_t now_us = s_mono_us();
    int_fast64_t last_us = atomic_load(&self->unmapped_all_us);
    if ((atomic_load(&self->unmap_all_cost_us) < SPOOL_UNMAP_ALL_CHEAP_US ||
         now_us - last_us >= SPOOL_UNMAP_ALL_MS * 1000) &&
        atomic_compare_exchange_strong(&self->unmapped_all_us, &last_us, now_us)) {
        spool_unmap(self);
        atomic_store(&self->unmap_all_cost_us, s_mono_us() - now_us);
    }
}

/* Unmaps the pages span covers (within the map), and empties it. A fault
 * maps the cached pages around it too: fault-around (64 KiB by default)
 * and, where the page cache holds large folios, the whole folio (up to
 * 2 MiB). Those are unmapped with it. */
static void s_span_unmap(spool_t *self, s_span_t *span)
{
    uintptr_t map_lo = (uintptr_t)self->map_addr, map_hi = map_lo + self->map_len;
    uintptr_t lo = span->lo & ~(uintptr_t)(SPOOL_UNMAP_ALIGN - 1);
    uintptr_t hi = (span->hi + SPOOL_UNMAP_ALIGN - 1) & ~(uintptr_t)(SPOOL_UNMAP_ALIGN - 1);
    if (lo < map_lo)
        lo = map_lo;
    if (hi > map_hi)
        hi = map_hi;
    if (self->map_addr && lo < hi)
        madvise((void *)lo, hi - lo, MADV_DONTNEED); /* advice: failing changes nothing */
    *span = S_SPAN_EMPTY;
}

/* Adds len bytes at data to span. Blocks need not lie in file order (LMDB
 * reuses freed pages anywhere): a range far from the span unmaps it first,
 * so that a span stays a few MB. */
static void s_span_add(spool_t *self, s_span_t *span, const void *data, size_t len)
{
    uintptr_t lo = (uintptr_t)data, hi = lo + len;
    if (span->lo < span->hi && (hi + SPOOL_UNMAP_ALIGN < span->lo || lo > span->hi + SPOOL_UNMAP_ALIGN))
        s_span_unmap(self, span);
    if (lo < span->lo)
        span->lo = lo;
    if (hi > span->hi)
        span->hi = hi;
}

/* Does the map hold [p, p + len)? A write transaction's values on pages it
 * changed are in LMDB's own copies, not in the map. */
static bool s_is_mapped(const spool_t *self, const void *p, size_t len)
{
    uintptr_t lo = (uintptr_t)self->map_addr, at = (uintptr_t)p;
    return self->map_addr && at >= lo && at - lo <= self->map_len && len <= self->map_len - (at - lo);
}

/* Reads len bytes of data.mdb at the place addr maps, with pread: the
 * pages are copied from the page cache and never mapped. Returns 0, or an
 * errno. */
static int s_pread_mapped(spool_t *self, const void *addr, size_t len, uint8_t *out)
{
    mdb_filehandle_t fd;
    if (mdb_env_get_fd(self->env, &fd) != 0)
        return EBADF;
    off_t at = (off_t)((const uint8_t *)addr - (const uint8_t *)self->map_addr);
    for (size_t got = 0; got < len;) {
        ssize_t n = pread(fd, out + got, len - got, at + (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO;
        got += (size_t)n;
    }
    return 0;
}

/* Copies a record for spool_read into read_buf (read_lock held) and points
 * v at the copy. Read through the map, a block's pages were mapped (with
 * the large folios around them, up to 2 MB a fault), then unmapped again
 * by madvise, which interrupts every other thread of the agent to flush
 * its TLB: the shipper spent about as long in those faults and unmaps as
 * in copying the events out. pread copies the same bytes from the page
 * cache without mapping anything. LMDB hands out a value's place without
 * reading it, and a read transaction keeps its pages unchanged in the file
 * too, so a pread of that place reads the same bytes. Without the map's
 * address (s_find_map), the value is read where it is. Returns 0, or an
 * errno. */
static int s_copy_value(spool_t *self, MDB_val *v)
{
    if (!s_is_mapped(self, v->mv_data, v->mv_size))
        return 0;
    if (v->mv_size > self->read_cap) {
        self->read_cap = v->mv_size > SPOOL_BLOCK_BYTES ? v->mv_size : SPOOL_BLOCK_BYTES;
        free(self->read_buf);
        self->read_buf = cairn_malloc(self->read_cap);
    }
    int rc = s_pread_mapped(self, v->mv_data, v->mv_size, self->read_buf);
    if (rc == 0)
        v->mv_data = self->read_buf;
    return rc;
}

/* How many events the record v holds (s_block_parse's count), reading its
 * header with pread rather than through the map (see s_copy_value); the
 * lengths are not checked against the size, as reads check them.
 * SPOOL_CORRUPT if the header does not fit the size, or an errno. */
static int s_block_count(spool_t *self, const MDB_val *v, size_t *count)
{
    uint8_t head[SPOOL_BLOCK_HEAD];
    size_t n = v->mv_size < sizeof head ? v->mv_size : sizeof head;
    bool is_mapped = s_is_mapped(self, v->mv_data, n);
    int rc = is_mapped ? s_pread_mapped(self, v->mv_data, n, head) : 0;
    if (rc != 0)
        return rc;
    const uint8_t *p = is_mapped ? head : v->mv_data;
    *count = 1;
    if (n < 2 || p[0] != SPOOL_BLOCK_MAGIC || p[1] != SPOOL_BLOCK_KIND)
        return 0; /* an older agent's record: one event */
    *count = 0;
    if (n < SPOOL_BLOCK_HEAD || p[2] != 1)
        return SPOOL_CORRUPT;
    size_t c = s_u32(p + 4);
    if (c == 0 || c > SPOOL_BLOCK_MAX_EVENTS || c > (v->mv_size - SPOOL_BLOCK_HEAD) / 4)
        return SPOOL_CORRUPT;
    *count = c;
    return 0;
}

/* Pages the map can still give: never used ones plus the free list (LMDB's
 * database 0, whose values are page-number lists led by their count, as
 * mdb_stat -f reads them). LMDB opens database 0 only to read-only
 * transactions, hence a short one of its own (allowed beside the write
 * transaction thanks to MDB_NOTLS). Unless is_exact, the free list is read
 * only when the file's high-water mark is past half the map, so the common
 * case of an append costs one mdb_env_info. Sets *page_bytes and *total. */
static size_t s_free_pages(spool_t *self, bool is_exact, size_t *page_bytes, size_t *total)
{
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(self->env, &info);
    mdb_env_stat(self->env, &st);
    *page_bytes = st.ms_psize;
    *total = info.me_mapsize / st.ms_psize;
    size_t unused = *total > info.me_last_pgno + 1 ? *total - info.me_last_pgno - 1 : 0;
    if (!is_exact && unused > *total / 2)
        return unused;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    if (mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn) == 0 &&
        mdb_cursor_open(txn, 0, &cur) == 0) {
        MDB_val k, v;
        s_span_t span = S_SPAN_EMPTY; /* the first page of each record was mapped */
        int r = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        while (r == 0) {
            unused += (size_t)*(const size_t *)v.mv_data;
            s_span_add(self, &span, v.mv_data, sizeof(size_t));
            r = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(cur);
        s_span_unmap(self, &span);
    }
    if (txn)
        mdb_txn_abort(txn);
    return unused;
}

/* Acked blocks are never read again, but the reads of a drain brought them
 * into the page cache, and there they stayed: a 6,000,000-event drain
 * filled 8 GB of page cache with them, every new page of which (on a VM that
 * gives freed memory back to the host) faulted in the host, and the store's
 * writes on the same machine slowed with it (drain 89,000 events/s; with
 * the spool's cache dropped each second, 109,000). So the blocks an ack
 * deletes are dropped from the page cache, as the appends' old pages are
 * (see the page cache note at the top): their file ranges are gathered
 * while they are contiguous, up to SPOOL_DROP_BYTES, since the kernel drops
 * only folios wholly inside a range (large folios: up to 2 MB). Dropping
 * only advises: dirty and mapped pages stay, and reading a dropped page
 * brings it back from the disk. Only while a backlog is drained (over
 * SPOOL_DROP_BACKLOG events left): in the steady state, the next appends
 * reuse the deleted pages at once, and reuse them best while cached
 * (dropping them there cost the agent 8 % more CPU and 5 % of the rate). */
static void s_drop_flush(spool_t *self)
{
    mdb_filehandle_t fd;
    if (self->drop_to > self->drop_from && mdb_env_get_fd(self->env, &fd) == 0) {
        /* A mapped page is not dropped, and a tree page LMDB read maps the
         * whole large folio around it, blocks included. */
        spool_unmap(self);
        atomic_store(&self->unmapped_all_us, s_mono_us()); /* s_unmap_now_and_then need not */
        posix_fadvise(fd, (off_t)self->drop_from, (off_t)(self->drop_to - self->drop_from),
                      POSIX_FADV_DONTNEED);
    }
    /* What is left pending is the huge page the range's end cuts through: if
     * the next blocks follow, it goes with them. */
    self->drop_from = self->drop_to - self->drop_to % SPOOL_UNMAP_ALIGN;
}

static void s_drop_deleted(spool_t *self, const MDB_val *v)
{
    if (!self->map_addr)
        return;
    uint64_t from = (uint64_t)((const uint8_t *)v->mv_data - (const uint8_t *)self->map_addr);
    uint64_t to = from + v->mv_size;
    from -= from % self->page_bytes;
    if (to % self->page_bytes)
        to += self->page_bytes - to % self->page_bytes;
    if (from > self->drop_to + SPOOL_DROP_GAP || to + SPOOL_DROP_GAP < self->drop_from) {
        s_drop_flush(self);
        self->drop_from = from; /* a new range */
        self->drop_to = to;
    }
    if (from < self->drop_from)
        self->drop_from = from;
    if (to > self->drop_to)
        self->drop_to = to;
    if (self->drop_to - self->drop_from >= SPOOL_DROP_BYTES)
        s_drop_flush(self);
}

/* Finds LMDB's map of data.mdb in /proc/self/maps, by device and inode
 * (mdb_env_info's me_mapaddr is only set for MDB_FIXEDMAP). Leaves
 * map_addr NULL, and spool_unmap idle, if it is not found. */
static void s_find_map(spool_t *self)
{
    char path[4096], line[4096 + 256];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", self->dir);
    FILE *maps = stat(path, &st) == 0 ? fopen("/proc/self/maps", "r") : NULL;
    while (maps && fgets(line, sizeof line, maps)) {
        unsigned long start, end, ino;
        unsigned dev_major, dev_minor;
        if (sscanf(line, "%lx-%lx %*s %*s %x:%x %lu", &start, &end, &dev_major, &dev_minor,
                   &ino) == 5 &&
            ino == (unsigned long)st.st_ino && dev_major == major(st.st_dev) &&
            dev_minor == minor(st.st_dev) && end - start > self->map_len) {
            self->map_addr = (void *)start;
            self->map_len = end - start;
        }
    }
    if (maps)
        fclose(maps);
    /* No readahead on a fault: see s_prefetch. */
    if (self->map_addr)
        madvise(self->map_addr, self->map_len, MADV_RANDOM); /* advice: failing changes nothing */
}

static size_t s_available_bytes(spool_t *self)
{
    size_t page_bytes, total;
    return s_free_pages(self, false, &page_bytes, &total) * page_bytes;
}

void spool_size(spool_t *self, uint64_t *used_bytes, uint64_t *map_bytes)
{
    size_t page_bytes, total;
    size_t free_pages = s_free_pages(self, true, &page_bytes, &total);
    *map_bytes = (uint64_t)total * page_bytes;
    *used_bytes = (uint64_t)(total - free_pages) * page_bytes;
}

spool_t *spool_new(const char *dir, int64_t map_bytes, bool is_durable)
{
    spool_t *self = cairn_calloc(1, sizeof *self);
    self->dir = cairn_strdup(dir);
    self->is_durable = is_durable;
    self->drop_backlog = SPOOL_DROP_BACKLOG;
    self->is_queue_ready = pthread_mutex_init(&self->queue_lock, NULL) == 0 &&
                           pthread_cond_init(&self->queue_done, NULL) == 0 &&
                           pthread_mutex_init(&self->read_lock, NULL) == 0;
    int rc = !self->is_queue_ready ? ENOMEM : cairn_mkdir_p(dir, 0750) == 0 ? 0 : errno;
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
    else {
        MDB_stat st;
        mdb_env_stat(self->env, &st);
        self->page_bytes = st.ms_psize;
        /* What the file held at open is left as it is: only pages this
         * process commits are dropped. */
        self->cache_kept_from = s_file_end(self);
        s_find_map(self);
        cairn_log_info("spool %s: opened (id %s), %llu events pending, next seq %llu", dir,
                       self->id, (unsigned long long)spool_pending_count(self),
                       (unsigned long long)spool_next_seq(self));
    }
    return self;
}

void spool_set_drop_backlog(spool_t *self, uint64_t events)
{
    self->drop_backlog = events;
}

void spool_destroy(spool_t **self_p)
{
    spool_t *self = *self_p;
    if (!self)
        return;
    if (self->env)
        mdb_env_close(self->env);
    if (self->is_queue_ready) {
        pthread_mutex_destroy(&self->queue_lock);
        pthread_cond_destroy(&self->queue_done);
        pthread_mutex_destroy(&self->read_lock);
    }
    free(self->read_buf);
    free(self->dir);
    free(self);
    *self_p = NULL;
}

/* Meta keys of caller state are "state:" + the caller's key. */
static int s_state_key(const char *key, char *out, size_t size)
{
    int n = snprintf(out, size, "state:%s", key);
    return n > 0 && (size_t)n < size ? n : -1;
}

static int s_put_state(spool_t *self, MDB_txn *txn, const spool_state_t *state)
{
    char name[SPOOL_STATE_KEY_MAX + 8];
    int n = s_state_key(state->key, name, sizeof name);
    if (n < 0)
        return EINVAL;
    MDB_val k = {(size_t)n, name}, v = {state->len, (void *)state->value};
    return mdb_put(txn, self->meta, &k, &v, 0);
}

/* Writes a group of appends in one transaction (see the group commit note
 * at the top). Sets each request's rc and first_seq. */
static void s_commit_group(spool_t *self, s_append_t *group)
{
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc != 0) {
        cairn_log_error("spool %s: cannot begin append: %s", self->dir, mdb_strerror(rc));
        for (s_append_t *r = group; r; r = r->next)
            r->rc = rc == MDB_MAP_FULL ? SPOOL_FULL : -1;
        return;
    }
    /* Keep headroom: deleting acknowledged events copies B-tree pages, so a
     * spool filled to the last page could never be drained. Requests that
     * do not fit are answered SPOOL_FULL; the others still go in. */
    size_t available = s_available_bytes(self), wanted = SPOOL_RESERVE_BYTES;
    /* The write transaction is held: no other append can interleave, so the
     * seq read here is the one this commit makes permanent. */
    uint64_t seq = atomic_load(&self->next_seq);
    size_t written = 0;
    for (s_append_t *r = group; rc == 0 && r; r = r->next) {
        if (r->count && wanted + 2 * r->bytes > available) {
            r->rc = SPOOL_FULL;
            continue;
        }
        wanted += 2 * r->bytes;
        r->first_seq = seq;
        for (size_t from = 0, to; rc == 0 && from < r->count; from = to) {
            size_t bytes = r->lens[from] + 4;
            for (to = from + 1; to < r->count && to - from < SPOOL_BLOCK_MAX_EVENTS &&
                                bytes + r->lens[to] + 4 <= SPOOL_BLOCK_BYTES;
                 to++)
                bytes += r->lens[to] + 4;
            rc = s_put_block(self, txn, seq, r, from, to);
            seq += to - from;
        }
        if (rc == 0 && r->state)
            rc = s_put_state(self, txn, r->state);
        r->rc = 0;
        written++;
    }
    if (rc == 0 && written) {
        /* Advanced before the commit releases the writer lock, so the next
         * group cannot read a stale value. A failed commit leaves a gap in
         * the numbering, which readers and acks tolerate. */
        atomic_store(&self->next_seq, seq);
        rc = mdb_txn_commit(txn);
        if (rc == 0 && self->is_durable)
            s_drop_cache(self);
        s_unmap_now_and_then(self); /* the pages the commit's B-tree descents read */
    } else
        mdb_txn_abort(txn);
    if (rc != 0) {
        if (rc != MDB_MAP_FULL)
            cairn_log_error("spool %s: append of %zu requests failed: %s", self->dir, written,
                            mdb_strerror(rc));
        for (s_append_t *r = group; r; r = r->next)
            if (r->rc == 0)
                r->rc = rc == MDB_MAP_FULL ? SPOOL_FULL : -1;
    }
}

int spool_append(spool_t *self, const uint8_t *const *events, const size_t *lens, size_t count,
                 uint64_t *first_seq)
{
    return spool_append_with_state(self, events, lens, count, NULL, first_seq);
}

int spool_append_with_state(spool_t *self, const uint8_t *const *events, const size_t *lens,
                            size_t count, const spool_state_t *state, uint64_t *first_seq)
{
    if (count == 0 && !state)
        return 0;
    if (state && (strlen(state->key) > SPOOL_STATE_KEY_MAX || state->len > SPOOL_STATE_MAX_BYTES))
        return -1;
    s_append_t request = {.events = events, .lens = lens, .count = count, .state = state};
    for (size_t i = 0; i < count; i++) {
        if (lens[i] > UINT32_MAX) {
            cairn_log_error("spool %s: an event of %zu bytes is over a block's limit", self->dir,
                            lens[i]);
            return -1;
        }
        request.bytes += lens[i] + 64;
    }
    pthread_mutex_lock(&self->queue_lock);
    if (self->queue_tail)
        self->queue_tail->next = &request;
    else
        self->queue_head = &request;
    self->queue_tail = &request;
    while (!request.is_done) {
        if (self->has_leader) {
            pthread_cond_wait(&self->queue_done, &self->queue_lock);
            continue;
        }
        /* Lead: take everything queued (our request included) and commit it. */
        self->has_leader = true;
        s_append_t *group = self->queue_head;
        self->queue_head = self->queue_tail = NULL;
        pthread_mutex_unlock(&self->queue_lock);
        s_commit_group(self, group);
        pthread_mutex_lock(&self->queue_lock);
        /* A follower may return (and its request vanish) as soon as it sees
         * is_done, so next is read first. */
        for (s_append_t *r = group, *next; r; r = next) {
            next = r->next;
            r->is_done = true;
        }
        self->has_leader = false;
        self->group_commits++;
        pthread_cond_broadcast(&self->queue_done);
    }
    pthread_mutex_unlock(&self->queue_lock);
    if (request.rc == 0 && first_seq)
        *first_seq = request.first_seq;
    return request.rc;
}

/* Places cur on the record holding from_seq, or else on the first record
 * after it; sets *skip to the events of that record before from_seq.
 * Returns 0, MDB_NOTFOUND (nothing from from_seq on) or an LMDB error. */
static int s_seek(spool_t *self, MDB_cursor *cur, uint64_t from_seq, MDB_val *k, MDB_val *v,
                  size_t *skip)
{
    uint8_t key[8];
    s_key(from_seq, key);
    *k = (MDB_val){8, key};
    *skip = 0;
    int r = mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
    if (r == 0 && s_seq(k) == from_seq)
        return 0;
    if (r != 0 && r != MDB_NOTFOUND)
        return r;
    /* The record before may hold from_seq in its middle. */
    bool is_after = r == 0;
    r = mdb_cursor_get(cur, k, v, is_after ? MDB_PREV : MDB_LAST);
    if (r == 0) {
        size_t count;
        r = s_block_count(self, v, &count);
        if (r == SPOOL_CORRUPT)
            return 0; /* the read reports it */
        if (r != 0)
            return r;
        if (s_seq(k) + count > from_seq) {
            *skip = (size_t)(from_seq - s_seq(k));
            return 0;
        }
    } else if (r != MDB_NOTFOUND)
        return r;
    if (!is_after)
        return MDB_NOTFOUND;
    return mdb_cursor_get(cur, k, v, r == 0 ? MDB_NEXT : MDB_FIRST);
}

/* Reading ahead. A fault on a page that is not cached reads the
 * read_ahead_kb around it (8 MB on the benchmark machine), half of it
 * behind: in a drain, blocks already read, acked and dropped (the agent read
 * 1.6 times what it shipped), and around each tree page, 8 MB that an ack
 * had just dropped. So the map has no readahead (MADV_RANDOM, as LMDB's
 * MDB_NORDAHEAD), and a read first asks the kernel for the blocks it is
 * about to read and the next ones (POSIX_FADV_WILLNEED: the reads are
 * started, not waited for), each block's pages and no others. Blocks
 * written lately are cached: asking costs a look-up. */
static void s_prefetch(spool_t *self, MDB_txn *txn, MDB_val *from_key, size_t bytes)
{
    mdb_filehandle_t fd;
    MDB_cursor *cur = NULL;
    if (!self->map_addr || mdb_env_get_fd(self->env, &fd) != 0 ||
        mdb_cursor_open(txn, self->events, &cur) != 0)
        return;
    MDB_val k = *from_key, v;
    uint64_t lo = 0, hi = 0, seen = 0;
    if (s_seq(from_key) < self->prefetch_from)
        self->prefetch_seq = 0; /* a read went back (a resend): what it asked for may be gone */
    self->prefetch_from = s_seq(from_key);
    int r = mdb_cursor_get(cur, &k, &v, MDB_SET); /* the value's pointer: nothing is read */
    while (r == 0 && seen < bytes) {
        uint64_t from = (uint64_t)((const uint8_t *)v.mv_data - (const uint8_t *)self->map_addr);
        uint64_t to = from + v.mv_size;
        if (s_seq(&k) >= self->prefetch_seq) { /* not asked for by an earlier read */
            if (from != hi) { /* not contiguous: ask for what was gathered */
                if (hi > lo)
                    posix_fadvise(fd, (off_t)lo, (off_t)(hi - lo), POSIX_FADV_WILLNEED);
                lo = from;
            }
            hi = to;
            self->prefetch_seq = s_seq(&k) + 1;
        }
        seen += v.mv_size;
        r = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (hi > lo)
        posix_fadvise(fd, (off_t)lo, (off_t)(hi - lo), POSIX_FADV_WILLNEED);
    mdb_cursor_close(cur);
}

long spool_read(spool_t *self, uint64_t from_seq, size_t max_count, size_t max_bytes,
                spool_read_fn *fn, void *ctx)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    long passed = 0;
    /* A block an ack covers in part still holds its acked events. */
    uint64_t acked = atomic_load(&self->acked_seq);
    if (from_seq <= acked)
        from_seq = acked + 1;
    int rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_cursor_open(txn, self->events, &cur);
    if (rc == 0) {
        MDB_val k, v;
        size_t bytes = 0, skip;
        bool is_done = false;
        int r = s_seek(self, cur, from_seq, &k, &v, &skip);
        if (r == 0)
            s_prefetch(self, txn, &k, SPOOL_PREFETCH_READS * max_bytes);
        pthread_mutex_lock(&self->read_lock);
        while (r == 0 && !is_done) {
            s_block_t block = {0};
            r = s_copy_value(self, &v);
            if (r == 0)
                r = s_block_parse(&v, &block);
            if (r == SPOOL_CORRUPT) {
                s_block_corrupt(self, &k, &v, "skipped");
                r = 0;
            }
            const uint8_t *data = block.data;
            for (size_t i = 0; r == 0 && i < block.count; i++) {
                size_t len = s_block_len(&block, i);
                if (i >= skip) {
                    if ((size_t)passed >= max_count || (passed > 0 && bytes + len > max_bytes)) {
                        is_done = true;
                        break;
                    }
                    bytes += len;
                    passed++;
                    if (fn(ctx, s_seq(&k) + i, data, len) != 0) {
                        is_done = true;
                        break;
                    }
                }
                data += len;
            }
            skip = 0;
            if (r == 0 && !is_done)
                r = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        pthread_mutex_unlock(&self->read_lock);
        if (r != 0 && r != MDB_NOTFOUND)
            rc = r;
        mdb_cursor_close(cur);
    }
    if (txn)
        mdb_txn_abort(txn);
    s_unmap_now_and_then(self);
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
    s_span_t span = S_SPAN_EMPTY;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_cursor_open(txn, self->events, &cur);
    if (rc == 0) {
        /* Whole blocks only: one the ack covers in part stays (see Blocks). */
        bool is_backlog = last - through_seq >= self->drop_backlog; /* see s_drop_deleted */
        MDB_val k, v;
        size_t count = 0, deleted = 0;
        int r = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        while (r == 0 && ((r = s_block_count(self, &v, &count)) == 0 || r == SPOOL_CORRUPT) &&
               (r == SPOOL_CORRUPT ? s_seq(&k) <= through_seq
                                   : s_seq(&k) + count - 1 <= through_seq)) {
            if (r == 0 && is_backlog)
                s_drop_deleted(self, &v); /* committed, it is never read again */
            /* Deleting a block's overflow pages reads their first page:
             * LMDB maps it, and its folio. */
            if (s_is_mapped(self, v.mv_data, 1))
                s_span_add(self, &span, v.mv_data, 1);
            r = mdb_cursor_del(cur, 0);
            if (r == 0)
                r = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            /* An ack covering a whole window (thousands of events) would
             * map all their heads before the unmap below. */
            deleted += count;
            if (deleted >= SPOOL_UNMAP_EVENTS) {
                s_span_unmap(self, &span);
                deleted = 0;
            }
        }
        if (r != 0 && r != MDB_NOTFOUND && r != SPOOL_CORRUPT) /* a corrupt block ahead stays */
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
    s_span_unmap(self, &span);
    if (rc != 0) {
        cairn_log_error("spool %s: ack through %llu failed: %s", self->dir,
                        (unsigned long long)through_seq, mdb_strerror(rc));
        return -1;
    }
    atomic_store(&self->acked_seq, through_seq);
    s_drop_flush(self);
    s_unmap_now_and_then(self);
    return 0;
}

int spool_get_state(spool_t *self, const char *key, void *value, size_t size, size_t *len)
{
    char name[SPOOL_STATE_KEY_MAX + 8];
    int n = s_state_key(key, name, sizeof name);
    if (n < 0)
        return -1;
    MDB_txn *txn = NULL;
    MDB_val k = {(size_t)n, name}, v;
    int rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_get(txn, self->meta, &k, &v);
    int result = -1;
    if (rc == MDB_NOTFOUND)
        result = 1;
    else if (rc == 0 && v.mv_size <= size) {
        memcpy(value, v.mv_data, v.mv_size);
        *len = v.mv_size;
        result = 0;
    } else
        cairn_log_error("spool %s: cannot read state %s: %s", self->dir, key,
                        rc ? mdb_strerror(rc) : "value larger than the buffer");
    if (txn)
        mdb_txn_abort(txn);
    return result;
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

uint64_t spool_corrupt_blocks(spool_t *self)
{
    return atomic_load(&self->corrupt_blocks);
}

uint64_t spool_pending_count(spool_t *self)
{
    return atomic_load(&self->next_seq) - 1 - atomic_load(&self->acked_seq);
}
