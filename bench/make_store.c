/* make_store.c: cairn-make-store, fills an aggregator store with synthetic
 * events for the query benchmark (bench/query_bench.sh).
 *
 *     cairn-make-store --store DIR --events N [--days D] [--batch N] [--map-size BYTES]
 *
 * Events go straight through store_put_batches (the receiver's path: event,
 * eventID and every index entry in one transaction per call), without fsync
 * (is_durable false), in large batches. Their eventTimes spread over the
 * last D days (default 90, CloudTrail's Event history) in rising order with
 * up to 30 s of jitter, so the time index is written mostly in order as in
 * real life. Attribute values are drawn so that each indexed attribute has
 * a realistic number of distinct values, from 2 (readOnly) to 100,000
 * (resource names); the value names are printed at the end, so that the
 * benchmark can ask for values that exist (e.g. --username user-00042).
 * Each record is a ~900-byte CloudTrail JSON object. Deterministic for a
 * given N.
 *
 * With --live it is instead a benchmark of the store's write path as the
 * receiver drives it: eventTimes are "now" (up to 5 s of jitter) and
 * eventIDs random UUIDs, as when agents forward live traffic; with
 * --durable every call fsyncs as in production. It prints the rate of each
 * --report-every events and, at the end, the bytes the process wrote to
 * disk per event (/proc/self/io), the figure that B-tree write
 * amplification shows in. */
#include "cairn_log.h"
#include "cairn_time.h"
#include "store.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_NAMES     200    /* eventName values */
#define S_SOURCES   40     /* eventSource */
#define S_REGIONS   16     /* awsRegion */
#define S_ACCOUNTS  10     /* recipientAccountId */
#define S_USERS     10000  /* userIdentity.userName */
#define S_KEYS      20000  /* accessKeyId */
#define S_TYPES     50     /* resources[].type */
#define S_RESOURCES 100000 /* resources[].ARN */

static const char *const s_regions[S_REGIONS] = {
    "us-east-1",      "us-east-2",      "us-west-1",      "us-west-2",
    "eu-west-1",      "eu-west-2",      "eu-west-3",      "eu-central-1",
    "eu-north-1",     "ap-south-1",     "ap-northeast-1", "ap-northeast-2",
    "ap-southeast-1", "ap-southeast-2", "sa-east-1",      "ca-central-1"};

static uint64_t s_rng = 0x9e3779b97f4a7c15ULL;

static uint64_t s_next(void)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return s_rng;
}

/* Skewed pick in [0, n): a quarter of the picks land on the first 1%. */
static unsigned s_pick(unsigned n)
{
    uint64_t r = s_next();
    if ((r & 3) == 0 && n >= 100)
        return (unsigned)((r >> 8) % (n / 100));
    return (unsigned)((r >> 8) % n);
}

/* The strings of one event. */
typedef struct {
    char id[40], name[32], source[40], account[16], user[24], arn[96], key[24];
    char resource_type[32], resource_arn[64], json[1400];
} s_strings_t;

/* Bytes this process caused to be written to disk so far, or 0. */
static unsigned long long s_write_bytes(void)
{
    unsigned long long bytes = 0;
    char line[128];
    FILE *f = fopen("/proc/self/io", "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "write_bytes: %llu", &bytes) == 1)
            break;
    if (f)
        fclose(f);
    return bytes;
}

static void s_make_event(uint64_t i, int64_t time_ms, bool is_random_id, Cairn__Event *e,
                         Cairn__Resource *res, Cairn__Resource **res_ptr, s_strings_t *s)
{
    unsigned name = s_pick(S_NAMES), source = s_pick(S_SOURCES), region = s_pick(S_REGIONS);
    unsigned account = s_pick(S_ACCOUNTS), user = s_pick(S_USERS), key = s_pick(S_KEYS);
    unsigned type = s_pick(S_TYPES), resource = s_pick(S_RESOURCES);
    bool read_only = s_next() % 10 < 7;
    char when[21];
    if (is_random_id) {
        uint64_t a = s_next(), b = s_next();
        snprintf(s->id, sizeof s->id, "%08llx-%04llx-4%03llx-8%03llx-%012llx",
                 (unsigned long long)(a >> 32), (unsigned long long)(a >> 16 & 0xffff),
                 (unsigned long long)(a & 0xfff), (unsigned long long)(b >> 48 & 0xfff),
                 (unsigned long long)(b & 0xffffffffffffULL));
    } else
        snprintf(s->id, sizeof s->id, "00000000-0000-4000-8000-%012llx", (unsigned long long)i);
    snprintf(s->name, sizeof s->name, "%s%03u", read_only ? "Describe" : "Modify", name);
    snprintf(s->source, sizeof s->source, "service%02u.amazonaws.com", source);
    snprintf(s->account, sizeof s->account, "1000000000%02u", account);
    snprintf(s->user, sizeof s->user, "user-%05u", user);
    snprintf(s->arn, sizeof s->arn, "arn:aws:iam::%s:user/%s", s->account, s->user);
    snprintf(s->key, sizeof s->key, "AKIA%016u", key);
    snprintf(s->resource_type, sizeof s->resource_type, "AWS::Svc%02u::Thing", type);
    snprintf(s->resource_arn, sizeof s->resource_arn, "arn:aws:s3:::bucket-%06u", resource);
    cairn_time_format_iso8601(time_ms, when);
    int n = snprintf(
        s->json, sizeof s->json,
        "{\"eventVersion\":\"1.11\",\"userIdentity\":{\"type\":\"IAMUser\",\"principalId\":"
        "\"AIDA%016u\",\"arn\":\"%s\",\"accountId\":\"%s\",\"accessKeyId\":\"%s\","
        "\"userName\":\"%s\"},\"eventTime\":\"%s\",\"eventSource\":\"%s\",\"eventName\":\"%s\","
        "\"awsRegion\":\"%s\",\"sourceIPAddress\":\"198.51.%u.%u\",\"userAgent\":\"aws-cli/2.15.30 "
        "Python/3.11.8 Linux/6.1.0 exe/x86_64.debian.12\",\"requestParameters\":{\"bucketName\":"
        "\"bucket-%06u\",\"maxKeys\":1000,\"prefix\":\"logs/2025/\"},\"responseElements\":null,"
        "\"requestID\":\"%016llx\",\"eventID\":\"%s\",\"readOnly\":%s,\"resources\":[{\"ARN\":"
        "\"%s\",\"accountId\":\"%s\",\"type\":\"%s\"}],\"eventType\":\"AwsApiCall\","
        "\"managementEvent\":true,\"recipientAccountId\":\"%s\",\"eventCategory\":\"Management\","
        "\"tlsDetails\":{\"tlsVersion\":\"TLSv1.3\",\"cipherSuite\":\"TLS_AES_128_GCM_SHA256\","
        "\"clientProvidedHostHeader\":\"%s\"}}",
        user, s->arn, s->account, s->key, s->user, when, s->source, s->name, s_regions[region],
        (unsigned)(i >> 8 & 255), (unsigned)(i & 255), resource, (unsigned long long)s_next(),
        s->id, read_only ? "true" : "false", s->resource_arn, s->account, s->resource_type,
        s->account, s->source);
    cairn__event__init(e);
    cairn__resource__init(res);
    res->arn = s->resource_arn;
    res->type = s->resource_type;
    res->account_id = s->account;
    *res_ptr = res;
    e->event_id = s->id;
    e->event_time_ms = time_ms;
    e->event_name = s->name;
    e->event_source = s->source;
    e->aws_region = (char *)s_regions[region];
    e->recipient_account_id = s->account;
    e->user_type = "IAMUser";
    e->user_arn = s->arn;
    e->user_name = s->user;
    e->access_key_id = s->key;
    e->read_only = read_only ? CAIRN__READ_ONLY__READ_ONLY_TRUE : CAIRN__READ_ONLY__READ_ONLY_FALSE;
    e->resources = res_ptr;
    e->n_resources = 1;
    e->json.data = (uint8_t *)s->json;
    e->json.len = (size_t)n;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"store", required_argument, NULL, 's'},    {"events", required_argument, NULL, 'n'},
        {"days", required_argument, NULL, 'd'},     {"batch", required_argument, NULL, 'b'},
        {"map-size", required_argument, NULL, 'm'}, {"live", no_argument, NULL, 'l'},
        {"durable", no_argument, NULL, 'D'},        {"report-every", required_argument, NULL, 'r'},
        {NULL, 0, NULL, 0}};
    bool is_live = false, is_durable = false;
    unsigned long long report_every = 1000000;
    const char *dir = NULL;
    unsigned long long count = 1000000, batch_size = 20000, days = 90;
    long long map_bytes = 64LL << 30;
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 's':
            dir = optarg;
            break;
        case 'n':
            count = strtoull(optarg, NULL, 10);
            break;
        case 'd':
            days = strtoull(optarg, NULL, 10);
            break;
        case 'b':
            batch_size = strtoull(optarg, NULL, 10);
            break;
        case 'm':
            map_bytes = strtoll(optarg, NULL, 10);
            break;
        case 'l':
            is_live = true;
            break;
        case 'D':
            is_durable = true;
            break;
        case 'r':
            report_every = strtoull(optarg, NULL, 10);
            break;
        default:
            count = 0;
            break;
        }
    }
    if (!dir || count == 0 || batch_size == 0 || days == 0 || report_every == 0) {
        fprintf(stderr,
                "usage: %s --store DIR --events N [--days D] [--batch N] [--map-size BYTES]\n"
                "       [--live] [--durable] [--report-every N]\n",
                argv[0]);
        return 2;
    }
    cairn_log_set_ident("cairn-make-store");
    store_t *store = store_new(dir, map_bytes, is_durable);
    if (!store)
        return 1;
    Cairn__Event *events = calloc(batch_size, sizeof *events);
    Cairn__Event **ptrs = calloc(batch_size, sizeof *ptrs);
    Cairn__Resource *resources = calloc(batch_size, sizeof *resources);
    Cairn__Resource **resource_ptrs = calloc(batch_size, sizeof *resource_ptrs);
    s_strings_t *strings = calloc(batch_size, sizeof *strings);
    if (!events || !ptrs || !resources || !resource_ptrs || !strings)
        return 1;
    int64_t now_ms = cairn_time_now_ms();
    int64_t span_ms = (int64_t)days * 86400000;
    int64_t start_ms = now_ms - span_ms;
    int64_t t0 = cairn_time_mono_ms(), t_report = t0;
    unsigned long long written0 = s_write_bytes();
    uint64_t first = store_event_count(store);
    int rc = 0;
    for (unsigned long long done = 0; done < count && rc == 0;) {
        size_t n = count - done < batch_size ? (size_t)(count - done) : (size_t)batch_size;
        for (size_t j = 0; j < n; j++) {
            uint64_t i = first + done + j;
            int64_t t = is_live ? cairn_time_now_ms() - (int64_t)(s_next() % 5000)
                                : start_ms + (int64_t)((double)(done + j) / (double)count *
                                                       (double)span_ms) -
                                      (int64_t)(s_next() % 30000); /* not quite in order */
            t -= t % 1000; /* whole seconds, as CloudTrail */
            s_make_event(i, t, is_live, &events[j], &resources[j], &resource_ptrs[j],
                         &strings[j]);
            ptrs[j] = &events[j];
        }
        Cairn__Batch batch = CAIRN__BATCH__INIT;
        batch.agent_id = "bench";
        batch.spool_id = "make-store";
        batch.first_seq = first + done + 1;
        batch.n_events = n;
        batch.events = ptrs;
        const Cairn__Batch *batches[1] = {&batch};
        store_batch_result_t result;
        rc = store_put_batches(store, batches, 1, cairn_time_now_ms(), &result);
        done += n;
        if (done % report_every < n || done == count) {
            int64_t t = cairn_time_mono_ms();
            fprintf(stderr, "cairn-make-store: %llu events, %.1f s (last %llu: %.0f events/s)\n",
                    done, (double)(t - t0) / 1000.0, done % report_every ? done % report_every : report_every,
                    (double)(done % report_every ? done % report_every : report_every) * 1000.0 /
                        (double)(t - t_report > 0 ? t - t_report : 1));
            t_report = t;
        }
    }
    double secs = (double)(cairn_time_mono_ms() - t0) / 1000.0;
    unsigned long long written = s_write_bytes() - written0;
    printf("stored %llu events in %.1f s (%.0f events/s); store now holds %llu; written to disk "
           "%.0f bytes per event\n",
           count, secs, (double)count / secs, (unsigned long long)store_event_count(store),
           (double)written / (double)count);
    printf("values: --event-name Describe000 --username user-00042 --access-key-id "
           "AKIA0000000000000042 --resource-name bucket-000042 --resource-type "
           "AWS::Svc07::Thing --event-source service07.amazonaws.com --region eu-west-1 "
           "--account 100000000003 --read-only false\n");
    store_destroy(&store);
    free(strings);
    free(resource_ptrs);
    free(resources);
    free(ptrs);
    free(events);
    return rc == 0 ? 0 : 1;
}
