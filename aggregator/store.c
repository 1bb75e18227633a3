/* store.c: the aggregator's deduplicated event store in one LMDB environment.
 *
 * DESIGN: four databases (see store.h). events holds packed StoredEvents under
 * their ingest seq, 8 bytes big-endian so that LMDB's byte order is seq order
 * and MDB_APPEND applies; the value is written in place with MDB_RESERVE. ids
 * maps (eventTime, eventID) -> seq and, with the recent ids (DEDUP below), is
 * the dedup guard. An event sent again is the same bytes, so the same pair.
 * agents keeps each agent's progress so that a whole resent batch costs one
 * lookup. meta keeps the delivery cursor.
 *
 * DEDUP. Keying ids by eventTime first keeps inserts among the pages of the
 * last seconds (keyed by the random eventID alone, every event dirtied a
 * leaf page anywhere in the file). But CloudTrail's eventTime has whole
 * seconds, and within a second eventIDs are random: at 60,000 events/s a
 * second's ids fill ~900 leaf pages, and a commit of 2,000 events rewrote
 * most of them, each a 4 KB write of its own at a random place. That was
 * ~0.45 random writes per event, nearly nine in ten of the aggregator's, and the
 * disk's random-write rate bounded the store. So a new event's id is not
 * written to ids at once: it goes to an in-memory set (ids_new, with its
 * seq), and the dedup check asks ids (a read), ids_new and ids_merging.
 * When ids_new holds S_IDS_FREEZE_AT ids it is frozen: sorted, it becomes
 * ids_merging, which each later put merges into ids a step at a time, in key
 * order and in the put's transaction, so that each page of those seconds is
 * written once per generation instead of once per commit. When a
 * generation is fully merged, meta's "ids_through_seq" says that every
 * event up to its highest seq has its id in ids. At open, the ids of the
 * events after it (at most two generations) are read back from events into
 * ids_new, so a restart or a crash loses no dedup. ids_lock guards the sets
 * (puts come from the receiver, deletes from any thread).
 *
 * PAGE CACHE. The store grows by GBs, written once and read back late (by
 * the delivery of its window, by queries). As the agent's spool does (see
 * its page cache note), after a durable commit the writer drops from the
 * page cache what lies more than S_CACHE_KEEP_BYTES below the end of the
 * file: on a VM whose freed memory goes back to the host, each new page of
 * page cache cost a fault in the host on its first write, and the copy of
 * LMDB's pwrite took half of the receiver's time in a long drain. The
 * kernel keeps mapped pages (what readers touched through LMDB's map) and
 * dirty ones; the rest is read back from disk when wanted.
 *
 * READING BACK. The map has no readahead on faults (MDB_NORDAHEAD): a
 * fault on a dropped tree page read the read_ahead_kb around it (8 MB on
 * the benchmark machine) for one 4 KB page: 58 MB/s of reads in a drain,
 * 5 MB/s without. But a window's delivery reads its events back from the
 * disk, and there each 4 KB page became a synchronous read: the last 30 s
 * window of a 60 s steady run was delivered 93 s after its end, at 26.7
 * CPU s per million in the aggregator. So store_read_events asks for the
 * S_READ_AHEAD_BYTES of the map beyond the event it reads (MADV_WILLNEED:
 * started, not waited for; events are appended in order, mostly to
 * ascending pages): delivered 9.1 s after its end, at 17.8. Mostly: LMDB
 * puts new leaves both at the file's end and on pages freed by the commits
 * before, so reading in seq order goes back a few MB and forth, and the
 * kernel looks up every page of an asked range, cached or not. Asking anew
 * at each jump back, and at each of the delivery's chunks, asked 25 times
 * what was read (a 300,000-event window in bench/delivery_bench.sh: 16,689
 * asks, 51 GB) and took half of the reading thread's time. So a read asks
 * only what no window (s_ahead_t) of the last few places read holds, and a
 * call that goes on where the last one stopped, within S_READ_AHEAD_KEEP_MS
 * (what was asked for long ago may have left the cache; under load the
 * delivery's chunks can be seconds apart), keeps the windows: 983 asks,
 * 2.0 GB.
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
 *     the clock did during the restart;
 *   - an event and its index entries are written, and deleted, in one
 *     transaction: a reader never sees one without the other.
 *
 * THE INDEX (one MDB_DUPSORT | MDB_DUPFIXED database). A key is one tag byte
 * naming the attribute and the value's bytes; every data item is 24 bytes,
 * the event's position: eventTime in ms (sign bit flipped, big-endian, so
 * that byte order is time order) and its seq (big-endian), then the value's
 * fingerprint. LMDB keeps the duplicates of a key sorted, so the events of
 * one value are a sorted run that a cursor walks backwards from any point:
 * newest first, no sort in memory, and the run's length (mdb_cursor_count)
 * costs nothing, which is how store_query picks the most selective filter.
 * Tag 'T' with no value holds every event: time-range scans. A value longer
 * than a key allows is cut to fit; the cut is deterministic, so lookups of
 * the long value find its entries, and store_query then compares the whole
 * value on the event.
 *
 * Attributes with many distinct values (user names, access keys, resource
 * names) and eventIDs ('I') are HASHED: the key is the tag and one bucket
 * byte of the value's 64-bit hash, the fingerprint is the whole hash, so a
 * lookup walks its bucket and skips other values by fingerprint without
 * reading their events. With one key per value, every event put new keys
 * at random places in the tree, and each commit rewrote a page per event;
 * with 256 buckets a commit touches at most 256 run ends per attribute,
 * whatever the number of values. Values of exact keys have fingerprint 0.
 *
 * RUNS. Writing a transaction's entries straight into that index touched
 * the last pages of some 1,400 keys (and their branch pages) at every
 * commit, whatever the number of events: ~5,000 dirty pages per commit,
 * which made the index more than half of the store's CPU and small commits
 * very dear. Instead, a transaction's entries are queued as events are
 * stored, sorted, and written as one RUN (s_index_flush): a record per key
 * in the runs database, keyed by the run id (8 bytes, growing) and the index
 * key, holding that key's sorted items. Run records are appended, so a
 * commit writes about as many pages as its entries fill. A MERGE PASS moves
 * them into the index: it starts when runs hold merge_at items or
 * merge_max_runs runs were written since the last pass began, and walks the
 * keys in order, a step per store_put_batches (in the same transaction):
 * each key's items of every run are gathered, sorted and added to the index
 * in one descent (s_index_put_key: appended, since positions grow with
 * time), and their run records deleted. A key's tail pages are thus written
 * once per pass for thousands of items, not once per commit. The step's
 * place (merge_key) lives in memory only: after a restart a pass starts
 * over from the first key, which is correct because a run record exists
 * exactly until its items are in the index. A query reads both: each
 * filter's key in the index and its record in every run (s_run_slices, two
 * descents per run), merged newest first.
 *
 * A store made before the index existed (meta has no "index_version") or
 * with an older layout (version 1: 16-byte items, ids by eventID alone)
 * gets the index and ids rebuilt by the writer at open, in transactions of
 * S_REBUILD_CHUNK events. */
#include "store.h"

#include "cairn_arena.h"
#include "cairn_fs.h"
#include "cairn_log.h"
#include "cairn_mem.h"
#include "cairn_time.h"
#include "cairn_wire.h"
#include "event.h"
#include "idset.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define STORE_MAX_DBS        8
#define STORE_CURSOR_KEY     "delivery_cursor"
#define STORE_INDEX_KEY      "index_version" /* meta: the index below is complete */
#define STORE_INDEX_VERSION  3 /* 1: ids by eventID, 16-byte index data, no hashing;
                                  * 2: no runs, keys cut 8 bytes later */
#define STORE_DELETED_KEY    "deleted_max_seq" /* meta: highest seq ever deleted */
#define STORE_IDS_KEY        "ids_through_seq" /* meta: ids holds the id of every event to it */
#define S_IDS_FREEZE_AT      ((size_t)32 << 10) /* recent ids frozen for a merge at this many */
#define S_IDS_STEP           ((size_t)4 << 10)  /* ids merged per put, at least (and 2 per new) */
#define S_CACHE_KEEP_BYTES   ((uint64_t)512 << 20) /* newest part of the file kept in the cache */
#define S_CACHE_STEP_BYTES   ((uint64_t)64 << 20)  /* dropped from the page cache at a time */
#define S_READ_AHEAD_BYTES   ((size_t)4 << 20) /* asked for ahead of store_read_events */
#define S_READ_AHEAD_STREAMS 8                /* places it reads ahead of at once */
#define S_READ_AHEAD_KEEP_MS 30000            /* windows kept between calls this long */
#define S_PAGE_BYTES         4096             /* an alignment for madvise (LMDB's page >= it) */
#define S_POSITION_BYTES     16               /* position: time (8) + seq (8) */
#define S_ENTRY_BYTES        24               /* index data: position + fingerprint (8) */
#define S_HASH_BUCKETS       256              /* keys of a hashed attribute */
#define S_MAX_RESOURCES      64               /* resources of one event indexed */
#define S_MAX_ENTRIES        (8 + 3 * S_MAX_RESOURCES) /* index entries of one event */
#define S_REBUILD_CHUNK      20000            /* events per transaction of a rebuild */
#define S_TAG_ALL            'T'              /* the key holding every event */
#define S_TAG_EVENT_ID       'I'              /* hashed keys of eventIDs */
#define S_ID_KEY_PREFIX      8                /* ids key: eventTime (8) before the eventID */
#define S_DRIVE_ID           (STORE_ATTR_COUNT + 1) /* store_query: the eventID filter */
#define S_RUN_PREFIX         8                /* runs key: run id (8) before the index key */
#define S_MERGE_AT_ENTRIES   ((size_t)2 << 20) /* a merge pass starts at this many run items */
#define S_MERGE_MAX_RUNS     128              /* or at this many runs since the last pass */
#define S_MERGE_STEP_ENTRIES ((size_t)64 << 10) /* run items merged per transaction, at least */

/* An index entry waiting for the end of its transaction (s_index_flush):
 * its key (an id into the transaction's distinct keys) and its data item. */
typedef struct {
    uint32_t key;
    uint8_t data[S_ENTRY_BYTES];
} s_pending_t;

/* One distinct key of the open transaction: its bytes in the keys arena. */
typedef struct {
    size_t at, len;
} s_key_t;

/* Read-ahead windows of store_read_events (see READING BACK): the map's
 * range [from, to) was asked for. */
typedef struct {
    uintptr_t from, to;
    uint64_t used; /* when last read in (a count of reads); 0: free */
} s_ahead_t;

struct store {
    char *dir; /* for log lines */
    atomic_uint_fast64_t pruned_count; /* events removed by retention since open */
    MDB_env *env;
    MDB_dbi events_dbi;           /* seq (u64 BE) -> packed StoredEvent */
    MDB_dbi ids_dbi;              /* eventTime (8) + eventID -> seq (u64 BE) */
    MDB_dbi agents_dbi;           /* agent id -> last agent seq (u64 BE) */
    MDB_dbi meta_dbi;             /* "delivery_cursor" -> u64 BE seq, i64 BE end ms */
    MDB_dbi index_dbi;            /* tag + value -> positions (see DESIGN) */
    MDB_dbi runs_dbi;             /* run id (u64 BE) + index key -> sorted data items */
    bool is_readonly;             /* opened by store_open_readonly */
    uint64_t next_seq;            /* seq of the next new event (writer thread) */
    int64_t last_ingest_ms;       /* floor for the next ingest time (writer thread) */
    bool is_full;                 /* last put hit MDB_MAP_FULL (writer thread) */
    size_t key_max_bytes;         /* longest eventID or agent id LMDB takes as a key */
    _Atomic int64_t watermark_ms; /* every event below it is committed */
    s_pending_t *pending;         /* index entries of the open write txn (writer) */
    size_t pending_count, pending_cap;
    char *pending_keys;           /* their distinct keys, back to back */
    size_t keys_used, keys_cap;
    s_key_t *keys;                /* the distinct keys, by id */
    size_t key_count, key_cap;
    uint32_t *key_table;          /* open addressing: key id + 1, 0 empty */
    size_t key_table_cap;         /* a power of 2, over twice key_count */
    s_pending_t *sorted;          /* pending, grouped by key (s_index_flush) */
    size_t sorted_cap;
    size_t *key_start;            /* by key rank: first of its entries in sorted */
    uint8_t *multi;               /* one key's data items for MDB_MULTIPLE */
    size_t multi_cap;             /* items */
    /* Runs and their merge (writer thread; see THE INDEX). */
    uint64_t next_run;            /* id of the next run written */
    uint64_t pass_run;            /* next_run when the last merge pass began */
    size_t run_items;             /* data items in runs */
    size_t merge_at, merge_max_runs, merge_step; /* store_set_merge */
    bool is_merging;              /* a pass is under way: keys from merge_key on are left */
    char *merge_key;              /* key_max_bytes + 1 */
    size_t merge_key_len;
    _Atomic size_t shown_run_items; /* run_items, for store_index_stats (any thread) */
    atomic_uint_fast64_t passes;  /* merge passes completed since open */
    char *merge_next;             /* the key the open transaction's step stopped at */
    size_t merge_next_len;
    bool merge_next_done;         /* the open transaction's step ended the pass */
    /* Recent ids (see DEDUP), under ids_lock. */
    pthread_mutex_t ids_lock;
    bool is_ids_lock_ready;
    idset_t ids_new;              /* ids of events stored since the last freeze */
    idset_t ids_merging;          /* the frozen generation, sorted */
    size_t ids_merged;            /* items of ids_merging already in ids */
    size_t ids_freeze_at;
    struct {
        idset_item_t *item;
        uint64_t seq;
    } *ids_undo;                  /* deletes of the open transaction, to undo on failure */
    size_t ids_undo_count, ids_undo_cap;
    _Atomic size_t shown_recent_ids; /* ids_new and ids_merging's unmerged (any thread) */
    bool is_durable;              /* commits are fdatasync'd */
    uint64_t cache_kept_from;     /* file offset below which pages were dropped (writer) */
    uint64_t cache_keep, cache_step; /* store_set_cache_keep */
    /* store_read_events' read-ahead (see READING BACK), under ahead_lock
     * (made with ids_lock): kept for a call that goes on where the last
     * one stopped, soon after (the delivery's chunks of one pass; what was
     * asked for long ago may have left the cache since). */
    pthread_mutex_t ahead_lock;
    s_ahead_t ahead[S_READ_AHEAD_STREAMS];
    uint64_t ahead_reads;          /* reads since the windows were emptied */
    uint64_t ahead_after_seq;      /* the seq the last call stopped at */
    int64_t ahead_at_ms;           /* when it stopped (monotonic) */
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

/* Bytes of the file that committed transactions reach. */
static uint64_t s_file_end(store_t *self)
{
    MDB_envinfo info;
    MDB_stat stat;
    mdb_env_info(self->env, &info);
    mdb_env_stat(self->env, &stat);
    return ((uint64_t)info.me_last_pgno + 1) * stat.ms_psize;
}

/* After a durable commit: drops old pages from the page cache (see PAGE
 * CACHE). Writers only. */
static void s_drop_cache(store_t *self)
{
    mdb_filehandle_t fd;
    if (self->is_durable && mdb_env_get_fd(self->env, &fd) == 0)
        cairn_fs_drop_cache(fd, s_file_end(self), &self->cache_kept_from, self->cache_keep,
                            self->cache_step);
}

/* Reads field 1 (ingest_time_ms, a varint) of a packed StoredEvent without
 * unpacking the rest: store_read_events hands every event's ingest time to
 * its callback, and a full unpack of each event (the record JSON included)
 * only for that would double the delivery's decoding work. protobuf-c has no
 * reader for a single field, hence cairn_wire. An absent
 * field is proto3's default, 0. Returns -1 if the bytes are not a message. */
static int s_peek_ingest_time(const uint8_t *p, size_t len, int64_t *ingest_ms)
{
    size_t at = 0;
    cairn_wire_field_t field;
    int r;
    *ingest_ms = 0;
    while ((r = cairn_wire_next(p, len, &at, &field)) == 1)
        if (field.number == 1 && field.wire_type == CAIRN_WIRE_VARINT) {
            *ingest_ms = (int64_t)field.varint;
            return 0;
        }
    return r; /* 0: absent (proto3's default), -1: not a message */
}

/* --- the index ----------------------------------------------------------- */

/* Tag byte of each attribute's keys, in store_attr_t order. */
static const char s_attr_tags[STORE_ATTR_COUNT] = {
    [STORE_ATTR_EVENT_NAME] = 'N',    [STORE_ATTR_READ_ONLY] = 'O',
    [STORE_ATTR_USERNAME] = 'U',      [STORE_ATTR_RESOURCE_TYPE] = 'Y',
    [STORE_ATTR_RESOURCE_NAME] = 'M', [STORE_ATTR_EVENT_SOURCE] = 'S',
    [STORE_ATTR_ACCESS_KEY_ID] = 'K', [STORE_ATTR_REGION] = 'R',
    [STORE_ATTR_ACCOUNT] = 'A',
};

/* One index entry of an event: an attribute and a value (not NUL-terminated). */
typedef struct {
    store_attr_t attr;
    const char *value;
    size_t len;
} s_entry_t;

static void s_put_position(uint8_t out[S_POSITION_BYTES], int64_t time_ms, uint64_t seq)
{
    s_put_u64(out, (uint64_t)time_ms ^ (UINT64_C(1) << 63));
    s_put_u64(out + 8, seq);
}

/* An index data item: the position, then the value's fingerprint. */
static void s_put_entry(uint8_t out[S_ENTRY_BYTES], int64_t time_ms, uint64_t seq, uint64_t fp)
{
    s_put_position(out, time_ms, seq);
    s_put_u64(out + S_POSITION_BYTES, fp);
}

/* The hash of a hashed attribute's value: its bucket (top byte) and its
 * fingerprint. It is stored, so it must never change: 64-bit FNV-1a, then
 * MurmurHash3's finalizer so that the top byte is as well mixed as the rest. */
static uint64_t s_hash(const char *value, size_t len)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)value[i];
        h *= UINT64_C(0x100000001b3);
    }
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

/* Attributes with many distinct values (and eventID) are hashed: see DESIGN. */
static bool s_is_hashed(store_attr_t attr)
{
    return attr == STORE_ATTR_USERNAME || attr == STORE_ATTR_RESOURCE_NAME ||
           attr == STORE_ATTR_ACCESS_KEY_ID;
}

/* Builds the key under tag of value in out (key_max_bytes + 1 bytes or more)
 * and sets *fp to the fingerprint its data items carry. Hashed: the tag and
 * the bucket byte; the fingerprint is the value's hash. Otherwise: the tag and
 * the value, cut to fit (*is_cut says so); the fingerprint is 0. */
static size_t s_make_key(const store_t *self, char tag, bool is_hashed, const char *value,
                         size_t len, char *out, uint64_t *fp, bool *is_cut)
{
    out[0] = tag;
    if (is_cut)
        *is_cut = false;
    if (is_hashed) {
        *fp = s_hash(value, len);
        out[1] = (char)(uint8_t)(*fp >> 56);
        return 2;
    }
    *fp = 0;
    size_t room = self->key_max_bytes - 1 - S_RUN_PREFIX; /* a runs key must fit too */
    if (is_cut)
        *is_cut = len > room;
    if (len > room)
        len = room;
    memcpy(out + 1, value, len);
    return 1 + len;
}

static void s_get_position(const uint8_t in[S_POSITION_BYTES], store_position_t *position)
{
    position->event_time_ms = (int64_t)(s_get_u64(in) ^ (UINT64_C(1) << 63));
    position->seq = s_get_u64(in + 8);
}

/* The key of attr = value (see s_make_key). attr STORE_ATTR_COUNT is the
 * all-events key. */
static size_t s_index_key(const store_t *self, store_attr_t attr, const char *value, size_t len,
                          char *out, uint64_t *fp, bool *is_cut)
{
    if (attr == STORE_ATTR_COUNT)
        return s_make_key(self, S_TAG_ALL, false, "", 0, out, fp, is_cut);
    return s_make_key(self, s_attr_tags[attr], s_is_hashed(attr), value, len, out, fp, is_cut);
}

/* The key of eventID id (hashed). */
static size_t s_event_id_key(const store_t *self, const char *id, char *out, uint64_t *fp)
{
    return s_make_key(self, S_TAG_EVENT_ID, true, id, strlen(id), out, fp, NULL);
}

/* The ids key of event: its eventTime, then its eventID. Returns its length;
 * the caller checked that the eventID fits. */
static size_t s_id_key(const Cairn__Event *event, uint8_t *out)
{
    size_t len = strlen(event->event_id);
    s_put_u64(out, (uint64_t)event->event_time_ms ^ (UINT64_C(1) << 63));
    memcpy(out + S_ID_KEY_PREFIX, event->event_id, len);
    return S_ID_KEY_PREFIX + len;
}

size_t store_username(const Cairn__Event *event, const char **name)
{
    static const char *const session_kinds[] = {":assumed-role/", ":federated-user/"};
    if (event->user_name && event->user_name[0]) {
        *name = event->user_name;
        return strlen(event->user_name);
    }
    const char *arn = event->user_arn ? event->user_arn : "";
    for (size_t i = 0; i < sizeof session_kinds / sizeof *session_kinds; i++)
        if (strstr(arn, session_kinds[i])) {
            const char *last = strrchr(arn, '/');
            *name = last + 1;
            return strlen(last + 1);
        }
    if (event->user_type && !strcmp(event->user_type, "Root")) {
        *name = "root";
        return 4;
    }
    *name = "";
    return 0;
}

/* The last component of an ARN (after its last '/' or ':'), or NULL when
 * value is not an ARN or the component is the whole value or empty. */
static const char *s_arn_name(const char *arn)
{
    if (strncmp(arn, "arn:", 4) != 0)
        return NULL;
    const char *slash = strrchr(arn, '/');
    const char *colon = strrchr(arn, ':');
    const char *last = slash > colon ? slash : colon;
    return last && last[1] ? last + 1 : NULL;
}

static size_t s_add_entry(s_entry_t *out, size_t count, store_attr_t attr, const char *value,
                          size_t len)
{
    if (!value || len == 0)
        return count;
    out[count] = (s_entry_t){attr, value, len};
    return count + 1;
}

#define S_ADD(attr, str) count = s_add_entry(out, count, (attr), (str), (str) ? strlen(str) : 0)

/* The index entries of event (at most S_MAX_ENTRIES). Empty values are not
 * indexed. A value may appear twice (two resources of one type): the second
 * put of the same key and position changes nothing. */
static size_t s_index_entries(const Cairn__Event *event, s_entry_t *out)
{
    size_t count = 0;
    const char *username;
    size_t username_len = store_username(event, &username);
    S_ADD(STORE_ATTR_EVENT_NAME, event->event_name);
    if (event->read_only == CAIRN__READ_ONLY__READ_ONLY_TRUE)
        count = s_add_entry(out, count, STORE_ATTR_READ_ONLY, "true", 4);
    else if (event->read_only == CAIRN__READ_ONLY__READ_ONLY_FALSE)
        count = s_add_entry(out, count, STORE_ATTR_READ_ONLY, "false", 5);
    count = s_add_entry(out, count, STORE_ATTR_USERNAME, username, username_len);
    S_ADD(STORE_ATTR_EVENT_SOURCE, event->event_source);
    S_ADD(STORE_ATTR_ACCESS_KEY_ID, event->access_key_id);
    S_ADD(STORE_ATTR_REGION, event->aws_region);
    S_ADD(STORE_ATTR_ACCOUNT, event->recipient_account_id);
    size_t n_resources = event->n_resources < S_MAX_RESOURCES ? event->n_resources
                                                               : S_MAX_RESOURCES;
    for (size_t i = 0; i < n_resources; i++) {
        const Cairn__Resource *resource = event->resources[i];
        if (!resource)
            continue;
        S_ADD(STORE_ATTR_RESOURCE_TYPE, resource->type);
        S_ADD(STORE_ATTR_RESOURCE_NAME, resource->arn);
        if (resource->arn) {
            const char *name = s_arn_name(resource->arn);
            S_ADD(STORE_ATTR_RESOURCE_NAME, name);
        }
    }
    return count;
}

#undef S_ADD

/* Whether event has value for attr, comparing whole values. */
static bool s_event_has(const Cairn__Event *event, store_attr_t attr, const char *value)
{
    s_entry_t entries[S_MAX_ENTRIES];
    size_t count = s_index_entries(event, entries);
    size_t len = strlen(value);
    for (size_t i = 0; i < count; i++)
        if (entries[i].attr == attr && entries[i].len == len &&
            !memcmp(entries[i].value, value, len))
            return true;
    return false;
}

/* The id of key among the open transaction's distinct keys, added if new. */
static uint32_t s_key_id(store_t *self, const char *key, size_t key_len)
{
    if (2 * (self->key_count + 1) > self->key_table_cap) { /* grow and rehash */
        size_t cap = self->key_table_cap ? 2 * self->key_table_cap : 4096;
        free(self->key_table);
        self->key_table = cairn_calloc(cap, sizeof *self->key_table);
        self->key_table_cap = cap;
        for (size_t id = 0; id < self->key_count; id++) {
            const s_key_t *k = &self->keys[id];
            size_t at = s_hash(self->pending_keys + k->at, k->len) & (cap - 1);
            while (self->key_table[at])
                at = (at + 1) & (cap - 1);
            self->key_table[at] = (uint32_t)id + 1;
        }
    }
    size_t mask = self->key_table_cap - 1, at = s_hash(key, key_len) & mask;
    for (uint32_t slot; (slot = self->key_table[at]) != 0; at = (at + 1) & mask) {
        const s_key_t *k = &self->keys[slot - 1];
        if (k->len == key_len && !memcmp(self->pending_keys + k->at, key, key_len))
            return slot - 1;
    }
    if (self->key_count == self->key_cap) {
        self->key_cap = self->key_cap ? 2 * self->key_cap : 1024;
        self->keys = cairn_realloc(self->keys, self->key_cap * sizeof *self->keys);
    }
    while (self->keys_used + key_len > self->keys_cap) {
        self->keys_cap = self->keys_cap ? 2 * self->keys_cap : 65536;
        self->pending_keys = cairn_realloc(self->pending_keys, self->keys_cap);
    }
    memcpy(self->pending_keys + self->keys_used, key, key_len);
    self->keys[self->key_count] = (s_key_t){self->keys_used, key_len};
    self->keys_used += key_len;
    self->key_table[at] = (uint32_t)self->key_count + 1;
    return (uint32_t)self->key_count++;
}

/* Empties the queue of index entries and its keys. */
static void s_index_clear(store_t *self)
{
    self->pending_count = 0;
    self->keys_used = 0;
    if (self->key_count)
        memset(self->key_table, 0, self->key_table_cap * sizeof *self->key_table);
    self->key_count = 0;
}

/* Queues the data item (time_ms, seq, fp) of key for s_index_flush. */
static void s_index_queue(store_t *self, const char *key, size_t key_len, int64_t time_ms,
                          uint64_t seq, uint64_t fp)
{
    if (self->pending_count == self->pending_cap) {
        self->pending_cap = self->pending_cap ? 2 * self->pending_cap : 4096;
        self->pending = cairn_realloc(self->pending, self->pending_cap * sizeof *self->pending);
    }
    s_pending_t *p = &self->pending[self->pending_count++];
    p->key = s_key_id(self, key, key_len);
    s_put_entry(p->data, time_ms, seq, fp);
}

/* Called by s_each_index_key for each index key of an event: the key, and
 * the data item's parts. Returns 0 to go on, else an LMDB code. */
typedef int(s_index_key_fn)(store_t *self, void *ctx, const char *key, size_t key_len,
                            int64_t time_ms, uint64_t seq, uint64_t fp);

/* Passes every index key of event at seq to fn: the all-events key, its
 * eventID and each attribute. Returns fn's first non-zero answer, or 0. */
static int s_each_index_key(store_t *self, const Cairn__Event *event, uint64_t seq,
                            s_index_key_fn *fn, void *ctx)
{
    s_entry_t entries[S_MAX_ENTRIES];
    size_t count = s_index_entries(event, entries);
    char key_buf[1024];
    uint64_t fp;
    int64_t t = event->event_time_ms;
    size_t len = s_index_key(self, STORE_ATTR_COUNT, "", 0, key_buf, &fp, NULL);
    int rc = fn(self, ctx, key_buf, len, t, seq, fp);
    if (rc == 0 && event->event_id && event->event_id[0]) {
        len = s_event_id_key(self, event->event_id, key_buf, &fp);
        rc = fn(self, ctx, key_buf, len, t, seq, fp);
    }
    for (size_t i = 0; rc == 0 && i < count; i++) {
        len = s_index_key(self, entries[i].attr, entries[i].value, entries[i].len, key_buf, &fp,
                          NULL);
        rc = fn(self, ctx, key_buf, len, t, seq, fp);
    }
    return rc;
}

static int s_queue_key(store_t *self, void *ctx, const char *key, size_t key_len, int64_t time_ms,
                       uint64_t seq, uint64_t fp)
{
    s_index_queue(self, key, key_len, time_ms, seq, fp);
    return 0;
}

/* Queues every index entry of event at seq for s_index_flush. */
static void s_index_queue_event(store_t *self, const Cairn__Event *event, uint64_t seq)
{
    s_each_index_key(self, event, seq, s_queue_key, NULL);
}

/* qsort_r order of key ids: LMDB's order of their keys (bytes, then length). */
static int s_key_cmp(const void *a, const void *b, void *store)
{
    const store_t *self = store;
    const s_key_t *x = &self->keys[*(const uint32_t *)a], *y = &self->keys[*(const uint32_t *)b];
    size_t len = x->len < y->len ? x->len : y->len;
    int c = memcmp(self->pending_keys + x->at, self->pending_keys + y->at, len);
    return c ? c : x->len < y->len ? -1 : x->len > y->len;
}

static int s_item_cmp(const void *a, const void *b)
{
    return memcmp(a, b, S_ENTRY_BYTES);
}

/* Groups the pending entries by key, keys in LMDB's order, each group in
 * queue order: the keys (a few thousand at most) are sorted, the entries
 * dealt to their key's place (a counting sort, no comparisons). Fills
 * self->sorted and self->key_start (key_count + 1 bounds). */
static void s_index_group(store_t *self)
{
    size_t n = self->pending_count, keys = self->key_count;
    uint32_t *order = cairn_malloc((keys ? keys : 1) * sizeof *order);
    uint32_t *rank = cairn_malloc((keys ? keys : 1) * sizeof *rank);
    for (uint32_t id = 0; id < keys; id++)
        order[id] = id;
    qsort_r(order, keys, sizeof *order, s_key_cmp, self);
    for (uint32_t r = 0; r < keys; r++)
        rank[order[r]] = r;
    self->key_start = cairn_realloc(self->key_start, (keys + 1) * sizeof *self->key_start);
    memset(self->key_start, 0, (keys + 1) * sizeof *self->key_start);
    for (size_t i = 0; i < n; i++)
        self->key_start[rank[self->pending[i].key] + 1]++;
    for (size_t r = 0; r < keys; r++)
        self->key_start[r + 1] += self->key_start[r];
    if (n > self->sorted_cap) {
        self->sorted_cap = n;
        self->sorted = cairn_realloc(self->sorted, n * sizeof *self->sorted);
    }
    size_t *next = cairn_malloc((keys ? keys : 1) * sizeof *next);
    memcpy(next, self->key_start, keys * sizeof *next);
    for (size_t i = 0; i < n; i++)
        self->sorted[next[rank[self->pending[i].key]]++] = self->pending[i];
    free(next);
    free(rank);
    free(order);
}

/* Puts count sorted, distinct data items of key in one call (MDB_MULTIPLE). */
static int s_put_multiple(MDB_cursor *cursor, MDB_val *key, uint8_t *items, size_t count,
                          unsigned flags)
{
    MDB_val data[2] = {{.mv_size = S_ENTRY_BYTES, .mv_data = items}, {.mv_size = count}};
    return count ? mdb_cursor_put(cursor, key, data, MDB_MULTIPLE | flags) : 0;
}

/* Adds count sorted, distinct data items to key in the index (cursor), in
 * one descent: the items older than the key's newest go in with one
 * MDB_MULTIPLE put, the rest (nearly all: positions grow with time) are
 * appended with MDB_APPENDDUP, which neither searches nor leaves half-empty
 * pages behind. Returns an LMDB code. */
static int s_index_put_key(MDB_cursor *cursor, const char *key_bytes, size_t key_len,
                           uint8_t *items, size_t count)
{
    MDB_val key = {.mv_size = key_len, .mv_data = (void *)key_bytes}, last;
    size_t older = 0;
    int rc = mdb_cursor_get(cursor, &key, &last, MDB_SET);
    if (rc == 0)
        rc = mdb_cursor_get(cursor, &key, &last, MDB_LAST_DUP);
    if (rc == 0)
        while (older < count && memcmp(items + older * S_ENTRY_BYTES, last.mv_data,
                                       S_ENTRY_BYTES) <= 0)
            older++;
    else if (rc == MDB_NOTFOUND)
        rc = 0;
    key = (MDB_val){.mv_size = key_len, .mv_data = (void *)key_bytes};
    if (rc == 0)
        rc = s_put_multiple(cursor, &key, items, older, 0);
    if (rc == 0)
        rc = s_put_multiple(cursor, &key, items + older * S_ENTRY_BYTES, count - older,
                            MDB_APPENDDUP);
    return rc;
}

/* Makes room in self->multi for count items. */
static void s_multi_reserve(store_t *self, size_t count)
{
    if (count <= self->multi_cap)
        return;
    while (self->multi_cap < count)
        self->multi_cap = self->multi_cap ? 2 * self->multi_cap : 4096;
    self->multi = cairn_realloc(self->multi, self->multi_cap * S_ENTRY_BYTES);
}

/* Writes the queued index entries in txn and empties the queue: into the
 * index itself when run is 0 (a rebuild), else as run number run, one
 * record per key (see THE INDEX). Grouped by key (s_index_group) and each
 * key's items sorted, each key's items go in with one put. Adds the items
 * written to *written. Returns an LMDB code. */
static int s_index_flush(store_t *self, MDB_txn *txn, uint64_t run, size_t *written)
{
    MDB_cursor *cursor = NULL;
    if (self->pending_count == 0) {
        s_index_clear(self);
        return 0;
    }
    s_index_group(self);
    int rc = mdb_cursor_open(txn, run ? self->runs_dbi : self->index_dbi, &cursor);
    char *run_key = run ? cairn_malloc(S_RUN_PREFIX + self->key_max_bytes) : NULL;
    if (run_key)
        s_put_u64((uint8_t *)run_key, run);
    for (size_t r = 0; rc == 0 && r < self->key_count; r++) {
        const s_pending_t *group = &self->sorted[self->key_start[r]];
        size_t group_len = self->key_start[r + 1] - self->key_start[r];
        const s_key_t *key = &self->keys[group->key];
        const char *key_bytes = self->pending_keys + key->at;
        bool is_sorted = true;
        s_multi_reserve(self, group_len);
        for (size_t j = 0; j < group_len; j++) {
            memcpy(self->multi + j * S_ENTRY_BYTES, group[j].data, S_ENTRY_BYTES);
            if (j && is_sorted && memcmp(group[j - 1].data, group[j].data, S_ENTRY_BYTES) > 0)
                is_sorted = false;
        }
        if (!is_sorted) /* queue order is seq order; eventTimes may go back */
            qsort(self->multi, group_len, S_ENTRY_BYTES, s_item_cmp);
        size_t count = group_len ? 1 : 0;
        for (size_t j = 1; j < group_len; j++) /* the same entry twice: two resources alike */
            if (memcmp(self->multi + j * S_ENTRY_BYTES, self->multi + (count - 1) * S_ENTRY_BYTES,
                       S_ENTRY_BYTES))
                memmove(self->multi + count++ * S_ENTRY_BYTES, self->multi + j * S_ENTRY_BYTES,
                        S_ENTRY_BYTES);
        if (run) {
            /* Keys ascend within the run and runs ascend: always an append. */
            memcpy(run_key + S_RUN_PREFIX, key_bytes, key->len);
            MDB_val k = {.mv_size = S_RUN_PREFIX + key->len, .mv_data = run_key};
            MDB_val data = {.mv_size = count * S_ENTRY_BYTES, .mv_data = self->multi};
            rc = mdb_cursor_put(cursor, &k, &data, MDB_APPEND);
        } else
            rc = s_index_put_key(cursor, key_bytes, key->len, self->multi, count);
        *written += count;
    }
    free(run_key);
    if (cursor)
        mdb_cursor_close(cursor);
    s_index_clear(self);
    return rc;
}

/* --- runs ------------------------------------------------------------------ */

/* One run's data items under one key, as the read transaction sees them. */
typedef struct {
    const uint8_t *items;
    size_t count;
    uint64_t run;
} s_slice_t;

/* A growing array of slices. */
typedef struct {
    s_slice_t *slices;
    size_t count, cap;
    size_t items; /* over all slices */
} s_slices_t;

/* Called by s_each_run for a run and its first record at or after the key
 * asked for. Returns 0 to go on, else an LMDB code that stops the walk. */
typedef int(s_run_fn)(store_t *self, void *ctx, uint64_t run, const MDB_val *key,
                      const MDB_val *data);

/* Calls fn for every run holding a record at or after key (two descents per
 * run at most), runs in order. Returns fn's first non-zero answer, or 0. */
static int s_each_run(store_t *self, MDB_txn *txn, const char *key, size_t key_len, s_run_fn *fn,
                      void *ctx)
{
    MDB_cursor *cursor = NULL;
    uint8_t *want = cairn_malloc(S_RUN_PREFIX + key_len);
    uint64_t run = 0;
    memcpy(want + S_RUN_PREFIX, key, key_len);
    int rc = mdb_cursor_open(txn, self->runs_dbi, &cursor);
    while (rc == 0) {
        s_put_u64(want, run);
        MDB_val k = {.mv_size = S_RUN_PREFIX + key_len, .mv_data = want}, v;
        rc = mdb_cursor_get(cursor, &k, &v, MDB_SET_RANGE);
        if (rc == 0 && k.mv_size < S_RUN_PREFIX)
            rc = MDB_CORRUPTED;
        if (rc != 0)
            break;
        uint64_t found = s_get_u64(k.mv_data);
        if (found != run) {
            run = found; /* run has no key at or after it: look in the next one */
            continue;
        }
        rc = fn(self, ctx, run, &k, &v);
        if (rc != 0 || run == UINT64_MAX)
            break;
        run++;
    }
    if (cursor)
        mdb_cursor_close(cursor);
    free(want);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* s_run_slices' s_run_fn: keeps the record if it holds the key asked for. */
typedef struct {
    s_slices_t *out;
    const char *key;
    size_t key_len;
} s_slices_ctx_t;

static int s_add_slice(store_t *self, void *ctx, uint64_t run, const MDB_val *k, const MDB_val *v)
{
    s_slices_ctx_t *c = ctx;
    s_slices_t *out = c->out;
    (void)self;
    if (v->mv_size % S_ENTRY_BYTES)
        return MDB_CORRUPTED;
    if (k->mv_size != S_RUN_PREFIX + c->key_len ||
        memcmp((const char *)k->mv_data + S_RUN_PREFIX, c->key, c->key_len) || !v->mv_size)
        return 0; /* this run has not the key */
    if (out->count == out->cap) {
        out->cap = out->cap ? 2 * out->cap : 16;
        out->slices = cairn_realloc(out->slices, out->cap * sizeof *out->slices);
    }
    out->slices[out->count++] = (s_slice_t){v->mv_data, v->mv_size / S_ENTRY_BYTES, run};
    out->items += v->mv_size / S_ENTRY_BYTES;
    return 0;
}

/* Finds key's record in every run and appends them to out. The items stay
 * valid while txn lives and writes nothing. Returns an LMDB code. */
static int s_run_slices(store_t *self, MDB_txn *txn, const char *key, size_t key_len,
                        s_slices_t *out)
{
    s_slices_ctx_t ctx = {out, key, key_len};
    return s_each_run(self, txn, key, key_len, s_add_slice, &ctx);
}

/* Index of the first item of slice greater than item (binary search). */
static size_t s_slice_upper(const s_slice_t *slice, const uint8_t item[S_ENTRY_BYTES])
{
    size_t lo = 0, hi = slice->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (memcmp(slice->items + mid * S_ENTRY_BYTES, item, S_ENTRY_BYTES) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool s_slice_has(const s_slice_t *slice, const uint8_t item[S_ENTRY_BYTES])
{
    size_t at = s_slice_upper(slice, item);
    return at > 0 && !memcmp(slice->items + (at - 1) * S_ENTRY_BYTES, item, S_ENTRY_BYTES);
}

/* Removes item from key's record in the run holding it, if any. */
static int s_run_remove(store_t *self, MDB_txn *txn, const char *key, size_t key_len,
                        const uint8_t item[S_ENTRY_BYTES])
{
    s_slices_t found = {0};
    int rc = s_run_slices(self, txn, key, key_len, &found);
    for (size_t i = 0; rc == 0 && i < found.count; i++) {
        const s_slice_t *slice = &found.slices[i];
        if (!s_slice_has(slice, item))
            continue;
        size_t at = s_slice_upper(slice, item) - 1, bytes = slice->count * S_ENTRY_BYTES;
        uint8_t *rest = cairn_malloc(bytes);
        memcpy(rest, slice->items, at * S_ENTRY_BYTES); /* before the write moves them */
        memcpy(rest + at * S_ENTRY_BYTES, slice->items + (at + 1) * S_ENTRY_BYTES,
               bytes - (at + 1) * S_ENTRY_BYTES);
        uint8_t *run_key = cairn_malloc(S_RUN_PREFIX + key_len);
        s_put_u64(run_key, slice->run);
        memcpy(run_key + S_RUN_PREFIX, key, key_len);
        MDB_val k = {.mv_size = S_RUN_PREFIX + key_len, .mv_data = run_key};
        MDB_val v = {.mv_size = bytes - S_ENTRY_BYTES, .mv_data = rest};
        rc = v.mv_size ? mdb_put(txn, self->runs_dbi, &k, &v, 0)
                       : mdb_del(txn, self->runs_dbi, &k, NULL);
        free(run_key);
        free(rest);
        break; /* an item is in one place only; the slices are stale now */
    }
    free(found.slices);
    return rc;
}

/* One run being merged: a cursor on its current record. */
typedef struct {
    MDB_cursor *cursor;
    uint64_t run;
    MDB_val key, data;  /* current record; key.mv_data NULL when the run is done */
    size_t taken;       /* records merged, from the first one seen */
    uint8_t *first_key; /* a copy of the first merged record's key */
    size_t first_len;
} s_merge_run_t;

/* The runs of a merge step. */
typedef struct {
    s_merge_run_t *runs;
    size_t count, cap;
    MDB_txn *txn;
} s_merge_runs_t;

/* s_merge_step's s_run_fn: a cursor of run's own at its record k. */
static int s_add_merge_run(store_t *self, void *ctx, uint64_t run, const MDB_val *k,
                           const MDB_val *v)
{
    s_merge_runs_t *m = ctx;
    if (m->count == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 16;
        m->runs = cairn_realloc(m->runs, m->cap * sizeof *m->runs);
    }
    s_merge_run_t *r = &m->runs[m->count++];
    *r = (s_merge_run_t){.run = run};
    MDB_val key = *k, data = *v;
    int rc = mdb_cursor_open(m->txn, self->runs_dbi, &r->cursor);
    if (rc == 0)
        rc = mdb_cursor_get(r->cursor, &key, &data, MDB_SET_KEY);
    if (rc == 0) {
        r->key = key;
        r->data = data;
    }
    return rc;
}

/* Moves r to its next record, or marks it done at the end of its run. */
static int s_merge_advance(s_merge_run_t *r, MDB_cursor_op op)
{
    int rc = mdb_cursor_get(r->cursor, &r->key, &r->data, op);
    if (rc == 0 && (r->key.mv_size < S_RUN_PREFIX || s_get_u64(r->key.mv_data) != r->run))
        rc = MDB_NOTFOUND;
    if (rc == MDB_NOTFOUND)
        r->key.mv_data = NULL;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Orders the index keys (after the run id) of two current records. */
static int s_merge_key_cmp(const MDB_val *a, const MDB_val *b)
{
    size_t la = a->mv_size - S_RUN_PREFIX, lb = b->mv_size - S_RUN_PREFIX;
    int c = memcmp((const char *)a->mv_data + S_RUN_PREFIX, (const char *)b->mv_data + S_RUN_PREFIX,
                   la < lb ? la : lb);
    return c ? c : la < lb ? -1 : la > lb;
}

/* One step of a merge pass, in txn: moves the items of every run's keys
 * from self->merge_key on (in key order, whole keys, at least budget items
 * unless the keys run out) into the index and deletes their run records.
 * Sets self->merge_next to the key where it stopped, merge_next_done when
 * no key was left, and *merged to the items moved. Returns an LMDB code. */
static int s_merge_step(store_t *self, MDB_txn *txn, size_t budget, size_t *merged)
{
    s_merge_runs_t m = {.txn = txn};
    MDB_cursor *index = NULL, *scan = NULL;
    uint8_t *seek = cairn_malloc(S_RUN_PREFIX + self->key_max_bytes);
    *merged = 0;
    self->merge_next_done = false;
    /* A cursor at each run's first key from merge_key on. */
    int rc = s_each_run(self, txn, self->merge_key, self->merge_key_len, s_add_merge_run, &m);
    s_merge_run_t *runs = m.runs;
    size_t n_runs = m.count;
    if (rc == 0)
        rc = mdb_cursor_open(txn, self->runs_dbi, &scan);
    if (rc == 0)
        rc = mdb_cursor_open(txn, self->index_dbi, &index);
    /* Key by key, smallest first: gather every run's items, then put them. */
    while (rc == 0) {
        const MDB_val *min = NULL;
        for (size_t i = 0; i < n_runs; i++)
            if (runs[i].key.mv_data && (!min || s_merge_key_cmp(&runs[i].key, min) < 0))
                min = &runs[i].key;
        if (!min) {
            self->merge_next_done = true;
            break;
        }
        size_t key_len = min->mv_size - S_RUN_PREFIX;
        if (*merged >= budget) {
            memcpy(self->merge_next, (const char *)min->mv_data + S_RUN_PREFIX, key_len);
            self->merge_next_len = key_len;
            break;
        }
        memcpy(seek + S_RUN_PREFIX, (const char *)min->mv_data + S_RUN_PREFIX, key_len);
        MDB_val want = {.mv_size = min->mv_size, .mv_data = seek};
        size_t count = 0;
        bool is_sorted = true;
        for (size_t i = 0; rc == 0 && i < n_runs; i++) {
            s_merge_run_t *r = &runs[i];
            if (!r->key.mv_data || s_merge_key_cmp(&r->key, &want) != 0)
                continue;
            size_t items = r->data.mv_size / S_ENTRY_BYTES;
            if (r->data.mv_size % S_ENTRY_BYTES) {
                rc = MDB_CORRUPTED;
                break;
            }
            s_multi_reserve(self, count + items);
            memcpy(self->multi + count * S_ENTRY_BYTES, r->data.mv_data, r->data.mv_size);
            if (count && items && memcmp(self->multi + (count - 1) * S_ENTRY_BYTES,
                                         self->multi + count * S_ENTRY_BYTES, S_ENTRY_BYTES) >= 0)
                is_sorted = false;
            count += items;
            if (r->taken++ == 0) {
                r->first_len = r->key.mv_size;
                r->first_key = cairn_malloc(r->first_len);
                memcpy(r->first_key, r->key.mv_data, r->first_len);
            }
            rc = s_merge_advance(r, MDB_NEXT);
        }
        if (rc != 0)
            break;
        size_t distinct = count;
        if (!is_sorted) { /* each run's items are sorted; together they may not be */
            qsort(self->multi, count, S_ENTRY_BYTES, s_item_cmp);
            distinct = count ? 1 : 0;
            for (size_t i = 1; i < count; i++)
                if (memcmp(self->multi + i * S_ENTRY_BYTES,
                           self->multi + (distinct - 1) * S_ENTRY_BYTES, S_ENTRY_BYTES))
                    memmove(self->multi + distinct++ * S_ENTRY_BYTES,
                            self->multi + i * S_ENTRY_BYTES, S_ENTRY_BYTES);
        }
        rc = s_index_put_key(index, (const char *)seek + S_RUN_PREFIX, key_len, self->multi,
                             distinct);
        *merged += count;
    }
    /* The merged records of each run are consecutive: delete them. */
    for (size_t i = 0; i < n_runs; i++) {
        s_merge_run_t *r = &runs[i];
        if (rc == 0 && r->taken) {
            MDB_val k = {.mv_size = r->first_len, .mv_data = r->first_key}, v;
            rc = mdb_cursor_get(scan, &k, &v, MDB_SET);
            for (size_t t = 0; rc == 0 && t < r->taken; t++) {
                if (t)
                    rc = mdb_cursor_get(scan, &k, &v, MDB_NEXT);
                if (rc == 0 && (k.mv_size < S_RUN_PREFIX || s_get_u64(k.mv_data) != r->run))
                    rc = MDB_CORRUPTED;
                if (rc == 0)
                    rc = mdb_cursor_del(scan, 0);
            }
        }
        if (r->cursor)
            mdb_cursor_close(r->cursor);
        free(r->first_key);
    }
    if (index)
        mdb_cursor_close(index);
    if (scan)
        mdb_cursor_close(scan);
    free(runs);
    free(seek);
    return rc;
}

/* Removes the data item (time_ms, seq, fp) of key in the txn ctx; one
 * already missing is not an error. */
static int s_unindex_key(store_t *self, void *ctx, const char *key, size_t key_len,
                         int64_t time_ms, uint64_t seq, uint64_t fp)
{
    uint8_t entry[S_ENTRY_BYTES];
    s_put_entry(entry, time_ms, seq, fp);
    MDB_val k = {.mv_size = key_len, .mv_data = (void *)key};
    MDB_val data = {.mv_size = sizeof entry, .mv_data = entry};
    int rc = mdb_del(ctx, self->index_dbi, &k, &data);
    if (rc == MDB_NOTFOUND) /* not merged yet */
        rc = s_run_remove(self, ctx, key, key_len, entry);
    return rc;
}

/* Removes every index entry of event at seq, in txn. Returns an LMDB code. */
static int s_unindex_event(store_t *self, MDB_txn *txn, const Cairn__Event *event, uint64_t seq)
{
    return s_each_index_key(self, event, seq, s_unindex_key, txn);
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
    /* The newest events may have been deleted: never hand out their seqs again. */
    key = (MDB_val){.mv_size = strlen(STORE_DELETED_KEY), .mv_data = STORE_DELETED_KEY};
    int deleted_rc = rc == 0 ? mdb_get(txn, self->meta_dbi, &key, &val) : MDB_NOTFOUND;
    if (deleted_rc == 0 && val.mv_size == 8 && s_get_u64(val.mv_data) >= self->next_seq)
        self->next_seq = s_get_u64(val.mv_data) + 1;
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

/* Reads meta key into a u64; *found false when absent. Returns an LMDB code. */
static int s_get_meta_u64(store_t *self, MDB_txn *txn, const char *name, uint64_t *value,
                          bool *found)
{
    MDB_val key = {.mv_size = strlen(name), .mv_data = (void *)name}, val;
    int rc = mdb_get(txn, self->meta_dbi, &key, &val);
    *found = rc == 0;
    *value = 0;
    if (rc == 0 && val.mv_size != 8)
        return MDB_CORRUPTED;
    if (rc == 0)
        *value = s_get_u64(val.mv_data);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int s_put_meta_u64(store_t *self, MDB_txn *txn, const char *name, uint64_t value)
{
    uint8_t be[8];
    s_put_u64(be, value);
    MDB_val key = {.mv_size = strlen(name), .mv_data = (void *)name};
    MDB_val val = {.mv_size = sizeof be, .mv_data = be};
    return mdb_put(txn, self->meta_dbi, &key, &val, 0);
}

/* Puts event's ids entry (a rebuild). */
static int s_rebuild_id(store_t *self, MDB_txn *txn, const Cairn__Event *event,
                        const uint8_t seq_be[8])
{
    uint8_t id_key[S_ID_KEY_PREFIX + EVENT_ID_MAX_BYTES];
    size_t len = event->event_id ? strlen(event->event_id) : 0;
    if (len == 0 || len > EVENT_ID_MAX_BYTES)
        return 0; /* the store never took such an event */
    MDB_val id = {.mv_size = s_id_key(event, id_key), .mv_data = id_key};
    MDB_val seq_val = {.mv_size = 8, .mv_data = (void *)seq_be};
    return mdb_put(txn, self->ids_dbi, &id, &seq_val, 0);
}

/* Indexes up to S_REBUILD_CHUNK events with seq > *after_seq in one write
 * transaction; advances *after_seq. Sets *is_done at the last event. */
static int s_rebuild_chunk(store_t *self, uint64_t *after_seq, bool *is_done, cairn_arena_t *arena)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cursor = NULL;
    uint8_t first_be[8];
    s_put_u64(first_be, *after_seq + 1);
    MDB_val key = {.mv_size = sizeof first_be, .mv_data = first_be}, val;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_cursor_open(txn, self->events_dbi, &cursor);
    if (rc == 0)
        rc = mdb_cursor_get(cursor, &key, &val, MDB_SET_RANGE);
    for (int i = 0; rc == 0 && i < S_REBUILD_CHUNK; i++) {
        Cairn__StoredEvent *stored =
            key.mv_size == 8 ? cairn__stored_event__unpack(&arena->allocator, val.mv_size,
                                                           val.mv_data)
                             : NULL;
        if (!stored || !stored->event)
            rc = MDB_CORRUPTED;
        else {
            *after_seq = s_get_u64(key.mv_data);
            s_index_queue_event(self, stored->event, *after_seq);
            rc = s_rebuild_id(self, txn, stored->event, key.mv_data);
        }
        cairn_arena_reset(arena);
        if (rc == 0)
            rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT);
    }
    *is_done = rc == MDB_NOTFOUND;
    if (rc == MDB_NOTFOUND)
        rc = 0;
    size_t written = 0;
    if (rc == 0)
        rc = s_index_flush(self, txn, 0, &written);
    s_index_clear(self);
    if (cursor)
        mdb_cursor_close(cursor);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    return rc;
}

/* Builds the index of a store written before it existed (see DESIGN), or
 * marks a new store's index complete. Writer stores only. */
static int s_ensure_index(store_t *self)
{
    MDB_txn *txn = NULL;
    uint64_t version = 0;
    bool has_version = false, is_done = false;
    cairn_arena_t arena;
    cairn_arena_init(&arena);
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc == 0)
        rc = s_get_meta_u64(self, txn, STORE_INDEX_KEY, &version, &has_version);
    if (rc == 0 && has_version && version == STORE_INDEX_VERSION) {
        mdb_txn_abort(txn);
        return 0;
    }
    MDB_stat stat = {0};
    if (rc == 0)
        rc = mdb_stat(txn, self->events_dbi, &stat);
    if (rc == 0 && stat.ms_entries > 0)
        cairn_log_notice("store %s: building the index of %zu stored events", self->dir,
                         (size_t)stat.ms_entries);
    if (rc == 0)
        rc = mdb_drop(txn, self->index_dbi, 0); /* a rebuild cut short left some */
    if (rc == 0)
        rc = mdb_drop(txn, self->ids_dbi, 0); /* version 1 keyed them by eventID alone */
    if (rc == 0)
        rc = mdb_drop(txn, self->runs_dbi, 0);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    txn = NULL;
    uint64_t after_seq = 0;
    while (rc == 0 && !is_done) {
        rc = s_rebuild_chunk(self, &after_seq, &is_done, &arena);
    }
    if (rc == 0)
        rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc == 0)
        rc = s_put_meta_u64(self, txn, STORE_INDEX_KEY, STORE_INDEX_VERSION);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    cairn_arena_fini(&arena);
    if (rc != 0)
        cairn_log_error("store %s: cannot build the index (after seq %llu): %s", self->dir,
                        (unsigned long long)after_seq, mdb_strerror(rc));
    else if (stat.ms_entries > 0)
        cairn_log_notice("store %s: index built", self->dir);
    return rc == 0 ? 0 : -1;
}

/* Takes the effect of a committed merge step (s_merge_step). */
static void s_merge_done(store_t *self, size_t merged)
{
    self->run_items = merged < self->run_items ? self->run_items - merged : 0;
    atomic_store(&self->shown_run_items, self->run_items);
    if (self->merge_next_done)
        atomic_fetch_add(&self->passes, 1);
    self->is_merging = !self->merge_next_done;
    if (self->is_merging) {
        memcpy(self->merge_key, self->merge_next, self->merge_next_len);
        self->merge_key_len = self->merge_next_len;
    }
}

/* Learns the runs a store holds at open: the next run id and their items. */
static int s_load_runs(store_t *self)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cursor = NULL;
    MDB_val key, val;
    size_t records = 0;
    int rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_cursor_open(txn, self->runs_dbi, &cursor);
    if (rc == 0)
        rc = mdb_cursor_get(cursor, &key, &val, MDB_FIRST);
    self->next_run = 1;
    while (rc == 0) {
        if (key.mv_size < S_RUN_PREFIX) {
            rc = MDB_CORRUPTED;
            break;
        }
        uint64_t run = s_get_u64(key.mv_data);
        if (records++ == 0)
            self->pass_run = run;
        if (run >= self->next_run)
            self->next_run = run + 1;
        self->run_items += val.mv_size / S_ENTRY_BYTES;
        rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT);
    }
    if (records == 0)
        self->pass_run = self->next_run;
    if (cursor)
        mdb_cursor_close(cursor);
    if (txn)
        mdb_txn_abort(txn);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        cairn_log_error("store %s: cannot read the index runs: %s", self->dir, mdb_strerror(rc));
        return -1;
    }
    atomic_store(&self->shown_run_items, self->run_items);
    if (records)
        cairn_log_info("store %s: %zu index items in %zu run records wait for a merge", self->dir,
                       self->run_items, records);
    return 0;
}

int store_merge(store_t *self)
{
    if (!self->is_merging && self->run_items == 0)
        return 0;
    bool is_pass_start = !self->is_merging;
    size_t merged = 0;
    MDB_txn *txn = NULL;
    if (is_pass_start)
        self->merge_key_len = 0;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc == 0)
        rc = s_merge_step(self, txn, self->merge_step, &merged);
    if (rc == 0 && merged)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn); /* nothing merged: nothing to write */
    if (rc != 0) {
        cairn_log_error("store %s: merging the index's runs failed: %s", self->dir,
                        mdb_strerror(rc));
        return -1;
    }
    if (is_pass_start)
        self->pass_run = self->next_run;
    if (is_pass_start && self->merge_next_done && merged == 0)
        self->run_items = 0; /* a whole pass found no run: the count was off */
    s_merge_done(self, merged);
    return self->is_merging || self->run_items ? 1 : 0;
}

void store_index_stats(const store_t *self, store_index_stats_t *stats)
{
    store_t *s = (store_t *)self; /* atomics only */
    stats->run_items = atomic_load(&s->shown_run_items);
    stats->merge_passes = atomic_load(&s->passes);
    stats->recent_ids = atomic_load(&s->shown_recent_ids);
}

void store_set_cache_keep(store_t *self, uint64_t keep_bytes, uint64_t step_bytes)
{
    self->cache_keep = keep_bytes ? keep_bytes : S_CACHE_KEEP_BYTES;
    self->cache_step = step_bytes ? step_bytes : S_CACHE_STEP_BYTES;
}

void store_set_ids_freeze(store_t *self, size_t at_ids)
{
    self->ids_freeze_at = at_ids ? at_ids : S_IDS_FREEZE_AT;
}

void store_set_merge(store_t *self, size_t at_items, size_t max_runs, size_t step_items)
{
    self->merge_at = at_items ? at_items : S_MERGE_AT_ENTRIES;
    self->merge_max_runs = max_runs ? max_runs : S_MERGE_MAX_RUNS;
    self->merge_step = step_items ? step_items : S_MERGE_STEP_ENTRIES;
}

/* Reads back into ids_new the ids of the events stored after
 * ids_through_seq, or, in a store that predates the recent ids (all its ids
 * are in ids), records that (see DEDUP). Writer stores only. */
static int s_load_ids(store_t *self)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cursor = NULL;
    uint64_t through = 0;
    bool has_through = false;
    size_t count = 0;
    cairn_arena_t arena;
    cairn_arena_init(&arena);
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc == 0)
        rc = s_get_meta_u64(self, txn, STORE_IDS_KEY, &through, &has_through);
    if (rc == 0 && !has_through)
        rc = s_put_meta_u64(self, txn, STORE_IDS_KEY, self->next_seq - 1);
    uint8_t first_be[8];
    s_put_u64(first_be, through + 1);
    MDB_val key = {.mv_size = sizeof first_be, .mv_data = first_be}, val;
    if (rc == 0 && has_through)
        rc = mdb_cursor_open(txn, self->events_dbi, &cursor);
    int r = rc == 0 && cursor ? mdb_cursor_get(cursor, &key, &val, MDB_SET_RANGE) : MDB_NOTFOUND;
    uint8_t id_key[S_ID_KEY_PREFIX + EVENT_ID_MAX_BYTES];
    for (; r == 0; r = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) {
        Cairn__StoredEvent *stored =
            key.mv_size == 8 ? cairn__stored_event__unpack(&arena.allocator, val.mv_size,
                                                           val.mv_data)
                             : NULL;
        if (!stored || !stored->event) {
            r = MDB_CORRUPTED;
            break;
        }
        const Cairn__Event *event = stored->event;
        size_t len = event->event_id ? strlen(event->event_id) : 0;
        if (len > 0 && len <= EVENT_ID_MAX_BYTES) {
            idset_add(&self->ids_new, id_key, s_id_key(event, id_key), s_get_u64(key.mv_data));
            count++;
        }
        cairn_arena_reset(&arena);
    }
    if (rc == 0 && r != MDB_NOTFOUND)
        rc = r;
    if (cursor)
        mdb_cursor_close(cursor);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    cairn_arena_fini(&arena);
    if (rc != 0) {
        cairn_log_error("store %s: cannot read back the recent eventIDs: %s", self->dir,
                        mdb_strerror(rc));
        return -1;
    }
    atomic_store(&self->shown_recent_ids, count);
    if (count)
        cairn_log_info("store %s: read back the eventIDs of the %zu events stored after seq %llu",
                       self->dir, count, (unsigned long long)through);
    return 0;
}

store_t *store_new(const char *dir, int64_t map_bytes, bool is_durable)
{
    store_t *self = cairn_calloc(1, sizeof *self);
    self->dir = cairn_strdup(dir);
    self->next_seq = 1;
    self->ids_freeze_at = S_IDS_FREEZE_AT;
    self->is_durable = is_durable;
    store_set_cache_keep(self, 0, 0);
    self->is_ids_lock_ready = pthread_mutex_init(&self->ids_lock, NULL) == 0 &&
                              pthread_mutex_init(&self->ahead_lock, NULL) == 0;
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
        rc = mdb_env_open(self->env, dir, MDB_NOTLS | MDB_NORDAHEAD | (is_durable ? 0 : MDB_NOSYNC), 0600);
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
        rc = mdb_dbi_open(txn, "index", MDB_CREATE | MDB_DUPSORT | MDB_DUPFIXED,
                          &self->index_dbi);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "runs", MDB_CREATE, &self->runs_dbi);
    if (rc == 0)
        rc = mdb_txn_commit(txn); /* frees txn even when it fails */
    else if (txn)
        mdb_txn_abort(txn);
    if (rc != 0) {
        cairn_log_error("store %s: cannot open: %s", dir, mdb_strerror(rc));
        store_destroy(&self);
        return NULL;
    }
    self->merge_at = S_MERGE_AT_ENTRIES;
    self->merge_max_runs = S_MERGE_MAX_RUNS;
    self->merge_step = S_MERGE_STEP_ENTRIES;
    self->merge_key = cairn_malloc(self->key_max_bytes + 1);
    self->merge_next = cairn_malloc(self->key_max_bytes + 1);
    if (!self->is_ids_lock_ready || s_ensure_index(self) != 0 || s_load_progress(self) != 0 ||
        s_load_runs(self) != 0 || s_load_ids(self) != 0) {
        store_destroy(&self); /* logged */
        return NULL;
    }
    /* What the file held at open is left as it is: only pages this process
     * commits are dropped. */
    self->cache_kept_from = s_file_end(self);
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
    free(self->pending);
    free(self->pending_keys);
    free(self->keys);
    free(self->key_table);
    free(self->sorted);
    free(self->key_start);
    free(self->multi);
    free(self->merge_key);
    free(self->merge_next);
    idset_fini(&self->ids_new);
    idset_fini(&self->ids_merging);
    free(self->ids_undo);
    if (self->is_ids_lock_ready) {
        pthread_mutex_destroy(&self->ids_lock);
        pthread_mutex_destroy(&self->ahead_lock);
    }
    free(self->dir);
    free(self);
    *self_p = NULL;
}

/* Stores one new event, or counts it as a duplicate. Returns an LMDB code. */
static int s_put_event(store_t *self, MDB_txn *txn, const Cairn__Batch *batch, size_t index,
                       int64_t ingest_ms, uint64_t *seq, store_batch_result_t *result)
{
    const Cairn__Event *event = batch->events[index];
    uint8_t seq_be[8], id_key[S_ID_KEY_PREFIX + EVENT_ID_MAX_BYTES];
    s_put_u64(seq_be, *seq);
    MDB_val id = {.mv_size = s_id_key(event, id_key), .mv_data = id_key}, found;
    MDB_val seq_val = {.mv_size = sizeof seq_be, .mv_data = seq_be};
    int rc = idset_find(&self->ids_new, id_key, id.mv_size) ||
                     idset_find(&self->ids_merging, id_key, id.mv_size)
                 ? 0
                 : mdb_get(txn, self->ids_dbi, &id, &found);
    if (rc == 0) {
        result->duplicate_count++;
        return 0;
    }
    if (rc != MDB_NOTFOUND)
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
        s_index_queue_event(self, event, *seq);
        idset_add(&self->ids_new, id_key, id.mv_size, *seq);
    }
    if (rc == 0) {
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
        if (id_len == 0 || id_len > EVENT_ID_MAX_BYTES) {
            cairn_log_error("store %s: batch %llu+%zu from agent %s: event %zu has %s (limit "
                            "%d bytes)",
                            self->dir, (unsigned long long)batch->first_seq, count,
                            batch->agent_id ? batch->agent_id : "", i,
                            id_len ? "an eventID too long" : "no eventID", EVENT_ID_MAX_BYTES);
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

/* Merges up to budget ids of ids_merging, from ids_merged on, into ids in
 * txn; sets *to to where the step ended. When it ends the generation, meta
 * says so in the same transaction (see DEDUP). Returns an LMDB code. */
static int s_ids_merge_step(store_t *self, MDB_txn *txn, size_t budget, size_t *to)
{
    idset_t *set = &self->ids_merging;
    size_t i = self->ids_merged;
    int rc = 0;
    uint8_t seq_be[8];
    for (size_t n = 0; rc == 0 && i < set->count && n < budget; i++, n++) {
        const idset_item_t *item = &set->items[i];
        if (item->seq == 0)
            continue; /* deleted since */
        s_put_u64(seq_be, item->seq);
        MDB_val key = {.mv_size = item->key_len, .mv_data = (void *)idset_key(set, item)};
        MDB_val val = {.mv_size = sizeof seq_be, .mv_data = seq_be};
        rc = mdb_put(txn, self->ids_dbi, &key, &val, MDB_NOOVERWRITE);
        if (rc == MDB_KEYEXIST)
            rc = 0; /* merged before a restart, read back at open */
    }
    if (rc == 0 && i == set->count)
        rc = s_put_meta_u64(self, txn, STORE_IDS_KEY, set->max_seq);
    *to = i;
    return rc;
}

/* After the commit of a put: the merge's progress, and a freeze when due. */
static void s_ids_committed(store_t *self, size_t merged_to)
{
    self->ids_merged = merged_to;
    if (self->ids_merging.count && self->ids_merged == self->ids_merging.count) {
        idset_fini(&self->ids_merging);
        self->ids_merged = 0;
    }
    if (self->ids_merging.count == 0 && self->ids_new.count >= self->ids_freeze_at) {
        self->ids_merging = self->ids_new;
        idset_init(&self->ids_new);
        idset_sort(&self->ids_merging);
        self->ids_merged = 0;
    }
    atomic_store(&self->shown_recent_ids,
                 self->ids_new.count + self->ids_merging.count - self->ids_merged);
}

static int s_put_batches(store_t *self, const Cairn__Batch *const *batches, size_t batch_count,
                         int64_t now_ms, store_batch_result_t *results)
{
    int64_t ingest_ms = now_ms > self->last_ingest_ms ? now_ms : self->last_ingest_ms;
    uint64_t seq = self->next_seq;
    MDB_txn *txn = NULL;
    memset(results, 0, batch_count * sizeof *results);
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    size_t written = 0, merged = 0, ids_before = self->ids_new.count;
    size_t ids_to = self->ids_merged;
    for (size_t i = 0; rc == 0 && i < batch_count; i++)
        rc = s_put_batch(self, txn, batches[i], ingest_ms, &seq, &results[i]);
    if (rc == 0 && self->ids_merging.count)
        rc = s_ids_merge_step(self, txn, S_IDS_STEP + 2 * (self->ids_new.count - ids_before),
                              &ids_to);
    if (rc == 0)
        rc = s_index_flush(self, txn, self->next_run, &written);
    s_index_clear(self); /* an abort drops what is queued */
    bool is_pass_start = !self->is_merging &&
                         (self->run_items + written >= self->merge_at ||
                          self->next_run + 1 - self->pass_run >= self->merge_max_runs);
    if (is_pass_start)
        self->merge_key_len = 0;
    if (rc == 0 && (self->is_merging || is_pass_start)) {
        size_t budget = self->merge_step > SIZE_MAX - written ? SIZE_MAX
                                                                : self->merge_step + written;
        rc = s_merge_step(self, txn, budget, &merged);
    }
    if (rc == 0)
        rc = mdb_txn_commit(txn); /* frees txn even when it fails */
    else if (txn)
        mdb_txn_abort(txn);

    if (rc == 0 && is_pass_start)
        self->pass_run = self->next_run;
    if (rc == 0 && written) {
        self->next_run++;
        self->run_items += written;
        atomic_store(&self->shown_run_items, self->run_items);
    }
    if (rc == 0 && (self->is_merging || is_pass_start))
        s_merge_done(self, merged);
    if (rc == 0) {
        s_ids_committed(self, ids_to);
        s_drop_cache(self);
    } else
        idset_truncate(&self->ids_new, ids_before);
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

int store_put_batches(store_t *self, const Cairn__Batch *const *batches, size_t batch_count,
                      int64_t now_ms, store_batch_result_t *results)
{
    pthread_mutex_lock(&self->ids_lock);
    int rc = s_put_batches(self, batches, batch_count, now_ms, results);
    pthread_mutex_unlock(&self->ids_lock);
    return rc;
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

/* Grows w to end at to, asking for what no window holds yet; a window it
 * reaches is merged into it. */
static void s_ahead_grow(s_ahead_t ahead[S_READ_AHEAD_STREAMS], s_ahead_t *w, uintptr_t to)
{
    while (w->to < to) {
        s_ahead_t *next = NULL; /* the lowest window that starts in w's way */
        for (size_t i = 0; i < S_READ_AHEAD_STREAMS; i++) {
            s_ahead_t *o = &ahead[i];
            if (o != w && o->used && o->from >= w->from && o->from < to && o->to > w->to &&
                (!next || o->from < next->from))
                next = o;
        }
        uintptr_t ask_to = next && next->from < to ? next->from : to;
        if (ask_to > w->to)
            madvise((void *)w->to, ask_to - w->to, MADV_WILLNEED); /* advice; past the map's
                                                                    * end: ENOMEM */
        if (!next) {
            w->to = to;
            break;
        }
        w->to = next->to;
        if (next->used > w->used)
            w->used = next->used;
        *next = (s_ahead_t){0};
    }
}

/* Asks for the S_READ_AHEAD_BYTES from at, but not what a window already
 * holds: a read in the first half of a window's last S_READ_AHEAD_BYTES
 * asks nothing, one past it grows the window, and one outside every window
 * starts a new one in place of the least recently used. A window keeps its
 * start, so that reads going back a few MB find it. */
static void s_read_ahead(s_ahead_t ahead[S_READ_AHEAD_STREAMS], uintptr_t at, uint64_t now)
{
    uintptr_t from = at & ~(uintptr_t)(S_PAGE_BYTES - 1);
    s_ahead_t *w = NULL, *lru = &ahead[0];
    for (size_t i = 0; i < S_READ_AHEAD_STREAMS && !w; i++) {
        if (ahead[i].used && at >= ahead[i].from && at < ahead[i].to)
            w = &ahead[i];
        else if (ahead[i].used < lru->used)
            lru = &ahead[i];
    }
    if (!w) {
        w = lru;
        *w = (s_ahead_t){.from = from, .to = from};
    }
    w->used = now;
    if (at + S_READ_AHEAD_BYTES / 2 > w->to)
        s_ahead_grow(ahead, w, from + S_READ_AHEAD_BYTES);
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
    /* The read-ahead windows (see READING BACK): the store's, for a call
     * that goes on at the event the last one stopped at or after it, within
     * S_READ_AHEAD_KEEP_MS. */
    s_ahead_t own[S_READ_AHEAD_STREAMS] = {{0}}, *ahead = own;
    uint64_t own_reads = 0, *reads = &own_reads;
    bool is_shared = self->is_ids_lock_ready;
    if (is_shared) {
        pthread_mutex_lock(&self->ahead_lock);
        ahead = self->ahead;
        reads = &self->ahead_reads;
        if (after_seq > self->ahead_after_seq || after_seq + 1 < self->ahead_after_seq ||
            cairn_time_mono_ms() - self->ahead_at_ms > S_READ_AHEAD_KEEP_MS) {
            memset(self->ahead, 0, sizeof self->ahead);
            self->ahead_reads = 0;
        }
    }
    uint64_t last_seq = after_seq;
    while (rc == 0 && fn_rc == 0) {
        int64_t ingest_ms;
        s_read_ahead(ahead, (uintptr_t)val.mv_data, ++*reads);
        if (key.mv_size != 8 || s_peek_ingest_time(val.mv_data, val.mv_size, &ingest_ms) != 0) {
            rc = MDB_CORRUPTED;
            break;
        }
        last_seq = s_get_u64(key.mv_data);
        fn_rc = fn(ctx, last_seq, ingest_ms, val.mv_data, val.mv_size);
        count++;
        if (fn_rc == 0)
            rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT);
    }
    if (is_shared) {
        self->ahead_after_seq = last_seq;
        self->ahead_at_ms = cairn_time_mono_ms();
        pthread_mutex_unlock(&self->ahead_lock);
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

store_t *store_open_readonly(const char *dir)
{
    store_t *self = cairn_calloc(1, sizeof *self);
    self->dir = cairn_strdup(dir);
    self->is_readonly = true;
    MDB_txn *txn = NULL;
    uint64_t version = 0;
    bool has_version = false;
    int rc = mdb_env_create(&self->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(self->env, STORE_MAX_DBS);
    if (rc == 0)
        rc = mdb_env_open(self->env, dir, MDB_RDONLY | MDB_NOTLS, 0600);
    if (rc == 0) {
        self->key_max_bytes = (size_t)mdb_env_get_maxkeysize(self->env);
        rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn);
    }
    if (rc == 0)
        rc = mdb_dbi_open(txn, "events", 0, &self->events_dbi);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "ids", 0, &self->ids_dbi);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "agents", 0, &self->agents_dbi);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", 0, &self->meta_dbi);
    if (rc == 0)
        rc = s_get_meta_u64(self, txn, STORE_INDEX_KEY, &version, &has_version);
    if (rc == 0 && (!has_version || version != STORE_INDEX_VERSION)) {
        cairn_log_error("store %s: its index is not built yet; start cairn-aggregator %s on it "
                        "once (it builds the index when it opens the store)",
                        dir, CAIRN_VERSION);
        mdb_txn_abort(txn);
        store_destroy(&self);
        return NULL;
    }
    if (rc == 0)
        rc = mdb_dbi_open(txn, "index", MDB_DUPSORT | MDB_DUPFIXED, &self->index_dbi);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "runs", 0, &self->runs_dbi);
    if (rc == 0)
        rc = mdb_txn_commit(txn); /* keeps the dbi handles; frees txn */
    else if (txn)
        mdb_txn_abort(txn);
    if (rc != 0) {
        cairn_log_error("store %s: cannot open for reading: %s", dir,
                        rc == ENOENT ? "no store there (no data.mdb)" : mdb_strerror(rc));
        store_destroy(&self);
    }
    return self;
}

/* Begins a read transaction. A read-only env whose file the writer has
 * grown past the map it opened with is told MDB_MAP_RESIZED: adopt the new
 * size and try once more. */
static int s_begin_read(store_t *self, MDB_txn **txn)
{
    int rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, txn);
    if (rc == MDB_MAP_RESIZED && mdb_env_set_mapsize(self->env, 0) == 0)
        rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, txn);
    return rc;
}

/* The state of one store_query call. */
typedef struct {
    store_t *store;
    const store_query_t *query;
    MDB_txn *txn;
    MDB_cursor *probe;                         /* membership checks */
    char keys[S_DRIVE_ID + 1][1024];           /* each filter's index key */
    size_t key_lens[S_DRIVE_ID + 1];           /* 0: no filter on that attribute */
    uint64_t fps[S_DRIVE_ID + 1];              /* each filter's fingerprint */
    s_slices_t slices[S_DRIVE_ID + 1];         /* each filter's items in runs */
    bool has_unsure_filter;                    /* hashed or cut: check on the event */
    uint8_t upper[S_ENTRY_BYTES];              /* newest data item that may match */
    cairn_arena_t arena;                           /* unpacks the current event */
    store_hit_fn *fn;
    void *ctx;
    long count;                                /* hits passed to fn */
    int fn_rc;                                 /* last answer of fn */
} s_query_t;

/* Reads the event at position and, if it passes the checks the index could
 * not make (hashed keys and cut values only narrow the candidates), hands it
 * to fn. Returns an LMDB code. */
static int s_query_emit(s_query_t *q, const store_position_t *position)
{
    uint8_t seq_be[8];
    s_put_u64(seq_be, position->seq);
    MDB_val key = {.mv_size = sizeof seq_be, .mv_data = seq_be}, val;
    int rc = mdb_get(q->txn, q->store->events_dbi, &key, &val);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc; /* indexed, so it must be there */
    Cairn__StoredEvent *stored =
        cairn__stored_event__unpack(&q->arena.allocator, val.mv_size, val.mv_data);
    if (!stored || !stored->event) {
        cairn_arena_reset(&q->arena);
        return MDB_CORRUPTED;
    }
    bool is_match = true;
    if (q->query->event_id)
        is_match = stored->event->event_id && !strcmp(stored->event->event_id, q->query->event_id);
    if (q->has_unsure_filter)
        for (int a = 0; is_match && a < STORE_ATTR_COUNT; a++)
            if (q->query->values[a])
                is_match = s_event_has(stored->event, (store_attr_t)a, q->query->values[a]);
    if (is_match) {
        q->fn_rc = q->fn(q->ctx, position, stored);
        q->count++;
    }
    cairn_arena_reset(&q->arena);
    return 0;
}

/* Whether the event at data has every filter but the driving one, by index:
 * the same position under each filter's key, with that filter's fingerprint. */
static int s_query_probe(s_query_t *q, int driving, const MDB_val *data, bool *is_match)
{
    uint8_t entry[S_ENTRY_BYTES];
    memcpy(entry, data->mv_data, S_POSITION_BYTES);
    *is_match = true;
    for (int a = 0; a <= S_DRIVE_ID && *is_match; a++) {
        if (!q->key_lens[a] || a == driving)
            continue;
        s_put_u64(entry + S_POSITION_BYTES, q->fps[a]);
        MDB_val key = {.mv_size = q->key_lens[a], .mv_data = q->keys[a]};
        MDB_val probe_data = {.mv_size = sizeof entry, .mv_data = entry};
        int rc = mdb_cursor_get(q->probe, &key, &probe_data, MDB_GET_BOTH);
        if (rc == MDB_NOTFOUND) {
            *is_match = false;
            for (size_t i = 0; !*is_match && i < q->slices[a].count; i++)
                *is_match = s_slice_has(&q->slices[a].slices[i], entry);
        } else if (rc != 0)
            return rc;
    }
    return 0;
}

/* Positions the driving key's index cursor at its newest item at or below
 * q->upper. Returns an LMDB code (MDB_NOTFOUND: none). */
static int s_query_seek(s_query_t *q, MDB_cursor *drive, int driving, MDB_val *data)
{
    MDB_val drive_key = {.mv_size = q->key_lens[driving], .mv_data = q->keys[driving]};
    MDB_val key = drive_key;
    *data = (MDB_val){.mv_size = S_ENTRY_BYTES, .mv_data = q->upper};
    int rc = mdb_cursor_get(drive, &key, data, MDB_GET_BOTH_RANGE); /* first >= upper */
    if (rc == 0 && memcmp(data->mv_data, q->upper, S_ENTRY_BYTES) > 0)
        rc = mdb_cursor_get(drive, &key, data, MDB_PREV_DUP);
    else if (rc == MDB_NOTFOUND) { /* every item is below upper: start at the newest */
        key = drive_key; /* MDB_SET needs data: without it, LAST_DUP is EINVAL */
        rc = mdb_cursor_get(drive, &key, data, MDB_SET);
        if (rc == 0)
            rc = mdb_cursor_get(drive, &key, data, MDB_LAST_DUP);
    }
    return rc;
}

/* Walks the driving key's data items from q->upper down to start_ms, the
 * index's and the runs' merged newest first; under a hashed key, only those
 * with the driving value's fingerprint. */
static int s_query_scan(s_query_t *q, int driving)
{
    MDB_cursor *drive = NULL;
    MDB_val key, data;
    uint64_t drive_fp = q->fps[driving];
    s_slices_t *runs = &q->slices[driving];
    size_t *left = cairn_calloc(runs->count + 1, sizeof *left); /* items to go per slice */
    for (size_t i = 0; i < runs->count; i++)
        left[i] = s_slice_upper(&runs->slices[i], q->upper);
    int rc = mdb_cursor_open(q->txn, q->store->index_dbi, &drive);
    int index_rc = rc == 0 ? s_query_seek(q, drive, driving, &data) : rc;
    if (index_rc != 0 && index_rc != MDB_NOTFOUND)
        rc = index_rc;
    while (rc == 0 && q->fn_rc == 0) {
        const uint8_t *item = index_rc == 0 ? data.mv_data : NULL;
        size_t from = SIZE_MAX; /* the slice item comes from; SIZE_MAX: the index */
        if (index_rc == 0 && data.mv_size != S_ENTRY_BYTES) {
            rc = MDB_CORRUPTED;
            break;
        }
        for (size_t i = 0; i < runs->count; i++) {
            const uint8_t *top = left[i] ? runs->slices[i].items + (left[i] - 1) * S_ENTRY_BYTES
                                         : NULL;
            if (top && (!item || memcmp(top, item, S_ENTRY_BYTES) > 0)) {
                item = top;
                from = i;
            }
        }
        if (!item)
            break; /* every source is done */
        store_position_t position;
        bool is_match = true;
        s_get_position(item, &position);
        if (position.event_time_ms < q->query->start_ms)
            break;
        if (s_get_u64(item + S_POSITION_BYTES) != drive_fp)
            is_match = false; /* another value in the same bucket */
        MDB_val found = {.mv_size = S_ENTRY_BYTES, .mv_data = (void *)item};
        if (is_match)
            rc = s_query_probe(q, driving, &found, &is_match);
        if (rc == 0 && is_match)
            rc = s_query_emit(q, &position);
        if (rc == 0 && from != SIZE_MAX)
            left[from]--;
        else if (rc == 0) {
            index_rc = mdb_cursor_get(drive, &key, &data, MDB_PREV_DUP);
            if (index_rc != 0 && index_rc != MDB_NOTFOUND)
                rc = index_rc;
        }
    }
    if (drive)
        mdb_cursor_close(drive);
    free(left);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Sets q->upper: the newest data item allowed by end_ms and the resume
 * point (any fingerprint). */
static void s_query_upper(s_query_t *q)
{
    const store_query_t *query = q->query;
    s_put_position(q->upper, query->end_ms, UINT64_MAX);
    if (query->has_after) {
        uint8_t after[S_POSITION_BYTES] = {0}; /* all zeros: below every position */
        if (query->after.seq > 0)
            s_put_position(after, query->after.event_time_ms, query->after.seq - 1);
        else if (query->after.event_time_ms > INT64_MIN)
            s_put_position(after, query->after.event_time_ms - 1, UINT64_MAX);
        if (memcmp(after, q->upper, sizeof after) < 0)
            memcpy(q->upper, after, sizeof after);
    }
    s_put_u64(q->upper + S_POSITION_BYTES, UINT64_MAX);
}

long store_query(store_t *self, const store_query_t *query, store_hit_fn *fn, void *ctx)
{
    s_query_t *q = cairn_calloc(1, sizeof *q);
    q->store = self;
    q->query = query;
    q->fn = fn;
    q->ctx = ctx;
    cairn_arena_init(&q->arena);
    s_query_upper(q);
    int driving = STORE_ATTR_COUNT; /* the all-events key */
    size_t driving_count = SIZE_MAX;
    bool is_empty = query->start_ms > query->end_ms;
    q->key_lens[STORE_ATTR_COUNT] =
        s_index_key(self, STORE_ATTR_COUNT, "", 0, q->keys[STORE_ATTR_COUNT],
                    &q->fps[STORE_ATTR_COUNT], NULL);
    if (query->event_id) {
        size_t id_len = strlen(query->event_id);
        if (id_len == 0 || id_len > EVENT_ID_MAX_BYTES)
            is_empty = true;
        else
            q->key_lens[S_DRIVE_ID] =
                s_event_id_key(self, query->event_id, q->keys[S_DRIVE_ID], &q->fps[S_DRIVE_ID]);
    }
    int rc = s_begin_read(self, &q->txn);
    if (rc == 0)
        rc = mdb_cursor_open(q->txn, self->index_dbi, &q->probe);
    for (int a = 0; rc == 0 && !is_empty && a <= S_DRIVE_ID; a++) {
        const char *value = a < STORE_ATTR_COUNT ? query->values[a] : NULL;
        if (a < STORE_ATTR_COUNT && !value)
            continue;
        if (a == STORE_ATTR_COUNT || (a == S_DRIVE_ID && !q->key_lens[a]))
            continue; /* the all-events key drives only when nothing else can */
        if (a < STORE_ATTR_COUNT) {
            bool is_cut;
            q->key_lens[a] = s_index_key(self, (store_attr_t)a, value, strlen(value), q->keys[a],
                                         &q->fps[a], &is_cut);
            q->has_unsure_filter |= is_cut || s_is_hashed((store_attr_t)a);
        }
        MDB_val key = {.mv_size = q->key_lens[a], .mv_data = q->keys[a]}, data;
        size_t count = 0;
        rc = mdb_cursor_get(q->probe, &key, &data, MDB_SET); /* data: see s_query_seek */
        if (rc == 0)
            rc = mdb_cursor_count(q->probe, &count);
        if (rc == MDB_NOTFOUND)
            rc = 0;
        if (rc == 0)
            rc = s_run_slices(self, q->txn, q->keys[a], q->key_lens[a], &q->slices[a]);
        count += q->slices[a].items;
        if (rc == 0 && (count == 0 || (value && value[0] == '\0'))) {
            is_empty = true; /* no event has it */
        } else if (rc == 0 && count < driving_count) {
            driving = a;
            driving_count = count;
        }
    }
    if (rc == 0 && !is_empty && driving == STORE_ATTR_COUNT)
        rc = s_run_slices(self, q->txn, q->keys[driving], q->key_lens[driving],
                          &q->slices[driving]);
    if (driving != STORE_ATTR_COUNT)
        q->key_lens[STORE_ATTR_COUNT] = 0; /* no need to probe it: every event has it */
    if (rc == 0 && !is_empty)
        rc = s_query_scan(q, driving);
    if (q->probe)
        mdb_cursor_close(q->probe);
    if (q->txn)
        mdb_txn_abort(q->txn);
    long count = q->count;
    if (rc != 0)
        cairn_log_error("store %s: query failed: %s", self->dir, mdb_strerror(rc));
    if (rc != 0 || q->fn_rc < 0)
        count = -1;
    cairn_arena_fini(&q->arena);
    for (int a = 0; a <= S_DRIVE_ID; a++)
        free(q->slices[a].slices);
    free(q);
    return count;
}

/* Deletes, inside txn, the event of seq whose packed StoredEvent is val:
 * its index entries, its eventID entry and the event. */
static int s_delete_in_txn(store_t *self, MDB_txn *txn, uint64_t seq, const MDB_val *val)
{
    uint8_t seq_be[8];
    s_put_u64(seq_be, seq);
    MDB_val key = {.mv_size = sizeof seq_be, .mv_data = seq_be}, id_val;
    Cairn__StoredEvent *stored = cairn__stored_event__unpack(NULL, val->mv_size, val->mv_data);
    int rc = stored && stored->event ? 0 : MDB_CORRUPTED;
    if (rc == 0)
        rc = s_unindex_event(self, txn, stored->event, seq);
    uint8_t id_key[S_ID_KEY_PREFIX + EVENT_ID_MAX_BYTES];
    if (rc == 0 && stored->event->event_id && stored->event->event_id[0] &&
        strlen(stored->event->event_id) <= EVENT_ID_MAX_BYTES) {
        MDB_val id = {.mv_size = s_id_key(stored->event, id_key), .mv_data = id_key};
        rc = mdb_get(txn, self->ids_dbi, &id, &id_val);
        if (rc == 0 && id_val.mv_size == 8 && s_get_u64(id_val.mv_data) == seq)
            rc = mdb_del(txn, self->ids_dbi, &id, NULL);
        else if (rc == 0 || rc == MDB_NOTFOUND)
            rc = 0; /* the id belongs to another event (cannot happen), or none */
        idset_t *sets[] = {&self->ids_new, &self->ids_merging};
        for (size_t i = 0; rc == 0 && i < 2; i++) {
            idset_item_t *item = idset_find(sets[i], id_key, id.mv_size);
            if (!item || item->seq != seq)
                continue;
            if (self->ids_undo_count == self->ids_undo_cap) {
                self->ids_undo_cap = self->ids_undo_cap ? 2 * self->ids_undo_cap : 64;
                self->ids_undo = cairn_realloc(self->ids_undo,
                                               self->ids_undo_cap * sizeof *self->ids_undo);
            }
            self->ids_undo[self->ids_undo_count].item = item;
            self->ids_undo[self->ids_undo_count++].seq = item->seq;
            item->seq = 0;
        }
    }
    if (rc == 0)
        rc = mdb_del(txn, self->events_dbi, &key, NULL);
    if (stored)
        cairn__stored_event__free_unpacked(stored, NULL);
    return rc;
}

/* Records in meta that seqs up to seq were deleted: they are never reused. */
static int s_note_deleted(store_t *self, MDB_txn *txn, uint64_t seq)
{
    uint64_t deleted_max = 0;
    bool has_deleted = false;
    int rc = s_get_meta_u64(self, txn, STORE_DELETED_KEY, &deleted_max, &has_deleted);
    if (rc == 0 && (!has_deleted || seq > deleted_max))
        rc = s_put_meta_u64(self, txn, STORE_DELETED_KEY, seq);
    return rc;
}

/* Begins a delete: takes ids_lock for it (see DEDUP). */
static void s_delete_begin(store_t *self)
{
    pthread_mutex_lock(&self->ids_lock);
    self->ids_undo_count = 0;
}

/* Ends a delete: if its transaction was not committed, the recent ids it
 * marked deleted are theirs again. */
static void s_delete_end(store_t *self, bool is_committed)
{
    while (!is_committed && self->ids_undo_count > 0) {
        self->ids_undo_count--;
        self->ids_undo[self->ids_undo_count].item->seq = self->ids_undo[self->ids_undo_count].seq;
    }
    self->ids_undo_count = 0;
    pthread_mutex_unlock(&self->ids_lock);
}

int store_delete_event(store_t *self, uint64_t seq)
{
    MDB_txn *txn = NULL;
    uint8_t seq_be[8];
    s_put_u64(seq_be, seq);
    MDB_val key = {.mv_size = sizeof seq_be, .mv_data = seq_be}, val;
    s_delete_begin(self);
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_get(txn, self->events_dbi, &key, &val);
    if (rc == 0)
        rc = s_delete_in_txn(self, txn, seq, &val);
    if (rc == 0)
        rc = s_note_deleted(self, txn, seq);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    s_delete_end(self, rc == 0);
    if (rc == MDB_NOTFOUND)
        return 0; /* no such event: nothing to do */
    if (rc != 0)
        cairn_log_error("store %s: cannot delete the event of seq %llu: %s", self->dir,
                        (unsigned long long)seq, mdb_strerror(rc));
    return rc == 0 ? 0 : -1;
}

long store_prune(store_t *self, int64_t before_ms, uint64_t max_seq, size_t max_events)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    long pruned = 0;
    uint64_t last = 0;
    s_delete_begin(self);
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_cursor_open(txn, self->events_dbi, &cur);
    MDB_val key, val;
    int r = rc == 0 ? mdb_cursor_get(cur, &key, &val, MDB_FIRST) : rc;
    /* Oldest first: ingest seq order is ingest time order, so the first
     * event that is too young (or not yet delivered) ends the step. */
    while (r == 0 && (size_t)pruned < max_events) {
        uint64_t seq = s_get_u64(key.mv_data);
        int64_t ingest_ms = 0;
        if (seq > max_seq || s_peek_ingest_time(val.mv_data, val.mv_size, &ingest_ms) != 0 ||
            ingest_ms >= before_ms)
            break;
        rc = s_delete_in_txn(self, txn, seq, &val);
        if (rc != 0)
            break;
        last = seq;
        pruned++;
        /* The deleted event was the first; the next one is first now. */
        r = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
    }
    if (rc == 0 && r != 0 && r != MDB_NOTFOUND)
        rc = r;
    if (cur)
        mdb_cursor_close(cur);
    if (rc == 0 && pruned)
        rc = s_note_deleted(self, txn, last);
    if (rc == 0 && pruned)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    s_delete_end(self, rc == 0 && pruned);
    if (rc != 0) {
        cairn_log_error("store %s: retention step failed, nothing pruned: %s", self->dir,
                        mdb_strerror(rc));
        return -1;
    }
    atomic_fetch_add(&self->pruned_count, (uint64_t)pruned);
    return pruned;
}

uint64_t store_pruned_count(const store_t *self)
{
    return atomic_load(&((store_t *)self)->pruned_count);
}
