/* store.h: the aggregator's consolidated, deduplicated event store (LMDB).
 *
 * Databases in one environment:
 *   events    ingest seq (u64 big-endian) -> packed StoredEvent; MDB_APPEND order
 *   ids       (eventTime, eventID) -> ingest seq: the dedup guard, with the
 *             recent eventIDs kept in memory until merged (DEDUP in store.c)
 *   agents    "agent id/spool id" -> last sequence stored (u64): cheap resend check
 *   meta      "delivery_cursor" -> {last delivered ingest seq, window end ms}
 *   index     attribute + value (or its hash bucket) -> {eventTime, seq,
 *             fingerprint} (MDB_DUPSORT, DUPFIXED): every store_attr_t
 *             below, eventID, and one key holding every event, so that any
 *             lookup streams newest-first by eventTime (store_query)
 *   runs      run id + index key -> that key's data items of one transaction:
 *             the index entries of recent transactions, merged into index
 *             in passes (see store.c, THE INDEX); queries read both
 *
 * The index is written in the same transaction as its event (as a run) and
 * deleted with it (store_delete_event). A store written by a build without the index gets
 * it built when the writer opens it.
 *
 * Threads: one writer of events (the receiver's loop thread) calls
 * store_put_batches and store_advance_watermark; the delivery actor reads
 * events and writes the delivery cursor from its own thread. LMDB serializes
 * the two writers; readers never block. Every function is safe to call from
 * any one thread at a time per role as described. */
#ifndef CAIRN_STORE_H
#define CAIRN_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cairn.pb-c.h"

#define STORE_FULL 1 /* the map is full: answer RETRY, do not ack */

/* The attributes the store indexes, besides eventID.
 * Username is derived (store_username); RESOURCE_NAME holds each resource's
 * ARN and also its last component (after the last '/' or ':'), so a lookup
 * by "my-bucket" or "i-0abc" finds arn:aws:s3:::my-bucket or .../i-0abc. */
typedef enum {
    STORE_ATTR_EVENT_NAME,    /* eventName */
    STORE_ATTR_READ_ONLY,     /* "true" or "false"; events without readOnly have none */
    STORE_ATTR_USERNAME,      /* see store_username */
    STORE_ATTR_RESOURCE_TYPE, /* resources[].type */
    STORE_ATTR_RESOURCE_NAME, /* resources[].ARN and its last component */
    STORE_ATTR_EVENT_SOURCE,  /* eventSource */
    STORE_ATTR_ACCESS_KEY_ID, /* userIdentity.accessKeyId */
    STORE_ATTR_REGION,        /* awsRegion */
    STORE_ATTR_ACCOUNT,       /* recipientAccountId */
    STORE_ATTR_COUNT,
} store_attr_t;

/* Where an event sits in every index: newest first means larger
 * (event_time_ms, seq) first. */
typedef struct {
    int64_t event_time_ms; /* eventTime */
    uint64_t seq;          /* ingest seq: breaks ties */
} store_position_t;

/* One query: filters combine with AND; NULL means "any". Values are
 * compared exactly (case-sensitive), as CloudTrail does. */
typedef struct {
    const char *event_id;                 /* eventID, or NULL */
    const char *values[STORE_ATTR_COUNT]; /* per attribute, or NULL */
    int64_t start_ms;                     /* eventTime >= start_ms (INT64_MIN: no bound) */
    int64_t end_ms;                       /* eventTime <= end_ms (INT64_MAX: no bound) */
    bool has_after;                       /* resume: only events older than after */
    store_position_t after;               /* (strictly below, in index order) */
} store_query_t;

/* A store_query_t that matches everything. */
#define STORE_QUERY_ALL                                                                            \
    (store_query_t)                                                                                \
    {                                                                                              \
        .start_ms = INT64_MIN, .end_ms = INT64_MAX                                                 \
    }

typedef struct store store_t;

typedef struct {
    uint32_t stored_count;    /* new events written */
    uint32_t duplicate_count; /* events skipped: already stored (same eventID and eventTime) */
    bool is_resend;           /* whole batch at or below the agent's stored progress */
} store_batch_result_t;

typedef struct {
    uint64_t last_seq;      /* last ingest seq delivered (0: none yet) */
    int64_t window_end_ms;  /* end of the last delivered window (0: none yet) */
} store_cursor_t;

/* Opens (creating dir and databases if needed) the store in dir with a map of
 * map_bytes. is_durable false skips fsync at commit (tests, benchmarks).
 * The ingest time floor and the watermark start at the last stored event's
 * ingest time (or the cursor's window end if later), not at now: the writer
 * calls store_advance_watermark when it is ready.
 * Returns NULL after logging why. */
store_t *store_new(const char *dir, int64_t map_bytes, bool is_durable);

/* Opens an existing store in dir for reading only (an MDB_RDONLY env): for
 * `cairn query`, while the aggregator keeps writing (LMDB readers never
 * block the writer). Needs read access to the data file and write access to
 * lock.mdb (a reader registers there). Only the read functions may be called
 * (store_query, store_read_events, store_get_cursor, store_event_count).
 * Returns NULL after logging why, e.g. no store there, or a store whose
 * index has not been built yet (the aggregator builds it when it opens it). */
store_t *store_open_readonly(const char *dir);

/* Closes the store and sets *self_p to NULL. Accepts NULL. */
void store_destroy(store_t **self_p);

/* Stores batch_count batches in ONE write transaction (group commit). Each
 * event already stored (the same eventID at the same eventTime) — earlier,
 * or earlier in the same call — is skipped and counted in its batch's
 * result. Every new event gets
 * the next ingest seq and ingest time max(now_ms, last ingest time), so ingest
 * time never goes backwards. Each batch's agent progress is raised to
 * first_seq + n_events - 1. results[i] is filled for batches[i].
 * Returns 0 after the commit, STORE_FULL (nothing of the call stored), or -1
 * (logged; nothing stored). eventIDs (non-empty) and agent ids must fit an
 * LMDB key (511 bytes): the caller checks, since one
 * bad batch fails the whole call with -1. A batch with n_events > 0 whose
 * last seq is at or below its agent's progress is a resend: is_resend, all
 * counted as duplicates, nothing looked up. After a successful call (even
 * one that stored nothing) the watermark and the ingest time floor are at
 * least max(now_ms, last ingest time). Writer thread only. */
int store_put_batches(store_t *self, const Cairn__Batch *const *batches, size_t batch_count,
                      int64_t now_ms, store_batch_result_t *results);

/* Last sequence stored from the spool spool_id of agent_id (0 if none).
 * Progress is per spool: a spool made anew numbers from 1 again. Any thread. */
uint64_t store_agent_last_seq(store_t *self, const char *agent_id, const char *spool_id);

/* Called by the writer thread between transactions: declares that no event
 * with an ingest time below now_ms will be written any more (later events
 * get at least now_ms). Raises the watermark. */
void store_advance_watermark(store_t *self, int64_t now_ms);

/* Ingest time below which every event is committed (atomic; any thread). */
int64_t store_watermark(const store_t *self);

/* Called by store_read_events for each event, in ingest seq order. packed is
 * the StoredEvent as stored (borrowed: valid during the call only).
 * Return 0 to go on, 1 to stop early, -1 to stop with an error. */
typedef int(store_event_fn)(void *ctx, uint64_t seq, int64_t ingest_time_ms,
                            const uint8_t *packed, size_t len);

/* Reads events with seq > after_seq in order in one read transaction until fn
 * returns non-zero or the events end. Returns the number of events passed to
 * fn, or -1 (logged, or fn returned -1). Any thread. */
long store_read_events(store_t *self, uint64_t after_seq, store_event_fn *fn, void *ctx);

/* Reads and writes the delivery cursor (own write transaction). */
int store_get_cursor(store_t *self, store_cursor_t *cursor);
int store_set_cursor(store_t *self, const store_cursor_t *cursor);

/* Counts for status and tests. */
uint64_t store_event_count(store_t *self);

/* Called by store_query for each matching event, newest first. stored is
 * borrowed (valid during the call only); position is where the event sits
 * (give it back in store_query_t.after to resume after it). Return 0 to go
 * on, 1 to stop, -1 to stop with an error. */
typedef int(store_hit_fn)(void *ctx, const store_position_t *position,
                          const Cairn__StoredEvent *stored);

/* Streams the events matching query to fn, newest first by eventTime (ties:
 * the later ingested first), in one read transaction. The scan is driven by
 * the filter with the fewest index entries (eventID when given; the
 * all-events key when no attribute is), bounded by the time range and the
 * resume position; each candidate is checked against the other filters
 * through the index (no unpacking) before its event is read. Nothing is
 * sorted in memory, so the first hits come after O(log n) work whatever the
 * size of the store. Returns the number of events passed to fn, or -1
 * (logged, or fn returned -1). Any thread, read-only stores too. */
long store_query(store_t *self, const store_query_t *query, store_hit_fn *fn, void *ctx);

/* Deletes the event with ingest seq seq, its eventID entry and its index
 * entries, in one write transaction: the hook retention calls. Deleting a
 * seq that is not stored does nothing and is not an error. Afterwards the
 * eventID is free: the same event sent again would be stored again. Seqs are
 * never reused, even when the newest event is deleted and the store is
 * reopened. Returns 0, or -1 (logged). Any thread (LMDB orders writers). */
int store_delete_event(store_t *self, uint64_t seq);

/* One retention step: deletes, oldest first and in one write transaction,
 * at most max_events events ingested before before_ms whose seq is at most
 * max_seq (pass the delivery cursor: nothing undelivered is pruned), with
 * their eventID and index entries. Small steps keep the writer lock short,
 * so ingest never stalls behind retention. Returns the number pruned (0 when
 * nothing is due), or -1 (logged). Writer thread. */
long store_prune(store_t *self, int64_t before_ms, uint64_t max_seq, size_t max_events);

/* Sets when the writer merges runs into the index: a pass begins once runs
 * hold at_items data items or max_runs transactions wrote runs since the
 * last pass began, and each store_put_batches during a pass merges at least
 * step_items more than it wrote. 0 keeps a default. For tests and
 * benchmarks. Writer thread. */
void store_set_merge(store_t *self, size_t at_items, size_t max_runs, size_t step_items);

/* One step of a merge pass in its own write transaction, whatever the
 * thresholds of store_set_merge: what the writer calls when it is idle, so
 * that runs left after a burst reach the index and queries stop reading
 * them. Returns 1 while runs remain, 0 when none does, -1 (logged) on error.
 * Writer thread. */
int store_merge(store_t *self);

/* Sets how many recent eventIDs the writer keeps in memory before it
 * merges them into the ids database (see DEDUP in store.c); 0 keeps the
 * default. For tests. Writer thread. */
void store_set_ids_freeze(store_t *self, size_t at_ids);

/* Sets how much of the newest part of the file a durable store keeps in the
 * page cache, and how much it drops at a time (see PAGE CACHE in store.c);
 * 0 keeps a default. For tests. Writer thread. */
void store_set_cache_keep(store_t *self, uint64_t keep_bytes, uint64_t step_bytes);

/* The index's runs, for /metrics: data items waiting in runs for a merge
 * pass, and the passes completed since the store was opened; and the
 * eventIDs kept in memory until their merge into the ids database. */
typedef struct {
    uint64_t run_items;
    uint64_t merge_passes;
    uint64_t recent_ids;
} store_index_stats_t;

/* Fills stats. Any thread. */
void store_index_stats(const store_t *self, store_index_stats_t *stats);

/* Events removed by store_prune since the store was opened. Any thread. */
uint64_t store_pruned_count(const store_t *self);

/* The Username LookupEvents shows for event, as the index holds it:
 * userIdentity.userName; else, for an assumed role or a federated user, the
 * session or user name at the end of userIdentity.arn; else "root" for the
 * Root identity; else "" (none). Sets *name to a pointer into event (not
 * NUL-terminated, except "root"/"") and returns its length. */
size_t store_username(const Cairn__Event *event, const char **name);

#endif
