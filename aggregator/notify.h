/* notify.h: the delivery webhook. After each delivered window, one HTTP POST
 * to a configured URL whose JSON body is CloudTrail's SNS message for log
 * delivery:
 *   {"s3Bucket":"<bucket>","s3ObjectKey":["AWSLogs/...json.gz", ...]}
 * s3Bucket is the S3 bucket's name, or for a directory bucket the
 * directory's absolute path (keys are then relative to it); s3ObjectKey
 * lists every object of the window, under the bucket's prefix. Only the SNS
 * Message is sent, not SNS's envelope (Type, MessageId, signatures).
 *
 * At least once: a notification is written to its own file in queue_dir
 * (fsync'd) before the delivery cursor moves, and deleted only after the
 * receiver answered 2xx. Until then it is retried with exponential backoff
 * (with jitter, up to a minute), oldest window first, across restarts. A
 * window delivered again after a crash queues the same file name again, so
 * a receiver may see a window twice but never misses one.
 *
 * The POSTs run on the notifier's own actor thread: a slow or dead receiver
 * never holds up delivery or ingest. */
#ifndef CAIRN_NOTIFY_H
#define CAIRN_NOTIFY_H

#include <stddef.h>
#include <stdint.h>

typedef struct notify notify_t;

typedef struct {
    const char *url;        /* http:// or https:// (required) */
    const char *header;     /* "Name: value" added to every POST (e.g. an
                             * Authorization header), or NULL; never logged */
    const char *queue_dir;  /* pending notifications, one file each (required; created) */
    int64_t timeout_ms;     /* per POST, whole; default 10000 */
    int64_t retry_first_ms; /* first backoff, doubling up to 60000; default 1000 */
} notify_options_t;

typedef struct {
    uint64_t sent_count;    /* notifications the receiver acknowledged (2xx) */
    uint64_t failure_count; /* POSTs that failed (no answer, or not 2xx) */
    uint64_t pending_count; /* queued and not yet acknowledged, as last counted */
    int64_t last_sent_ms;   /* wall clock of the last acknowledgement (0: none) */
} notify_stats_t;

/* Creates queue_dir if needed and starts the notifier, which first sends
 * what a previous run left queued. The options' strings are copied. Returns
 * NULL after logging why (no URL or not http(s), a header without ':' or
 * with a line break, queue_dir not creatable). */
notify_t *notify_new(const notify_options_t *options);

/* Stops the notifier within about a second (a POST in progress is aborted;
 * what is queued stays for the next start) and frees it. Accepts NULL. */
void notify_destroy(notify_t **self_p);

/* Queues the notification of the window ending at window_end_ms: s3_bucket
 * and key_count object keys (copied). Returns once the notification is on
 * disk: 0, or -1 (logged) if it could not be written. Queuing the same window
 * again replaces its notification. One thread at a time (the delivery
 * actor's); does not wait for the receiver. */
int notify_enqueue(notify_t *self, int64_t window_end_ms, const char *s3_bucket,
                   const char *const *keys, size_t key_count);

/* Copies the counters (thread-safe). */
void notify_get_stats(notify_t *self, notify_stats_t *stats);

#endif
