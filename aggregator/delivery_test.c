/* delivery_test.c: the delivery actor and the directory bucket, through
 * delivery.h and bucket.h.
 *
 * Each test gets a fresh temporary directory (removed afterwards) holding a
 * store and a bucket directory. Events are placed in windows by the now_ms
 * given to store_put_batches; windows are closed by store_advance_watermark.
 * The actor is watched through delivery_get_stats with a bounded wait. */
#include "bucket.h"
#include "cairn_log.h"
#include "delivery.h"
#include "store.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <libdeflate.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define TEST_MAP_BYTES (64 * 1024 * 1024)
#define TEST_T0_MS     1795748400000LL /* 2026-11-27T03:00:00Z */
#define TEST_WAIT_MS   10000           /* longest wait for the actor */
#define MAX_EVENTS     256
#define MAX_FILES      256

typedef struct {
    char dir[64];
    char store_path[96];
    char bucket_path[96];
    store_t *store;
    delivery_t *delivery;
} fixture_t;

/* What a test stored, to find again in the bucket. */
typedef struct {
    char id[64];
    char account[16];
    char region[16];
    int64_t window_end_ms;
} stored_event_t;

typedef struct {
    stored_event_t events[MAX_EVENTS];
    size_t count;
    uint64_t agent_seq;
} ledger_t;

/* A file of the bucket, read back. */
typedef struct {
    char key[512];
    char account[16];
    char region[16];
    char stamp[16]; /* YYYYMMDDTHHmmZ */
    char date[16];  /* YYYYMMDD from the path */
    char name_account[16];
    char name_region[16];
    char *json; /* gunzip'd, NUL-terminated */
    size_t json_len;
} object_t;

typedef struct {
    object_t objects[MAX_FILES];
    size_t count;
    int bad_names; /* entries not matching the key layout (temp files, ...) */
} listing_t;

static const char *const s_accounts[] = {"111122223333", "444455556666"};
static const char *const s_regions[] = {"us-east-1", "eu-west-1"};

static int s_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    strcpy(fx->dir, "/tmp/delivery_test.XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    snprintf(fx->store_path, sizeof fx->store_path, "%s/store", fx->dir);
    snprintf(fx->bucket_path, sizeof fx->bucket_path, "%s/bucket", fx->dir);
    fx->store = store_new(fx->store_path, TEST_MAP_BYTES, false);
    *state = fx;
    return fx->store ? 0 : -1;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    delivery_destroy(&fx->delivery);
    store_destroy(&fx->store);
    nftw(fx->dir, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

/* Stores count events at now_ms in one batch; event i goes to account
 * accounts[i % 2] and region regions[(i / 2) % 2] unless one_group. The
 * record of event i is padded to pad_bytes[i] when pad_bytes is given. */
static void s_put_events(fixture_t *fx, ledger_t *ledger, size_t count, int64_t now_ms,
                         int64_t interval_ms, bool is_one_group, const size_t *pad_bytes)
{
    Cairn__Batch batch = CAIRN__BATCH__INIT;
    Cairn__Event *events = calloc(count, sizeof *events);
    Cairn__Event **event_ptrs = calloc(count, sizeof *event_ptrs);
    char **jsons = calloc(count, sizeof *jsons);
    assert_true(events && event_ptrs && jsons);
    batch.agent_id = "agent-1";
    batch.first_seq = ledger->agent_seq + 1;
    batch.n_events = count;
    batch.events = event_ptrs;
    for (size_t i = 0; i < count; i++) {
        assert_true(ledger->count < MAX_EVENTS);
        stored_event_t *se = &ledger->events[ledger->count++];
        snprintf(se->id, sizeof se->id, "0000%04zx-1111-4222-8333-%012zx", ledger->count,
                 ledger->count);
        strcpy(se->account, is_one_group ? s_accounts[0] : s_accounts[i % 2]);
        strcpy(se->region, is_one_group ? s_regions[0] : s_regions[(i / 2) % 2]);
        se->window_end_ms = (now_ms / interval_ms + 1) * interval_ms;
        size_t pad = pad_bytes ? pad_bytes[i] : 8;
        jsons[i] = malloc(pad + 256);
        assert_non_null(jsons[i]);
        int n = snprintf(jsons[i], 256,
                         "{\"eventID\":\"%s\",\"awsRegion\":\"%s\",\"recipientAccountId\":\"%s\","
                         "\"pad\":\"",
                         se->id, se->region, se->account);
        memset(jsons[i] + n, 'p', pad);
        strcpy(jsons[i] + n + pad, "\"}");
        cairn__event__init(&events[i]);
        events[i].event_id = se->id;
        events[i].aws_region = se->region;
        events[i].recipient_account_id = se->account;
        events[i].json.data = (uint8_t *)jsons[i];
        events[i].json.len = strlen(jsons[i]);
        event_ptrs[i] = &events[i];
    }
    ledger->agent_seq += count;
    const Cairn__Batch *batches[1] = {&batch};
    store_batch_result_t result;
    assert_int_equal(store_put_batches(fx->store, batches, 1, now_ms, &result), 0);
    assert_int_equal(result.stored_count, count);
    for (size_t i = 0; i < count; i++)
        free(jsons[i]);
    free(jsons);
    free(event_ptrs);
    free(events);
}

static delivery_t *s_start_with(fixture_t *fx, size_t part_max_bytes, size_t buffer_max_bytes,
                                int gzip_threads)
{
    char err[256] = "";
    bucket_t *bucket = bucket_new(fx->bucket_path, NULL, err, sizeof err);
    assert_non_null(bucket);
    delivery_options_t options = {.aggregator_id = "agg-test",
                                  .interval_ms = 1000,
                                  .part_max_bytes = part_max_bytes,
                                  .buffer_max_bytes = buffer_max_bytes,
                                  .gzip_level = 6,
                                  .gzip_threads = gzip_threads,
                                  .poll_ms = 10};
    delivery_t *delivery = delivery_new(fx->store, &bucket, &options);
    assert_null(bucket);
    assert_non_null(delivery);
    return delivery;
}

static delivery_t *s_start(fixture_t *fx, size_t part_max_bytes)
{
    return s_start_with(fx, part_max_bytes, 0, 0);
}

static void s_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Waits until the stats show windows delivered (and, when put_errors >= 0,
 * at least that many put errors). Returns the stats. */
static delivery_stats_t s_wait_for(delivery_t *delivery, uint64_t windows, uint64_t put_errors)
{
    delivery_stats_t stats;
    for (int waited = 0; waited < TEST_WAIT_MS; waited += 5) {
        delivery_get_stats(delivery, &stats);
        if (stats.windows_delivered >= windows && stats.put_errors >= put_errors)
            return stats;
        s_sleep_ms(5);
    }
    delivery_get_stats(delivery, &stats);
    return stats;
}

static char *s_gunzip(const uint8_t *data, size_t len, size_t *out_len)
{
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    size_t cap = 1 << 20;
    char *out = malloc(cap + 1);
    assert_true(d && out);
    enum libdeflate_result rc = libdeflate_gzip_decompress(d, data, len, out, cap, out_len);
    libdeflate_free_decompressor(d);
    assert_int_equal(rc, LIBDEFLATE_SUCCESS);
    out[*out_len] = '\0';
    return out;
}

static listing_t *s_listing;
static regex_t s_key_regex;
static const char *s_listing_root;

static int s_on_file(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    if (flag != FTW_F)
        return 0;
    const char *key = path + strlen(s_listing_root) + 1;
    regmatch_t m[9];
    if (regexec(&s_key_regex, key, 9, m, 0) != 0) {
        s_listing->bad_names++;
        return 0;
    }
    if (s_listing->count == MAX_FILES)
        return -1;
    object_t *obj = &s_listing->objects[s_listing->count++];
    snprintf(obj->key, sizeof obj->key, "%s", key);
    snprintf(obj->account, sizeof obj->account, "%.*s", (int)(m[1].rm_eo - m[1].rm_so),
             key + m[1].rm_so);
    snprintf(obj->region, sizeof obj->region, "%.*s", (int)(m[2].rm_eo - m[2].rm_so),
             key + m[2].rm_so);
    snprintf(obj->date, sizeof obj->date, "%.4s%.2s%.2s", key + m[3].rm_so, key + m[4].rm_so,
             key + m[5].rm_so);
    snprintf(obj->name_account, sizeof obj->name_account, "%.*s", (int)(m[6].rm_eo - m[6].rm_so),
             key + m[6].rm_so);
    snprintf(obj->name_region, sizeof obj->name_region, "%.*s", (int)(m[7].rm_eo - m[7].rm_so),
             key + m[7].rm_so);
    snprintf(obj->stamp, sizeof obj->stamp, "%.*s", (int)(m[8].rm_eo - m[8].rm_so),
             key + m[8].rm_so);
    FILE *f = fopen(path, "rb");
    uint8_t *data = malloc((size_t)st->st_size + 1);
    if (!f || !data || fread(data, 1, (size_t)st->st_size, f) != (size_t)st->st_size)
        return -1;
    fclose(f);
    obj->json = s_gunzip(data, (size_t)st->st_size, &obj->json_len);
    free(data);
    return 0;
}

static int s_compare_objects(const void *a, const void *b)
{
    return strcmp(((const object_t *)a)->key, ((const object_t *)b)->key);
}

/* Reads every file of the bucket, sorted by key. */
static listing_t *s_list(const fixture_t *fx)
{
    listing_t *listing = calloc(1, sizeof *listing);
    assert_non_null(listing);
    assert_int_equal(regcomp(&s_key_regex,
                             "^AWSLogs/([0-9]{12})/CloudTrail/([a-z0-9-]+)/([0-9]{4})/([0-9]{2})/"
                             "([0-9]{2})/([0-9]{12})_CloudTrail_([a-z0-9-]+)_"
                             "([0-9]{8}T[0-9]{4}Z)_[0-9A-Za-z]{16}\\.json\\.gz$",
                             REG_EXTENDED),
                     0);
    s_listing = listing;
    s_listing_root = fx->bucket_path;
    assert_int_equal(nftw(fx->bucket_path, s_on_file, 16, FTW_PHYS), 0);
    regfree(&s_key_regex);
    qsort(listing->objects, listing->count, sizeof *listing->objects, s_compare_objects);
    return listing;
}

static void s_listing_free(listing_t **listing_p)
{
    listing_t *listing = *listing_p;
    for (size_t i = 0; i < listing->count; i++)
        free(listing->objects[i].json);
    free(listing);
    *listing_p = NULL;
}

static size_t s_count_substrings(const char *haystack, const char *needle)
{
    size_t count = 0;
    for (const char *p = strstr(haystack, needle); p; p = strstr(p + 1, needle))
        count++;
    return count;
}

/* Checks every object's name and body, and that every event of the ledger
 * is in exactly one object, of its account, region and window. */
static void s_check_bucket(const fixture_t *fx, const ledger_t *ledger, const listing_t *listing)
{
    assert_int_equal(listing->bad_names, 0);
    for (size_t i = 0; i < listing->count; i++) {
        const object_t *obj = &listing->objects[i];
        /* The name repeats the path's account, region and date. */
        assert_string_equal(obj->name_account, obj->account);
        assert_string_equal(obj->name_region, obj->region);
        assert_true(strncmp(obj->stamp, obj->date, 8) == 0);
        assert_true(strncmp(obj->json, "{\"Records\":[", 12) == 0);
        assert_true(obj->json_len >= 14);
        assert_string_equal(obj->json + obj->json_len - 2, "]}");
    }
    for (size_t e = 0; e < ledger->count; e++) {
        const stored_event_t *se = &ledger->events[e];
        size_t total = 0;
        char stamp[16];
        time_t secs = (time_t)(se->window_end_ms / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        strftime(stamp, sizeof stamp, "%Y%m%dT%H%MZ", &tm);
        for (size_t i = 0; i < listing->count; i++) {
            const object_t *obj = &listing->objects[i];
            size_t n = s_count_substrings(obj->json, se->id);
            if (n) {
                assert_string_equal(obj->account, se->account);
                assert_string_equal(obj->region, se->region);
                assert_string_equal(obj->stamp, stamp);
            }
            total += n;
        }
        assert_int_equal(total, 1);
    }
    (void)fx;
}

/* 2 accounts x 2 regions in each of 2 windows. */
static void s_put_two_windows(fixture_t *fx, ledger_t *ledger)
{
    s_put_events(fx, ledger, 8, TEST_T0_MS + 100, 1000, false, NULL);
    s_put_events(fx, ledger, 4, TEST_T0_MS + 700, 1000, false, NULL);
    s_put_events(fx, ledger, 8, TEST_T0_MS + 1300, 1000, false, NULL);
    store_advance_watermark(fx->store, TEST_T0_MS + 2000);
}

static void closed_windows_become_log_files(void **state)
{
    fixture_t *fx = *state;
    ledger_t *ledger = calloc(1, sizeof *ledger);
    s_put_two_windows(fx, ledger);
    fx->delivery = s_start(fx, 1 << 20);
    delivery_stats_t stats = s_wait_for(fx->delivery, 2, 0);
    assert_int_equal(stats.windows_delivered, 2);
    assert_int_equal(stats.events_delivered, 20);
    assert_int_equal(stats.objects_put, 8);
    assert_int_equal(stats.put_errors, 0);
    assert_int_equal(stats.last_window_end_ms, TEST_T0_MS + 2000);
    assert_non_null(strstr(stats.last_key, "AWSLogs/"));

    listing_t *listing = s_list(fx);
    assert_int_equal(listing->count, 8); /* one per account, region and window */
    s_check_bucket(fx, ledger, listing);
    assert_non_null(strstr(listing->objects[0].key, "/2026/11/27/"));
    s_listing_free(&listing);

    store_cursor_t cursor;
    assert_int_equal(store_get_cursor(fx->store, &cursor), 0);
    assert_int_equal(cursor.last_seq, 20);
    assert_int_equal(cursor.window_end_ms, TEST_T0_MS + 2000);
    free(ledger);
}

static void big_groups_are_split_into_parts(void **state)
{
    fixture_t *fx = *state;
    ledger_t *ledger = calloc(1, sizeof *ledger);
    size_t pads[60];
    for (size_t i = 0; i < 60; i++)
        pads[i] = i == 30 ? 3000 : 50; /* one record bigger than a part */
    s_put_events(fx, ledger, 60, TEST_T0_MS + 10, 1000, true, pads);
    s_put_events(fx, ledger, 3, TEST_T0_MS + 20, 1000, false, NULL);
    store_advance_watermark(fx->store, TEST_T0_MS + 1000);
    fx->delivery = s_start(fx, 1000);
    delivery_stats_t stats = s_wait_for(fx->delivery, 1, 0);
    assert_int_equal(stats.windows_delivered, 1);
    assert_int_equal(stats.events_delivered, 63);

    listing_t *listing = s_list(fx);
    s_check_bucket(fx, ledger, listing);
    size_t parts = 0;
    for (size_t i = 0; i < listing->count; i++) {
        const object_t *obj = &listing->objects[i];
        size_t records = s_count_substrings(obj->json, "\"eventID\"");
        assert_true(records >= 1);
        assert_true(obj->json_len <= 1000 || records == 1);
        if (strcmp(obj->account, s_accounts[0]) == 0 && strcmp(obj->region, s_regions[0]) == 0)
            parts++;
    }
    assert_true(parts >= 8); /* 60 records of ~150 bytes, at most ~6 per part */
    assert_int_equal(stats.objects_put, listing->count);
    s_listing_free(&listing);
    free(ledger);
}

static void restart_rewrites_the_same_objects(void **state)
{
    fixture_t *fx = *state;
    ledger_t *ledger = calloc(1, sizeof *ledger);
    s_put_two_windows(fx, ledger);
    fx->delivery = s_start(fx, 300); /* two records per part: several parts */
    delivery_stats_t stats = s_wait_for(fx->delivery, 2, 0);
    assert_int_equal(stats.windows_delivered, 2);
    delivery_destroy(&fx->delivery);
    listing_t *first = s_list(fx);
    assert_true(first->count > 8);

    store_cursor_t none = {0, 0};
    assert_int_equal(store_set_cursor(fx->store, &none), 0);
    fx->delivery = s_start(fx, 300);
    stats = s_wait_for(fx->delivery, 2, 0);
    assert_int_equal(stats.windows_delivered, 2);
    assert_int_equal(stats.objects_put, first->count);
    listing_t *second = s_list(fx);
    assert_int_equal(second->count, first->count);
    for (size_t i = 0; i < first->count; i++) {
        assert_string_equal(second->objects[i].key, first->objects[i].key);
        assert_int_equal(second->objects[i].json_len, first->objects[i].json_len);
        assert_memory_equal(second->objects[i].json, first->objects[i].json,
                            first->objects[i].json_len);
    }
    s_check_bucket(fx, ledger, second);
    s_listing_free(&first);
    s_listing_free(&second);
    free(ledger);
}

static void open_window_waits_for_the_watermark(void **state)
{
    fixture_t *fx = *state;
    ledger_t *ledger = calloc(1, sizeof *ledger);
    s_put_events(fx, ledger, 4, TEST_T0_MS + 100, 1000, false, NULL);
    store_advance_watermark(fx->store, TEST_T0_MS + 999);
    fx->delivery = s_start(fx, 1 << 20);
    s_sleep_ms(200); /* 20 polls: nothing may happen */
    delivery_stats_t stats;
    delivery_get_stats(fx->delivery, &stats);
    assert_int_equal(stats.windows_delivered, 0);
    assert_int_equal(stats.objects_put, 0);

    store_advance_watermark(fx->store, TEST_T0_MS + 1000);
    stats = s_wait_for(fx->delivery, 1, 0);
    assert_int_equal(stats.windows_delivered, 1);
    assert_int_equal(stats.events_delivered, 4);
    listing_t *listing = s_list(fx);
    s_check_bucket(fx, ledger, listing);
    s_listing_free(&listing);
    free(ledger);
}

static void failed_puts_are_retried_without_moving_the_cursor(void **state)
{
    fixture_t *fx = *state;
    ledger_t *ledger = calloc(1, sizeof *ledger);
    s_put_events(fx, ledger, 4, TEST_T0_MS + 100, 1000, false, NULL);
    store_advance_watermark(fx->store, TEST_T0_MS + 1000);
    /* A file where the key's first directory must go: every put fails. */
    char blocker[128];
    snprintf(blocker, sizeof blocker, "%s/AWSLogs", fx->bucket_path);
    assert_int_equal(mkdir(fx->bucket_path, 0755), 0);
    FILE *f = fopen(blocker, "w");
    assert_non_null(f);
    fclose(f);

    fx->delivery = s_start(fx, 1 << 20);
    delivery_stats_t stats = s_wait_for(fx->delivery, 0, 1);
    assert_true(stats.put_errors >= 1);
    assert_int_equal(stats.windows_delivered, 0);
    store_cursor_t cursor;
    assert_int_equal(store_get_cursor(fx->store, &cursor), 0);
    assert_int_equal(cursor.last_seq, 0);

    assert_int_equal(unlink(blocker), 0);
    stats = s_wait_for(fx->delivery, 1, 0);
    assert_int_equal(stats.windows_delivered, 1);
    assert_int_equal(store_get_cursor(fx->store, &cursor), 0);
    assert_int_equal(cursor.last_seq, 4);
    listing_t *listing = s_list(fx);
    assert_int_equal(listing->count, 4);
    s_check_bucket(fx, ledger, listing);
    s_listing_free(&listing);
    free(ledger);
}

static bool s_has_temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    bool has_temp = false;
    struct dirent *entry;
    while (d && (entry = readdir(d)))
        has_temp = has_temp || strstr(entry->d_name, ".tmp-") != NULL;
    if (d)
        closedir(d);
    return has_temp;
}

static void bucket_puts_whole_files(void **state)
{
    fixture_t *fx = *state;
    char err[512];
    char url[128], path[160], text[64];
    err[0] = '\0';
    assert_null(bucket_new("ftp://bucket/prefix", NULL, err, sizeof err));
    assert_non_null(strstr(err, "unsupported bucket URL"));
    assert_non_null(strstr(err, "local directory"));
    assert_null(bucket_new("relative/dir", NULL, err, sizeof err));

    snprintf(url, sizeof url, "file://%s/", fx->bucket_path);
    bucket_t *bucket = bucket_new(url, NULL, err, sizeof err);
    assert_non_null(bucket);
    assert_string_equal(bucket_describe(bucket), fx->bucket_path);
    bucket_destroy(&bucket);
    snprintf(url, sizeof url, "dir://%s", fx->bucket_path);
    bucket = bucket_new(url, NULL, err, sizeof err);
    assert_non_null(bucket);

    assert_int_equal(bucket_put(bucket, "a/b/c.txt", "first", 5, "text/plain", err, sizeof err), 0);
    assert_int_equal(bucket_put(bucket, "a/b/c.txt", "second!", 7, "text/plain", err, sizeof err),
                     0);
    snprintf(path, sizeof path, "%s/a/b/c.txt", fx->bucket_path);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    assert_string_equal(text, "second!");
    snprintf(path, sizeof path, "%s/a/b", fx->bucket_path);
    assert_false(s_has_temp_files(path));
    snprintf(path, sizeof path, "%s/.cairn-tmp", fx->bucket_path);
    assert_false(s_has_temp_files(path)); /* puts write there, then rename */

    /* A put cut short by a crash left a temporary file in .cairn-tmp (never
     * beside the objects): the next bucket_new removes it, unless its
     * process still runs (another aggregator sharing the directory). */
    bucket_destroy(&bucket);
    pid_t dead = 4194303; /* above any pid_max: no such process */
    assert_int_equal(kill(dead, 0), -1);
    char stale[256], live[256];
    snprintf(stale, sizeof stale, "%s/.cairn-tmp/x.json.gz.tmp-%d-7", fx->bucket_path, (int)dead);
    snprintf(live, sizeof live, "%s/.cairn-tmp/y.json.gz.tmp-%d-1", fx->bucket_path,
             (int)getppid());
    fclose(fopen(stale, "w"));
    fclose(fopen(live, "w"));
    bucket = bucket_new(url, NULL, err, sizeof err);
    assert_non_null(bucket);
    assert_int_equal(access(stale, F_OK), -1);
    assert_int_equal(access(live, F_OK), 0);
    assert_int_equal(unlink(live), 0);

    /* What a notification names: the directory, and keys relative to it. */
    assert_string_equal(bucket_name(bucket), fx->bucket_path);
    char key[16];
    assert_int_equal(bucket_object_key(bucket, "a/b/c.txt", path, sizeof path), 0);
    assert_string_equal(path, "a/b/c.txt");
    assert_int_equal(bucket_object_key(bucket, "a/b/c/d/e/f/g/h/i", key, sizeof key), -1);
    snprintf(path, sizeof path, "%s/a/b", fx->bucket_path);

    assert_int_equal(bucket_put(bucket, "../escape", "x", 1, "text/plain", err, sizeof err), -1);
    assert_int_equal(bucket_put(bucket, "a/b/c.txt/d", "x", 1, "text/plain", err, sizeof err), -1);
    assert_non_null(strstr(err, "Not a directory"));
    assert_non_null(strstr(err, fx->bucket_path));
    assert_false(s_has_temp_files(path));

    /* After bucket_cancel every put fails at once. */
    bucket_cancel(bucket);
    bucket_cancel(NULL); /* accepts NULL */
    assert_int_equal(bucket_put(bucket, "a/b/d.txt", "x", 1, "text/plain", err, sizeof err), -1);
    assert_non_null(strstr(err, "cancelled"));
    bucket_destroy(&bucket);
    bucket_destroy(&bucket); /* accepts NULL */
}

static void s_remove_bucket(fixture_t *fx)
{
    nftw(fx->bucket_path, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void s_assert_same_objects(const listing_t *a, const listing_t *b)
{
    assert_int_equal(a->count, b->count);
    for (size_t i = 0; i < a->count; i++) {
        assert_string_equal(a->objects[i].key, b->objects[i].key);
        assert_int_equal(a->objects[i].json_len, b->objects[i].json_len);
        assert_memory_equal(a->objects[i].json, b->objects[i].json, a->objects[i].json_len);
    }
}

/* Where parts are cut, and so every object's name and bytes, depends only on
 * the window's events and the options: not on the buffers a previous window
 * left, nor on how many threads compress. The memory budget (buffer_max)
 * cuts parts early, and that too the same way on every try. */
static void parts_are_cut_the_same_whatever_the_buffers_and_threads(void **state)
{
    fixture_t *fx = *state;
    ledger_t *ledger = calloc(1, sizeof *ledger);
    size_t pads[100];
    for (size_t i = 0; i < 100; i++)
        pads[i] = (i * 37) % 300 + 20;
    s_put_events(fx, ledger, 100, TEST_T0_MS + 100, 1000, false, pads);  /* window A */
    s_put_events(fx, ledger, 100, TEST_T0_MS + 1100, 1000, false, pads); /* window B */
    store_advance_watermark(fx->store, TEST_T0_MS + 2000);

    /* 1: one thread, a budget of 2 parts for 4 groups: A then B. */
    fx->delivery = s_start_with(fx, 1000, 2000, 1);
    delivery_stats_t stats = s_wait_for(fx->delivery, 2, 0);
    assert_int_equal(stats.windows_delivered, 2);
    delivery_destroy(&fx->delivery);
    listing_t *first = s_list(fx);
    s_check_bucket(fx, ledger, first);
    for (size_t i = 0; i < first->count; i++)
        assert_true(first->objects[i].json_len <= 1000);

    /* 2: B alone, by a fresh actor with three threads. */
    s_remove_bucket(fx);
    store_cursor_t after_a = {.last_seq = 100, .window_end_ms = TEST_T0_MS + 1000};
    assert_int_equal(store_set_cursor(fx->store, &after_a), 0);
    fx->delivery = s_start_with(fx, 1000, 2000, 3);
    stats = s_wait_for(fx->delivery, 1, 0);
    assert_int_equal(stats.windows_delivered, 1);
    delivery_destroy(&fx->delivery);
    listing_t *second = s_list(fx);
    size_t b_objects = 0;
    for (size_t i = 0; i < first->count; i++) {
        bool is_b = false;
        for (size_t e = 100; e < 200 && !is_b; e++)
            is_b = strstr(first->objects[i].json, ledger->events[e].id) != NULL;
        if (!is_b)
            continue;
        b_objects++;
        bool is_found = false;
        for (size_t j = 0; j < second->count && !is_found; j++) {
            if (strcmp(second->objects[j].key, first->objects[i].key) != 0)
                continue;
            assert_int_equal(second->objects[j].json_len, first->objects[i].json_len);
            assert_memory_equal(second->objects[j].json, first->objects[i].json,
                                first->objects[i].json_len);
            is_found = true;
        }
        assert_true(is_found);
    }
    assert_int_equal(second->count, b_objects);

    /* 3: both again, two threads: the same as 1. */
    s_remove_bucket(fx);
    store_cursor_t none = {0, 0};
    assert_int_equal(store_set_cursor(fx->store, &none), 0);
    fx->delivery = s_start_with(fx, 1000, 2000, 2);
    stats = s_wait_for(fx->delivery, 2, 0);
    delivery_destroy(&fx->delivery);
    listing_t *third = s_list(fx);
    s_assert_same_objects(first, third);

    /* 4: without the budget, fewer and fuller parts: the budget did cut. */
    s_remove_bucket(fx);
    assert_int_equal(store_set_cursor(fx->store, &none), 0);
    fx->delivery = s_start_with(fx, 1000, 1 << 30, 2);
    stats = s_wait_for(fx->delivery, 2, 0);
    assert_int_equal(stats.windows_delivered, 2);
    listing_t *fourth = s_list(fx);
    s_check_bucket(fx, ledger, fourth);
    assert_true(fourth->count < first->count);

    s_listing_free(&first);
    s_listing_free(&second);
    s_listing_free(&third);
    s_listing_free(&fourth);
    free(ledger);
}

/* A TCP server that reads whatever comes and never answers: an S3 endpoint
 * that hangs. */
typedef struct {
    int listen_fd;
    int port;
    pthread_t thread;
    atomic_bool is_stopping;
    atomic_int bytes_read;
} stall_server_t;

static void *s_stall_run(void *arg)
{
    stall_server_t *server = arg;
    int fds[8];
    int fd_count = 0;
    while (!atomic_load(&server->is_stopping)) {
        struct pollfd p[9] = {{server->listen_fd, POLLIN, 0}};
        for (int i = 0; i < fd_count; i++)
            p[i + 1] = (struct pollfd){fds[i], POLLIN, 0};
        if (poll(p, (nfds_t)fd_count + 1, 50) <= 0)
            continue;
        if ((p[0].revents & POLLIN) && fd_count < 8) {
            int fd = accept(server->listen_fd, NULL, NULL);
            if (fd >= 0)
                fds[fd_count++] = fd;
        }
        for (int i = 0; i < fd_count; i++) {
            char buf[65536];
            ssize_t n = (p[i + 1].revents & POLLIN) ? read(fds[i], buf, sizeof buf) : 0;
            if (n > 0)
                atomic_fetch_add(&server->bytes_read, (int)n);
        }
    }
    for (int i = 0; i < fd_count; i++)
        close(fds[i]);
    return NULL;
}

static void stopping_during_a_put_that_hangs_is_quick(void **state)
{
    fixture_t *fx = *state;
    ledger_t *ledger = calloc(1, sizeof *ledger);
    s_put_events(fx, ledger, 4, TEST_T0_MS + 100, 1000, false, NULL);
    store_advance_watermark(fx->store, TEST_T0_MS + 1000);

    stall_server_t *server = calloc(1, sizeof *server);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t addr_len = sizeof addr;
    server->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(server->listen_fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(listen(server->listen_fd, 8), 0);
    assert_int_equal(getsockname(server->listen_fd, (struct sockaddr *)&addr, &addr_len), 0);
    server->port = ntohs(addr.sin_port);
    assert_int_equal(pthread_create(&server->thread, NULL, s_stall_run, server), 0);

    char endpoint[64], err[512], key[128];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", server->port);
    bucket_options_t options = {.region = "us-east-1",
                                .endpoint = endpoint,
                                .access_key_id = "AKIDEXAMPLE",
                                .secret_access_key = "not-a-secret",
                                .path_style = BUCKET_PATH_STYLE_ON,
                                .timeout_ms = 120000};
    bucket_t *bucket = bucket_new("s3://test-bucket/pre/fix", &options, err, sizeof err);
    assert_non_null(bucket);
    /* What a notification names: the bucket, and keys under its prefix. */
    assert_string_equal(bucket_name(bucket), "test-bucket");
    assert_int_equal(bucket_object_key(bucket, "AWSLogs/x.json.gz", key, sizeof key), 0);
    assert_string_equal(key, "pre/fix/AWSLogs/x.json.gz");

    delivery_options_t delivery_options = {
        .aggregator_id = "agg-test", .interval_ms = 1000, .poll_ms = 10};
    fx->delivery = delivery_new(fx->store, &bucket, &delivery_options);
    assert_non_null(fx->delivery);
    for (int waited = 0; waited < TEST_WAIT_MS && atomic_load(&server->bytes_read) == 0;
         waited += 5)
        s_sleep_ms(5);
    assert_true(atomic_load(&server->bytes_read) > 0); /* a PUT waits for its answer */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    delivery_destroy(&fx->delivery);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int64_t elapsed_ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(elapsed_ms < 2500); /* libcurl's progress callback runs at least once a second */
    store_cursor_t cursor;
    assert_int_equal(store_get_cursor(fx->store, &cursor), 0);
    assert_int_equal(cursor.last_seq, 0);

    atomic_store(&server->is_stopping, true);
    pthread_join(server->thread, NULL);
    close(server->listen_fd);
    free(server);
    free(ledger);
}

int main(void)
{
    cairn_log_level = CAIRN_LOG_WARNING;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(closed_windows_become_log_files, setup, teardown),
        cmocka_unit_test_setup_teardown(big_groups_are_split_into_parts, setup, teardown),
        cmocka_unit_test_setup_teardown(restart_rewrites_the_same_objects, setup, teardown),
        cmocka_unit_test_setup_teardown(open_window_waits_for_the_watermark, setup, teardown),
        cmocka_unit_test_setup_teardown(failed_puts_are_retried_without_moving_the_cursor, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(bucket_puts_whole_files, setup, teardown),
        cmocka_unit_test_setup_teardown(parts_are_cut_the_same_whatever_the_buffers_and_threads,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(stopping_during_a_put_that_hangs_is_quick, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
