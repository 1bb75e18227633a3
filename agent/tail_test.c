/* tail_test.c: the tail follows files into a real spool: offsets, partial
 * lines, restarts, rotation by rename and by copytruncate, bad lines,
 * selectors, a full spool, and no allocation after warm-up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cairn_mem.h"
#include "config.h"
#include "selector.h"
#include "spool.h"
#include "tail.h"

#define MAX_IDS 4096

typedef struct {
    char dir[64];    /* the test's temporary directory */
    char logs[96];   /* dir/logs: the followed files */
    char paths[128]; /* the pattern */
    spool_t *spool;
    tail_t *tail;
    char *ids[MAX_IDS]; /* eventIDs seen in the spool, in order */
    size_t id_count;
    uint64_t read_seq; /* next spool seq to read */
} fixture_t;

static int s_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void start_tail_waiting(fixture_t *fx, selector_t *selector, int64_t rotate_wait_ms)
{
    tail_options_t options = {.paths = fx->paths,
                              .poll_ms = 60000, /* only tail_poll_now drives it */
                              .rotate_wait_ms = rotate_wait_ms,
                              .batch_max_lines = 7, /* small: batches end mid-file */
                              .defaults = {.region = "eu-west-1", .account_id = "111122223333"},
                              .selector = selector};
    fx->tail = tail_new(fx->spool, &options);
    assert_non_null(fx->tail);
}

static void start_tail(fixture_t *fx, selector_t *selector)
{
    start_tail_waiting(fx, selector, 0);
}

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/cairn-tail-test-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->logs, sizeof fx->logs, "%s/logs", fx->dir);
    assert_int_equal(mkdir(fx->logs, 0700), 0);
    snprintf(fx->paths, sizeof fx->paths, "%s/*.jsonl", fx->logs);
    char spool_dir[128];
    snprintf(spool_dir, sizeof spool_dir, "%s/spool", fx->dir);
    fx->spool = spool_new(spool_dir, 64 << 20, false);
    assert_non_null(fx->spool);
    fx->read_seq = 1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    tail_destroy(&fx->tail);
    spool_destroy(&fx->spool);
    nftw(fx->dir, s_rm, 16, FTW_DEPTH | FTW_PHYS);
    for (size_t i = 0; i < fx->id_count; i++)
        free(fx->ids[i]);
    free(fx);
    return 0;
}

static void write_text(const char *path, const char *mode, const char *text)
{
    FILE *f = fopen(path, mode);
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Appends records id-<from>..id-<to-1> (one line each) to path. */
static void write_records(const char *path, int from, int to)
{
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    for (int i = from; i < to; i++)
        fprintf(f,
                "{\"eventVersion\":\"1.11\",\"eventID\":\"id-%d\",\"eventTime\":"
                "\"2025-03-04T10:02:37Z\",\"eventName\":\"GetObject\",\"eventSource\":"
                "\"s3.amazonaws.com\",\"readOnly\":true,\"requestParameters\":{\"n\":%d}}\n",
                i, i);
    fclose(f);
}

static void log_path(const fixture_t *fx, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", fx->logs, name);
}

static int s_collect(void *ctx, uint64_t seq, const uint8_t *data, size_t len)
{
    fixture_t *fx = ctx;
    Cairn__Event *event = cairn__event__unpack(NULL, len, data);
    assert_non_null(event);
    assert_true(fx->id_count < MAX_IDS);
    fx->ids[fx->id_count++] = strdup(event->event_id);
    cairn__event__free_unpacked(event, NULL);
    fx->read_seq = seq + 1;
    return 0;
}

/* Reads what was spooled since the last call. */
static void collect(fixture_t *fx)
{
    while (spool_read(fx->spool, fx->read_seq, 1000, 64 << 20, s_collect, fx) > 0)
        ;
}

/* Checks the spool holds exactly id-<from>..id-<to-1>, once each, in order. */
static void expect_ids(fixture_t *fx, int from, int to)
{
    collect(fx);
    char want[32];
    if (fx->id_count != (size_t)(to - from))
        fail_msg("spooled %zu events, expected %d", fx->id_count, to - from);
    for (int i = from; i < to; i++) {
        snprintf(want, sizeof want, "id-%d", i);
        assert_string_equal(fx->ids[i - from], want);
    }
}

static tail_stats_t stats_of(fixture_t *fx)
{
    tail_stats_t stats;
    tail_get_stats(fx->tail, &stats);
    return stats;
}

static void lines_are_spooled_with_their_offset(void **state)
{
    fixture_t *fx = *state;
    char path[160];
    log_path(fx, "app.jsonl", path, sizeof path);
    write_records(path, 0, 20);
    write_text(path, "a", "\n   \r\n");
    write_records(path, 20, 25);
    start_tail(fx, NULL);
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 25);
    tail_stats_t st = stats_of(fx);
    assert_int_equal(st.lines_read, 27);
    assert_int_equal(st.events_spooled, 25);
    assert_int_equal(st.bad_lines, 0);
    assert_int_equal(st.files, 1);
    assert_false(st.is_paused);

    /* The state committed with the last batch names the file's end. */
    char value[SPOOL_STATE_MAX_BYTES + 1];
    size_t len = 0;
    assert_int_equal(spool_get_state(fx->spool, "tail/0", value, sizeof value - 1, &len), 0);
    value[len] = '\0';
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    char expect[256];
    snprintf(expect, sizeof expect, "file %ju %ju %jd 27 ", (uintmax_t)sb.st_dev,
             (uintmax_t)sb.st_ino, (intmax_t)sb.st_size);
    assert_memory_equal(value, expect, strlen(expect));
    assert_non_null(strstr(value, path));

    /* Nothing new: nothing spooled again. */
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 25);
}

static void partial_line_waits_for_its_newline(void **state)
{
    fixture_t *fx = *state;
    char path[160];
    log_path(fx, "app.jsonl", path, sizeof path);
    write_records(path, 0, 2);
    write_text(path, "a", "{\"eventID\":\"id-2\",\"eventName\":\"GetObject\",");
    start_tail(fx, NULL);
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 2);
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 2);
    write_text(path, "a", "\"eventSource\":\"s3.amazonaws.com\"}");
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 2); /* still no newline */
    write_text(path, "a", "\n");
    write_records(path, 3, 4);
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 4);
    assert_int_equal(stats_of(fx).bad_lines, 0);
}

static void restart_goes_on_from_the_committed_offset(void **state)
{
    fixture_t *fx = *state;
    char path[160], other[160];
    log_path(fx, "app.jsonl", path, sizeof path);
    log_path(fx, "other.jsonl", other, sizeof other);
    write_records(path, 0, 10);
    start_tail(fx, NULL);
    tail_poll_now(fx->tail);
    tail_destroy(&fx->tail);
    assert_null(fx->tail);

    start_tail(fx, NULL); /* nothing new: nothing again */
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 10);
    tail_destroy(&fx->tail);

    write_records(path, 10, 15);
    write_records(other, 15, 18); /* a new file starts from its beginning */
    start_tail(fx, NULL);
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 18);
    assert_int_equal(stats_of(fx).files, 2);
}

static void rename_rotation_finishes_the_old_file_first(void **state)
{
    fixture_t *fx = *state;
    char path[160], rotated[160];
    log_path(fx, "app.jsonl", path, sizeof path);
    log_path(fx, "app.jsonl.1", rotated, sizeof rotated);
    write_records(path, 0, 5);
    start_tail(fx, NULL);
    tail_poll_now(fx->tail);
    write_records(path, 5, 12); /* written before the rename, not read yet */
    write_text(path, "a", "{\"eventID\":\"id-12\",\"eventName\":\"x\",\"eventSource\":\"y\"}");
    assert_int_equal(rename(path, rotated), 0);
    write_records(path, 13, 16);
    tail_poll_now(fx->tail);
    /* The old file's partial last line is taken once it is finished. */
    expect_ids(fx, 0, 16);
    tail_stats_t st = stats_of(fx);
    assert_int_equal(st.rotations, 1);
    assert_int_equal(st.files, 1);

    /* Renamed to a name the pattern matches: still the same file. */
    char renamed[160];
    log_path(fx, "app-old.jsonl", renamed, sizeof renamed);
    write_records(path, 16, 18);
    tail_poll_now(fx->tail);
    assert_int_equal(rename(path, renamed), 0);
    write_records(renamed, 18, 20);
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 20);
    assert_int_equal(stats_of(fx).files, 1);
}

static void rotated_file_is_followed_for_rotate_wait(void **state)
{
    fixture_t *fx = *state;
    char path[160], rotated[160];
    log_path(fx, "app.jsonl", path, sizeof path);
    log_path(fx, "app.jsonl.1", rotated, sizeof rotated);
    write_records(path, 0, 5);
    start_tail_waiting(fx, NULL, 300);
    tail_poll_now(fx->tail);
    /* Quiet for longer than rotate_wait before the rename: the wait still
     * counts from the rename, since the writer may not have reopened yet. */
    struct timespec pause = {0, 400 * 1000 * 1000};
    nanosleep(&pause, NULL);
    assert_int_equal(rename(path, rotated), 0);
    write_records(path, 10, 13); /* the new file waits for the old one */
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 5);
    write_records(rotated, 5, 7); /* the writer had not reopened yet */
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 7);
    assert_int_equal(stats_of(fx).rotations, 0);
    /* Bounded wait for rotate_wait to pass. */
    for (int i = 0; i < 100 && stats_of(fx).rotations == 0; i++) {
        struct timespec tick = {0, 20 * 1000 * 1000};
        nanosleep(&tick, NULL);
        tail_poll_now(fx->tail);
    }
    assert_int_equal(stats_of(fx).rotations, 1);
    collect(fx);
    assert_int_equal(fx->id_count, 10);
    assert_string_equal(fx->ids[6], "id-6");
    assert_string_equal(fx->ids[7], "id-10");
}

static void rotation_while_stopped_is_found_again(void **state)
{
    fixture_t *fx = *state;
    char path[160], rotated[160];
    log_path(fx, "app.jsonl", path, sizeof path);
    log_path(fx, "app.jsonl.1", rotated, sizeof rotated);
    write_records(path, 0, 10);
    start_tail(fx, NULL);
    tail_poll_now(fx->tail);
    tail_destroy(&fx->tail);

    write_records(path, 10, 13);
    assert_int_equal(rename(path, rotated), 0);
    write_records(path, 13, 17);
    start_tail(fx, NULL);
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 17);
    assert_int_equal(stats_of(fx).rotations, 1);

    /* A file deleted while stopped is let go; its slot is free again. */
    tail_destroy(&fx->tail);
    assert_int_equal(unlink(path), 0);
    start_tail(fx, NULL);
    tail_poll_now(fx->tail);
    assert_int_equal(stats_of(fx).files, 0);
    write_records(path, 17, 19);
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 19);
}

static void copytruncate_starts_the_file_again(void **state)
{
    fixture_t *fx = *state;
    char path[160];
    log_path(fx, "app.jsonl", path, sizeof path);
    write_records(path, 0, 10);
    start_tail(fx, NULL);
    tail_poll_now(fx->tail);
    assert_int_equal(truncate(path, 0), 0);
    write_records(path, 10, 13); /* shorter than before */
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 13);
    assert_int_equal(stats_of(fx).truncations, 1);

    /* Truncated and rewritten past the old offset before the next look:
     * the first bytes differ, so it is read from the start too. */
    assert_int_equal(truncate(path, 0), 0);
    write_records(path, 100, 130);
    tail_poll_now(fx->tail);
    collect(fx);
    assert_int_equal(fx->id_count, 13 + 30);
    assert_string_equal(fx->ids[13], "id-100");
    assert_string_equal(fx->ids[42], "id-129");

    /* The same while the tail is stopped. */
    tail_destroy(&fx->tail);
    assert_int_equal(truncate(path, 0), 0);
    write_records(path, 200, 240);
    start_tail(fx, NULL);
    tail_poll_now(fx->tail);
    collect(fx);
    assert_int_equal(fx->id_count, 13 + 30 + 40);
    assert_string_equal(fx->ids[43], "id-200");
    assert_int_equal(stats_of(fx).truncations, 1);
}

static void bad_lines_are_counted_and_reading_goes_on(void **state)
{
    fixture_t *fx = *state;
    char path[160];
    log_path(fx, "app.jsonl", path, sizeof path);
    write_records(path, 0, 3);
    write_text(path, "a", "not json at all\n");
    write_text(path, "a", "{\"eventName\":\"NoSource\"}\n");
    size_t big = 300 * 1024;
    char *huge = cairn_malloc(big + 2);
    memset(huge, 'x', big);
    huge[big] = '\n';
    huge[big + 1] = '\0';
    write_text(path, "a", huge); /* over the record limit */
    huge[0] = '{';
    huge[big] = '\0';
    write_records(path, 3, 5);
    start_tail(fx, NULL);
    tail_poll_now(fx->tail);
    /* A long line still being written waits like a partial one. */
    write_text(path, "a", huge);
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 5);
    assert_int_equal(stats_of(fx).bad_lines, 3);
    write_text(path, "a", "\n");
    write_records(path, 5, 7);
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 7);
    tail_stats_t st = stats_of(fx);
    assert_int_equal(st.bad_lines, 4);
    assert_int_equal(st.lines_read, 11);
    free(huge);

    /* Longer than the read buffer: skipped to its newline. */
    size_t giant = 3 * 1024 * 1024;
    huge = cairn_malloc(giant + 2);
    memset(huge, '[', giant);
    huge[giant] = '\n';
    huge[giant + 1] = '\0';
    write_text(path, "a", huge);
    write_records(path, 7, 8);
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 8);
    st = stats_of(fx);
    assert_int_equal(st.bad_lines, 5);
    assert_int_equal(st.lines_read, 13);
    free(huge);
}

static void selectors_filter_and_count(void **state)
{
    fixture_t *fx = *state;
    config_t *cfg =
        config_parse("t.conf", "[selectors]\nexclude_event_sources = kms.amazonaws.com\n");
    selector_rules_t *rules = selector_rules_read(cfg);
    assert_non_null(rules);
    config_destroy(&cfg);
    selector_t *selector = selector_new(&rules);
    char path[160];
    log_path(fx, "app.jsonl", path, sizeof path);
    write_records(path, 0, 3);
    for (int i = 0; i < 10; i++)
        write_text(path, "a",
                   "{\"eventName\":\"Decrypt\",\"eventSource\":\"kms.amazonaws.com\"}\n");
    write_records(path, 3, 4);
    start_tail(fx, selector);
    tail_poll_now(fx->tail);
    expect_ids(fx, 0, 4);
    tail_stats_t st = stats_of(fx);
    assert_int_equal(st.filtered[SELECTOR_BY_EVENT_SOURCE], 10);
    assert_int_equal(st.lines_read, 14);

    /* Filtered lines only: the offset still moves, so a restart does not
     * count them again. */
    for (int i = 0; i < 9; i++)
        write_text(path, "a",
                   "{\"eventName\":\"Decrypt\",\"eventSource\":\"kms.amazonaws.com\"}\n");
    tail_poll_now(fx->tail);
    assert_int_equal(stats_of(fx).filtered[SELECTOR_BY_EVENT_SOURCE], 19);
    tail_destroy(&fx->tail);
    start_tail(fx, selector);
    tail_poll_now(fx->tail);
    assert_int_equal(stats_of(fx).filtered[SELECTOR_BY_EVENT_SOURCE], 0);
    expect_ids(fx, 0, 4);
    tail_destroy(&fx->tail);
    selector_destroy(&selector);
}

static void full_spool_pauses_and_resumes_without_loss(void **state)
{
    fixture_t *fx = *state;
    spool_destroy(&fx->spool);
    char spool_dir[128];
    snprintf(spool_dir, sizeof spool_dir, "%s/small-spool", fx->dir);
    fx->spool = spool_new(spool_dir, 1 << 20, false);
    assert_non_null(fx->spool);
    char path[160];
    log_path(fx, "app.jsonl", path, sizeof path);
    /* About 3 MB of events for a 1 MB spool. */
    FILE *f = fopen(path, "a");
    char pad[1001];
    memset(pad, 'p', 1000);
    pad[1000] = '\0';
    for (int i = 0; i < 1500; i++)
        fprintf(f,
                "{\"eventID\":\"id-%d\",\"eventName\":\"PutObject\",\"eventSource\":\"s3.amazonaws."
                "com\","
                "\"requestParameters\":{\"pad\":\"%s\"}}\n",
                i, pad);
    fclose(f);
    start_tail(fx, NULL);
    tail_poll_now(fx->tail);
    tail_stats_t st = stats_of(fx);
    assert_true(st.is_paused);
    assert_true(st.spool_full >= 1);
    assert_true(st.events_spooled < 1500);

    /* The shipper's part: acknowledge what is there, freeing space. */
    for (int round = 0; round < 200 && stats_of(fx).events_spooled < 1500; round++) {
        collect(fx);
        assert_int_equal(spool_ack_through(fx->spool, fx->read_seq - 1), 0);
        tail_poll_now(fx->tail);
    }
    expect_ids(fx, 0, 1500);
    st = stats_of(fx);
    assert_false(st.is_paused);
    assert_int_equal(st.events_spooled, 1500);
    assert_int_equal(st.lines_read, 1500);
}

static void reading_does_not_allocate_after_warm_up(void **state)
{
    fixture_t *fx = *state;
    char path[160];
    log_path(fx, "app.jsonl", path, sizeof path);
    write_records(path, 0, 50);
    start_tail(fx, NULL);
    tail_poll_now(fx->tail);
    write_records(path, 50, 100);
    tail_poll_now(fx->tail);
    uint64_t before = cairn_alloc_count();
    write_records(path, 100, 200);
    tail_poll_now(fx->tail);
    assert_int_equal(cairn_alloc_count(), before);
    expect_ids(fx, 0, 200);
}

static void paths_are_checked(void **state)
{
    char err[256];
    assert_int_equal(tail_paths_check("/var/log/*.jsonl, /srv/x/audit.log", err, sizeof err), 2);
    assert_int_equal(tail_paths_check("", err, sizeof err), 0);
    assert_int_equal(tail_paths_check("logs/*.jsonl", err, sizeof err), -1);
    assert_string_equal(err, "\"logs/*.jsonl\" is not an absolute path");
    assert_int_equal(tail_paths_check("/a,,/b", err, sizeof err), -1);
    assert_non_null(strstr(err, "empty pattern"));
    tail_options_t options = {.paths = "relative", .defaults = {.region = "x"}};
    assert_null(tail_new(NULL, &options));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(lines_are_spooled_with_their_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(partial_line_waits_for_its_newline, setup, teardown),
        cmocka_unit_test_setup_teardown(restart_goes_on_from_the_committed_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(rename_rotation_finishes_the_old_file_first, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(rotated_file_is_followed_for_rotate_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(rotation_while_stopped_is_found_again, setup, teardown),
        cmocka_unit_test_setup_teardown(copytruncate_starts_the_file_again, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_lines_are_counted_and_reading_goes_on, setup, teardown),
        cmocka_unit_test_setup_teardown(selectors_filter_and_count, setup, teardown),
        cmocka_unit_test_setup_teardown(full_spool_pauses_and_resumes_without_loss, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(reading_does_not_allocate_after_warm_up, setup, teardown),
        cmocka_unit_test(paths_are_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
