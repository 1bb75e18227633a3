/* notify_test.c: the delivery webhook, through notify.h (and, end to end,
 * with the delivery actor, store.h and a directory bucket).
 *
 * The receiver is a tiny HTTP/1.1 server on 127.0.0.1 in a thread of the
 * test: it answers 503 to the first fail_count requests and 200 after that
 * (or, hanging, never answers), closes each connection after one answer,
 * and records what it accepted. Each test gets a fresh temporary directory
 * for the queue (and the store and bucket). Waits are bounded polls. */
#include "bucket.h"
#include "cairn_log.h"
#include "delivery.h"
#include "notify.h"
#include "store.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define TEST_WAIT_MS 15000
#define TEST_T0_MS   1795748400000LL /* 2026-11-27T03:00:00Z */
#define MAX_ACCEPTED 32
#define MAX_BODY     65536
#define MAX_KEYS     64

/* ---- the receiver ---- */

typedef struct {
    int listen_fd;
    int port;
    pthread_t thread;
    atomic_bool is_stopping;
    bool is_hanging;       /* read requests, never answer */
    pthread_mutex_t mutex; /* guards what follows */
    int fail_count;        /* requests still to answer 503 */
    int request_count;     /* requests read */
    int accepted_count;    /* answered 200 */
    char *accepted[MAX_ACCEPTED];
    bool has_auth_header; /* every request had "Authorization: Bearer t0k3n" */
    bool has_json_type;   /* every request had Content-Type: application/json */
} receiver_t;

static int s_read_some(receiver_t *r, int fd, char *buf, size_t cap, size_t *len)
{
    while (!atomic_load(&r->is_stopping)) {
        struct pollfd p = {fd, POLLIN, 0};
        int rc = poll(&p, 1, 50);
        if (rc < 0 && errno != EINTR)
            return -1;
        if (rc <= 0)
            continue;
        ssize_t n = read(fd, buf + *len, cap - *len - 1);
        if (n <= 0)
            return -1;
        *len += (size_t)n;
        buf[*len] = '\0';
        return 0;
    }
    return -1;
}

static void s_serve(receiver_t *r, int fd)
{
    char *buf = calloc(1, MAX_BODY);
    size_t len = 0;
    char *end = NULL;
    if (!buf)
        goto out;
    while (!(end = strstr(buf, "\r\n\r\n")))
        if (len + 1 >= MAX_BODY || s_read_some(r, fd, buf, MAX_BODY, &len) != 0)
            goto out;
    size_t header_len = (size_t)(end - buf) + 4;
    size_t body_len = 0;
    for (char *line = strstr(buf, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n"))
        if (strncasecmp(line + 2, "Content-Length:", 15) == 0)
            body_len = strtoul(line + 17, NULL, 10);
    while (len < header_len + body_len)
        if (len + 1 >= MAX_BODY || s_read_some(r, fd, buf, MAX_BODY, &len) != 0)
            goto out;
    pthread_mutex_lock(&r->mutex);
    r->request_count++;
    bool is_hanging = r->is_hanging;
    bool is_failing = r->fail_count > 0;
    if (is_failing)
        r->fail_count--;
    buf[header_len - 2] = '\0'; /* headers only */
    if (!strstr(buf, "\r\nAuthorization: Bearer t0k3n\r\n"))
        r->has_auth_header = false;
    if (!strstr(buf, "\r\nContent-Type: application/json\r\n"))
        r->has_json_type = false;
    if (!is_hanging && !is_failing && r->accepted_count < MAX_ACCEPTED)
        r->accepted[r->accepted_count++] = strndup(buf + header_len, body_len);
    pthread_mutex_unlock(&r->mutex);
    if (is_hanging) {
        size_t more = 0;
        while (s_read_some(r, fd, buf, MAX_BODY, &more) == 0 && more + 1 < MAX_BODY)
            ; /* until the client gives up or the test ends */
        goto out;
    }
    const char *answer = is_failing ? "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                      "Connection: close\r\n\r\n"
                                    : "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
                                      "Connection: close\r\n\r\n";
    ssize_t n = write(fd, answer, strlen(answer));
    (void)n;
out:
    free(buf);
    close(fd);
}

static void *s_receiver_run(void *arg)
{
    receiver_t *r = arg;
    while (!atomic_load(&r->is_stopping)) {
        struct pollfd p = {r->listen_fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept(r->listen_fd, NULL, NULL);
        if (fd >= 0)
            s_serve(r, fd);
    }
    return NULL;
}

static int s_listen(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t addr_len = sizeof addr;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &addr_len), 0);
    *port = ntohs(addr.sin_port);
    return fd;
}

static receiver_t *s_receiver_start(int fail_count, bool is_hanging)
{
    receiver_t *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->listen_fd = s_listen(&r->port);
    r->fail_count = fail_count;
    r->is_hanging = is_hanging;
    r->has_auth_header = true;
    r->has_json_type = true;
    pthread_mutex_init(&r->mutex, NULL);
    assert_int_equal(pthread_create(&r->thread, NULL, s_receiver_run, r), 0);
    return r;
}

static void s_receiver_stop(receiver_t **r_p)
{
    receiver_t *r = *r_p;
    atomic_store(&r->is_stopping, true);
    pthread_join(r->thread, NULL);
    close(r->listen_fd);
    for (int i = 0; i < r->accepted_count; i++)
        free(r->accepted[i]);
    pthread_mutex_destroy(&r->mutex);
    free(r);
    *r_p = NULL;
}

static int s_accepted_count(receiver_t *r)
{
    pthread_mutex_lock(&r->mutex);
    int n = r->accepted_count;
    pthread_mutex_unlock(&r->mutex);
    return n;
}

static int s_request_count(receiver_t *r)
{
    pthread_mutex_lock(&r->mutex);
    int n = r->request_count;
    pthread_mutex_unlock(&r->mutex);
    return n;
}

/* ---- fixture ---- */

typedef struct {
    char dir[64];
    char queue[96];
    char url[64];
} fixture_t;

static int s_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    strcpy(fx->dir, "/tmp/notify_test.XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    snprintf(fx->queue, sizeof fx->queue, "%s/notify", fx->dir);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    nftw(fx->dir, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

static void s_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Files in the queue directory, temporaries included. */
static int s_queued(const fixture_t *fx)
{
    DIR *d = opendir(fx->queue);
    int count = 0;
    struct dirent *entry;
    while (d && (entry = readdir(d)))
        count += entry->d_name[0] != '.';
    if (d)
        closedir(d);
    return count;
}

static notify_t *s_notify(fixture_t *fx, int port, int64_t timeout_ms)
{
    snprintf(fx->url, sizeof fx->url, "http://127.0.0.1:%d/cloudtrail", port);
    notify_options_t options = {.url = fx->url,
                                .header = "Authorization: Bearer t0k3n",
                                .queue_dir = fx->queue,
                                .timeout_ms = timeout_ms,
                                .retry_first_ms = 50};
    notify_t *notify = notify_new(&options);
    assert_non_null(notify);
    return notify;
}

static bool s_wait_accepted(receiver_t *r, int count)
{
    for (int waited = 0; waited < TEST_WAIT_MS; waited += 5) {
        if (s_accepted_count(r) >= count)
            return true;
        s_sleep_ms(5);
    }
    return false;
}

/* ---- tests ---- */

static void notifications_arrive_despite_failures(void **state)
{
    fixture_t *fx = *state;
    receiver_t *r = s_receiver_start(3, false);
    notify_t *notify = s_notify(fx, r->port, 5000);
    const char *keys1[] = {"AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/27/a.json.gz",
                           "AWSLogs/111122223333/CloudTrail/eu-west-1/2026/11/27/b.json.gz"};
    const char *keys2[] = {"AWSLogs/444455556666/CloudTrail/us-east-1/2026/11/27/c.json.gz"};
    const char *keys3[] = {"weird \"key\"\\with\ttab"};
    assert_int_equal(notify_enqueue(notify, TEST_T0_MS + 300000, "/data/bucket", keys1, 2), 0);
    assert_int_equal(notify_enqueue(notify, TEST_T0_MS + 600000, "/data/bucket", keys2, 1), 0);
    assert_int_equal(notify_enqueue(notify, TEST_T0_MS + 900000, "my-bucket", keys3, 1), 0);
    assert_true(s_wait_accepted(r, 3));

    /* Oldest window first; the first three attempts were refused. */
    assert_string_equal(r->accepted[0],
                        "{\"s3Bucket\":\"/data/bucket\",\"s3ObjectKey\":["
                        "\"AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/27/a.json.gz\","
                        "\"AWSLogs/111122223333/CloudTrail/eu-west-1/2026/11/27/b.json.gz\"]}");
    assert_string_equal(r->accepted[1],
                        "{\"s3Bucket\":\"/data/bucket\",\"s3ObjectKey\":["
                        "\"AWSLogs/444455556666/CloudTrail/us-east-1/2026/11/27/c.json.gz\"]}");
    assert_string_equal(r->accepted[2], "{\"s3Bucket\":\"my-bucket\",\"s3ObjectKey\":["
                                        "\"weird \\\"key\\\"\\\\with\\u0009tab\"]}");
    assert_true(r->has_auth_header);
    assert_true(r->has_json_type);
    assert_int_equal(s_request_count(r), 6);

    notify_stats_t stats;
    for (int waited = 0; waited < TEST_WAIT_MS; waited += 5) {
        notify_get_stats(notify, &stats);
        if (stats.sent_count == 3 && stats.pending_count == 0)
            break;
        s_sleep_ms(5);
    }
    assert_int_equal(stats.sent_count, 3);
    assert_int_equal(stats.failure_count, 3);
    assert_int_equal(stats.pending_count, 0);
    assert_true(stats.last_sent_ms > 0);
    assert_int_equal(s_queued(fx), 0);
    notify_destroy(&notify);
    notify_destroy(&notify); /* accepts NULL */
    s_receiver_stop(&r);
}

static void queued_notifications_survive_a_restart(void **state)
{
    fixture_t *fx = *state;
    int port;
    int fd = s_listen(&port);
    close(fd); /* nothing listens there now: every POST fails */
    notify_t *notify = s_notify(fx, port, 5000);
    const char *keys[] = {"AWSLogs/1/a.json.gz"};
    const char *keys_again[] = {"AWSLogs/1/a.json.gz", "AWSLogs/1/b.json.gz"};
    assert_int_equal(notify_enqueue(notify, TEST_T0_MS + 300000, "b", keys, 1), 0);
    assert_int_equal(notify_enqueue(notify, TEST_T0_MS + 600000, "b", keys, 1), 0);
    /* The same window queued again replaces its notification. */
    assert_int_equal(notify_enqueue(notify, TEST_T0_MS + 600000, "b", keys_again, 2), 0);
    notify_stats_t stats = {0};
    for (int waited = 0; waited < TEST_WAIT_MS && stats.failure_count < 2; waited += 5) {
        s_sleep_ms(5);
        notify_get_stats(notify, &stats);
    }
    assert_true(stats.failure_count >= 2);
    assert_int_equal(stats.sent_count, 0);
    notify_destroy(&notify);
    assert_int_equal(s_queued(fx), 2);

    receiver_t *r = s_receiver_start(0, false);
    notify = s_notify(fx, r->port, 5000);
    assert_true(s_wait_accepted(r, 2));
    assert_string_equal(r->accepted[0], "{\"s3Bucket\":\"b\",\"s3ObjectKey\":["
                                        "\"AWSLogs/1/a.json.gz\"]}");
    assert_string_equal(r->accepted[1], "{\"s3Bucket\":\"b\",\"s3ObjectKey\":["
                                        "\"AWSLogs/1/a.json.gz\",\"AWSLogs/1/b.json.gz\"]}");
    notify_destroy(&notify);
    assert_int_equal(s_queued(fx), 0);
    assert_int_equal(s_accepted_count(r), 2);
    s_receiver_stop(&r);
}

static void destroy_aborts_a_post_that_hangs(void **state)
{
    fixture_t *fx = *state;
    receiver_t *r = s_receiver_start(0, true);
    notify_t *notify = s_notify(fx, r->port, 60000);
    const char *keys[] = {"AWSLogs/1/a.json.gz"};
    assert_int_equal(notify_enqueue(notify, TEST_T0_MS + 300000, "b", keys, 1), 0);
    for (int waited = 0; waited < TEST_WAIT_MS && s_request_count(r) == 0; waited += 5)
        s_sleep_ms(5);
    assert_int_equal(s_request_count(r), 1); /* the POST is waiting for its answer */
    int64_t start = s_now_ms();
    notify_destroy(&notify);
    assert_true(s_now_ms() - start < 2500);
    assert_int_equal(s_queued(fx), 1); /* still to send */
    s_receiver_stop(&r);
}

static void bad_options_are_refused(void **state)
{
    fixture_t *fx = *state;
    notify_options_t options = {.url = "ftp://127.0.0.1/x", .queue_dir = fx->queue};
    assert_null(notify_new(&options));
    options.url = "http://127.0.0.1:9/x";
    options.header = "no colon here";
    assert_null(notify_new(&options));
    options.header = "X-Injected: a\r\nX-Other: b";
    assert_null(notify_new(&options));
    options.header = NULL;
    options.queue_dir = NULL;
    assert_null(notify_new(&options));
}

/* ---- with the delivery actor ---- */

/* Stores count events in the window starting at window_start_ms. */
static void s_put_window(store_t *store, uint64_t *agent_seq, int64_t window_start_ms, int count)
{
    static const char *const accounts[] = {"111122223333", "444455556666"};
    Cairn__Batch batch = CAIRN__BATCH__INIT;
    Cairn__Event events[8];
    Cairn__Event *event_ptrs[8];
    char ids[8][40], jsons[8][512];
    assert_true(count <= 8);
    batch.agent_id = "agent-1";
    batch.first_seq = *agent_seq + 1;
    batch.n_events = (size_t)count;
    batch.events = event_ptrs;
    for (int i = 0; i < count; i++) {
        snprintf(ids[i], sizeof ids[i], "00000000-1111-4222-8333-%012llx",
                 (unsigned long long)(*agent_seq + 1 + (uint64_t)i));
        snprintf(jsons[i], sizeof jsons[i],
                 "{\"eventID\":\"%s\",\"awsRegion\":\"us-east-1\",\"recipientAccountId\":\"%s\"}",
                 ids[i], accounts[i % 2]);
        cairn__event__init(&events[i]);
        events[i].event_id = ids[i];
        events[i].aws_region = "us-east-1";
        events[i].recipient_account_id = (char *)accounts[i % 2];
        events[i].json.data = (uint8_t *)jsons[i];
        events[i].json.len = strlen(jsons[i]);
        event_ptrs[i] = &events[i];
    }
    *agent_seq += (uint64_t)count;
    const Cairn__Batch *batches[1] = {&batch};
    store_batch_result_t result;
    assert_int_equal(store_put_batches(store, batches, 1, window_start_ms + 10, &result), 0);
}

typedef struct {
    char keys[MAX_KEYS][512];
    int count;
    const char *root;
} key_list_t;

static key_list_t *s_key_list;

static int s_on_file(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    if (flag == FTW_F && s_key_list->count < MAX_KEYS)
        snprintf(s_key_list->keys[s_key_list->count++], 512, "%s",
                 path + strlen(s_key_list->root) + 1);
    return 0;
}

static int s_compare_keys(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void delivery_goes_on_while_the_receiver_fails(void **state)
{
    fixture_t *fx = *state;
    char store_dir[128], bucket_dir[128], err[256];
    snprintf(store_dir, sizeof store_dir, "%s/store", fx->dir);
    snprintf(bucket_dir, sizeof bucket_dir, "%s/bucket", fx->dir);
    store_t *store = store_new(store_dir, 64 << 20, false);
    assert_non_null(store);
    uint64_t agent_seq = 0;
    for (int w = 0; w < 3; w++)
        s_put_window(store, &agent_seq, TEST_T0_MS + w * 1000, 4);
    store_advance_watermark(store, TEST_T0_MS + 3000);

    /* 6 refusals with a backoff from 50 ms doubling: about 3 s of failures. */
    receiver_t *r = s_receiver_start(6, false);
    notify_t *notify = s_notify(fx, r->port, 5000);
    bucket_t *bucket = bucket_new(bucket_dir, NULL, err, sizeof err);
    assert_non_null(bucket);
    delivery_options_t options = {
        .aggregator_id = "agg-test", .interval_ms = 1000, .poll_ms = 10, .notify = notify};
    delivery_t *delivery = delivery_new(store, &bucket, &options);
    assert_non_null(delivery);
    delivery_stats_t stats = {0};
    for (int waited = 0; waited < TEST_WAIT_MS && stats.windows_delivered < 3; waited += 5) {
        s_sleep_ms(5);
        delivery_get_stats(delivery, &stats);
    }
    assert_int_equal(stats.windows_delivered, 3);
    assert_int_equal(stats.objects_put, 6);
    /* All delivered while the receiver was still refusing. */
    assert_true(s_accepted_count(r) < 3);
    assert_true(s_wait_accepted(r, 3));

    /* Each window's notification lists exactly that window's objects. */
    key_list_t *files = calloc(1, sizeof *files);
    assert_non_null(files);
    files->root = bucket_dir;
    s_key_list = files;
    assert_int_equal(nftw(bucket_dir, s_on_file, 16, FTW_PHYS), 0);
    assert_int_equal(files->count, 6);
    qsort(files->keys, (size_t)files->count, sizeof files->keys[0], s_compare_keys);
    for (int w = 0; w < 3; w++) {
        char stamp[32], expected[2048];
        time_t secs = (time_t)((TEST_T0_MS + (w + 1) * 1000) / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        strftime(stamp, sizeof stamp, "%Y%m%dT%H%MZ", &tm);
        int n = snprintf(expected, sizeof expected, "{\"s3Bucket\":\"%s\",\"s3ObjectKey\":[",
                         bucket_dir);
        int listed = 0;
        /* Windows 1 s apart share a minute stamp: tell them apart by content. */
        for (int i = 0; i < files->count; i++) {
            if (!strstr(r->accepted[w], files->keys[i]))
                continue;
            assert_non_null(strstr(files->keys[i], stamp));
            n += snprintf(expected + n, sizeof expected - (size_t)n, "%s\"%s\"", listed ? "," : "",
                          files->keys[i]);
            listed++;
        }
        snprintf(expected + n, sizeof expected - (size_t)n, "]}");
        assert_int_equal(listed, 2); /* two accounts */
        assert_string_equal(r->accepted[w], expected);
    }
    /* Every object was listed once. */
    for (int i = 0; i < files->count; i++) {
        int seen = 0;
        for (int w = 0; w < 3; w++)
            seen += strstr(r->accepted[w], files->keys[i]) != NULL;
        assert_int_equal(seen, 1);
    }
    free(files);
    delivery_destroy(&delivery);
    notify_destroy(&notify);
    store_destroy(&store);
    s_receiver_stop(&r);
}

int main(void)
{
    cairn_log_level = CAIRN_LOG_ERROR;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(notifications_arrive_despite_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(queued_notifications_survive_a_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(destroy_aborts_a_post_that_hangs, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_options_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(delivery_goes_on_while_the_receiver_fails, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
