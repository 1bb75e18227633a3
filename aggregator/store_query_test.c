/* store_query_test.c: the store's index and store_query, through store.h.
 *
 * Each test gets a fresh temporary directory with a store opened in it by
 * the setup. Events are built by hand (test_event_t), so the test does not
 * depend on the JSON parser; their eventTimes are chosen out of ingest
 * order, so "newest first" is checked against eventTime, not seq. The one
 * test that needs the insides of the store (a store from before the index)
 * opens the LMDB environment itself. */
#include "cairn_log.h"
#include "store.h"

#include <ftw.h>
#include <lmdb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define TEST_MAP_BYTES (64 * 1024 * 1024)
#define MAX_HITS       4096

typedef struct {
    char dir[64];
    char path[96];
    store_t *store;
} fixture_t;

/* What one test event has; NULL strings are left out. */
typedef struct {
    const char *id;
    int64_t time_ms;
    const char *name;
    const char *source;
    const char *region;
    const char *account;
    const char *user_type;
    const char *user_arn;
    const char *user_name;
    const char *access_key;
    Cairn__ReadOnly read_only;
    const char *resource_type; /* one resource when type or arn is set */
    const char *resource_arn;
} test_event_t;

static uint64_t s_agent_seq; /* agent sequence of the next batch (per test) */

/* How the stores of a round of the tests merge their index runs: every test
 * runs once with entries left in runs, once merged at each put, and once in
 * small steps that leave passes half done between puts. */
typedef enum { MERGE_NEVER, MERGE_EACH_PUT, MERGE_IN_STEPS } merge_mode_t;
static merge_mode_t s_merge_mode;

static void s_set_merge(store_t *store)
{
    if (s_merge_mode == MERGE_NEVER)
        store_set_merge(store, SIZE_MAX, SIZE_MAX, 0);
    else if (s_merge_mode == MERGE_EACH_PUT)
        store_set_merge(store, 1, 1, SIZE_MAX);
    else
        store_set_merge(store, 12, 1000, 3);
}

/* Stores events in one batch of one call. */
static void s_put(store_t *store, const test_event_t *specs, size_t count)
{
    Cairn__Batch batch = CAIRN__BATCH__INIT;
    Cairn__Event *events = calloc(count, sizeof *events);
    Cairn__Event **ptrs = calloc(count, sizeof *ptrs);
    Cairn__Resource *resources = calloc(count * 2, sizeof *resources);
    Cairn__Resource **resource_ptrs = calloc(count * 2, sizeof *resource_ptrs);
    assert_non_null(events);
    assert_non_null(ptrs);
    assert_non_null(resources);
    assert_non_null(resource_ptrs);
    for (size_t i = 0; i < count; i++) {
        const test_event_t *s = &specs[i];
        Cairn__Event *e = &events[i];
        cairn__event__init(e);
        e->event_id = (char *)s->id;
        e->event_time_ms = s->time_ms;
        e->event_name = (char *)(s->name ? s->name : "GetObject");
        e->event_source = (char *)(s->source ? s->source : "s3.amazonaws.com");
        e->aws_region = (char *)(s->region ? s->region : "us-east-1");
        e->recipient_account_id = (char *)(s->account ? s->account : "111122223333");
        e->user_type = (char *)(s->user_type ? s->user_type : "");
        e->user_arn = (char *)(s->user_arn ? s->user_arn : "");
        e->user_name = (char *)(s->user_name ? s->user_name : "");
        e->access_key_id = (char *)(s->access_key ? s->access_key : "");
        e->read_only = s->read_only;
        if (s->resource_type || s->resource_arn) {
            /* Two resources of the same type and ARN: the index must take
             * the second put of the same entry quietly. */
            for (int r = 0; r < 2; r++) {
                Cairn__Resource *res = &resources[2 * i + r];
                cairn__resource__init(res);
                res->type = (char *)(s->resource_type ? s->resource_type : "");
                res->arn = (char *)(s->resource_arn ? s->resource_arn : "");
                resource_ptrs[2 * i + r] = res;
            }
            e->resources = &resource_ptrs[2 * i];
            e->n_resources = 2;
        }
        e->json.data = (uint8_t *)"{}";
        e->json.len = 2;
        ptrs[i] = e;
    }
    batch.agent_id = "agent-q";
    batch.first_seq = s_agent_seq;
    batch.n_events = count;
    batch.events = ptrs;
    s_agent_seq += count;
    const Cairn__Batch *batches[1] = {&batch};
    store_batch_result_t result;
    assert_int_equal(store_put_batches(store, batches, 1, 1000, &result), 0);
    assert_int_equal(result.stored_count + result.duplicate_count, count);
    free(resource_ptrs);
    free(resources);
    free(ptrs);
    free(events);
}

/* What store_query passed. */
typedef struct {
    size_t count;
    size_t stop_after; /* return 1 after this many (0: never) */
    char ids[MAX_HITS][48];
    store_position_t positions[MAX_HITS];
} hits_t;

static int s_on_hit(void *ctx, const store_position_t *position, const Cairn__StoredEvent *stored)
{
    hits_t *h = ctx;
    assert_non_null(stored->event);
    if (h->count < MAX_HITS) {
        snprintf(h->ids[h->count], sizeof h->ids[0], "%s", stored->event->event_id);
        h->positions[h->count] = *position;
        assert_int_equal(position->event_time_ms, stored->event->event_time_ms);
    }
    h->count++;
    return h->stop_after && h->count >= h->stop_after ? 1 : 0;
}

static hits_t *s_query(store_t *store, const store_query_t *query)
{
    hits_t *h = calloc(1, sizeof *h);
    assert_non_null(h);
    long count = store_query(store, query, s_on_hit, h);
    assert_int_equal(count, (long)h->count);
    return h;
}

/* Checks the hits are exactly the ids given, in that order. */
static void s_expect(const hits_t *h, const char *const *ids, size_t count)
{
    for (size_t i = 0; i < h->count && i < count; i++)
        if (strcmp(h->ids[i], ids[i]) != 0)
            fail_msg("hit %zu is %s, expected %s", i, h->ids[i], ids[i]);
    assert_int_equal(h->count, count);
}

#define EXPECT(h, ...)                                                                             \
    do {                                                                                           \
        const char *const expected_[] = {__VA_ARGS__};                                             \
        s_expect((h), expected_, sizeof expected_ / sizeof *expected_);                            \
    } while (0)

static int s_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    strcpy(fx->dir, "/tmp/store_query_test.XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    snprintf(fx->path, sizeof fx->path, "%s/store", fx->dir);
    fx->store = store_new(fx->path, TEST_MAP_BYTES, false);
    if (fx->store)
        s_set_merge(fx->store);
    s_agent_seq = 1;
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

/* A small trail with eventTimes out of ingest order. */
static void s_put_trail(store_t *store)
{
    const test_event_t trail[] = {
        {.id = "e1",
         .time_ms = 5000,
         .name = "PutObject",
         .user_name = "alice",
         .access_key = "AKIAALICE",
         .read_only = CAIRN__READ_ONLY__READ_ONLY_FALSE,
         .resource_type = "AWS::S3::Bucket",
         .resource_arn = "arn:aws:s3:::logs"},
        {.id = "e2",
         .time_ms = 1000,
         .name = "GetObject",
         .user_name = "bob",
         .read_only = CAIRN__READ_ONLY__READ_ONLY_TRUE,
         .region = "eu-west-1"},
        {.id = "e3",
         .time_ms = 3000,
         .name = "RunInstances",
         .source = "ec2.amazonaws.com",
         .user_type = "AssumedRole",
         .user_arn = "arn:aws:sts::111122223333:assumed-role/DeployRole/ci-deploy",
         .access_key = "ASIADEPLOY",
         .read_only = CAIRN__READ_ONLY__READ_ONLY_FALSE,
         .resource_type = "AWS::EC2::Instance",
         .resource_arn = "arn:aws:ec2:us-east-1:111122223333:instance/i-0abc",
         .account = "444455556666"},
        {.id = "e4",
         .time_ms = 4000,
         .name = "GetObject",
         .user_name = "alice",
         .access_key = "AKIAALICE",
         .read_only = CAIRN__READ_ONLY__READ_ONLY_TRUE},
        {.id = "e5",
         .time_ms = 3000,
         .name = "ConsoleLogin",
         .user_type = "Root",
         .source = "signin.amazonaws.com"},
        {.id = "e6",
         .time_ms = 2000,
         .name = "GetObject",
         .user_name = "alice",
         .region = "eu-west-1"},
    };
    s_put(store, trail, sizeof trail / sizeof *trail);
}

static void each_attribute_finds_its_events_newest_first(void **state)
{
    fixture_t *fx = *state;
    s_put_trail(fx->store);
    store_query_t q = STORE_QUERY_ALL;
    hits_t *h = s_query(fx->store, &q);
    /* e3 and e5 share a time: the later ingested (e5) comes first. */
    EXPECT(h, "e1", "e4", "e5", "e3", "e6", "e2");
    free(h);

    static const struct {
        store_attr_t attr;
        const char *value;
        const char *ids[4];
    } cases[] = {
        {STORE_ATTR_EVENT_NAME, "GetObject", {"e4", "e6", "e2"}},
        {STORE_ATTR_READ_ONLY, "true", {"e4", "e2"}},
        {STORE_ATTR_READ_ONLY, "false", {"e1", "e3"}},
        {STORE_ATTR_USERNAME, "alice", {"e1", "e4", "e6"}},
        {STORE_ATTR_USERNAME, "ci-deploy", {"e3"}}, /* assumed role: the session name */
        {STORE_ATTR_USERNAME, "root", {"e5"}},
        {STORE_ATTR_RESOURCE_TYPE, "AWS::EC2::Instance", {"e3"}},
        {STORE_ATTR_RESOURCE_NAME, "arn:aws:s3:::logs", {"e1"}},
        {STORE_ATTR_RESOURCE_NAME, "logs", {"e1"}},
        {STORE_ATTR_RESOURCE_NAME, "i-0abc", {"e3"}},
        {STORE_ATTR_EVENT_SOURCE, "ec2.amazonaws.com", {"e3"}},
        {STORE_ATTR_ACCESS_KEY_ID, "AKIAALICE", {"e1", "e4"}},
        {STORE_ATTR_REGION, "eu-west-1", {"e6", "e2"}},
        {STORE_ATTR_ACCOUNT, "444455556666", {"e3"}},
        {STORE_ATTR_USERNAME, "nobody", {NULL}},
        {STORE_ATTR_USERNAME, "", {NULL}},
        {STORE_ATTR_EVENT_NAME, "getobject", {NULL}}, /* exact, as CloudTrail */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        q = STORE_QUERY_ALL;
        q.values[cases[i].attr] = cases[i].value;
        size_t n = 0;
        while (n < 4 && cases[i].ids[n])
            n++;
        h = s_query(fx->store, &q);
        s_expect(h, cases[i].ids, n);
        free(h);
    }
}

static void filters_combine_and_time_range_is_inclusive(void **state)
{
    fixture_t *fx = *state;
    s_put_trail(fx->store);
    store_query_t q = STORE_QUERY_ALL;
    q.values[STORE_ATTR_USERNAME] = "alice";
    q.values[STORE_ATTR_EVENT_NAME] = "GetObject";
    hits_t *h = s_query(fx->store, &q);
    EXPECT(h, "e4", "e6");
    free(h);

    q.values[STORE_ATTR_REGION] = "eu-west-1";
    h = s_query(fx->store, &q);
    EXPECT(h, "e6");
    free(h);

    q = STORE_QUERY_ALL;
    q.start_ms = 2000;
    q.end_ms = 4000;
    h = s_query(fx->store, &q);
    EXPECT(h, "e4", "e5", "e3", "e6");
    free(h);

    q.values[STORE_ATTR_USERNAME] = "alice";
    h = s_query(fx->store, &q);
    EXPECT(h, "e4", "e6");
    free(h);

    q.start_ms = 4001;
    q.end_ms = 4000; /* start after end: nothing */
    h = s_query(fx->store, &q);
    assert_int_equal(h->count, 0);
    free(h);
}

static void event_id_lookup_checks_the_other_filters(void **state)
{
    fixture_t *fx = *state;
    s_put_trail(fx->store);
    store_query_t q = STORE_QUERY_ALL;
    q.event_id = "e3";
    hits_t *h = s_query(fx->store, &q);
    EXPECT(h, "e3");
    free(h);

    q.values[STORE_ATTR_USERNAME] = "ci-deploy";
    h = s_query(fx->store, &q);
    EXPECT(h, "e3");
    free(h);

    q.values[STORE_ATTR_USERNAME] = "alice";
    h = s_query(fx->store, &q);
    assert_int_equal(h->count, 0);
    free(h);

    q = STORE_QUERY_ALL;
    q.event_id = "e3";
    q.end_ms = 2999;
    h = s_query(fx->store, &q);
    assert_int_equal(h->count, 0);
    free(h);

    q = STORE_QUERY_ALL;
    q.event_id = "no-such-id";
    h = s_query(fx->store, &q);
    assert_int_equal(h->count, 0);
    free(h);
}

/* Paging: resuming after the last hit of each page gives every match once,
 * in order, whatever filter drives the scan; events stored between pages
 * newer than the resume point do not shift the pages. */
static void resuming_after_a_position_pages_without_gaps(void **state)
{
    fixture_t *fx = *state;
    enum { N = 1000 };
    static test_event_t events[N];
    static char ids[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "p%04d", i);
        events[i] = (test_event_t){.id = ids[i],
                                   .time_ms = (int64_t)(i % 97) * 1000,
                                   .user_name = i % 3 ? "carol" : "dave",
                                   .name = i % 2 ? "GetObject" : "PutObject"};
    }
    s_put(fx->store, events, N);

    store_query_t all = STORE_QUERY_ALL;
    all.values[STORE_ATTR_USERNAME] = "carol";
    hits_t *whole = s_query(fx->store, &all);
    assert_int_equal(whole->count, 666);

    store_query_t page = all;
    size_t seen = 0;
    for (int round = 0; round < 100 && seen < whole->count; round++) {
        hits_t *h = calloc(1, sizeof *h);
        h->stop_after = 50;
        assert_true(store_query(fx->store, &page, s_on_hit, h) >= 0);
        assert_true(h->count > 0);
        for (size_t i = 0; i < h->count; i++)
            assert_string_equal(h->ids[i], whole->ids[seen + i]);
        seen += h->count;
        page.has_after = true;
        page.after = h->positions[h->count - 1];
        if (round == 1) { /* a newer event arrives: later pages do not move */
            test_event_t late = {.id = "late", .time_ms = 500000, .user_name = "carol"};
            s_put(fx->store, &late, 1);
        }
        free(h);
    }
    assert_int_equal(seen, whole->count);
    free(whole);

    /* Two filters: the smaller drives; positions resume the same way. */
    store_query_t two = STORE_QUERY_ALL;
    two.values[STORE_ATTR_USERNAME] = "dave";
    two.values[STORE_ATTR_EVENT_NAME] = "GetObject";
    whole = s_query(fx->store, &two);
    assert_int_equal(whole->count, 167); /* odd multiples of 3 below 1000 */
    hits_t *first = calloc(1, sizeof *first);
    first->stop_after = 100;
    store_query(fx->store, &two, s_on_hit, first);
    two.has_after = true;
    two.after = first->positions[99];
    hits_t *rest = s_query(fx->store, &two);
    assert_int_equal(rest->count, 67);
    assert_string_equal(rest->ids[0], whole->ids[100]);
    free(rest);
    free(first);
    free(whole);
}

/* Values longer than an LMDB key share the index key of their cut: the query
 * still tells them apart by the whole value. */
static void long_values_are_told_apart(void **state)
{
    fixture_t *fx = *state;
    static char a[2001], b[2001];
    memset(a, 'r', 2000);
    memcpy(b, a, sizeof a);
    b[1999] = 's';
    test_event_t events[] = {
        {.id = "long-a", .time_ms = 1, .resource_arn = a, .resource_type = "AWS::S3::Object"},
        {.id = "long-b", .time_ms = 2, .resource_arn = b, .resource_type = "AWS::S3::Object"},
    };
    s_put(fx->store, events, 2);
    store_query_t q = STORE_QUERY_ALL;
    q.values[STORE_ATTR_RESOURCE_NAME] = a;
    hits_t *h = s_query(fx->store, &q);
    EXPECT(h, "long-a");
    free(h);
    q.values[STORE_ATTR_RESOURCE_NAME] = b;
    q.values[STORE_ATTR_RESOURCE_TYPE] = "AWS::S3::Object";
    h = s_query(fx->store, &q);
    EXPECT(h, "long-b");
    free(h);
}

static void delete_removes_the_event_and_its_index_entries(void **state)
{
    fixture_t *fx = *state;
    s_put_trail(fx->store);
    /* e4 is seq 4: alice's GetObject at 4000. */
    assert_int_equal(store_delete_event(fx->store, 4), 0);
    assert_int_equal(store_delete_event(fx->store, 4), 0); /* again: nothing to do */
    assert_int_equal(store_delete_event(fx->store, 999), 0);
    assert_int_equal(store_event_count(fx->store), 5);
    store_query_t q = STORE_QUERY_ALL;
    hits_t *h = s_query(fx->store, &q);
    EXPECT(h, "e1", "e5", "e3", "e6", "e2");
    free(h);
    static const store_attr_t attrs[] = {STORE_ATTR_USERNAME, STORE_ATTR_ACCESS_KEY_ID,
                                         STORE_ATTR_READ_ONLY, STORE_ATTR_EVENT_NAME};
    static const char *const values[] = {"alice", "AKIAALICE", "true", "GetObject"};
    for (size_t i = 0; i < 4; i++) {
        q = STORE_QUERY_ALL;
        q.values[attrs[i]] = values[i];
        h = s_query(fx->store, &q);
        for (size_t j = 0; j < h->count; j++)
            assert_string_not_equal(h->ids[j], "e4");
        free(h);
    }
    q = STORE_QUERY_ALL;
    q.event_id = "e4";
    h = s_query(fx->store, &q);
    assert_int_equal(h->count, 0);
    free(h);

    /* Delete every event of e1 (with resources): nothing of it stays. */
    assert_int_equal(store_delete_event(fx->store, 1), 0);
    q = STORE_QUERY_ALL;
    q.values[STORE_ATTR_RESOURCE_NAME] = "logs";
    h = s_query(fx->store, &q);
    assert_int_equal(h->count, 0);
    free(h);

    /* Its eventID is free again: the same event is stored anew. */
    test_event_t again = {.id = "e4", .time_ms = 4000, .user_name = "alice"};
    s_put(fx->store, &again, 1);
    q = STORE_QUERY_ALL;
    q.event_id = "e4";
    h = s_query(fx->store, &q);
    EXPECT(h, "e4");
    assert_int_equal(h->positions[0].seq, 7);
    free(h);

    /* Deleting the newest event, then reopening: its seq is not reused. */
    assert_int_equal(store_delete_event(fx->store, 7), 0);
    store_destroy(&fx->store);
    fx->store = store_new(fx->path, TEST_MAP_BYTES, false);
    assert_non_null(fx->store);
    s_set_merge(fx->store);
    test_event_t next = {.id = "e8", .time_ms = 1};
    s_put(fx->store, &next, 1);
    q = STORE_QUERY_ALL;
    q.event_id = "e8";
    h = s_query(fx->store, &q);
    EXPECT(h, "e8");
    assert_int_equal(h->positions[0].seq, 8);
    free(h);
}

/* Hashed attributes (user names, access keys, resource names, eventIDs)
 * share 256 keys: with 3,000 values per attribute every key holds many, and
 * each lookup must still find exactly its own events, alone or combined. */
static void values_sharing_a_hashed_key_are_told_apart(void **state)
{
    fixture_t *fx = *state;
    enum { N = 3000 };
    static char ids[N][16], users[N][16], keys[N][24], arns[N][40];
    static test_event_t events[N];
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "id-%d", i);
        snprintf(users[i], sizeof users[i], "user-%d", i);
        snprintf(keys[i], sizeof keys[i], "AKIA%d", i);
        snprintf(arns[i], sizeof arns[i], "arn:aws:s3:::bucket-%d", i);
        events[i] = (test_event_t){.id = ids[i],
                                   .time_ms = 1000 + i,
                                   .name = i % 2 ? "GetObject" : "PutObject",
                                   .user_name = users[i],
                                   .access_key = keys[i],
                                   .resource_type = "AWS::S3::Bucket",
                                   .resource_arn = arns[i]};
    }
    s_put(fx->store, events, N);
    for (int i = 0; i < N; i += 97) {
        store_query_t q = STORE_QUERY_ALL;
        q.values[STORE_ATTR_USERNAME] = users[i];
        hits_t *h = s_query(fx->store, &q);
        EXPECT(h, ids[i]);
        free(h);
        q = STORE_QUERY_ALL;
        q.values[STORE_ATTR_ACCESS_KEY_ID] = keys[i];
        q.values[STORE_ATTR_RESOURCE_NAME] = arns[i] + strlen("arn:aws:s3:::");
        h = s_query(fx->store, &q);
        EXPECT(h, ids[i]);
        free(h);
        q = STORE_QUERY_ALL;
        q.event_id = ids[i];
        h = s_query(fx->store, &q);
        EXPECT(h, ids[i]);
        free(h);
        /* A hashed filter with an exact one that drives: still only its event. */
        q = STORE_QUERY_ALL;
        q.values[STORE_ATTR_EVENT_NAME] = i % 2 ? "GetObject" : "PutObject";
        q.values[STORE_ATTR_USERNAME] = users[i];
        h = s_query(fx->store, &q);
        EXPECT(h, ids[i]);
        free(h);
        /* The other eventName: none. */
        q.values[STORE_ATTR_EVENT_NAME] = i % 2 ? "PutObject" : "GetObject";
        h = s_query(fx->store, &q);
        assert_int_equal(h->count, 0);
        free(h);
    }
    store_query_t q = STORE_QUERY_ALL;
    q.values[STORE_ATTR_USERNAME] = "user-none";
    hits_t *h = s_query(fx->store, &q);
    assert_int_equal(h->count, 0);
    free(h);
    q = STORE_QUERY_ALL;
    q.event_id = "id-none";
    h = s_query(fx->store, &q);
    assert_int_equal(h->count, 0);
    free(h);
}

/* Dedup is on eventID and eventTime together: an event sent again is the
 * same bytes, so the same pair (this is what keeps dedup's inserts local in
 * the B-tree, see store.c). The same eventID at another eventTime is kept. */
static void an_event_is_its_event_id_at_its_event_time(void **state)
{
    fixture_t *fx = *state;
    test_event_t first = {.id = "same-id", .time_ms = 5000, .user_name = "alice"};
    s_put(fx->store, &first, 1);
    s_put(fx->store, &first, 1); /* sent again */
    assert_int_equal(store_event_count(fx->store), 1);
    test_event_t other = {.id = "same-id", .time_ms = 6000, .user_name = "alice"};
    s_put(fx->store, &other, 1);
    assert_int_equal(store_event_count(fx->store), 2);
    store_query_t q = STORE_QUERY_ALL;
    q.event_id = "same-id";
    hits_t *h = s_query(fx->store, &q);
    assert_int_equal(h->count, 2);
    assert_int_equal(h->positions[0].event_time_ms, 6000);
    assert_int_equal(h->positions[1].event_time_ms, 5000);
    free(h);
}

/* A store written before the index existed gets it built at open. */
static void an_old_store_gets_its_index_built(void **state)
{
    fixture_t *fx = *state;
    s_put_trail(fx->store);
    store_destroy(&fx->store);

    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi index, meta;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    mdb_env_set_mapsize(env, TEST_MAP_BYTES);
    assert_int_equal(mdb_env_open(env, fx->path, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "index", MDB_DUPSORT | MDB_DUPFIXED, &index), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    assert_int_equal(mdb_drop(txn, index, 1), 0);
    MDB_val key = {.mv_size = strlen("index_version"), .mv_data = "index_version"};
    assert_int_equal(mdb_del(txn, meta, &key, NULL), 0);
    /* Version 1 keyed ids by the eventID alone. */
    MDB_dbi ids;
    assert_int_equal(mdb_dbi_open(txn, "ids", 0, &ids), 0);
    assert_int_equal(mdb_drop(txn, ids, 0), 0);
    for (int i = 1; i <= 6; i++) {
        char id[4];
        uint8_t seq_be[8] = {0, 0, 0, 0, 0, 0, 0, (uint8_t)i};
        snprintf(id, sizeof id, "e%d", i);
        MDB_val id_val = {.mv_size = strlen(id), .mv_data = id};
        MDB_val seq_val = {.mv_size = 8, .mv_data = seq_be};
        assert_int_equal(mdb_put(txn, ids, &id_val, &seq_val, 0), 0);
    }
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    store_t *reader = store_open_readonly(fx->path); /* refused: no index yet */
    assert_null(reader);

    fx->store = store_new(fx->path, TEST_MAP_BYTES, false);
    assert_non_null(fx->store);
    s_set_merge(fx->store);
    store_query_t q = STORE_QUERY_ALL;
    q.values[STORE_ATTR_USERNAME] = "alice";
    hits_t *h = s_query(fx->store, &q);
    EXPECT(h, "e1", "e4", "e6");
    free(h);
    q = STORE_QUERY_ALL;
    q.event_id = "e3";
    h = s_query(fx->store, &q);
    EXPECT(h, "e3");
    free(h);
    s_put_trail(fx->store); /* the dedup guard was rebuilt too: all duplicates */
    assert_int_equal(store_event_count(fx->store), 6);
}

/* A read-only store, in another process, queries while the writer (this
 * process) keeps its store open and stores more. */
static void a_readonly_store_reads_while_the_writer_writes(void **state)
{
    fixture_t *fx = *state;
    s_put_trail(fx->store);
    int ready[2], go[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(go), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char c = 0;
        store_t *reader = store_open_readonly(fx->path);
        if (!reader)
            _exit(10);
        store_query_t q = STORE_QUERY_ALL;
        q.values[STORE_ATTR_USERNAME] = "alice";
        hits_t h = {0};
        if (store_query(reader, &q, s_on_hit, &h) != 3)
            _exit(11);
        if (write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
            _exit(12);
        memset(&h, 0, sizeof h);
        if (store_query(reader, &q, s_on_hit, &h) != 4 || strcmp(h.ids[0], "e7") != 0)
            _exit(13);
        store_destroy(&reader);
        _exit(0);
    }
    char c;
    close(ready[1]); /* a child that dies early gives EOF, not a hang */
    close(go[0]);
    assert_int_equal(read(ready[0], &c, 1), 1);
    test_event_t more = {.id = "e7", .time_ms = 9000, .user_name = "alice"};
    s_put(fx->store, &more, 1);
    assert_int_equal(write(go[1], "g", 1), 1);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    close(ready[0]);
    close(go[1]);

    assert_null(store_open_readonly("/nonexistent/cairn-store"));
}

/* --- runs and their merge -------------------------------------------------- */

enum { RUN_PUTS = 40, RUN_PUT_EVENTS = 7, RUN_EVENTS = (RUN_PUTS + 8) * RUN_PUT_EVENTS };

static char s_run_ids[RUN_EVENTS][16], s_run_arns[RUN_EVENTS][40];
static test_event_t s_run_events[RUN_EVENTS];

/* Event i of the merge test: eventTimes out of order, values repeating with
 * different periods so that filters combine in every way. */
static void s_run_event(size_t i)
{
    static const char *const names[] = {"GetObject", "PutObject", "RunInstances"};
    static const char *const users[] = {"ann", "ben", "cat", "dan", "eve"};
    static const char *const keys[] = {"AKIA1", "AKIA2", "AKIA3", "AKIA4"};
    snprintf(s_run_ids[i], sizeof s_run_ids[i], "m%04zu", i);
    snprintf(s_run_arns[i], sizeof s_run_arns[i], "arn:aws:s3:::bucket-%zu", i % 6);
    s_run_events[i] = (test_event_t){
        .id = s_run_ids[i],
        .time_ms = (int64_t)((i * 7919) % 1000) * 10 + 100,
        .name = names[i % 3],
        .user_name = users[i % 5],
        .access_key = keys[i % 4],
        .read_only = i % 2 ? CAIRN__READ_ONLY__READ_ONLY_TRUE : CAIRN__READ_ONLY__READ_ONLY_FALSE,
        .resource_type = "AWS::S3::Bucket",
        .resource_arn = s_run_arns[i],
    };
}

/* Whether event i matches q (the filters this test uses). */
static bool s_run_matches(size_t i, const store_query_t *q)
{
    const test_event_t *e = &s_run_events[i];
    const char *ro = e->read_only == CAIRN__READ_ONLY__READ_ONLY_TRUE ? "true" : "false";
    const char *v;
    if (q->event_id && strcmp(q->event_id, e->id))
        return false;
    if ((v = q->values[STORE_ATTR_EVENT_NAME]) && strcmp(v, e->name))
        return false;
    if ((v = q->values[STORE_ATTR_USERNAME]) && strcmp(v, e->user_name))
        return false;
    if ((v = q->values[STORE_ATTR_ACCESS_KEY_ID]) && strcmp(v, e->access_key))
        return false;
    if ((v = q->values[STORE_ATTR_READ_ONLY]) && strcmp(v, ro))
        return false;
    if ((v = q->values[STORE_ATTR_RESOURCE_NAME]) && strcmp(v, e->resource_arn) &&
        strcmp(v, strrchr(e->resource_arn, ':') + 1))
        return false;
    return e->time_ms >= q->start_ms && e->time_ms <= q->end_ms;
}

/* Checks that q finds exactly the matching events among the first n, newest
 * first (ties: the later stored first). */
static void s_run_check(store_t *store, const store_query_t *q, size_t n)
{
    static size_t expected[RUN_EVENTS];
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (s_run_matches(i, q))
            expected[count++] = i;
    for (size_t a = 1; a < count; a++) /* insertion sort: newest first, then later seq */
        for (size_t b = a; b > 0; b--) {
            size_t x = expected[b - 1], y = expected[b];
            if (s_run_events[x].time_ms > s_run_events[y].time_ms ||
                (s_run_events[x].time_ms == s_run_events[y].time_ms && x > y))
                break;
            expected[b - 1] = y;
            expected[b] = x;
        }
    hits_t *h = s_query(store, q);
    for (size_t i = 0; i < h->count && i < count; i++)
        if (strcmp(h->ids[i], s_run_events[expected[i]].id) != 0)
            fail_msg("after %zu events, hit %zu is %s, expected %s", n, i, h->ids[i],
                     s_run_events[expected[i]].id);
    if (h->count != count)
        fail_msg("after %zu events: %zu hits, expected %zu", n, h->count, count);
    free(h);
}

/* Every kind of query the test makes, over the first n events. */
static void s_run_check_all(store_t *store, size_t n)
{
    store_query_t q = STORE_QUERY_ALL;
    s_run_check(store, &q, n);
    q.start_ms = 3000;
    q.end_ms = 7000;
    s_run_check(store, &q, n);
    static const struct {
        store_attr_t attr;
        const char *value;
    } filters[] = {
        {STORE_ATTR_EVENT_NAME, "PutObject"},     {STORE_ATTR_USERNAME, "cat"},
        {STORE_ATTR_ACCESS_KEY_ID, "AKIA2"},      {STORE_ATTR_READ_ONLY, "true"},
        {STORE_ATTR_RESOURCE_NAME, "bucket-4"},   {STORE_ATTR_USERNAME, "nobody"},
    };
    for (size_t f = 0; f < sizeof filters / sizeof *filters; f++) {
        q = STORE_QUERY_ALL;
        q.values[filters[f].attr] = filters[f].value;
        s_run_check(store, &q, n);
        q.values[STORE_ATTR_EVENT_NAME] = "GetObject"; /* and a second filter */
        s_run_check(store, &q, n);
    }
    q = STORE_QUERY_ALL;
    q.event_id = s_run_events[n / 2].id;
    s_run_check(store, &q, n);
}

/* Many small transactions: after each, every query sees exactly the events
 * stored, whether their entries sit in runs, in the index, or (merging in
 * steps) a pass is half done; the runs survive a reopen, and the mode does
 * what it says (runs only, index only). */
static void queries_see_every_event_while_runs_merge(void **state)
{
    fixture_t *fx = *state;
    size_t n = 0;
    for (size_t i = 0; i < RUN_EVENTS; i++)
        s_run_event(i);
    for (int put = 0; put < RUN_PUTS; put++) {
        s_put(fx->store, &s_run_events[n], RUN_PUT_EVENTS);
        n += RUN_PUT_EVENTS;
        s_run_check_all(fx->store, n);
    }
    store_index_stats_t stats;
    store_index_stats(fx->store, &stats);
    if (s_merge_mode == MERGE_NEVER) {
        assert_true(stats.run_items >= (uint64_t)n);
        assert_int_equal(stats.merge_passes, 0);
    } else if (s_merge_mode == MERGE_EACH_PUT) {
        assert_int_equal(stats.run_items, 0);
        assert_int_equal(stats.merge_passes, RUN_PUTS);
    } else
        assert_true(stats.merge_passes > 0);
    store_destroy(&fx->store);

    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi index, runs;
    MDB_stat index_stat, runs_stat;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    assert_int_equal(mdb_env_open(env, fx->path, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "index", MDB_DUPSORT | MDB_DUPFIXED, &index), 0);
    assert_int_equal(mdb_dbi_open(txn, "runs", 0, &runs), 0);
    assert_int_equal(mdb_stat(txn, index, &index_stat), 0);
    assert_int_equal(mdb_stat(txn, runs, &runs_stat), 0);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    if (s_merge_mode == MERGE_NEVER) {
        assert_int_equal(index_stat.ms_entries, 0);
        assert_true(runs_stat.ms_entries > 0);
    } else if (s_merge_mode == MERGE_EACH_PUT) {
        assert_true(index_stat.ms_entries > 0);
        assert_int_equal(runs_stat.ms_entries, 0);
    } else
        assert_true(index_stat.ms_entries > 0);

    fx->store = store_new(fx->path, TEST_MAP_BYTES, false);
    assert_non_null(fx->store);
    s_set_merge(fx->store);
    s_run_check_all(fx->store, n);
    for (int put = 0; put < 6; put++) {
        s_put(fx->store, &s_run_events[n], RUN_PUT_EVENTS);
        n += RUN_PUT_EVENTS;
        s_run_check_all(fx->store, n);
    }
    /* The writer's idle merge takes every run into the index. */
    int more = 1;
    for (int i = 0; more == 1 && i < 100000; i++)
        more = store_merge(fx->store);
    assert_int_equal(more, 0);
    store_index_stats(fx->store, &stats);
    assert_int_equal(stats.run_items, 0);
    s_run_check_all(fx->store, n);
    for (int put = 0; put < 2; put++) { /* and runs written after it merge too */
        s_put(fx->store, &s_run_events[n], RUN_PUT_EVENTS);
        n += RUN_PUT_EVENTS;
    }
    s_run_check_all(fx->store, n);
    /* Delete from wherever an event's entries are. */
    assert_int_equal(store_delete_event(fx->store, 3), 0);
    assert_int_equal(store_delete_event(fx->store, (uint64_t)n), 0);
    store_query_t q = STORE_QUERY_ALL;
    q.values[STORE_ATTR_USERNAME] = s_run_events[2].user_name;
    hits_t *h = s_query(fx->store, &q);
    for (size_t i = 0; i < h->count; i++) {
        assert_string_not_equal(h->ids[i], s_run_events[2].id);
        assert_string_not_equal(h->ids[i], s_run_events[n - 1].id);
    }
    free(h);
}

int main(void)
{
    cairn_log_level = CAIRN_LOG_WARNING;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(each_attribute_finds_its_events_newest_first, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(filters_combine_and_time_range_is_inclusive, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(event_id_lookup_checks_the_other_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(resuming_after_a_position_pages_without_gaps, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(long_values_are_told_apart, setup, teardown),
        cmocka_unit_test_setup_teardown(delete_removes_the_event_and_its_index_entries, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(an_old_store_gets_its_index_built, setup, teardown),
        cmocka_unit_test_setup_teardown(a_readonly_store_reads_while_the_writer_writes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(values_sharing_a_hashed_key_are_told_apart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(an_event_is_its_event_id_at_its_event_time, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(queries_see_every_event_while_runs_merge, setup,
                                        teardown),
    };
    static const char *const modes[] = {"entries left in runs", "runs merged at each put",
                                        "runs merged in small steps"};
    int failed = 0;
    for (s_merge_mode = MERGE_NEVER; s_merge_mode <= MERGE_IN_STEPS; s_merge_mode++) {
        fprintf(stderr, "[ ROUND    ] %s\n", modes[s_merge_mode]);
        failed += cmocka_run_group_tests(tests, NULL, NULL);
    }
    return failed;
}
