/* tail.c: follows JSON-lines files into the spool (see tail.h).
 *
 * DESIGN
 *
 * One actor thread owns everything here but the counters: the file table,
 * the read buffer, the event parser and the batch being built. Its loop
 * waits on the actor pipe with a timeout: 0 while some file has more to
 * read, the retry time while the spool is full, else the next poll. Each
 * pass reads at most one batch per file, so $TERM is seen between batches.
 *
 * Files live in slots (0..TAIL_MAX_FILES-1). The slot's state in the spool,
 * key "tail/<slot>", is either "free" or
 *     file <dev> <ino> <offset> <lines> <fp_len> <fp> <name>
 * and is written only in the transaction that spools the batch it accounts
 * for (or, for batches of bad or filtered lines only, alone). The offset is
 * always at a line start. Slots are taken lowest first and released by
 * writing "free", so the written slots are a prefix: loading stops at the
 * first slot never written. A file is released (its slot written "free")
 * only when it is finished: moved or deleted away, read to its end, and
 * unchanged for rotate_wait; a file that disappeared while the agent was
 * down is looked for by identity in the directory it was in.
 *
 * fp is an FNV-1a hash of the file's first fp_len = min(offset, 256) bytes.
 * It is checked before each commit and when a file is found again at start:
 * a file that was truncated and rewritten past the offset, or a new file
 * that got a deleted file's inode, differs there, and is read from byte 0
 * instead of from the middle.
 *
 * The batch is kept until its commit succeeds: on SPOOL_FULL the same
 * batch is retried (same eventIDs), so the spool sees each line once.
 * Counters are added only when a batch is committed.
 *
 * Memory: the read buffer (TAIL_BUF_BYTES), the packed-events buffer and the
 * batch arrays are allocated at start; the parser does not allocate after
 * warm-up. glob(3) allocates once per poll, not per line. */
#include "tail.h"

#include "cairn_log.h"
#include "cairn_mem.h"
#include "cairn_time.h"

#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TAIL_BUF_BYTES         (1024 * 1024)                /* read buffer; > a longest line */
#define TAIL_LINE_MAX_BYTES    (EVENT_MAX_RECORD_BYTES + 1) /* a record and a '\r' */
#define TAIL_BATCH_MAX_BYTES   (4 * 1024 * 1024)            /* packed events per batch, at most */
#define TAIL_EVENT_MAX_BYTES   (2 * EVENT_MAX_RECORD_BYTES + 64 * 1024) /* one packed event */
#define TAIL_FP_BYTES          256                           /* bytes the fingerprint covers */
#define TAIL_BACKOFF_MIN_MS    50                            /* first retry on a full spool */
#define TAIL_BACKOFF_MAX_MS    1000                          /* longest wait between retries */
#define TAIL_BAD_LOG_WINDOW_MS 10000                         /* TAIL_BAD_LOG_LIMIT per window */
#define TAIL_NAME_MAX_BYTES    (SPOOL_STATE_MAX_BYTES - 128) /* longest path followed */
#define EVENT_LIMIT_TEXT       "262144" /* EVENT_MAX_RECORD_BYTES, for messages */
#define TAIL_POLL_NOW_PASSES   100000   /* bound of tail_poll_now's loop */

_Static_assert(EVENT_MAX_RECORD_BYTES == 262144, "EVENT_LIMIT_TEXT must match");

typedef struct {
    bool is_used;       /* the slot holds a file */
    bool is_durable;    /* the slot's committed state names this file */
    bool is_loaded;     /* from the spool at start, not found again yet */
    bool is_matched;    /* a pattern matched it in the latest complete scan */
    bool is_unreadable; /* open failed; logged once, retried each scan */
    dev_t dev;          /* identity */
    ino_t ino;
    char *name;             /* the path it was last seen at (owned) */
    int fd;                 /* -1 while not open */
    uint64_t offset;        /* committed: bytes consumed, at a line start */
    uint64_t line_count;    /* committed: lines consumed */
    uint32_t fp_len;        /* bytes fp covers */
    uint64_t fp;            /* FNV-1a of the first fp_len bytes */
    uint64_t last_size;     /* size at the previous look */
    int64_t quiet_since_ms; /* monotonic time last_size last changed */
} s_file_t;

/* Lines of one file read and not yet committed. */
typedef struct {
    s_file_t *file;      /* NULL when there is no batch */
    size_t count;        /* events packed */
    size_t packed_len;   /* bytes used in tail.packed */
    uint64_t end_offset; /* offset after the last line taken */
    uint64_t end_line;   /* lines consumed through it */
    uint64_t lines;      /* lines taken */
    uint64_t bad;        /* of which bad */
    uint64_t filtered[SELECTOR_REASON_COUNT];
    bool is_release; /* the file is finished: commit "free" */
    bool is_gone;    /* released because it cannot be found (not a rotation) */
} s_batch_t;

/* A path a scan found that no slot knows yet. */
typedef struct {
    char *path;
    struct stat st;
} s_found_t;

struct tail {
    spool_t *spool;       /* borrowed */
    selector_t *selector; /* borrowed, may be NULL */
    char **patterns;      /* owned */
    size_t pattern_count;
    int64_t poll_ms;
    int64_t rotate_wait_ms;
    size_t batch_max_lines;
    size_t batch_max_bytes;    /* packed bytes per batch; small beside the spool's map */
    event_defaults_t defaults; /* strings below */
    char *region;
    char *account_id;
    zactor_t *actor;

    /* The actor's. */
    event_parser_t *parser;
    s_file_t files[TAIL_MAX_FILES];
    size_t slot_count; /* slots ever used: files[slot_count..] are unused */
    char *buf;         /* TAIL_BUF_BYTES */
    uint8_t *packed;   /* packed events of the batch */
    size_t packed_cap;
    size_t *packed_offsets;     /* batch_max_lines */
    const uint8_t **event_ptrs; /* batch_max_lines */
    size_t *event_lens;         /* batch_max_lines */
    s_batch_t batch;
    int64_t next_scan_ms;        /* monotonic */
    bool is_busy;                /* a file has more to read now */
    bool is_first_scan;          /* files loaded from the spool are still to be found */
    int64_t backoff_ms;          /* current wait between retries of a batch, 0 if none */
    int64_t retry_at_ms;         /* monotonic */
    int64_t bad_window_start_ms; /* rate limit of bad-line logs */
    unsigned bad_logged;         /* in the window */
    uint64_t bad_suppressed;     /* in the window, not logged */
    bool is_glob_warned;         /* a pattern failed (logged once until it works) */

    /* Counters, read by any thread. */
    atomic_uint_fast64_t lines_read;
    atomic_uint_fast64_t events_spooled;
    atomic_uint_fast64_t bad_lines;
    atomic_uint_fast64_t filtered[SELECTOR_REASON_COUNT];
    atomic_uint_fast64_t rotations;
    atomic_uint_fast64_t truncations;
    atomic_uint_fast64_t spool_full;
    atomic_uint_fast64_t file_count;
    atomic_bool is_paused;
};

/* ---- patterns ---- */

/* Calls fn for each trimmed, non-empty item of the comma-separated list.
 * Returns the number of items, or -1 if an item is empty. */
static int s_split(const char *list, void (*fn)(void *ctx, const char *item, size_t len), void *ctx)
{
    int count = 0;
    const char *p = list;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p)
        return 0;
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *start = p;
        while (start < end && (*start == ' ' || *start == '\t'))
            start++;
        const char *stop = end;
        while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t'))
            stop--;
        if (stop == start)
            return -1;
        if (fn)
            fn(ctx, start, (size_t)(stop - start));
        count++;
        if (!comma)
            break;
        p = comma + 1;
    }
    return count;
}

typedef struct {
    char *err;
    size_t errlen;
    bool is_bad;
} s_check_t;

static void s_check_item(void *ctx, const char *item, size_t len)
{
    s_check_t *check = ctx;
    if (check->is_bad)
        return;
    if (item[0] != '/') {
        snprintf(check->err, check->errlen, "\"%.*s\" is not an absolute path", (int)len, item);
        check->is_bad = true;
    } else if (len >= PATH_MAX || len > TAIL_NAME_MAX_BYTES) {
        snprintf(check->err, check->errlen, "a pattern is %zu bytes, over the %d-byte limit", len,
                 TAIL_NAME_MAX_BYTES);
        check->is_bad = true;
    }
}

int tail_paths_check(const char *paths, char *err, size_t errlen)
{
    s_check_t check = {err, errlen, false};
    int count = s_split(paths ? paths : "", s_check_item, &check);
    if (count < 0)
        snprintf(err, errlen, "empty pattern in the list \"%s\"", paths);
    return count < 0 || check.is_bad ? -1 : count;
}

static void s_add_pattern(void *ctx, const char *item, size_t len)
{
    tail_t *self = ctx;
    char *copy = cairn_malloc(len + 1);
    memcpy(copy, item, len);
    copy[len] = '\0';
    self->patterns[self->pattern_count++] = copy;
}

/* ---- files and their state ---- */

static uint64_t s_fnv(uint64_t hash, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        hash ^= (unsigned char)data[i];
        hash *= 0x100000001b3ULL;
    }
    return hash;
}

#define FNV_BASIS 0xcbf29ce484222325ULL

static void s_state_key(size_t slot, char *out, size_t size)
{
    snprintf(out, size, "tail/%zu", slot);
}

static size_t s_slot_of(const tail_t *self, const s_file_t *f)
{
    return (size_t)(f - self->files);
}

/* Formats f's state as it will be once the batch is committed. */
static size_t s_format_state(const s_file_t *f, uint64_t offset, uint64_t lines, uint32_t fp_len,
                             uint64_t fp, char *out, size_t size)
{
    int n =
        snprintf(out, size, "file %ju %ju %" PRIu64 " %" PRIu64 " %" PRIu32 " %016" PRIx64 " %s",
                 (uintmax_t)f->dev, (uintmax_t)f->ino, offset, lines, fp_len, fp, f->name);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

/* Parses one slot's state into f. Returns 0 (f is a file or free), -1 if
 * the text is not a state. */
static int s_parse_state(s_file_t *f, char *text)
{
    if (strcmp(text, "free") == 0)
        return 0;
    uintmax_t dev, ino;
    uint64_t offset, lines, fp;
    uint32_t fp_len;
    int name_at = 0;
    if (sscanf(text, "file %ju %ju %" SCNu64 " %" SCNu64 " %" SCNu32 " %" SCNx64 " %n", &dev, &ino,
               &offset, &lines, &fp_len, &fp, &name_at) != 6 ||
        name_at == 0 || text[name_at] != '/' || fp_len > TAIL_FP_BYTES || fp_len > offset)
        return -1;
    f->is_used = true;
    f->is_durable = true;
    f->is_loaded = true;
    f->dev = (dev_t)dev;
    f->ino = (ino_t)ino;
    f->offset = offset;
    f->line_count = lines;
    f->fp_len = fp_len;
    f->fp = fp;
    f->name = cairn_strdup(text + name_at);
    return 0;
}

/* Reads every slot's committed state. Returns 0, or -1 (logged). */
static int s_load(tail_t *self)
{
    char key[32], value[SPOOL_STATE_MAX_BYTES + 1];
    for (size_t slot = 0; slot < TAIL_MAX_FILES; slot++) {
        size_t len = 0;
        s_state_key(slot, key, sizeof key);
        int rc = spool_get_state(self->spool, key, value, sizeof value - 1, &len);
        if (rc == 1)
            break; /* slots are written lowest first: none beyond */
        if (rc < 0)
            return -1;
        value[len] = '\0';
        s_file_t *f = &self->files[slot];
        if (s_parse_state(f, value) != 0) {
            cairn_log_error("tail: spool state %s is not a tail state: \"%.80s\"", key, value);
            return -1;
        }
        self->slot_count = slot + 1;
    }
    return 0;
}

static void s_forget(tail_t *self, s_file_t *f)
{
    if (f->fd >= 0)
        close(f->fd);
    free(f->name);
    *f = (s_file_t){.fd = -1};
    atomic_fetch_sub(&self->file_count, 1);
}

/* Opens path and checks it is still the file st describes. Returns the fd or -1. */
static int s_open_checked(const char *path, const struct stat *st)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat now;
    if (fd >= 0 && (fstat(fd, &now) != 0 || now.st_dev != st->st_dev || now.st_ino != st->st_ino)) {
        close(fd);
        fd = -1;
        errno = ESTALE;
    }
    return fd;
}

/* Reads the first len bytes of f; returns their hash, or sets *is_short if
 * the file has fewer. */
static uint64_t s_fp_of(s_file_t *f, char *scratch, uint32_t len, bool *is_short)
{
    ssize_t n = len ? pread(f->fd, scratch, len, 0) : 0;
    *is_short = n != (ssize_t)len;
    return *is_short ? 0 : s_fnv(FNV_BASIS, scratch, len);
}

/* The file shrank or its first bytes changed: read it again from byte 0. */
static void s_restart_file(tail_t *self, s_file_t *f, const char *why)
{
    cairn_log_notice("tail: %s %s at byte %" PRIu64 " (line %" PRIu64
                     "); reading it again from the start",
                     f->name, why, f->offset, f->line_count);
    f->offset = 0;
    f->line_count = 0;
    f->fp_len = 0;
    f->fp = 0;
    atomic_fetch_add(&self->truncations, 1);
}

/* ---- bad lines ---- */

static void s_log_bad(tail_t *self, const s_file_t *f, uint64_t line_no, const char *why)
{
    int64_t now = cairn_time_mono_ms();
    if (now - self->bad_window_start_ms >= TAIL_BAD_LOG_WINDOW_MS) {
        if (self->bad_suppressed)
            cairn_log_warning("tail: %" PRIu64 " more bad lines in the last %d s were counted, not "
                              "logged",
                              self->bad_suppressed, TAIL_BAD_LOG_WINDOW_MS / 1000);
        self->bad_window_start_ms = now;
        self->bad_logged = 0;
        self->bad_suppressed = 0;
    }
    if (self->bad_logged < TAIL_BAD_LOG_LIMIT) {
        self->bad_logged++;
        cairn_log_warning("tail: %s:%" PRIu64 ": bad line skipped: %s", f->name, line_no, why);
    } else
        self->bad_suppressed++;
}

/* ---- batches ---- */

typedef enum { TAKE_OK, TAKE_NO_ROOM } s_take_t;

/* One line (without its newline). */
static s_take_t s_take_line(tail_t *self, s_file_t *f, const selector_rules_t *rules,
                            const char *line, size_t len, uint64_t line_no)
{
    s_batch_t *b = &self->batch;
    while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;
    size_t lead = 0;
    while (lead < len && (line[lead] == ' ' || line[lead] == '\t'))
        lead++;
    if (lead == len)
        return TAKE_OK; /* blank */
    Cairn__Event event;
    char err[256];
    if (len > EVENT_MAX_RECORD_BYTES) {
        snprintf(err, sizeof err, "line is %zu bytes, over the %d-byte record limit", len,
                 EVENT_MAX_RECORD_BYTES);
        b->bad++;
        s_log_bad(self, f, line_no, err);
    } else if (event_parser_parse(self->parser, line, len, &event, err, sizeof err) != 0) {
        b->bad++;
        s_log_bad(self, f, line_no, err);
    } else {
        selector_reason_t reason = selector_match(rules, &event);
        if (reason != SELECTOR_KEEP)
            b->filtered[reason]++;
        else {
            size_t size = cairn__event__get_packed_size(&event);
            if (b->packed_len + size > self->packed_cap)
                return TAKE_NO_ROOM; /* cannot happen with packed_cap's margin; read it next batch
                                      */
            self->packed_offsets[b->count++] = b->packed_len;
            b->packed_len += cairn__event__pack(&event, self->packed + b->packed_len);
        }
    }
    return TAKE_OK;
}

/* Reads lines of f from the batch's end into the batch, until a limit (then
 * returns true: there is more) or the end of the file (false). With
 * is_final, a partial last line is taken as a line. */
static bool s_fill_batch(tail_t *self, s_file_t *f, bool is_final)
{
    s_batch_t *b = &self->batch;
    if (!b->file) {
        *b = (s_batch_t){.file = f, .end_offset = f->offset, .end_line = f->line_count};
    }
    char *buf = self->buf;
    uint64_t base = b->end_offset; /* file offset of buf[0] */
    size_t have = 0, start = 0;
    bool is_eof = false, is_skipping = false, has_more = false;
    const selector_rules_t *rules = selector_acquire(self->selector);
    for (;;) {
        if (b->lines >= self->batch_max_lines || b->packed_len >= self->batch_max_bytes) {
            has_more = true;
            break;
        }
        char *line = buf + start;
        char *newline = memchr(line, '\n', have - start);
        if (!newline && is_eof) {
            if (is_final && have > start) {
                uint64_t line_no = b->end_line + 1;
                if (is_skipping) {
                    b->bad++;
                    s_log_bad(self, f, line_no,
                              "line is over the " EVENT_LIMIT_TEXT "-byte record limit");
                } else if (s_take_line(self, f, rules, line, have - start, line_no) != TAKE_OK) {
                    has_more = true;
                    break;
                }
                b->lines++;
                b->end_line = line_no;
                b->end_offset = base + have;
            } else if (is_final && is_skipping) {
                b->bad++;
                b->lines++;
                b->end_line++;
                s_log_bad(self, f, b->end_line,
                          "line is over the " EVENT_LIMIT_TEXT "-byte record limit");
                b->end_offset = base + have;
            }
            break;
        }
        if (!newline) {
            if (start) {
                memmove(buf, buf + start, have - start);
                base += start;
                have -= start;
                start = 0;
            }
            if (is_skipping || have > TAIL_LINE_MAX_BYTES) {
                /* Longer than any record: drop what we have of it and look
                 * for its end; the offset stays at its start until then. */
                is_skipping = true;
                base += have;
                have = 0;
            }
            ssize_t n = pread(f->fd, buf + have, TAIL_BUF_BYTES - have, (off_t)(base + have));
            if (n < 0) {
                cairn_log_error("tail: %s: read at byte %" PRIu64 " failed: %s; retrying at the "
                                "next poll",
                                f->name, base + have, strerror(errno));
                break;
            }
            if (n == 0)
                is_eof = true;
            have += (size_t)n;
            continue;
        }
        size_t len = (size_t)(newline - line);
        uint64_t line_no = b->end_line + 1;
        if (is_skipping) {
            is_skipping = false;
            b->bad++;
            s_log_bad(self, f, line_no, "line is over the " EVENT_LIMIT_TEXT "-byte record limit");
        } else if (s_take_line(self, f, rules, line, len, line_no) != TAKE_OK) {
            has_more = true;
            break;
        }
        start += len + 1;
        b->lines++;
        b->end_line = line_no;
        b->end_offset = base + start;
    }
    selector_release(self->selector, &rules);
    return has_more;
}

/* Commits the batch. Returns 0 (committed or nothing to do), or SPOOL_FULL
 * or -1: the batch is kept for a retry. */
static int s_commit(tail_t *self)
{
    s_batch_t *b = &self->batch;
    s_file_t *f = b->file;
    if (!f)
        return 0;
    char state[SPOOL_STATE_MAX_BYTES];
    size_t state_len = 0;
    uint32_t fp_len = f->fp_len;
    uint64_t fp = f->fp;
    if (b->is_release) {
        memcpy(state, "free", 4);
        state_len = 4;
    } else {
        if (b->end_offset == f->offset) {
            b->file = NULL; /* nothing consumed */
            return 0;
        }
        /* The first bytes are read again just before the commit: if the
         * file was truncated and rewritten under us, what was read belongs
         * to no known offset, and is dropped. */
        char head[TAIL_FP_BYTES];
        uint32_t want = b->end_offset < TAIL_FP_BYTES ? (uint32_t)b->end_offset : TAIL_FP_BYTES;
        ssize_t n = pread(f->fd, head, want, 0);
        if (n != (ssize_t)want || (f->fp_len && s_fnv(FNV_BASIS, head, f->fp_len) != f->fp)) {
            b->file = NULL;
            s_restart_file(self, f, "changed while being read");
            return 0;
        }
        fp_len = want;
        fp = s_fnv(FNV_BASIS, head, want);
        state_len = s_format_state(f, b->end_offset, b->end_line, fp_len, fp, state, sizeof state);
    }
    int rc = 0;
    if (b->is_release && !f->is_durable && b->count == 0)
        rc = 0; /* its slot's committed state is already "free" */
    else if (!state_len) {
        cairn_log_error("tail: %s: state does not fit; not following it", f->name);
        rc = -1;
    } else {
        for (size_t i = 0; i < b->count; i++) {
            size_t end = i + 1 < b->count ? self->packed_offsets[i + 1] : b->packed_len;
            self->event_ptrs[i] = self->packed + self->packed_offsets[i];
            self->event_lens[i] = end - self->packed_offsets[i];
        }
        char key[32];
        s_state_key(s_slot_of(self, f), key, sizeof key);
        spool_state_t spool_state = {key, state, state_len};
        rc = spool_append_with_state(self->spool, self->event_ptrs, self->event_lens, b->count,
                                     &spool_state, NULL);
    }
    int64_t now = cairn_time_mono_ms();
    if (rc != 0) {
        if (rc == SPOOL_FULL)
            atomic_fetch_add(&self->spool_full, 1);
        if (!atomic_exchange(&self->is_paused, true)) {
            if (rc == SPOOL_FULL)
                cairn_log_warning("tail: spool full; paused at %s line %" PRIu64
                                  ", retrying until the shipper frees space",
                                  f->name, f->line_count + 1);
            else
                cairn_log_error("tail: cannot write %s's batch to the spool; retrying", f->name);
        }
        self->backoff_ms = self->backoff_ms ? self->backoff_ms * 2 : TAIL_BACKOFF_MIN_MS;
        if (self->backoff_ms > TAIL_BACKOFF_MAX_MS)
            self->backoff_ms = TAIL_BACKOFF_MAX_MS;
        self->retry_at_ms = now + self->backoff_ms;
        return rc;
    }
    if (atomic_exchange(&self->is_paused, false))
        cairn_log_notice("tail: spool has room again; resuming");
    self->backoff_ms = 0;
    atomic_fetch_add(&self->lines_read, b->lines);
    atomic_fetch_add(&self->events_spooled, b->count);
    atomic_fetch_add(&self->bad_lines, b->bad);
    for (int r = 0; r < SELECTOR_REASON_COUNT; r++)
        if (b->filtered[r])
            atomic_fetch_add(&self->filtered[r], b->filtered[r]);
    if (b->is_release) {
        if (!b->is_gone) {
            cairn_log_info("tail: finished %s (%" PRIu64 " lines); it was moved or deleted away",
                           f->name, b->end_line);
            atomic_fetch_add(&self->rotations, 1);
        }
        s_forget(self, f);
        /* A new file that waited for this one can start now. */
        self->next_scan_ms = 0;
        self->is_busy = true;
    } else {
        f->offset = b->end_offset;
        f->line_count = b->end_line;
        f->fp_len = fp_len;
        f->fp = fp;
        f->is_durable = true;
    }
    b->file = NULL;
    return 0;
}

/* Reads one batch of f (or finishes it) and commits it. */
static void s_read_file(tail_t *self, s_file_t *f)
{
    if (f->fd < 0)
        return;
    struct stat st;
    if (fstat(f->fd, &st) != 0) {
        cairn_log_error("tail: %s: fstat failed: %s", f->name, strerror(errno));
        return;
    }
    uint64_t size = (uint64_t)st.st_size;
    int64_t now = cairn_time_mono_ms();
    if (size < f->offset)
        s_restart_file(self, f, "shrank (copytruncate?)");
    else if (f->fp_len) {
        bool is_short;
        uint64_t fp = s_fp_of(f, self->buf, f->fp_len, &is_short);
        if (is_short || fp != f->fp)
            s_restart_file(self, f, "was rewritten (its first bytes changed)");
    }
    if (size != f->last_size) {
        f->last_size = size;
        f->quiet_since_ms = now;
    }
    bool has_more = false;
    if (size > f->offset) {
        has_more = s_fill_batch(self, f, false);
        if (s_commit(self) != 0)
            return;
    }
    if (has_more) {
        self->is_busy = true;
        return;
    }
    if (!f->is_matched && now - f->quiet_since_ms >= self->rotate_wait_ms) {
        /* Moved or deleted away, read to its end, and unchanged for
         * rotate_wait: finish it, with its partial last line if any. */
        has_more = s_fill_batch(self, f, true);
        if (has_more)
            self->is_busy = true;
        else
            self->batch.is_release = true;
        s_commit(self);
    }
}

/* ---- scanning ---- */

static s_file_t *s_find(tail_t *self, const struct stat *st, const char *path)
{
    for (size_t i = 0; i < self->slot_count; i++) {
        s_file_t *f = &self->files[i];
        if (!f->is_used)
            continue;
        if (f->dev == st->st_dev && f->ino == st->st_ino)
            return f;
        /* A device number may change across a reboot; a file loaded from
         * the spool found at its old name with its old inode is the same
         * (its fingerprint is checked before its offset is trusted). */
        if (f->is_loaded && f->ino == st->st_ino && strcmp(f->name, path) == 0)
            return f;
    }
    return NULL;
}

static s_file_t *s_new_slot(tail_t *self)
{
    for (size_t i = 0; i < TAIL_MAX_FILES; i++)
        if (!self->files[i].is_used) {
            if (i >= self->slot_count)
                self->slot_count = i + 1;
            atomic_fetch_add(&self->file_count, 1);
            return &self->files[i];
        }
    return NULL;
}

/* Opens a file known by its slot at path (found by a scan). */
static void s_open_known(tail_t *self, s_file_t *f, const char *path, const struct stat *st)
{
    int fd = s_open_checked(path, st);
    if (fd < 0) {
        if (!f->is_unreadable)
            cairn_log_warning("tail: cannot open %s: %s; will retry", path, strerror(errno));
        f->is_unreadable = true;
        return;
    }
    if (f->is_unreadable)
        cairn_log_notice("tail: %s can be read again", path);
    f->is_unreadable = false;
    f->fd = fd;
    f->dev = st->st_dev;
    if (f->is_loaded)
        cairn_log_info("tail: following %s from byte %" PRIu64 " (line %" PRIu64 ")", path,
                       f->offset, f->line_count);
    f->is_loaded = false;
}

/* A file loaded from the spool that no pattern matches any more: it was
 * rotated (renamed) while the agent was down. Looks for it at its old name
 * and then by identity in its old directory, to finish it. */
static void s_find_orphan(tail_t *self, s_file_t *f)
{
    struct stat st;
    char found[PATH_MAX];
    found[0] = '\0';
    if (stat(f->name, &st) == 0 && st.st_ino == f->ino && st.st_dev == f->dev)
        snprintf(found, sizeof found, "%s", f->name);
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", f->name);
    char *slash = strrchr(dir, '/');
    if (!found[0] && slash) {
        if (slash == dir)
            slash[1] = '\0';
        else
            *slash = '\0';
        DIR *d = opendir(dir);
        struct dirent *entry;
        while (d && !found[0] && (entry = readdir(d)) != NULL) {
            if (entry->d_ino != f->ino)
                continue;
            char path[PATH_MAX];
            int n =
                snprintf(path, sizeof path, "%s/%s", strcmp(dir, "/") ? dir : "", entry->d_name);
            if (n > 0 && (size_t)n < sizeof path && stat(path, &st) == 0 && st.st_ino == f->ino &&
                st.st_dev == f->dev && S_ISREG(st.st_mode))
                snprintf(found, sizeof found, "%s", path);
        }
        if (d)
            closedir(d);
    }
    if (found[0]) {
        /* f keeps the name it was followed under: the new file that took
         * that name waits until this one is finished, and a restart looks
         * for this one again from there. */
        if (strcmp(found, f->name) != 0)
            cairn_log_notice("tail: %s was moved to %s; finishing it from byte %" PRIu64, f->name,
                             found, f->offset);
        s_open_known(self, f, found, &st);
        if (f->fd >= 0)
            return;
    }
    cairn_log_warning("tail: %s (inode %ju) is gone; lines after byte %" PRIu64 " (line %" PRIu64
                      "), if it had any, were not read",
                      f->name, (uintmax_t)f->ino, f->offset, f->line_count);
    self->batch = (s_batch_t){.file = f, .is_release = true, .is_gone = true};
    if (s_commit(self) != 0)
        self->batch.file = NULL; /* tried again at the next scan */
}

static int s_compare_found(const void *a, const void *b)
{
    return strcmp(((const s_found_t *)a)->path, ((const s_found_t *)b)->path);
}

static void s_scan(tail_t *self)
{
    bool was_matched[TAIL_MAX_FILES];
    for (size_t i = 0; i < self->slot_count; i++) {
        was_matched[i] = self->files[i].is_matched;
        self->files[i].is_matched = false;
    }
    s_found_t *found = NULL;
    size_t found_count = 0, found_cap = 0;
    bool is_complete = true;
    for (size_t p = 0; p < self->pattern_count; p++) {
        glob_t g;
        int rc = glob(self->patterns[p], GLOB_NOSORT, NULL, &g);
        if (rc != 0 && rc != GLOB_NOMATCH) {
            is_complete = false;
            if (!self->is_glob_warned)
                cairn_log_warning(
                    "tail: pattern %s: %s; keeping the files it matched before", self->patterns[p],
                    rc == GLOB_NOSPACE ? "out of memory" : "a directory is unreadable");
            self->is_glob_warned = true;
        }
        for (size_t i = 0; rc == 0 && i < g.gl_pathc; i++) {
            const char *path = g.gl_pathv[i];
            struct stat st;
            if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
                continue;
            s_file_t *f = s_find(self, &st, path);
            if (f) {
                f->is_matched = true;
                if (strcmp(f->name, path) != 0 && strlen(path) <= TAIL_NAME_MAX_BYTES) {
                    cairn_log_info("tail: %s is now %s", f->name, path);
                    free(f->name);
                    f->name = cairn_strdup(path);
                }
                if (f->fd < 0)
                    s_open_known(self, f, path, &st);
                continue;
            }
            if (found_count == found_cap) {
                found_cap = found_cap ? found_cap * 2 : 16;
                found = cairn_realloc(found, found_cap * sizeof *found);
            }
            found[found_count++] = (s_found_t){cairn_strdup(path), st};
        }
        globfree(&g); /* glob initialises g even when it fails */
    }
    if (is_complete) {
        self->is_glob_warned = false;
        /* Just moved or deleted away: its writer may not have reopened yet,
         * so rotate_wait counts from now, not from its last write. */
        int64_t now = cairn_time_mono_ms();
        for (size_t i = 0; i < self->slot_count; i++)
            if (was_matched[i] && self->files[i].is_used && !self->files[i].is_matched)
                self->files[i].quiet_since_ms = now;
    } else
        /* A pattern failed: what it matched before is not taken as gone. */
        for (size_t i = 0; i < self->slot_count; i++)
            self->files[i].is_matched |= was_matched[i];

    if (self->is_first_scan) {
        self->is_first_scan = false;
        for (size_t i = 0; i < self->slot_count; i++) {
            s_file_t *f = &self->files[i];
            if (f->is_used && f->is_loaded && !f->is_matched)
                s_find_orphan(self, f);
        }
    }

    if (found_count)
        qsort(found, found_count, sizeof *found, s_compare_found);
    for (size_t n = 0; n < found_count; n++) {
        const char *path = found[n].path;
        const struct stat *st = &found[n].st;
        bool is_deferred = s_find(self, st, path) != NULL; /* a hard link, or matched twice */
        for (size_t i = 0; !is_deferred && i < self->slot_count; i++) {
            const s_file_t *f = &self->files[i];
            /* The file that had this name is being finished first. */
            is_deferred = f->is_used && !f->is_matched && strcmp(f->name, path) == 0;
        }
        if (is_deferred)
            continue;
        if (strlen(path) > TAIL_NAME_MAX_BYTES) {
            cairn_log_warning("tail: %s: path over %d bytes; not following it", path,
                              TAIL_NAME_MAX_BYTES);
            continue;
        }
        int fd = s_open_checked(path, st);
        if (fd < 0) {
            cairn_log_debug("tail: cannot open %s yet: %s", path, strerror(errno));
            continue;
        }
        s_file_t *f = s_new_slot(self);
        if (!f) {
            cairn_log_warning("tail: already following %d files; not following %s", TAIL_MAX_FILES,
                              path);
            close(fd);
            continue;
        }
        *f = (s_file_t){.is_used = true,
                        .is_matched = true,
                        .dev = st->st_dev,
                        .ino = st->st_ino,
                        .name = cairn_strdup(path),
                        .fd = fd,
                        .last_size = (uint64_t)st->st_size,
                        .quiet_since_ms = cairn_time_mono_ms()};
        cairn_log_info("tail: following %s from the start", path);
    }
    for (size_t n = 0; n < found_count; n++)
        free(found[n].path);
    free(found);
}

/* ---- the actor ---- */

/* Looks at the patterns if due (or is_scan), then reads one batch of each
 * file: files moved or deleted away first, so they finish first. */
static void s_pass(tail_t *self, bool is_scan)
{
    int64_t now = cairn_time_mono_ms();
    self->is_busy = false;
    if (self->batch.file) {
        if (now < self->retry_at_ms && !is_scan)
            return;
        if (s_commit(self) != 0)
            return;
    }
    if (is_scan || now >= self->next_scan_ms) {
        s_scan(self);
        self->next_scan_ms = now + self->poll_ms;
    }
    for (int round = 0; round < 2; round++)
        for (size_t i = 0; i < self->slot_count && !self->batch.file; i++) {
            s_file_t *f = &self->files[i];
            if (f->is_used && f->is_matched == (round == 1))
                s_read_file(self, f);
        }
}

static int64_t s_timeout_ms(tail_t *self)
{
    int64_t now = cairn_time_mono_ms();
    int64_t at = self->batch.file ? self->retry_at_ms : self->is_busy ? now : self->next_scan_ms;
    return at > now ? at - now : 0;
}

static void s_actor(zsock_t *pipe, void *arg)
{
    tail_t *self = arg;
    zpoller_t *poller = zpoller_new(pipe, NULL);
    zpoller_set_nonstop(poller, true); /* SIGINT/SIGTERM end main's loop, which sends $TERM */
    zsock_signal(pipe, 0);
    bool is_terminated = false;
    while (!is_terminated) {
        void *which = zpoller_wait(poller, (int)s_timeout_ms(self));
        if (which == pipe) {
            char *command = zstr_recv(pipe);
            if (!command || streq(command, "$TERM"))
                is_terminated = true;
            else if (streq(command, "POLL")) {
                s_pass(self, true);
                for (int i = 0; i < TAIL_POLL_NOW_PASSES && self->is_busy && !self->batch.file; i++)
                    s_pass(self, false);
                zsock_signal(pipe, 0);
            }
            zstr_free(&command);
        } else if (!which)
            s_pass(self, false);
    }
    zpoller_destroy(&poller);
    /* eventIDs came from OpenSSL's generator, which keeps per-thread state;
     * free it with the thread, as the intake's pool threads do. */
    OPENSSL_thread_stop();
}

/* ---- public ---- */

tail_t *tail_new(spool_t *spool, const tail_options_t *options)
{
    char err[512];
    int count = tail_paths_check(options->paths, err, sizeof err);
    if (count <= 0) {
        cairn_log_error("tail: %s", count < 0 ? err : "no paths to follow");
        return NULL;
    }
    tail_t *self = cairn_calloc(1, sizeof *self);
    for (size_t i = 0; i < TAIL_MAX_FILES; i++)
        self->files[i].fd = -1;
    self->spool = spool;
    self->selector = options->selector;
    self->patterns = cairn_calloc((size_t)count, sizeof *self->patterns);
    s_split(options->paths, s_add_pattern, self);
    self->poll_ms = options->poll_ms > 0 ? options->poll_ms : 250;
    self->rotate_wait_ms = options->rotate_wait_ms >= 0 ? options->rotate_wait_ms : 0;
    self->batch_max_lines = options->batch_max_lines ? options->batch_max_lines : 1000;
    /* A batch must fit a spool that is nearly empty (spool.c keeps a reserve
     * and wants twice a request's bytes), or a small spool would never take it. */
    uint64_t used = 0, map = 0;
    spool_size(spool, &used, &map);
    self->batch_max_bytes = TAIL_BATCH_MAX_BYTES;
    if (map / 16 < self->batch_max_bytes)
        self->batch_max_bytes = map / 16 > 4096 ? map / 16 : 4096;
    self->region = cairn_strdup(options->defaults.region ? options->defaults.region : "");
    self->account_id =
        cairn_strdup(options->defaults.account_id ? options->defaults.account_id : "");
    self->defaults.region = self->region;
    self->defaults.account_id = self->account_id;
    self->parser = event_parser_new(&self->defaults);
    self->buf = cairn_malloc(TAIL_BUF_BYTES);
    self->packed_cap = self->batch_max_bytes + TAIL_EVENT_MAX_BYTES;
    self->packed = cairn_malloc(self->packed_cap);
    self->packed_offsets = cairn_calloc(self->batch_max_lines, sizeof *self->packed_offsets);
    self->event_ptrs = cairn_calloc(self->batch_max_lines, sizeof *self->event_ptrs);
    self->event_lens = cairn_calloc(self->batch_max_lines, sizeof *self->event_lens);
    self->is_first_scan = true;
    if (!self->parser || s_load(self) != 0) {
        tail_destroy(&self);
        return NULL;
    }
    size_t known = 0;
    for (size_t i = 0; i < self->slot_count; i++)
        known += self->files[i].is_used;
    atomic_store(&self->file_count, known);
    cairn_log_notice("tail: following %s (every %" PRId64 " ms); %zu file(s) known from the spool",
                     options->paths, self->poll_ms, known);
    self->actor = zactor_new(s_actor, self);
    return self;
}

void tail_destroy(tail_t **self_p)
{
    tail_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    zactor_destroy(&self->actor); /* joins the thread: nothing else touches the files */
    for (size_t i = 0; i < self->slot_count; i++) {
        if (self->files[i].fd >= 0)
            close(self->files[i].fd);
        free(self->files[i].name);
    }
    for (size_t i = 0; i < self->pattern_count; i++)
        free(self->patterns[i]);
    free(self->patterns);
    event_parser_destroy(&self->parser);
    free(self->buf);
    free(self->packed);
    free(self->packed_offsets);
    free(self->event_ptrs);
    free(self->event_lens);
    free(self->region);
    free(self->account_id);
    free(self);
    *self_p = NULL;
}

int tail_poll_now(tail_t *self)
{
    zstr_send(self->actor, "POLL");
    zsock_wait(self->actor);
    return 0;
}

void tail_get_stats(tail_t *self, tail_stats_t *stats)
{
    stats->lines_read = atomic_load(&self->lines_read);
    stats->events_spooled = atomic_load(&self->events_spooled);
    stats->bad_lines = atomic_load(&self->bad_lines);
    for (int r = 0; r < SELECTOR_REASON_COUNT; r++)
        stats->filtered[r] = atomic_load(&self->filtered[r]);
    stats->rotations = atomic_load(&self->rotations);
    stats->truncations = atomic_load(&self->truncations);
    stats->spool_full = atomic_load(&self->spool_full);
    stats->files = atomic_load(&self->file_count);
    stats->is_paused = atomic_load(&self->is_paused);
}
