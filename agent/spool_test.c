/* spool_test.c: the agent's spool keeps, orders, acknowledges and pushes back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "spool.h"
#include "cairn_test_pages.h"

#include <fcntl.h>
#include <ftw.h>
#include <linux/magic.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

static int s_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    char *dir = strdup("/tmp/cairn-spool-test-XXXXXX");
    assert_non_null(mkdtemp(dir));
    *state = dir;
    return 0;
}

static int teardown(void **state)
{
    nftw(*state, s_rm, 16, FTW_DEPTH | FTW_PHYS);
    free(*state);
    return 0;
}

static int s_append_strings(spool_t *spool, const char **items, size_t count, uint64_t *first)
{
    const uint8_t *bufs[16];
    size_t lens[16];
    for (size_t i = 0; i < count; i++) {
        bufs[i] = (const uint8_t *)items[i];
        lens[i] = strlen(items[i]);
    }
    return spool_append(spool, bufs, lens, count, first);
}

typedef struct {
    uint64_t seqs[64];
    char data[64][32];
    size_t count;
} s_seen_t;

static int s_collect(void *ctx, uint64_t seq, const uint8_t *data, size_t len)
{
    s_seen_t *seen = ctx;
    seen->seqs[seen->count] = seq;
    snprintf(seen->data[seen->count], sizeof seen->data[0], "%.*s", (int)len, (const char *)data);
    seen->count++;
    return 0;
}

static void append_read_ack_in_order(void **state)
{
    spool_t *spool = spool_new(*state, 1 << 20, true);
    assert_non_null(spool);
    const char *items[] = {"a", "bb", "ccc"};
    uint64_t first = 0;
    assert_int_equal(s_append_strings(spool, items, 3, &first), 0);
    assert_int_equal(first, 1);
    assert_int_equal(spool_pending_count(spool), 3);

    s_seen_t seen = {0};
    assert_int_equal(spool_read(spool, 1, 10, 1 << 20, s_collect, &seen), 3);
    assert_int_equal(seen.seqs[2], 3);
    assert_string_equal(seen.data[1], "bb");

    /* max_count and max_bytes bound a read; one event always passes. */
    memset(&seen, 0, sizeof seen);
    assert_int_equal(spool_read(spool, 2, 1, 1 << 20, s_collect, &seen), 1);
    assert_int_equal(seen.seqs[0], 2);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(spool_read(spool, 1, 10, 2, s_collect, &seen), 1);

    assert_int_equal(spool_ack_through(spool, 2), 0);
    assert_int_equal(spool_pending_count(spool), 1);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(spool_read(spool, 1, 10, 1 << 20, s_collect, &seen), 1);
    assert_int_equal(seen.seqs[0], 3);
    /* An ack beyond what was appended covers only what exists. */
    assert_int_equal(spool_ack_through(spool, 99), 0);
    assert_int_equal(spool_acked_seq(spool), 3);
    spool_destroy(&spool);
    assert_null(spool);
}

static void survives_reopen_without_reusing_seqs(void **state)
{
    spool_t *spool = spool_new(*state, 1 << 20, true);
    const char *items[] = {"x", "y"};
    assert_int_equal(s_append_strings(spool, items, 2, NULL), 0);
    assert_int_equal(spool_ack_through(spool, 2), 0);
    char id[37];
    snprintf(id, sizeof id, "%s", spool_id(spool));
    assert_int_equal(strlen(id), 36);
    spool_destroy(&spool);

    spool = spool_new(*state, 1 << 20, true);
    assert_non_null(spool);
    assert_string_equal(spool_id(spool), id); /* the id survives a reopen */
    assert_int_equal(spool_pending_count(spool), 0);
    assert_int_equal(spool_acked_seq(spool), 2);
    uint64_t first = 0;
    assert_int_equal(s_append_strings(spool, items, 1, &first), 0);
    assert_int_equal(first, 3);
    spool_destroy(&spool);

    spool = spool_new(*state, 1 << 20, true);
    assert_int_equal(spool_pending_count(spool), 1);
    assert_int_equal(spool_next_seq(spool), 4);
    spool_destroy(&spool);
}

static void full_spool_pushes_back_and_keeps_what_it_has(void **state)
{
    spool_t *spool = spool_new(*state, 1 << 20, false);
    assert_non_null(spool);
    static char big[8000];
    memset(big, 'e', sizeof big - 1);
    const uint8_t *bufs[1] = {(const uint8_t *)big};
    size_t lens[1] = {sizeof big};
    int rc = 0;
    uint64_t stored = 0;
    for (int i = 0; i < 1000 && rc == 0; i++) {
        rc = spool_append(spool, bufs, lens, 1, NULL);
        if (rc == 0)
            stored++;
    }
    assert_int_equal(rc, SPOOL_FULL);
    assert_true(stored > 0);
    assert_int_equal(spool_pending_count(spool), stored);
    /* Acknowledging frees room again. */
    assert_int_equal(spool_ack_through(spool, spool_next_seq(spool) - 1), 0);
    assert_int_equal(spool_append(spool, bufs, lens, 1, NULL), 0);
    spool_destroy(&spool);
}

typedef struct {
    spool_t *spool;
    int thread;
} s_writer_t;

#define WRITERS       8
#define WRITER_ROUNDS 50
#define REQUEST_SIZE  3

/* Each request appends REQUEST_SIZE events "t<thread>r<round>e<i>". */
static void *s_writer(void *arg)
{
    s_writer_t *w = arg;
    for (int round = 0; round < WRITER_ROUNDS; round++) {
        char text[REQUEST_SIZE][32];
        const uint8_t *bufs[REQUEST_SIZE];
        size_t lens[REQUEST_SIZE];
        for (int i = 0; i < REQUEST_SIZE; i++) {
            lens[i] = (size_t)snprintf(text[i], sizeof text[i], "t%dr%de%d", w->thread, round, i);
            bufs[i] = (const uint8_t *)text[i];
        }
        if (spool_append(w->spool, bufs, lens, REQUEST_SIZE, NULL) != 0)
            return (void *)1;
    }
    return NULL;
}

typedef struct {
    uint64_t count;
    uint64_t last_seq;
    int is_ordered;   /* seqs strictly increase */
    int is_grouped;   /* each request's events are consecutive */
    char prev[32];
} s_check_t;

static int s_check_order(void *ctx, uint64_t seq, const uint8_t *data, size_t len)
{
    s_check_t *c = ctx;
    char text[32];
    snprintf(text, sizeof text, "%.*s", (int)len, (const char *)data);
    if (seq <= c->last_seq)
        c->is_ordered = 0;
    /* Within a request, event i+1 follows event i of the same t/r. */
    const char *e = strrchr(text, 'e');
    if (e && e[1] != '0') {
        char expected[32];
        snprintf(expected, sizeof expected, "%.*se%d", (int)(e - text), text, e[1] - '0' - 1);
        if (strcmp(expected, c->prev) != 0)
            c->is_grouped = 0;
    }
    snprintf(c->prev, sizeof c->prev, "%s", text);
    c->last_seq = seq;
    c->count++;
    return 0;
}

static void concurrent_appends_are_all_kept_whole(void **state)
{
    spool_t *spool = spool_new(*state, 16 << 20, true);
    assert_non_null(spool);
    pthread_t threads[WRITERS];
    s_writer_t writers[WRITERS];
    for (int t = 0; t < WRITERS; t++) {
        writers[t] = (s_writer_t){spool, t};
        assert_int_equal(pthread_create(&threads[t], NULL, s_writer, &writers[t]), 0);
    }
    for (int t = 0; t < WRITERS; t++) {
        void *result = NULL;
        pthread_join(threads[t], &result);
        assert_null(result);
    }
    uint64_t total = (uint64_t)WRITERS * WRITER_ROUNDS * REQUEST_SIZE;
    assert_int_equal(spool_pending_count(spool), total);
    s_check_t check = {.is_ordered = 1, .is_grouped = 1};
    assert_int_equal(spool_read(spool, 1, total * 2, 1 << 30, s_check_order, &check), total);
    assert_int_equal(check.count, total);
    assert_true(check.is_ordered);
    assert_true(check.is_grouped);
    assert_int_equal(check.last_seq, total);
    spool_destroy(&spool);
}

static void state_commits_with_its_events(void **state)
{
    spool_t *spool = spool_new(*state, 1 << 20, true);
    const char *items[] = {"line1", "line2"};
    const uint8_t *bufs[2] = {(const uint8_t *)items[0], (const uint8_t *)items[1]};
    size_t lens[2] = {5, 5};
    uint64_t offset = 12;
    spool_state_t st = {"tail:/var/log/a.log", &offset, sizeof offset};
    uint64_t value = 0;
    size_t len = 0;
    assert_int_equal(spool_get_state(spool, st.key, &value, sizeof value, &len), 1);
    assert_int_equal(spool_append_with_state(spool, bufs, lens, 2, &st, NULL), 0);
    offset = 99; /* a state-only update */
    assert_int_equal(spool_append_with_state(spool, NULL, NULL, 0, &st, NULL), 0);
    spool_destroy(&spool);

    spool = spool_new(*state, 1 << 20, true);
    assert_int_equal(spool_get_state(spool, st.key, &value, sizeof value, &len), 0);
    assert_int_equal(len, sizeof value);
    assert_int_equal(value, 99);
    assert_int_equal(spool_pending_count(spool), 2);
    char big_key[300];
    memset(big_key, 'k', sizeof big_key - 1);
    big_key[sizeof big_key - 1] = '\0';
    spool_state_t too_long = {big_key, &offset, sizeof offset};
    assert_int_equal(spool_append_with_state(spool, bufs, lens, 1, &too_long, NULL), -1);
    assert_int_equal(spool_pending_count(spool), 2); /* nothing of a refused call stored */
    spool_destroy(&spool);
}

#define BIG_EVENT_BYTES  (64 * 1024)
#define BIG_EVENTS_A_CALL 16

/* A big event whose every byte depends on its seq. */
static void s_fill_big(uint8_t *data, uint64_t seq)
{
    for (size_t i = 0; i < BIG_EVENT_BYTES; i++)
        data[i] = (uint8_t)(seq * 131 + i / 4096);
}

static int s_check_big(void *ctx, uint64_t seq, const uint8_t *data, size_t len)
{
    uint64_t *expected_seq = ctx;
    static uint8_t want[BIG_EVENT_BYTES];
    assert_int_equal(seq, *expected_seq);
    assert_int_equal(len, BIG_EVENT_BYTES);
    s_fill_big(want, seq);
    assert_memory_equal(data, want, len);
    (*expected_seq)++;
    return 0;
}

static void s_append_big(spool_t *spool, size_t calls)
{
    static uint8_t data[BIG_EVENTS_A_CALL][BIG_EVENT_BYTES];
    const uint8_t *bufs[BIG_EVENTS_A_CALL];
    size_t lens[BIG_EVENTS_A_CALL];
    for (size_t c = 0; c < calls; c++) {
        uint64_t seq = spool_next_seq(spool);
        for (size_t i = 0; i < BIG_EVENTS_A_CALL; i++) {
            s_fill_big(data[i], seq + i);
            bufs[i] = data[i];
            lens[i] = BIG_EVENT_BYTES;
        }
        assert_int_equal(spool_append(spool, bufs, lens, BIG_EVENTS_A_CALL, NULL), 0);
    }
}


static void old_pages_leave_the_cache_and_read_back_whole(void **state)
{
    spool_t *spool = spool_new(*state, 1 << 30, true);
    assert_non_null(spool);
    /* 256 MB: past the 128 MB kept cached, so the first part is dropped. */
    s_append_big(spool, 256);
    char path[256];
    snprintf(path, sizeof path, "%s/data.mdb", (const char *)*state);
    struct statfs fs;
    assert_int_equal(statfs(path, &fs), 0);
    if (fs.f_type != TMPFS_MAGIC) /* tmpfs has no pages to drop */
        assert_true(cairn_test_resident_pages(path, 64 << 20) < (64 << 20) / 4096 / 4);

    /* Everything reads back from the disk, in order. */
    uint64_t next = 1;
    while (spool_read(spool, next, 64, 8 << 20, s_check_big, &next) > 0)
        ;
    assert_int_equal(next, spool_next_seq(spool));

    /* Acked pages are reused, below where pages were dropped; all still reads. */
    assert_int_equal(spool_ack_through(spool, 2048), 0);
    s_append_big(spool, 64);
    next = 2049;
    while (spool_read(spool, next, 64, 8 << 20, s_check_big, &next) > 0)
        ;
    assert_int_equal(next, spool_next_seq(spool));
    spool_destroy(&spool);
}

/* KiB of path that this process has mapped and resident (smaps Rss). */
static size_t s_mapped_kib(const char *path)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    char line[512];
    size_t kib = 0, v;
    bool in_path = false;
    while (fgets(line, sizeof line, f)) {
        if (strchr(line, '-') && strchr(line, ' ') && line[0] != ' ' &&
            (line[0] < 'A' || line[0] > 'Z'))
            in_path = strstr(line, path) != NULL; /* a mapping's first line */
        else if (in_path && sscanf(line, "Rss: %zu kB", &v) == 1)
            kib += v;
    }
    fclose(f);
    return kib;
}

static int s_count(void *ctx, uint64_t seq, const uint8_t *data, size_t len)
{
    (*(size_t *)ctx)++;
    return 0;
}

/* Reading 64 MB back maps it into the process, but a read lets go of what
 * it went through as it goes (every 64 events and at its end), and what it
 * let go still reads back; spool_unmap lets go of the rest. */
static void read_pages_leave_the_process_as_they_are_read(void **state)
{
    spool_t *spool = spool_new(*state, 1 << 30, false);
    assert_non_null(spool);
    s_append_big(spool, 64);
    char path[256];
    snprintf(path, sizeof path, "%s/data.mdb", (const char *)*state);
    uint64_t next = 1;
    size_t most_kib = 0;
    while (spool_read(spool, next, 48, 8 << 20, s_check_big, &next) > 0) {
        size_t kib = s_mapped_kib(path);
        most_kib = kib > most_kib ? kib : most_kib;
    }
    assert_int_equal(next, spool_next_seq(spool));
    assert_true(most_kib < 2 * 1024); /* 64 MB went through */
    spool_unmap(spool);
    assert_true(s_mapped_kib(path) < 1024);
    next = 1;
    assert_int_equal(spool_read(spool, next, 1024, 128 << 20, s_check_big, &next), 1024);
    assert_true(s_mapped_kib(path) < 2 * 1024);
    size_t count = 0;
    while (spool_read(spool, 1 + count, 64, 8 << 20, s_count, &count) > 0)
        ;
    assert_int_equal(count, spool_next_seq(spool) - 1);
    next = 1;
    while (spool_read(spool, next, 64, 8 << 20, s_check_big, &next) > 0)
        ;
    /* An ack of everything unmaps the block headers it read. */
    assert_int_equal(spool_ack_through(spool, spool_next_seq(spool) - 1), 0);
    assert_true(s_mapped_kib(path) < 2 * 1024);
    spool_destroy(&spool);
}

/* While a backlog drains, acked blocks leave the page cache: they are never
 * read again (see s_drop_deleted); the blocks not acked stay. */
static void acked_blocks_of_a_backlog_leave_the_cache(void **state)
{
    spool_t *spool = spool_new(*state, 1 << 30, true);
    assert_non_null(spool);
    s_append_big(spool, 64); /* 64 MB, under the 128 MB the appends keep cached */
    char path[256];
    snprintf(path, sizeof path, "%s/data.mdb", (const char *)*state);
    struct statfs fs;
    assert_int_equal(statfs(path, &fs), 0);
    uint64_t next = 1;
    while (spool_read(spool, next, 64, 8 << 20, s_check_big, &next) > 0)
        ;
    size_t pages = (32 << 20) / 4096;
    if (fs.f_type != TMPFS_MAGIC) /* tmpfs has no pages to drop */
        assert_true(cairn_test_resident_pages(path, 32 << 20) > pages * 3 / 4);
    spool_set_drop_backlog(spool, 256);
    assert_int_equal(spool_ack_through(spool, 512), 0); /* the first 32 MB; 512 events left */
    if (fs.f_type != TMPFS_MAGIC) {
        size_t first = cairn_test_resident_pages(path, 32 << 20);
        assert_true(first < pages / 4);
        /* What the ack did not reach stays cached. */
        assert_true(cairn_test_resident_pages(path, 64 << 20) - first > pages * 3 / 4);
    }
    /* And all of it reads. */
    next = 513;
    while (spool_read(spool, next, 64, 8 << 20, s_check_big, &next) > 0)
        ;
    assert_int_equal(next, spool_next_seq(spool));
    spool_destroy(&spool);
}

/* Records of the spool's "events" database in dir, counted with LMDB itself
 * (read-only: the spool must be closed). */
static size_t s_record_count(const char *dir)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi events;
    MDB_stat st;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "events", 0, &events), 0);
    assert_int_equal(mdb_stat(txn, events, &st), 0);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return st.ms_entries;
}

/* One record of the "events" database, as LMDB stores it. */
typedef struct {
    uint64_t seq;
    const void *value;
    size_t len;
} s_raw_record_t;

/* Writes records (keys: seqs, 8 bytes big-endian) into the "events"
 * database of a spool dir made with LMDB directly, as an older agent (or a
 * damaged disk) left it; "meta" is created empty. */
static void s_write_raw(const char *dir, const s_raw_record_t *records, size_t count)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi events, meta;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_set_mapsize(env, 1 << 20), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "events", MDB_CREATE, &events), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", MDB_CREATE, &meta), 0);
    for (size_t i = 0; i < count; i++) {
        uint8_t key[8];
        for (int b = 7; b >= 0; b--)
            key[b] = (uint8_t)(records[i].seq >> (8 * (7 - b)));
        MDB_val k = {8, key}, v = {records[i].len, (void *)records[i].value};
        assert_int_equal(mdb_put(txn, events, &k, &v, 0), 0);
    }
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static void s_assert_seen(const s_seen_t *seen, uint64_t first, size_t count)
{
    assert_int_equal(seen->count, count);
    for (size_t i = 0; i < count; i++) {
        char want[32];
        snprintf(want, sizeof want, "event-%llu", (unsigned long long)(first + i));
        assert_int_equal(seen->seqs[i], first + i);
        assert_string_equal(seen->data[i], want);
    }
}

/* Appends "event-<seq>" for count events in one call, from the next seq. */
static void s_append_numbered(spool_t *spool, size_t count)
{
    char text[16][32];
    const char *items[16];
    uint64_t next = spool_next_seq(spool), first = 0;
    assert_true(count <= 16);
    for (size_t i = 0; i < count; i++) {
        snprintf(text[i], sizeof text[i], "event-%llu", (unsigned long long)(next + i));
        items[i] = text[i];
    }
    assert_int_equal(s_append_strings(spool, items, count, &first), 0);
    assert_int_equal(first, next);
}

static void read_from_the_middle_of_a_block(void **state)
{
    spool_t *spool = spool_new(*state, 1 << 20, true);
    assert_non_null(spool);
    s_append_numbered(spool, 10);
    assert_int_equal(spool_next_seq(spool), 11);

    s_seen_t seen = {0};
    assert_int_equal(spool_read(spool, 4, 3, 1 << 20, s_collect, &seen), 3);
    s_assert_seen(&seen, 4, 3);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(spool_read(spool, 9, 10, 1 << 20, s_collect, &seen), 2);
    s_assert_seen(&seen, 9, 2);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(spool_read(spool, 10, 10, 1 << 20, s_collect, &seen), 1); /* its last */
    s_assert_seen(&seen, 10, 1);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(spool_read(spool, 11, 10, 1 << 20, s_collect, &seen), 0);
    assert_int_equal(seen.count, 0);
    spool_destroy(&spool);
    /* The ten are one record: the reads above started inside it. */
    assert_int_equal(s_record_count(*state), 1);
}

static void partial_ack_keeps_the_rest_across_reopen(void **state)
{
    spool_t *spool = spool_new(*state, 1 << 20, true);
    assert_non_null(spool);
    s_append_numbered(spool, 10);
    assert_int_equal(spool_ack_through(spool, 4), 0);
    s_seen_t seen = {0};
    /* The block's acked head never comes back. */
    assert_int_equal(spool_read(spool, 1, 64, 1 << 20, s_collect, &seen), 6);
    s_assert_seen(&seen, 5, 6);
    spool_destroy(&spool);

    spool = spool_new(*state, 1 << 20, true);
    assert_non_null(spool);
    assert_int_equal(spool_pending_count(spool), 6);
    assert_int_equal(spool_acked_seq(spool), 4);
    assert_int_equal(spool_next_seq(spool), 11);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(spool_read(spool, 1, 64, 1 << 20, s_collect, &seen), 6);
    s_assert_seen(&seen, 5, 6);
    assert_int_equal(spool_ack_through(spool, 10), 0);
    assert_int_equal(spool_pending_count(spool), 0);
    spool_destroy(&spool);
    assert_int_equal(s_record_count(*state), 0); /* the block went once covered whole */

    spool = spool_new(*state, 1 << 20, true);
    assert_non_null(spool);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(spool_read(spool, 1, 64, 1 << 20, s_collect, &seen), 0);
    uint64_t first = 0;
    const char *items[] = {"event-11"};
    assert_int_equal(s_append_strings(spool, items, 1, &first), 0);
    assert_int_equal(first, 11);
    spool_destroy(&spool);
}

#define MID_EVENTS      300
#define MID_EVENT_BYTES 4000

/* A 4,000-byte event whose bytes depend on its seq. */
static void s_fill_mid(uint8_t *data, uint64_t seq)
{
    for (size_t i = 0; i < MID_EVENT_BYTES; i++)
        data[i] = (uint8_t)(seq * 131 + i * 7 + (i >> 8));
}

typedef struct {
    uint64_t next; /* seq expected next */
    size_t count;
    size_t wrong; /* events out of order or not as appended */
} s_mid_check_t;

static int s_check_mid(void *ctx, uint64_t seq, const uint8_t *data, size_t len)
{
    s_mid_check_t *c = ctx;
    uint8_t want[MID_EVENT_BYTES];
    s_fill_mid(want, seq);
    if (seq != c->next || len != MID_EVENT_BYTES || memcmp(data, want, len) != 0)
        c->wrong++;
    c->next = seq + 1;
    c->count++;
    return 0;
}

static void a_large_request_is_split_into_blocks(void **state)
{
    spool_t *spool = spool_new(*state, 16 << 20, true);
    assert_non_null(spool);
    static uint8_t data[MID_EVENTS][MID_EVENT_BYTES];
    const uint8_t *bufs[MID_EVENTS];
    size_t lens[MID_EVENTS];
    for (size_t i = 0; i < MID_EVENTS; i++) {
        s_fill_mid(data[i], i + 1);
        bufs[i] = data[i];
        lens[i] = MID_EVENT_BYTES;
    }
    uint64_t first = 0;
    assert_int_equal(spool_append(spool, bufs, lens, MID_EVENTS, &first), 0);
    assert_int_equal(first, 1);
    assert_int_equal(spool_next_seq(spool), MID_EVENTS + 1);
    s_mid_check_t check = {.next = 1};
    assert_int_equal(spool_read(spool, 1, 10 * MID_EVENTS, 1 << 30, s_check_mid, &check),
                     MID_EVENTS);
    assert_int_equal(check.count, MID_EVENTS);
    assert_int_equal(check.wrong, 0);
    spool_destroy(&spool);

    /* 1.2 MB in one request: more than one block of 256 KiB, fewer blocks
     * than events. */
    size_t records = s_record_count(*state);
    assert_true(records > 1);
    assert_true(records < MID_EVENTS);

    /* An ack through the middle of a block deletes the blocks before it only. */
    spool = spool_new(*state, 16 << 20, true);
    assert_non_null(spool);
    assert_int_equal(spool_ack_through(spool, 150), 0);
    spool_destroy(&spool);
    size_t left = s_record_count(*state);
    assert_true(left > 0);
    assert_true(left < records);

    spool = spool_new(*state, 16 << 20, true);
    assert_non_null(spool);
    assert_int_equal(spool_acked_seq(spool), 150);
    assert_int_equal(spool_pending_count(spool), MID_EVENTS - 150);
    check = (s_mid_check_t){.next = 151};
    assert_int_equal(spool_read(spool, 1, 10 * MID_EVENTS, 1 << 30, s_check_mid, &check),
                     MID_EVENTS - 150);
    assert_int_equal(check.count, MID_EVENTS - 150);
    assert_int_equal(check.wrong, 0);
    assert_int_equal(check.next, MID_EVENTS + 1);
    spool_destroy(&spool);
}

static void an_older_agents_records_still_read(void **state)
{
    /* An older agent stored one event per record: key its seq, value its bytes. */
    s_raw_record_t old[] = {{1, "first", 5}, {2, "second", 6}, {3, "third", 5}};
    s_write_raw(*state, old, 3);

    spool_t *spool = spool_new(*state, 1 << 20, true);
    assert_non_null(spool);
    assert_int_equal(spool_next_seq(spool), 4);
    assert_int_equal(spool_pending_count(spool), 3);
    s_seen_t seen = {0};
    assert_int_equal(spool_read(spool, 1, 64, 1 << 20, s_collect, &seen), 3);
    assert_int_equal(seen.seqs[0], 1);
    assert_int_equal(seen.seqs[1], 2);
    assert_int_equal(seen.seqs[2], 3);
    assert_string_equal(seen.data[0], "first");
    assert_string_equal(seen.data[1], "second");
    assert_string_equal(seen.data[2], "third");

    const char *items[] = {"fourth", "fifth"};
    uint64_t first = 0;
    assert_int_equal(s_append_strings(spool, items, 2, &first), 0);
    assert_int_equal(first, 4);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(spool_read(spool, 2, 64, 1 << 20, s_collect, &seen), 4);
    const char *want[] = {"second", "third", "fourth", "fifth"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(seen.seqs[i], 2 + i);
        assert_string_equal(seen.data[i], want[i]);
    }
    assert_int_equal(spool_ack_through(spool, 3), 0);
    spool_destroy(&spool);

    spool = spool_new(*state, 1 << 20, true);
    assert_non_null(spool);
    assert_int_equal(spool_pending_count(spool), 2);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(spool_read(spool, 1, 64, 1 << 20, s_collect, &seen), 2);
    assert_int_equal(seen.seqs[0], 4);
    assert_int_equal(seen.seqs[1], 5);
    assert_string_equal(seen.data[0], "fourth");
    assert_string_equal(seen.data[1], "fifth");
    spool_destroy(&spool);
}

static void a_corrupt_block_is_skipped_counted_and_no_seq_reused(void **state)
{
    /* A block header claiming 1,000 events in a 20-byte value. */
    uint8_t bad[20] = {0x00, 'B', 0x01, 0x00, 0xe8, 0x03, 0x00, 0x00};
    char last_dir[256], inner_dir[256];

    /* As the last record, it is what spool_new reads to restore the next
     * seq: the spool opens, counts it, and numbers on after the most a
     * block can hold, so no seq it may have held is handed out again. */
    snprintf(last_dir, sizeof last_dir, "%s/last", (const char *)*state);
    assert_int_equal(mkdir(last_dir, 0750), 0);
    s_raw_record_t last[] = {{1, bad, sizeof bad}};
    s_write_raw(last_dir, last, 1);
    spool_t *spool = spool_new(last_dir, 1 << 20, true);
    assert_non_null(spool);
    assert_int_equal(spool_corrupt_blocks(spool), 1);
    assert_true(spool_next_seq(spool) > 1000);
    s_seen_t seen = {0};
    assert_int_equal(spool_read(spool, 1, 64, 1 << 20, s_collect, &seen), 0);
    const char *items[] = {"after"};
    uint64_t first = 0;
    assert_int_equal(s_append_strings(spool, items, 1, &first), 0);
    assert_true(first > 1000);
    assert_int_equal(spool_read(spool, 1, 64, 1 << 20, s_collect, &seen), 1);
    assert_string_equal(seen.data[0], "after");
    spool_destroy(&spool);

    /* Followed by a sound record: reads skip it, an ack past it deletes it. */
    snprintf(inner_dir, sizeof inner_dir, "%s/inner", (const char *)*state);
    assert_int_equal(mkdir(inner_dir, 0750), 0);
    s_raw_record_t inner[] = {{1, bad, sizeof bad}, {2000, "sound", 5}};
    s_write_raw(inner_dir, inner, 2);
    spool = spool_new(inner_dir, 1 << 20, true);
    assert_non_null(spool);
    assert_int_equal(spool_next_seq(spool), 2001);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(spool_read(spool, 1, 64, 1 << 20, s_collect, &seen), 1);
    assert_int_equal(seen.seqs[0], 2000);
    assert_string_equal(seen.data[0], "sound");
    assert_int_equal(spool_corrupt_blocks(spool), 1);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(spool_read(spool, 500, 64, 1 << 20, s_collect, &seen), 1);
    assert_int_equal(seen.seqs[0], 2000);
    assert_int_equal(spool_ack_through(spool, 2000), 0);
    assert_int_equal(spool_pending_count(spool), 0);
    spool_destroy(&spool);
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    MDB_stat st;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_open(env, inner_dir, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "events", 0, &dbi), 0);
    assert_int_equal(mdb_stat(txn, dbi, &st), 0);
    assert_int_equal(st.ms_entries, 0);
    mdb_txn_abort(txn);
    mdb_env_close(env);
}

static void unopenable_dir_fails_cleanly(void **state)
{
    assert_null(spool_new("/proc/cairn-no-such/spool", 1 << 20, true));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(append_read_ack_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(survives_reopen_without_reusing_seqs, setup, teardown),
        cmocka_unit_test_setup_teardown(full_spool_pushes_back_and_keeps_what_it_has, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(concurrent_appends_are_all_kept_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(state_commits_with_its_events, setup, teardown),
        cmocka_unit_test_setup_teardown(old_pages_leave_the_cache_and_read_back_whole, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(read_pages_leave_the_process_as_they_are_read, setup, teardown),
        cmocka_unit_test_setup_teardown(acked_blocks_of_a_backlog_leave_the_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(read_from_the_middle_of_a_block, setup, teardown),
        cmocka_unit_test_setup_teardown(partial_ack_keeps_the_rest_across_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(a_large_request_is_split_into_blocks, setup, teardown),
        cmocka_unit_test_setup_teardown(an_older_agents_records_still_read, setup, teardown),
        cmocka_unit_test_setup_teardown(a_corrupt_block_is_skipped_counted_and_no_seq_reused, setup,
                                        teardown),
        cmocka_unit_test(unopenable_dir_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
