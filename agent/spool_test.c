/* spool_test.c: the agent's spool keeps, orders, acknowledges and pushes back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "spool.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        cmocka_unit_test(unopenable_dir_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
