/* spool.h: the agent's durable queue of events awaiting acknowledgement.
 *
 * An LMDB environment in the agent's data dir:
 *   events   first seq (u64 big-endian) -> a block of consecutive packed
 *            Events (see Blocks in spool.c); MDB_APPEND order
 *   meta     "acked" -> highest seq the aggregator acknowledged (u64)
 *            "id"    -> random id given to the spool when it was created
 *
 * Sequence numbers start at 1 and never repeat, even after every event was
 * acknowledged and deleted and the agent restarted.
 *
 * A durable spool keeps only the newest 128 MB of what it appended in the
 * page cache: older committed pages are dropped (POSIX_FADV_DONTNEED), so a
 * backlog of GBs does not hold GBs of page cache; the shipper reads it back
 * from the disk.
 *
 * Threads: spool_append may be called from any thread (the HTTP intake's);
 * LMDB serializes writers. Reads and acks come from the shipper's thread. */
#ifndef CAIRN_SPOOL_H
#define CAIRN_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPOOL_FULL 1 /* the map is full: the caller must push back */

typedef struct spool spool_t;

/* Opens (creating dir if needed) the spool in dir. Returns NULL after logging why. */
spool_t *spool_new(const char *dir, int64_t map_bytes, bool is_durable);

/* Closes the spool and sets *self_p to NULL. Accepts NULL. */
void spool_destroy(spool_t **self_p);

/* Appends count packed events in one transaction: either all are durable
 * when this returns 0, or none is. *first_seq (if not NULL) gets the seq of
 * the first. Returns 0, SPOOL_FULL, or -1 (logged). Any thread. */
int spool_append(spool_t *self, const uint8_t *const *events, const size_t *lens, size_t count,
                 uint64_t *first_seq);

#define SPOOL_STATE_KEY_MAX   200  /* longest state key */
#define SPOOL_STATE_MAX_BYTES 4096 /* largest state value */

/* A caller's small piece of state (a tailed file's offset) that must change
 * in the same transaction as the events it accounts for. */
typedef struct {
    const char *key;   /* e.g. "tail:/var/log/app/audit.log" */
    const void *value;
    size_t len;
} spool_state_t;

/* Like spool_append, and writes state in the same transaction: after a crash
 * either both the events and the state are there, or neither. count may be
 * 0 (state only). Returns as spool_append (-1 also for a key or value over
 * its limit). Any thread. */
int spool_append_with_state(spool_t *self, const uint8_t *const *events, const size_t *lens,
                            size_t count, const spool_state_t *state, uint64_t *first_seq);

/* Reads state key into value (size bytes). Returns 0 and sets *len, 1 if
 * the key was never written, -1 (logged) on error or a value over size. */
int spool_get_state(spool_t *self, const char *key, void *value, size_t size, size_t *len);

/* Called by spool_read for each event; data is borrowed (valid during the
 * call). Return 0 to go on, non-zero to stop. */
typedef int(spool_read_fn)(void *ctx, uint64_t seq, const uint8_t *data, size_t len);

/* Passes events with seq >= from_seq (and above the acked seq), in order, to
 * fn until max_count events
 * or max_bytes of data were passed (at least one event is passed if any
 * exists) or fn returns non-zero. Returns the number passed, or -1. The
 * pages it read leave the process's RSS as it goes (see spool_unmap). */
long spool_read(spool_t *self, uint64_t from_seq, size_t max_count, size_t max_bytes,
                spool_read_fn *fn, void *ctx);

/* Drops all this process's mappings of the spool's pages (they stay in the
 * page cache). Reads, acks and commits unmap what they map themselves, and
 * the whole map after each call while that is cheap, else at most every
 * 100 ms (the call walks every page table the map has had: ~0.2 ms once a
 * 16 GB spool was read through). Any thread. */
void spool_unmap(spool_t *self);

/* Sets how many events must be left after an ack for it to drop the blocks
 * it deletes from the page cache (default 100,000; see s_drop_deleted in
 * spool.c). For tests. */
void spool_set_drop_backlog(spool_t *self, uint64_t events);

/* Records the ack of every event with seq <= through_seq: they are never
 * read again, and the blocks they fill are deleted (a block the ack covers
 * in part stays until an ack covers the rest). Returns 0 or -1 (logged). */
int spool_ack_through(spool_t *self, uint64_t through_seq);

/* The seq the next appended event will get. */
uint64_t spool_next_seq(spool_t *self);

/* Highest acknowledged seq (0 if none). */
uint64_t spool_acked_seq(spool_t *self);

/* The spool's id (a UUID made when the spool was created; borrowed). The
 * aggregator keeps progress per spool id, so a spool made anew is never
 * taken for the old one. */
const char *spool_id(const spool_t *self);

/* Bytes of the map in use (pages holding data) and the map's size. */
void spool_size(spool_t *self, uint64_t *used_bytes, uint64_t *map_bytes);

/* Events appended and not yet acknowledged. */
uint64_t spool_pending_count(spool_t *self);

/* Blocks found corrupt since open (their events are lost; logged). */
uint64_t spool_corrupt_blocks(spool_t *self);

#endif
