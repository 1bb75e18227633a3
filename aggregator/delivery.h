/* delivery.h: the delivery actor. Turns each closed window of the store into
 * gzip'd CloudTrail log files in the bucket, off the receiving loop.
 *
 * Windows are aligned to UTC multiples of interval_ms. A window is closed
 * when its end is at or below the store's watermark. The actor delivers
 * closed windows in order, oldest first: the events of a window (ingest time
 * in [start, end)) are grouped by recipientAccountId and awsRegion, split
 * into parts of at most part_max_bytes of JSON (a group's part is cut early
 * when the buffers of all groups together would exceed buffer_max_bytes),
 * gzip'd with libdeflate and put under CloudTrail's key layout
 *   [prefix/]AWSLogs/<acct>/CloudTrail/<region>/YYYY/MM/DD/
 *       <acct>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<unique16>.json.gz
 * where the date and stamp are the window's end (its delivery time) and
 * unique16 is derived from aggregator id, window, account, region and part,
 * so a retry or a restart overwrites the same objects (with the same bytes,
 * as long as part_max_bytes and buffer_max_bytes are unchanged). The cursor
 * moves (store_set_cursor) only after every part of a window is in the
 * bucket and, when a notify_t is given, the window's notification (bucket
 * name and every key of the window) is queued on disk: at least once. A
 * failed put is retried with exponential backoff and jitter, in order.
 *
 * The actor owns nothing of the store but its reads and cursor writes; the
 * bucket is owned by the actor after delivery_new. */
#ifndef CAIRN_DELIVERY_H
#define CAIRN_DELIVERY_H

#include <stddef.h>
#include <stdint.h>

#include "bucket.h"
#include "notify.h"
#include "store.h"

typedef struct delivery delivery_t;

typedef struct {
    const char *aggregator_id; /* part of every object name */
    int64_t interval_ms;       /* window length; default 300000 */
    size_t part_max_bytes;     /* uncompressed JSON per object; default 8 MiB */
    size_t buffer_max_bytes;   /* JSON in all groups' parts being filled; default
                                * 16 MiB, at least 2 x part_max_bytes (memory: see
                                * delivery.c) */
    int gzip_level;            /* libdeflate level 1..12; default 6 */
    int gzip_threads;          /* threads compressing parts, 1..16; default 2 (they
                                * run at a lower priority than ingest) */
    int64_t poll_ms;           /* how often to look for closed windows; default 100 */
    notify_t *notify;          /* borrowed, must outlive the actor; NULL: no webhook */
} delivery_options_t;

typedef struct {
    uint64_t windows_delivered; /* windows whose cursor moved */
    uint64_t objects_put;       /* objects written, retries included */
    uint64_t events_delivered;  /* events in delivered windows */
    uint64_t put_errors;        /* failed puts */
    int64_t last_window_end_ms; /* end of the last delivered window */
    int64_t pending_window_end_ms; /* end of the oldest closed window not yet delivered
                                    * (0 when caught up): delivery lag = now - this */
    char last_key[512];         /* last object put */
} delivery_stats_t;

/* Starts the actor thread. Takes ownership of *bucket_p (sets it to NULL),
 * also when it fails. store is borrowed and must outlive the actor. Zero
 * options take the defaults above; aggregator_id is required. Returns NULL
 * after logging (no aggregator id, gzip level not 1..12, gzip_threads over
 * 16). */
delivery_t *delivery_new(store_t *store, bucket_t **bucket_p, const delivery_options_t *options);

/* Stops the actor and frees it, within about a second whatever it is doing:
 * the put in progress is cancelled (bucket_cancel), the parts being gzip'd
 * are finished (a 64 MiB part takes ~0.3 s at level 6, longer at 10..12) and
 * dropped, and the window cut short is put again, whole and under the same
 * names, by the next start. Accepts NULL. */
void delivery_destroy(delivery_t **self_p);

/* Copies the current counters (thread-safe). */
void delivery_get_stats(delivery_t *self, delivery_stats_t *stats);

#endif
