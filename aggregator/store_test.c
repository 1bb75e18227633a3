/* store_test.c: the aggregator's store, through store.h.
 *
 * Each test gets a fresh temporary directory (removed afterwards) with a
 * store opened in it by the setup. Events are built by hand, so the test
 * does not depend on the JSON parser. */
#include "cairn_log.h"
#include "store.h"

#include <fcntl.h>
#include <ftw.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cairn_test_pages.h"

#define TEST_MAP_BYTES (64 * 1024 * 1024)

typedef struct {
    char dir[64];  /* the test's temporary directory */
    char path[96]; /* the store inside it */
    store_t *store;
} fixture_t;

/* A batch of events owning its memory. */
typedef struct {
    Cairn__Batch batch;
    Cairn__Event *event_ptrs[256];
    Cairn__Event events[256];
    char ids[256][48];
    char *json[256];
} test_batch_t;

/* Builds a batch from agent with agent seqs first_seq.., eventIDs
 * "evt-<ids[i]>" and a JSON record of at least pad_bytes. */
static test_batch_t *s_batch_new(const char *agent, uint64_t first_seq, const int *ids,
                                 size_t count, size_t pad_bytes)
{
    test_batch_t *tb = calloc(1, sizeof *tb);
    assert_non_null(tb);
    assert_true(count <= 256);
    cairn__batch__init(&tb->batch);
    tb->batch.agent_id = (char *)agent;
    tb->batch.region = "us-east-1";
    tb->batch.first_seq = first_seq;
    tb->batch.n_events = count;
    tb->batch.events = tb->event_ptrs;
    for (size_t i = 0; i < count; i++) {
        Cairn__Event *event = &tb->events[i];
        cairn__event__init(event);
        snprintf(tb->ids[i], sizeof tb->ids[i], "evt-%d", ids[i]);
        tb->json[i] = malloc(pad_bytes + 128);
        assert_non_null(tb->json[i]);
        int n = snprintf(tb->json[i], 128, "{\"eventID\":\"%s\",\"pad\":\"", tb->ids[i]);
        memset(tb->json[i] + n, 'x', pad_bytes);
        strcpy(tb->json[i] + n + pad_bytes, "\"}");
        event->event_id = tb->ids[i];
        event->event_name = "GetObject";
        event->aws_region = "us-east-1";
        event->recipient_account_id = "111122223333";
        event->json.data = (uint8_t *)tb->json[i];
        event->json.len = strlen(tb->json[i]);
        tb->event_ptrs[i] = event;
    }
    return tb;
}

/* A batch with eventIDs first_id.. (consecutive). */
static test_batch_t *s_batch_range(const char *agent, uint64_t first_seq, int first_id,
                                   size_t count)
{
    int ids[256];
    for (size_t i = 0; i < count; i++)
        ids[i] = first_id + (int)i;
    return s_batch_new(agent, first_seq, ids, count, 16);
}

static void s_batch_free(test_batch_t **tb_p)
{
    test_batch_t *tb = *tb_p;
    for (size_t i = 0; i < tb->batch.n_events; i++)
        free(tb->json[i]);
    free(tb);
    *tb_p = NULL;
}

static int s_put1(store_t *store, test_batch_t *tb, int64_t now_ms, store_batch_result_t *result)
{
    const Cairn__Batch *batches[1] = {&tb->batch};
    return store_put_batches(store, batches, 1, now_ms, result);
}

static int s_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    strcpy(fx->dir, "/tmp/store_test.XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    snprintf(fx->path, sizeof fx->path, "%s/store", fx->dir);
    fx->store = store_new(fx->path, TEST_MAP_BYTES, false);
    *state = fx;
    return fx->store ? 0 : -1;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    store_destroy(&fx->store);
    nftw(fx->dir, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

/* Collects what store_read_events passes. */
typedef struct {
    size_t count;
    size_t stop_after; /* return 1 after this many (0: never) */
    uint64_t seqs[512];
    int64_t ingest_ms[512];
    Cairn__StoredEvent *events[512];
} reading_t;

static int s_on_event(void *ctx, uint64_t seq, int64_t ingest_time_ms, const uint8_t *packed,
                      size_t len)
{
    reading_t *r = ctx;
    if (r->count < 512) {
        r->seqs[r->count] = seq;
        r->ingest_ms[r->count] = ingest_time_ms;
        r->events[r->count] = cairn__stored_event__unpack(NULL, len, packed);
    }
    r->count++;
    return r->stop_after && r->count >= r->stop_after ? 1 : 0;
}

static void s_reading_free(reading_t *r)
{
    for (size_t i = 0; i < r->count && i < 512; i++)
        if (r->events[i])
            cairn__stored_event__free_unpacked(r->events[i], NULL);
}

static void put_then_resend_counts_duplicates(void **state)
{
    fixture_t *fx = *state;
    store_batch_result_t result;
    test_batch_t *tb = s_batch_range("agent-a", 1, 0, 10);

    assert_int_equal(s_put1(fx->store, tb, 1000, &result), 0);
    assert_int_equal(result.stored_count, 10);
    assert_int_equal(result.duplicate_count, 0);
    assert_false(result.is_resend);
    assert_int_equal(store_event_count(fx->store), 10);
    assert_int_equal(store_agent_last_seq(fx->store, "agent-a", ""), 10);
    assert_int_equal(store_agent_last_seq(fx->store, "agent-b", ""), 0);

    assert_int_equal(s_put1(fx->store, tb, 1001, &result), 0);
    assert_true(result.is_resend);
    assert_int_equal(result.stored_count, 0);
    assert_int_equal(result.duplicate_count, 10);
    assert_int_equal(store_event_count(fx->store), 10);
    s_batch_free(&tb);

    /* An empty batch is neither stored nor a resend. */
    tb = s_batch_range("agent-a", 11, 0, 0);
    assert_int_equal(s_put1(fx->store, tb, 1002, &result), 0);
    assert_false(result.is_resend);
    assert_int_equal(result.stored_count + result.duplicate_count, 0);
    assert_int_equal(store_agent_last_seq(fx->store, "agent-a", ""), 10);
    s_batch_free(&tb);
}

/* An agent whose spool was made anew numbers from 1 again: its batches are
 * new events, not resends of what the old spool sent. */
static void a_new_spool_is_not_taken_for_a_resend(void **state)
{
    fixture_t *fx = *state;
    store_batch_result_t result;
    test_batch_t *old_spool = s_batch_range("agent-a", 1, 0, 10);
    old_spool->batch.spool_id = "spool-old";
    assert_int_equal(s_put1(fx->store, old_spool, 1000, &result), 0);
    assert_int_equal(store_agent_last_seq(fx->store, "agent-a", "spool-old"), 10);

    test_batch_t *new_spool = s_batch_range("agent-a", 1, 100, 10);
    new_spool->batch.spool_id = "spool-new";
    assert_int_equal(s_put1(fx->store, new_spool, 1001, &result), 0);
    assert_false(result.is_resend);
    assert_int_equal(result.stored_count, 10);
    assert_int_equal(store_event_count(fx->store), 20);
    assert_int_equal(store_agent_last_seq(fx->store, "agent-a", "spool-new"), 10);
    assert_int_equal(store_agent_last_seq(fx->store, "agent-a", "spool-other"), 0);
    s_batch_free(&old_spool);
    s_batch_free(&new_spool);
}

/* Retention: old, delivered events go with their eventIDs; undelivered and
 * young ones stay; a pruned eventID may be stored again. */
static void prune_removes_old_delivered_events_only(void **state)
{
    fixture_t *fx = *state;
    store_batch_result_t result;
    test_batch_t *old = s_batch_range("agent-a", 1, 0, 10);    /* evt-0..9 at 1000 */
    test_batch_t *young = s_batch_range("agent-a", 11, 10, 10); /* evt-10..19 at 9000 */
    assert_int_equal(s_put1(fx->store, old, 1000, &result), 0);
    assert_int_equal(s_put1(fx->store, young, 9000, &result), 0);
    store_advance_watermark(fx->store, 10000);

    /* Nothing delivered yet: nothing may go. */
    assert_int_equal(store_prune(fx->store, 5000, 0, 100), 0);
    assert_int_equal(store_event_count(fx->store), 20);

    /* Delivered through seq 15: only the old ten are both old and delivered;
     * small steps take them a few at a time. */
    assert_int_equal(store_prune(fx->store, 5000, 15, 4), 4);
    assert_int_equal(store_prune(fx->store, 5000, 15, 100), 6);
    assert_int_equal(store_prune(fx->store, 5000, 15, 100), 0);
    assert_int_equal(store_event_count(fx->store), 10);
    reading_t r = {0};
    assert_int_equal(store_read_events(fx->store, 0, s_on_event, &r), 10);
    assert_int_equal(r.seqs[0], 11);
    s_reading_free(&r);

    /* evt-0 is forgotten: sent again (by a new spool), it is new. */
    test_batch_t *again = s_batch_range("agent-a", 1, 0, 1);
    again->batch.spool_id = "spool-2";
    assert_int_equal(s_put1(fx->store, again, 11000, &result), 0);
    assert_int_equal(result.stored_count, 1);
    /* evt-10 is still known. */
    test_batch_t *dup = s_batch_range("agent-a", 2, 10, 1);
    dup->batch.spool_id = "spool-2";
    assert_int_equal(s_put1(fx->store, dup, 11000, &result), 0);
    assert_int_equal(result.duplicate_count, 1);
    s_batch_free(&old);
    s_batch_free(&young);
    s_batch_free(&again);
    s_batch_free(&dup);
}

static void known_event_ids_from_another_agent_are_duplicates(void **state)
{
    fixture_t *fx = *state;
    store_batch_result_t result;
    test_batch_t *a = s_batch_range("agent-a", 1, 0, 10); /* evt-0..9 */
    test_batch_t *b = s_batch_range("agent-b", 1, 5, 10); /* evt-5..14 */
    assert_int_equal(s_put1(fx->store, a, 1000, &result), 0);
    assert_int_equal(s_put1(fx->store, b, 1000, &result), 0);
    assert_false(result.is_resend);
    assert_int_equal(result.stored_count, 5);
    assert_int_equal(result.duplicate_count, 5);
    assert_int_equal(store_event_count(fx->store), 15);
    assert_int_equal(store_agent_last_seq(fx->store, "agent-b", ""), 10);

    /* A batch overlapping the agent's progress only in part is checked
     * event by event. */
    test_batch_t *a2 = s_batch_range("agent-a", 6, 20, 10); /* evt-20..29, seqs 6..15 */
    assert_int_equal(s_put1(fx->store, a2, 1000, &result), 0);
    assert_false(result.is_resend);
    assert_int_equal(result.stored_count, 10);
    assert_int_equal(store_agent_last_seq(fx->store, "agent-a", ""), 15);
    s_batch_free(&a);
    s_batch_free(&b);
    s_batch_free(&a2);
}

static void duplicates_within_one_call_are_found(void **state)
{
    fixture_t *fx = *state;
    store_batch_result_t results[3];
    test_batch_t *a = s_batch_new("agent-a", 1, (int[]){0, 1, 2, 1}, 4, 16);
    test_batch_t *b = s_batch_new("agent-b", 1, (int[]){2, 3}, 2, 16);
    const Cairn__Batch *batches[3] = {&a->batch, &b->batch, &a->batch};

    assert_int_equal(store_put_batches(fx->store, batches, 3, 1000, results), 0);
    assert_int_equal(results[0].stored_count, 3);
    assert_int_equal(results[0].duplicate_count, 1);
    assert_int_equal(results[1].stored_count, 1);
    assert_int_equal(results[1].duplicate_count, 1);
    assert_true(results[2].is_resend); /* sees the progress of batch 0 */
    assert_int_equal(results[2].duplicate_count, 4);
    assert_int_equal(store_event_count(fx->store), 4);
    s_batch_free(&a);
    s_batch_free(&b);
}

static void read_events_round_trips_in_order(void **state)
{
    fixture_t *fx = *state;
    store_batch_result_t result;
    test_batch_t *a = s_batch_range("agent-a", 100, 0, 12);
    test_batch_t *b = s_batch_range("agent-b", 7, 12, 8);
    assert_int_equal(s_put1(fx->store, a, 1000, &result), 0);
    assert_int_equal(s_put1(fx->store, b, 2000, &result), 0);

    reading_t *r = calloc(1, sizeof *r);
    assert_int_equal(store_read_events(fx->store, 0, s_on_event, r), 20);
    assert_int_equal(r->count, 20);
    for (size_t i = 0; i < 20; i++) {
        test_batch_t *tb = i < 12 ? a : b;
        size_t j = i < 12 ? i : i - 12;
        Cairn__StoredEvent *stored = r->events[i];
        assert_int_equal(r->seqs[i], i + 1);
        assert_non_null(stored);
        assert_non_null(stored->event);
        assert_int_equal(r->ingest_ms[i], i < 12 ? 1000 : 2000);
        assert_int_equal(stored->ingest_time_ms, r->ingest_ms[i]);
        assert_string_equal(stored->agent_id, tb->batch.agent_id);
        assert_int_equal(stored->agent_seq, tb->batch.first_seq + j);
        assert_string_equal(stored->event->event_id, tb->ids[j]);
        assert_string_equal(stored->event->recipient_account_id, "111122223333");
        assert_int_equal(stored->event->json.len, strlen(tb->json[j]));
        assert_memory_equal(stored->event->json.data, tb->json[j], stored->event->json.len);
    }
    s_reading_free(r);

    memset(r, 0, sizeof *r);
    assert_int_equal(store_read_events(fx->store, 15, s_on_event, r), 5);
    assert_int_equal(r->seqs[0], 16);
    s_reading_free(r);

    memset(r, 0, sizeof *r);
    r->stop_after = 3;
    assert_int_equal(store_read_events(fx->store, 0, s_on_event, r), 3);
    s_reading_free(r);

    memset(r, 0, sizeof *r);
    assert_int_equal(store_read_events(fx->store, 20, s_on_event, r), 0);
    free(r);
    s_batch_free(&a);
    s_batch_free(&b);
}

static void ingest_time_never_goes_back(void **state)
{
    fixture_t *fx = *state;
    store_batch_result_t result;
    int64_t nows[] = {5000, 3000, 7000};
    for (int i = 0; i < 3; i++) {
        test_batch_t *tb = s_batch_range("agent-a", (uint64_t)i * 2 + 1, i * 2, 2);
        assert_int_equal(s_put1(fx->store, tb, nows[i], &result), 0);
        s_batch_free(&tb);
    }
    assert_int_equal(store_watermark(fx->store), 7000);
    store_advance_watermark(fx->store, 9000);
    assert_int_equal(store_watermark(fx->store), 9000);
    store_advance_watermark(fx->store, 8000); /* never lowers it */
    assert_int_equal(store_watermark(fx->store), 9000);
    test_batch_t *tb = s_batch_range("agent-a", 7, 6, 2);
    assert_int_equal(s_put1(fx->store, tb, 8500, &result), 0); /* below the floor */
    s_batch_free(&tb);

    reading_t *r = calloc(1, sizeof *r);
    assert_int_equal(store_read_events(fx->store, 0, s_on_event, r), 8);
    int64_t expected[] = {5000, 5000, 5000, 5000, 7000, 7000, 9000, 9000};
    for (int i = 0; i < 8; i++)
        assert_int_equal(r->ingest_ms[i], expected[i]);
    s_reading_free(r);
    free(r);
}

static void reopen_keeps_progress(void **state)
{
    fixture_t *fx = *state;
    store_batch_result_t result;
    test_batch_t *tb = s_batch_range("agent-a", 1, 0, 10);
    assert_int_equal(s_put1(fx->store, tb, 5000, &result), 0);
    s_batch_free(&tb);
    store_cursor_t cursor = {.last_seq = 4, .window_end_ms = 4000};
    assert_int_equal(store_set_cursor(fx->store, &cursor), 0);

    store_destroy(&fx->store);
    fx->store = store_new(fx->path, TEST_MAP_BYTES, false);
    assert_non_null(fx->store);
    assert_int_equal(store_event_count(fx->store), 10);
    assert_int_equal(store_agent_last_seq(fx->store, "agent-a", ""), 10);
    store_cursor_t read_back;
    assert_int_equal(store_get_cursor(fx->store, &read_back), 0);
    assert_int_equal(read_back.last_seq, 4);
    assert_int_equal(read_back.window_end_ms, 4000);
    assert_int_equal(store_watermark(fx->store), 5000); /* the last ingest time, not now */

    /* Next seq and the ingest time floor survive. */
    tb = s_batch_range("agent-a", 1, 0, 10);
    assert_int_equal(s_put1(fx->store, tb, 6000, &result), 0);
    assert_true(result.is_resend);
    s_batch_free(&tb);
    tb = s_batch_range("agent-a", 11, 10, 1);
    assert_int_equal(s_put1(fx->store, tb, 1000, &result), 0);
    assert_int_equal(result.stored_count, 1);
    s_batch_free(&tb);
    reading_t *r = calloc(1, sizeof *r);
    assert_int_equal(store_read_events(fx->store, 10, s_on_event, r), 1);
    assert_int_equal(r->seqs[0], 11);
    assert_int_equal(r->ingest_ms[0], 6000); /* the resend call raised the floor too */
    s_reading_free(r);

    /* A delivered window's end is a floor too: nothing may land in it. */
    cursor = (store_cursor_t){.last_seq = 11, .window_end_ms = 20000};
    assert_int_equal(store_set_cursor(fx->store, &cursor), 0);
    store_destroy(&fx->store);
    fx->store = store_new(fx->path, TEST_MAP_BYTES, false);
    assert_non_null(fx->store);
    tb = s_batch_range("agent-a", 12, 11, 1);
    assert_int_equal(s_put1(fx->store, tb, 1000, &result), 0);
    s_batch_free(&tb);
    memset(r, 0, sizeof *r);
    assert_int_equal(store_read_events(fx->store, 11, s_on_event, r), 1);
    assert_int_equal(r->seqs[0], 12);
    assert_int_equal(r->ingest_ms[0], 20000);
    s_reading_free(r);
    free(r);
}

static void bad_events_fail_the_call_and_store_nothing(void **state)
{
    fixture_t *fx = *state;
    store_batch_result_t results[2];
    test_batch_t *good = s_batch_range("agent-a", 1, 0, 3);
    test_batch_t *bad = s_batch_range("agent-b", 1, 10, 3);
    bad->events[1].event_id = "";
    const Cairn__Batch *batches[2] = {&good->batch, &bad->batch};
    assert_int_equal(store_put_batches(fx->store, batches, 2, 1000, results), -1);
    assert_int_equal(results[0].stored_count, 0);
    assert_int_equal(store_event_count(fx->store), 0);
    assert_int_equal(store_agent_last_seq(fx->store, "agent-a", ""), 0);
    /* The store still works, and seqs did not move. */
    assert_int_equal(store_put_batches(fx->store, batches, 1, 1000, results), 0);
    reading_t *r = calloc(1, sizeof *r);
    assert_int_equal(store_read_events(fx->store, 0, s_on_event, r), 3);
    assert_int_equal(r->seqs[0], 1);
    s_reading_free(r);
    free(r);
    s_batch_free(&good);
    s_batch_free(&bad);
}

static void full_map_returns_store_full_and_keeps_data(void **state)
{
    fixture_t *fx = *state;
    char path[128];
    snprintf(path, sizeof path, "%s/small", fx->dir);
    store_t *store = store_new(path, 256 * 1024, false);
    assert_non_null(store);
    store_batch_result_t result;
    int rc = 0;
    uint64_t stored = 0;
    int i;
    for (i = 0; i < 100 && rc == 0; i++) {
        test_batch_t *tb =
            s_batch_new("agent-a", (uint64_t)i * 2 + 1, (int[]){2 * i, 2 * i + 1}, 2, 16 * 1024);
        rc = s_put1(store, tb, 1000 + i, &result);
        if (rc == 0)
            stored += result.stored_count;
        s_batch_free(&tb);
    }
    assert_int_equal(rc, STORE_FULL);
    assert_true(stored > 0);
    assert_int_equal(result.stored_count, 0);
    assert_int_equal(store_event_count(store), stored);
    assert_int_equal(store_agent_last_seq(store, "agent-a", ""), stored);
    reading_t *r = calloc(1, sizeof *r);
    assert_int_equal(store_read_events(store, 0, s_on_event, r), (long)stored);
    for (size_t k = 0; k < stored; k++) {
        assert_non_null(r->events[k]);
        const Cairn__Event *event = r->events[k]->event;
        assert_int_equal(event->json.len, 16 * 1024 + 23 + strlen(event->event_id));
    }
    s_reading_free(r);
    free(r);

    /* A batch bigger than the whole map is refused the same way; reopening
     * finds the data intact. */
    int ids[20];
    for (int k = 0; k < 20; k++)
        ids[k] = 5000 + k;
    test_batch_t *tb = s_batch_new("agent-a", 1001, ids, 20, 16 * 1024);
    assert_int_equal(s_put1(store, tb, 5000, &result), STORE_FULL);
    s_batch_free(&tb);
    store_destroy(&store);
    store = store_new(path, 256 * 1024, false);
    assert_non_null(store);
    assert_int_equal(store_event_count(store), stored);
    store_destroy(&store);
}

/* ---- a reader thread while a writer thread stores ---- */

#define CONCURRENT_BATCHES 100
#define CONCURRENT_EVENTS  20

typedef struct {
    store_t *store;
    atomic_int is_writing;
    int write_errors;
    int read_errors; /* order or ingest time broken, or a read failed */
    long last_count;
} concurrent_t;

typedef struct {
    uint64_t last_seq;
    int64_t last_ingest_ms;
    int errors;
} order_check_t;

static int s_on_check(void *ctx, uint64_t seq, int64_t ingest_time_ms, const uint8_t *packed,
                      size_t len)
{
    order_check_t *check = ctx;
    if (seq != check->last_seq + 1 || ingest_time_ms < check->last_ingest_ms)
        check->errors++;
    check->last_seq = seq;
    check->last_ingest_ms = ingest_time_ms;
    return 0;
}

static void *s_writer(void *arg)
{
    concurrent_t *c = arg;
    for (int i = 0; i < CONCURRENT_BATCHES; i++) {
        test_batch_t *tb = s_batch_range("agent-w", (uint64_t)i * CONCURRENT_EVENTS + 1,
                                         i * CONCURRENT_EVENTS, CONCURRENT_EVENTS);
        store_batch_result_t result;
        if (s_put1(c->store, tb, 1000 + i, &result) != 0 ||
            result.stored_count != CONCURRENT_EVENTS)
            c->write_errors++;
        s_batch_free(&tb);
    }
    atomic_store(&c->is_writing, 0);
    return NULL;
}

static void *s_reader(void *arg)
{
    concurrent_t *c = arg;
    long count = 0;
    while (count < CONCURRENT_BATCHES * CONCURRENT_EVENTS) {
        bool was_writing = atomic_load(&c->is_writing);
        order_check_t check = {0};
        count = store_read_events(c->store, 0, s_on_check, &check);
        if (count < 0 || check.errors || count < c->last_count || count % CONCURRENT_EVENTS)
            c->read_errors++;
        c->last_count = count;
        if (!was_writing && count < CONCURRENT_BATCHES * CONCURRENT_EVENTS)
            break; /* the writer is done and failed; do not loop forever */
        if (count < 0)
            break;
    }
    return NULL;
}

static void reader_runs_while_writer_stores(void **state)
{
    fixture_t *fx = *state;
    concurrent_t c = {.store = fx->store, .is_writing = 1};
    pthread_t writer, reader;
    assert_int_equal(pthread_create(&reader, NULL, s_reader, &c), 0);
    assert_int_equal(pthread_create(&writer, NULL, s_writer, &c), 0);
    pthread_join(writer, NULL);
    pthread_join(reader, NULL);
    assert_int_equal(c.write_errors, 0);
    assert_int_equal(c.read_errors, 0);
    assert_int_equal(c.last_count, CONCURRENT_BATCHES * CONCURRENT_EVENTS);
    assert_int_equal(store_event_count(fx->store), CONCURRENT_BATCHES * CONCURRENT_EVENTS);
}

/* Resends, from an agent whose progress does not cover them, eventIDs of
 * every age: in the ids database, in the generation being merged, and just
 * stored. Each must be a duplicate; only the new one is stored. */
static void dedup_holds_at_every_stage_of_the_recent_ids(void **state)
{
    fixture_t *fx = *state;
    store_set_ids_freeze(fx->store, 10);
    store_batch_result_t result;
    uint64_t resend_seq = 1;
    int next_new = 100000;
    bool saw_merging = false, saw_merged = false;
    for (int round = 0; round < 30; round++) {
        test_batch_t *tb = s_batch_range("a", 1 + (uint64_t)round * 4, round * 4, 4);
        assert_int_equal(s_put1(fx->store, tb, 1000 + round, &result), 0);
        assert_int_equal(result.stored_count, 4);
        s_batch_free(&tb);
        store_index_stats_t stats;
        store_index_stats(fx->store, &stats);
        uint64_t stored = (uint64_t)(round + 1) * 4 + (uint64_t)round; /* and one new per round */
        saw_merging |= stats.recent_ids > 0 && stats.recent_ids < stored;
        saw_merged |= stats.recent_ids + 10 < stored;
        int ids[4] = {0, round * 2, round * 4 + 3, next_new++};
        tb = s_batch_new("b", resend_seq, ids, 4, 16);
        resend_seq += 4;
        assert_int_equal(s_put1(fx->store, tb, 1000 + round, &result), 0);
        assert_false(result.is_resend);
        assert_int_equal(result.duplicate_count, 3);
        assert_int_equal(result.stored_count, 1);
        s_batch_free(&tb);
    }
    assert_true(saw_merging);
    assert_true(saw_merged);
    assert_int_equal(store_event_count(fx->store), 150);

    /* After a reopen, all of them are still known, wherever they were. */
    store_destroy(&fx->store);
    fx->store = store_new(fx->path, TEST_MAP_BYTES, false);
    assert_non_null(fx->store);
    for (int first = 0; first < 120; first += 60) {
        test_batch_t *tb = s_batch_range("c", 1 + (uint64_t)first, first, 60);
        assert_int_equal(s_put1(fx->store, tb, 5000, &result), 0);
        assert_int_equal(result.duplicate_count, 60);
        assert_int_equal(result.stored_count, 0);
        s_batch_free(&tb);
    }
    int news[30];
    for (int i = 0; i < 30; i++)
        news[i] = 100000 + i;
    test_batch_t *tb = s_batch_new("c", 121, news, 30, 16);
    assert_int_equal(s_put1(fx->store, tb, 5000, &result), 0);
    assert_int_equal(result.duplicate_count, 30);
    s_batch_free(&tb);
}

/* Ids not yet merged live in memory: a restart reads them back from the
 * events, and a deleted event's id is free again. */
static void recent_ids_survive_a_restart_and_deletes_free_them(void **state)
{
    fixture_t *fx = *state;
    store_batch_result_t result;
    test_batch_t *tb = s_batch_range("a", 1, 0, 50);
    assert_int_equal(s_put1(fx->store, tb, 1000, &result), 0);
    s_batch_free(&tb);
    store_index_stats_t stats;
    store_index_stats(fx->store, &stats);
    assert_int_equal(stats.recent_ids, 50); /* the default generation is far larger */

    store_destroy(&fx->store);
    fx->store = store_new(fx->path, TEST_MAP_BYTES, false);
    assert_non_null(fx->store);
    store_index_stats(fx->store, &stats);
    assert_int_equal(stats.recent_ids, 50);
    tb = s_batch_range("b", 1, 0, 50);
    assert_int_equal(s_put1(fx->store, tb, 2000, &result), 0);
    assert_int_equal(result.duplicate_count, 50);
    assert_int_equal(result.stored_count, 0);
    s_batch_free(&tb);

    /* Seq 3 holds evt-2: deleted, the same event is stored again. */
    assert_int_equal(store_delete_event(fx->store, 3), 0);
    tb = s_batch_range("c", 1, 0, 5);
    assert_int_equal(s_put1(fx->store, tb, 3000, &result), 0);
    assert_int_equal(result.duplicate_count, 4);
    assert_int_equal(result.stored_count, 1);
    s_batch_free(&tb);
    tb = s_batch_range("d", 1, 2, 1);
    assert_int_equal(s_put1(fx->store, tb, 3000, &result), 0);
    assert_int_equal(result.duplicate_count, 1);
    s_batch_free(&tb);
}

/* Checks that event seq is evt-<seq - 1> with its whole record, in order. */
static int s_check_whole(void *ctx, uint64_t seq, int64_t ingest_time_ms, const uint8_t *packed,
                         size_t len)
{
    uint64_t *next = ctx;
    assert_int_equal(seq, *next);
    Cairn__StoredEvent *stored = cairn__stored_event__unpack(NULL, len, packed);
    assert_non_null(stored);
    char id[48];
    snprintf(id, sizeof id, "evt-%llu", (unsigned long long)(seq - 1));
    assert_string_equal(stored->event->event_id, id);
    assert_true(stored->event->json.len > 2000);
    assert_int_equal(stored->event->json.data[stored->event->json.len - 1], '}');
    cairn__stored_event__free_unpacked(stored, NULL);
    (*next)++;
    return 0;
}

/* A durable store drops what lies far below the end of its file from the
 * page cache (PAGE CACHE in store.c); every event still reads back whole. */
static void old_store_pages_leave_the_cache_and_read_back_whole(void **state)
{
    fixture_t *fx = *state;
    store_destroy(&fx->store);
    fx->store = store_new(fx->path, 256 << 20, true);
    assert_non_null(fx->store);
    store_set_cache_keep(fx->store, 4 << 20, 1 << 20);
    store_batch_result_t result;
    for (int i = 0; i < 100; i++) { /* ~24 MB */
        int ids[100];
        for (int j = 0; j < 100; j++)
            ids[j] = i * 100 + j;
        test_batch_t *tb = s_batch_new("a", 1 + (uint64_t)i * 100, ids, 100, 2000);
        assert_int_equal(s_put1(fx->store, tb, 1000 + i, &result), 0);
        assert_int_equal(result.stored_count, 100);
        s_batch_free(&tb);
    }
    char path[160];
    snprintf(path, sizeof path, "%s/data.mdb", fx->path);
    struct statfs fs;
    assert_int_equal(statfs(path, &fs), 0);
    /* Without the drops every page is cached. With them, what stays of the
     * old part is what LMDB's reads mapped into this process (each fault
     * maps the cached pages around it too): ~30 % here. */
    if (fs.f_type != TMPFS_MAGIC) /* tmpfs has no pages to drop */
        assert_true(cairn_test_resident_pages(path, 16 << 20) < (16 << 20) / 4096 / 2);
    uint64_t next = 1;
    assert_int_equal(store_read_events(fx->store, 0, s_check_whole, &next), 10000);
    assert_int_equal(next, 10001);
}

int main(void)
{
    cairn_log_level = CAIRN_LOG_WARNING;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(put_then_resend_counts_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(old_store_pages_leave_the_cache_and_read_back_whole, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(dedup_holds_at_every_stage_of_the_recent_ids, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(recent_ids_survive_a_restart_and_deletes_free_them, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(prune_removes_old_delivered_events_only, setup, teardown),
        cmocka_unit_test_setup_teardown(a_new_spool_is_not_taken_for_a_resend, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(known_event_ids_from_another_agent_are_duplicates, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(duplicates_within_one_call_are_found, setup, teardown),
        cmocka_unit_test_setup_teardown(read_events_round_trips_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(ingest_time_never_goes_back, setup, teardown),
        cmocka_unit_test_setup_teardown(reopen_keeps_progress, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_events_fail_the_call_and_store_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(full_map_returns_store_full_and_keeps_data, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(reader_runs_while_writer_stores, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
