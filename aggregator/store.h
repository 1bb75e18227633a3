/* store.h: the aggregator's consolidated, deduplicated event store (LMDB).
 *
 * Databases in one environment:
 *   events    ingest seq (u64 big-endian) -> packed StoredEvent; MDB_APPEND order
 *   ids       eventID -> ingest seq: the dedup guard
 *   agents    "agent id/spool id" -> last sequence stored (u64): cheap resend check
 *   meta      "delivery_cursor" -> {last delivered ingest seq, window end ms}
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

typedef struct store store_t;

typedef struct {
    uint32_t stored_count;    /* new events written */
    uint32_t duplicate_count; /* events skipped: eventID already stored */
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

/* Closes the store and sets *self_p to NULL. Accepts NULL. */
void store_destroy(store_t **self_p);

/* Stores batch_count batches in ONE write transaction (group commit). Each
 * event whose eventID is already stored — earlier, or earlier in the same
 * call — is skipped and counted in its batch's result. Every new event gets
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

#endif
