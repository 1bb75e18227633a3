/* tail.h: follows JSON-lines files (one CloudTrail record per line) and
 * spools their events: the zero-code-change path for services that already
 * write audit lines.
 *
 * Files are found by glob patterns, looked at every poll interval, and read
 * by a thread of their own (a czmq actor) with its own event parser. Each
 * batch of lines of one file goes to the spool with spool_append_with_state,
 * together with that file's state (device, inode, offset, line count, and a
 * fingerprint of its first bytes) in the same LMDB transaction: after a
 * crash at any moment either the events and the new offset are there, or
 * neither, so a restart neither loses nor repeats a line.
 *
 * - A file is known by its identity (device + inode), not its name: a file
 *   renamed (log rotation) is the same file, and is read to its end; the
 *   new file that takes its name is started from byte 0 once the old one
 *   has been finished (it stayed unchanged for rotate_wait), so the old
 *   file's lines come first. A rotated file whose name no longer matches is
 *   found again after a restart (in the directory it was in).
 * - A file that shrinks below its offset, or whose first bytes changed
 *   (copytruncate, or a new file that got a deleted file's inode), is read
 *   again from byte 0.
 * - A file seen for the first time is read from its beginning; a known one
 *   from its committed offset.
 * - A line is taken only with its newline; a partial last line waits for
 *   it (a finished rotated file's last partial line is taken as a line).
 * - A line that is not a valid record (event.h), or is longer than
 *   EVENT_MAX_RECORD_BYTES, is counted and logged with file and line number
 *   (at most TAIL_BAD_LOG_LIMIT lines per 10 s), and reading goes on.
 *   Blank lines are skipped.
 * - Events the selectors drop are counted, never spooled.
 * - A full spool pauses the tail: it retries the same batch with backoff
 *   (50 ms doubling to 1 s) and resumes by itself when the shipper has
 *   freed space. Nothing is dropped.
 *
 * Patterns should not match rotated copies made by copytruncate: a copy is
 * a new file and would be read again. Renamed files are safe either way.
 * At most TAIL_MAX_FILES files are followed at once. */
#ifndef CAIRN_TAIL_H
#define CAIRN_TAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "selector.h"
#include "spool.h"

#define TAIL_MAX_FILES     1024 /* files followed at once */
#define TAIL_BAD_LOG_LIMIT 10   /* bad lines logged per 10 s; the others are counted */

typedef struct tail tail_t;

typedef struct {
    const char *paths;      /* comma-separated absolute glob patterns (borrowed) */
    int64_t poll_ms;        /* how often patterns and files are looked at */
    int64_t rotate_wait_ms; /* a file moved or deleted away is finished after this long unchanged */
    size_t batch_max_lines; /* lines per spool transaction, at most */
    event_defaults_t defaults; /* awsRegion, recipientAccountId filled in (copied) */
    selector_t *selector;      /* drops events (borrowed, may be NULL: keep all) */
} tail_options_t;

typedef struct {
    uint64_t lines_read;                      /* lines consumed: spooled, filtered, bad or blank */
    uint64_t events_spooled;                  /* events committed to the spool */
    uint64_t bad_lines;                       /* lines that were not a valid record */
    uint64_t filtered[SELECTOR_REASON_COUNT]; /* events the selectors dropped, by reason */
    uint64_t rotations;                       /* files finished after being moved or deleted away */
    uint64_t truncations; /* files read again from byte 0 (shrunk or rewritten) */
    uint64_t spool_full;  /* times a batch found the spool full */
    uint64_t files;       /* files followed now */
    bool is_paused;       /* waiting for room in the spool now */
} tail_stats_t;

/* Checks paths (as in tail_options_t) without touching the file system.
 * Returns the number of patterns (0 for an empty list), or -1 with the
 * reason in err ("\"logs/app.jsonl\" is not an absolute path"). */
int tail_paths_check(const char *paths, char *err, size_t errlen);

/* Reads the files' committed state from the spool and starts the tail's
 * thread. Returns NULL after logging why (bad paths, unreadable state). The
 * spool and the selector are borrowed and must outlive the tail. */
tail_t *tail_new(spool_t *spool, const tail_options_t *options);

/* Stops the thread (a batch in progress is committed or dropped whole,
 * never half) and frees the tail. Sets *self_p to NULL; accepts NULL. */
void tail_destroy(tail_t **self_p);

/* Makes the tail look at its patterns and files now, and returns when it
 * has read and committed all there was to read (or found the spool full:
 * then stats.is_paused is set). For tests and tools; any thread but the
 * tail's. Returns 0. */
int tail_poll_now(tail_t *self);

/* Counters; any thread. */
void tail_get_stats(tail_t *self, tail_stats_t *stats);

#endif
