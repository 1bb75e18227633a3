/* cairn-delivery-bench: how fast the delivery actor turns one big window into
 * log files, and how much it slows ingest meanwhile (issue 5, "Speed").
 *
 * DESIGN: one process, no network. Sample records (JSON lines, e.g. written
 * by `cairn-loadgen --write-file`, one file per region) are parsed once;
 * every stored event is a sample with a fresh eventID (patched into its JSON
 * too, same length), so the store holds N distinct, realistic records. Then:
 *   1. fill: N events into one five-minute window W with store_put_batches
 *      (is_durable false), 1000 events per call;
 *   2. delivery alone: the delivery actor with a directory bucket, timed
 *      from delivery_new until W's cursor moved; then W again (cursor set
 *      back to 0), stopped half way: how long delivery_destroy takes;
 *   3. ingest: store_put_batches in a loop on this thread (the receiver's
 *      path after decoding), into the next window, which stays open: a
 *      warm-up, then --rounds times "alone for --ingest-seconds, then while
 *      W is delivered again" (cursor set back to 0: same names, same
 *      content), then alone once more. A round compares the ingest rate
 *      during its whole delivery with the mean of the two alone phases
 *      around it (ingest slows as the store grows, and the first writes
 *      into a fresh file cost more than later ones).
 * Each phase's ingest rate is also given per CPU second of this thread: on
 * a machine that other work keeps busy, wall-clock rates mostly measure the
 * CPU share this thread got, the per-CPU rate what delivery cost it besides.
 * The store and the page cache are written out (sync) before each timed
 * delivery. Prints a table and, last, one JSON line.
 *
 * THREADS: this thread is the store's writer; the actor reads the store and
 * writes the cursor, as in the aggregator. */
#include "bucket.h"
#include "cairn_log.h"
#include "cairn_mem.h"
#include "cairn_time.h"
#include "delivery.h"
#include "event.h"
#include "store.h"

#include <czmq.h>
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BENCH_T0_MS        1795748400000LL /* 2026-11-27T03:00:00Z, window aligned */
#define BENCH_INTERVAL_MS  300000
#define BENCH_MAX_SAMPLES  16
#define BENCH_CALL_EVENTS  1000 /* events per store_put_batches call */
#define BENCH_BATCH_EVENTS 250  /* events per batch: 4 batches per call */
#define BENCH_ID_LEN       36
#define BENCH_WAIT_MAX_S   900 /* give a delivery up after this long */
#define BENCH_MAX_ROUNDS   10

typedef struct {
    Cairn__Event *event; /* owned (unpacked copy) */
    size_t id_at;        /* offset of the eventID value in event->json */
} s_sample_t;

typedef struct {
    s_sample_t *samples;
    size_t count;
    size_t cap;
    /* One call's worth of events, reused. */
    Cairn__Event events[BENCH_CALL_EVENTS];
    Cairn__Event *event_ptrs[BENCH_CALL_EVENTS];
    char ids[BENCH_CALL_EVENTS][BENCH_ID_LEN + 1];
    uint8_t *json[BENCH_CALL_EVENTS];
    size_t json_cap[BENCH_CALL_EVENTS];
    Cairn__Batch batches[BENCH_CALL_EVENTS / BENCH_BATCH_EVENTS];
    uint64_t next_event; /* events made so far: picks the sample and the id */
    uint64_t agent_seq;  /* last agent seq sent */
    uint64_t json_bytes; /* of the events made */
} s_bench_t;

static double s_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds of the process (RUSAGE_SELF) or of this thread (RUSAGE_THREAD). */
static double s_cpu_s(int who)
{
    struct rusage ru;
    getrusage(who, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void s_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int s_load_samples(s_bench_t *b, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "delivery-bench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    event_defaults_t defaults = {.region = "us-east-1", .account_id = "111122223333"};
    event_parser_t *parser = event_parser_new(&defaults);
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t len;
    size_t skipped = 0;
    while ((len = getline(&line, &line_cap, f)) > 0) {
        Cairn__Event parsed;
        char err[256];
        if (line[len - 1] == '\n')
            len--;
        if (event_parser_parse(parser, line, (size_t)len, &parsed, err, sizeof err) != 0 ||
            strlen(parsed.event_id) != BENCH_ID_LEN) {
            skipped++;
            continue;
        }
        size_t packed_len = cairn__event__get_packed_size(&parsed);
        uint8_t *packed = cairn_malloc(packed_len);
        cairn__event__pack(&parsed, packed);
        Cairn__Event *event = cairn__event__unpack(NULL, packed_len, packed);
        free(packed);
        const char needle[] = "\"eventID\":\"";
        const uint8_t *at = memmem(event->json.data, event->json.len, needle, sizeof needle - 1);
        if (!at ||
            (size_t)(at - event->json.data) + sizeof needle - 1 + BENCH_ID_LEN > event->json.len) {
            cairn__event__free_unpacked(event, NULL);
            skipped++;
            continue;
        }
        if (b->count == b->cap) {
            b->cap = b->cap ? 2 * b->cap : 4096;
            b->samples = cairn_realloc(b->samples, b->cap * sizeof *b->samples);
        }
        b->samples[b->count++] =
            (s_sample_t){event, (size_t)(at - event->json.data) + sizeof needle - 1};
    }
    free(line);
    fclose(f);
    event_parser_destroy(&parser);
    if (skipped)
        fprintf(stderr, "delivery-bench: %s: %zu lines skipped\n", path, skipped);
    return 0;
}

/* Interleaves the samples of the files so that consecutive events cycle
 * through the regions, as several agents' batches do. */
static void s_interleave(s_bench_t *b, const size_t *file_ends, size_t file_count)
{
    s_sample_t *out = cairn_malloc(b->count * sizeof *out);
    size_t starts[BENCH_MAX_SAMPLES], n = 0;
    for (size_t f = 0; f < file_count; f++)
        starts[f] = f ? file_ends[f - 1] : 0;
    while (n < b->count)
        for (size_t f = 0; f < file_count; f++)
            if (starts[f] < file_ends[f])
                out[n++] = b->samples[starts[f]++];
    free(b->samples);
    b->samples = out;
}

/* Stores one call of BENCH_CALL_EVENTS new events at now_ms. */
static int s_put_call(s_bench_t *b, store_t *store, int64_t now_ms)
{
    for (size_t i = 0; i < BENCH_CALL_EVENTS; i++) {
        uint64_t k = b->next_event++;
        const s_sample_t *sample = &b->samples[k % b->count];
        Cairn__Event *event = &b->events[i];
        *event = *sample->event;
        snprintf(b->ids[i], sizeof b->ids[i], "%08llx-%04x-4%03x-8%03x-%012llx",
                 (unsigned long long)(k >> 16) & 0xffffffffULL, (unsigned)(k & 0xffff), 0xbe, 0x7c,
                 (unsigned long long)(k * 0x9e3779b97f4aULL) & 0xffffffffffffULL);
        event->event_id = b->ids[i];
        size_t len = sample->event->json.len;
        if (b->json_cap[i] < len) {
            b->json[i] = cairn_realloc(b->json[i], len);
            b->json_cap[i] = len;
        }
        memcpy(b->json[i], sample->event->json.data, len);
        memcpy(b->json[i] + sample->id_at, b->ids[i], BENCH_ID_LEN);
        event->json.data = b->json[i];
        event->json.len = len;
        b->event_ptrs[i] = event;
        b->json_bytes += len;
    }
    const Cairn__Batch *batches[BENCH_CALL_EVENTS / BENCH_BATCH_EVENTS];
    store_batch_result_t results[BENCH_CALL_EVENTS / BENCH_BATCH_EVENTS];
    for (size_t j = 0; j < BENCH_CALL_EVENTS / BENCH_BATCH_EVENTS; j++) {
        Cairn__Batch *batch = &b->batches[j];
        cairn__batch__init(batch);
        batch->agent_id = "bench-agent";
        batch->spool_id = "bench-spool";
        batch->region = "us-east-1";
        batch->first_seq = b->agent_seq + 1;
        batch->n_events = BENCH_BATCH_EVENTS;
        batch->events = &b->event_ptrs[j * BENCH_BATCH_EVENTS];
        b->agent_seq += BENCH_BATCH_EVENTS;
        batches[j] = batch;
    }
    int rc =
        store_put_batches(store, batches, BENCH_CALL_EVENTS / BENCH_BATCH_EVENTS, now_ms, results);
    if (rc != 0)
        fprintf(stderr, "delivery-bench: store_put_batches failed (%d)\n", rc);
    return rc;
}

/* Ingests into the window after W (which stays open) for seconds, or with
 * a delivery until it delivered a window. Returns events per second;
 * *cpu_rate_out is events per CPU second of this thread. */
static double s_ingest(s_bench_t *b, store_t *store, double seconds, delivery_t *delivery,
                       double *cpu_rate_out)
{
    double start = s_now_s(), now = start;
    double cpu_start = s_cpu_s(RUSAGE_THREAD);
    uint64_t events = 0;
    int64_t now_ms = BENCH_T0_MS + BENCH_INTERVAL_MS + 1;
    while (true) {
        if (s_put_call(b, store, now_ms) != 0)
            exit(1);
        events += BENCH_CALL_EVENTS;
        now = s_now_s();
        if (delivery) {
            delivery_stats_t stats;
            delivery_get_stats(delivery, &stats);
            if (stats.windows_delivered >= 1 || now - start > BENCH_WAIT_MAX_S)
                break;
        } else if (now - start >= seconds)
            break;
    }
    *cpu_rate_out = (double)events / (s_cpu_s(RUSAGE_THREAD) - cpu_start);
    return (double)events / (now - start);
}

static delivery_t *s_start_delivery(store_t *store, const char *bucket_dir,
                                    const delivery_options_t *options)
{
    char err[512];
    bucket_t *bucket = bucket_new(bucket_dir, NULL, err, sizeof err);
    if (!bucket) {
        fprintf(stderr, "delivery-bench: bucket %s: %s\n", bucket_dir, err);
        exit(1);
    }
    delivery_t *delivery = delivery_new(store, &bucket, options);
    if (!delivery)
        exit(1);
    return delivery;
}

/* Anonymous memory of the process (kB), from /proc: the store's pages,
 * being a mapped file, do not count. */
static long s_rss_anon_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "RssAnon:", 8) == 0)
            kb = atol(line + 8);
    if (f)
        fclose(f);
    return kb;
}

/* Waits until the actor delivered a window. Returns seconds since start;
 * *peak_kb is the highest anonymous memory seen meanwhile (every 20 ms). */
static double s_wait_delivered(delivery_t *delivery, double start, long *peak_kb)
{
    delivery_stats_t stats;
    *peak_kb = 0;
    for (int i = 0; i < BENCH_WAIT_MAX_S * 1000; i++) {
        delivery_get_stats(delivery, &stats);
        if (stats.windows_delivered >= 1)
            break;
        if (i % 20 == 0) {
            long kb = s_rss_anon_kb();
            *peak_kb = kb > *peak_kb ? kb : *peak_kb;
        }
        s_sleep_ms(1);
    }
    return s_now_s() - start;
}

static uint64_t s_bucket_bytes;
static uint64_t s_bucket_files;

static int s_on_file(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (flag == FTW_F) {
        s_bucket_bytes += (uint64_t)st->st_size;
        s_bucket_files++;
    }
    return 0;
}

static void s_usage(FILE *out)
{
    fprintf(out,
            "Usage: cairn-delivery-bench --dir DIR --sample FILE [--sample FILE ...] [options]\n"
            "\n"
            "Fills a fresh store in DIR/store with one five-minute window of realistic\n"
            "events (samples: JSON lines, e.g. cairn-loadgen --write-file, one file per\n"
            "region; each event gets a fresh eventID), then times its delivery to the\n"
            "directory DIR/bucket alone and while this thread ingests flat out, and the\n"
            "ingest rate without delivery before and after. Prints one JSON line last.\n"
            "\n"
            "Options:\n"
            "  -d, --dir DIR             work directory (must not hold a store yet)\n"
            "  -s, --sample FILE         JSON-lines records (repeat, up to 16)\n"
            "  -n, --events N            events in the window (default 1000000)\n"
            "  -i, --ingest-seconds S    each ingest-alone phase (default 5; 0: no\n"
            "                            ingest phases)\n"
            "  -g, --gzip-level L        libdeflate level (default: delivery's)\n"
            "  -p, --part-max-bytes N    uncompressed bytes per object (default: delivery's)\n"
            "  -m, --map-gib N           store map size in GiB (default 32)\n"
            "  -b, --bucket DIR          bucket directory (default DIR/bucket)\n"
            "  -r, --rounds N            deliveries under ingest, 1..10 (default 2)\n"
            "  -t, --gzip-threads N      delivery's gzip threads (default: delivery's)\n"
            "  -h, --help\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"dir", required_argument, NULL, 'd'},
                                             {"sample", required_argument, NULL, 's'},
                                             {"events", required_argument, NULL, 'n'},
                                             {"ingest-seconds", required_argument, NULL, 'i'},
                                             {"gzip-level", required_argument, NULL, 'g'},
                                             {"part-max-bytes", required_argument, NULL, 'p'},
                                             {"map-gib", required_argument, NULL, 'm'},
                                             {"gzip-threads", required_argument, NULL, 't'},
                                             {"bucket", required_argument, NULL, 'b'},
                                             {"rounds", required_argument, NULL, 'r'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *dir = NULL;
    const char *bucket_arg = NULL;
    const char *sample_paths[BENCH_MAX_SAMPLES];
    size_t sample_path_count = 0;
    uint64_t event_count = 1000000;
    double ingest_s = 5;
    int rounds = 2;
    int64_t map_gib = 32;
    delivery_options_t options = {
        .aggregator_id = "bench", .interval_ms = BENCH_INTERVAL_MS, .poll_ms = 10};
    int opt;
    while ((opt = getopt_long(argc, argv, "d:s:n:i:g:p:m:b:r:t:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd':
            dir = optarg;
            break;
        case 's':
            if (sample_path_count == BENCH_MAX_SAMPLES) {
                fprintf(stderr, "delivery-bench: at most %d sample files\n", BENCH_MAX_SAMPLES);
                return 2;
            }
            sample_paths[sample_path_count++] = optarg;
            break;
        case 'n':
            event_count = strtoull(optarg, NULL, 10);
            break;
        case 'i':
            ingest_s = strtod(optarg, NULL);
            break;
        case 'g':
            options.gzip_level = atoi(optarg);
            break;
        case 'p':
            options.part_max_bytes = strtoull(optarg, NULL, 10);
            break;
        case 'm':
            map_gib = atoll(optarg);
            break;
        case 'b':
            bucket_arg = optarg;
            break;
        case 'r':
            rounds = atoi(optarg);
            break;
        case 't':
            options.gzip_threads = atoi(optarg);
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        default:
            s_usage(stderr);
            return 2;
        }
    }
    if (!dir || sample_path_count == 0 || event_count < BENCH_CALL_EVENTS || optind != argc ||
        rounds < 1 || rounds > BENCH_MAX_ROUNDS) {
        s_usage(stderr);
        return 2;
    }
    event_count -= event_count % BENCH_CALL_EVENTS;
    cairn_log_level = CAIRN_LOG_NOTICE;
    zsys_init();
    zsys_set_logsystem(false);

    s_bench_t *b = cairn_calloc(1, sizeof *b);
    size_t file_ends[BENCH_MAX_SAMPLES];
    for (size_t f = 0; f < sample_path_count; f++) {
        if (s_load_samples(b, sample_paths[f]) != 0)
            return 1;
        file_ends[f] = b->count;
    }
    if (b->count == 0) {
        fprintf(stderr, "delivery-bench: no usable sample records\n");
        return 1;
    }
    s_interleave(b, file_ends, sample_path_count);

    char store_dir[4096], bucket_dir[4096];
    snprintf(store_dir, sizeof store_dir, "%s/store", dir);
    snprintf(bucket_dir, sizeof bucket_dir, "%s", bucket_arg ? bucket_arg : "");
    if (!bucket_arg)
        snprintf(bucket_dir, sizeof bucket_dir, "%s/bucket", dir);
    store_t *store = store_new(store_dir, map_gib << 30, false);
    if (!store)
        return 1;
    if (store_event_count(store) != 0) {
        fprintf(stderr, "delivery-bench: %s is not empty\n", store_dir);
        return 1;
    }

    FILE *loadavg = fopen("/proc/loadavg", "r");
    char load[64] = "?";
    if (loadavg && fgets(load, sizeof load, loadavg))
        load[strcspn(load, "\n")] = '\0';
    if (loadavg)
        fclose(loadavg);
    printf("machine:             %ld CPUs, load average %s (other work skews the figures)\n",
           sysconf(_SC_NPROCESSORS_ONLN), load);

    /* 1. fill window W */
    double t = s_now_s();
    for (uint64_t i = 0; i < event_count; i += BENCH_CALL_EVENTS)
        if (s_put_call(b, store, BENCH_T0_MS + (int64_t)(i * 200000 / event_count)) != 0)
            return 1;
    double fill_s = s_now_s() - t;
    uint64_t window_json_bytes = b->json_bytes;
    store_advance_watermark(store, BENCH_T0_MS + BENCH_INTERVAL_MS);
    /* The store is not durable (no fsync per commit): write it out now, as a
     * durable aggregator's store would be, so that the kernel's writeback
     * of it does not compete with the bucket's writes in the timings. */
    sync();
    printf("fill:                %llu events, %.1f MB JSON in %.2f s (%.0f events/s)\n",
           (unsigned long long)event_count, (double)window_json_bytes / 1e6, fill_s,
           (double)event_count / fill_s);
    fflush(stdout);

    /* 2. delivery alone */
    double cpu0 = s_cpu_s(RUSAGE_SELF);
    long base_kb = s_rss_anon_kb(), peak_kb;
    t = s_now_s();
    delivery_t *delivery = s_start_delivery(store, bucket_dir, &options);
    double deliver_s = s_wait_delivered(delivery, t, &peak_kb);
    double deliver_cpu_s = s_cpu_s(RUSAGE_SELF) - cpu0;
    delivery_stats_t stats;
    delivery_get_stats(delivery, &stats);
    delivery_destroy(&delivery);
    nftw(bucket_dir, s_on_file, 16, FTW_PHYS);
    printf("delivery alone:      %.2f s, %.1f MB/s of JSON, %llu objects, %.1f MB gzip "
           "(ratio %.1f), %.2f s CPU, +%ld MB of memory at most\n",
           deliver_s, (double)window_json_bytes / 1e6 / deliver_s,
           (unsigned long long)stats.objects_put, (double)s_bucket_bytes / 1e6,
           (double)window_json_bytes / (double)(s_bucket_bytes ? s_bucket_bytes : 1), deliver_cpu_s,
           (peak_kb - base_kb) / 1024);
    fflush(stdout);
    if (stats.windows_delivered != 1 || stats.events_delivered != event_count) {
        fprintf(stderr, "delivery-bench: delivered %llu windows, %llu events (want 1, %llu)\n",
                (unsigned long long)stats.windows_delivered,
                (unsigned long long)stats.events_delivered, (unsigned long long)event_count);
        return 1;
    }

    /* Stopping in the middle of W: how long delivery_destroy takes. */
    store_cursor_t none = {0, 0};
    if (store_set_cursor(store, &none) != 0)
        return 1;
    delivery = s_start_delivery(store, bucket_dir, &options);
    s_sleep_ms((int)(deliver_s * 500)); /* half way */
    t = s_now_s();
    delivery_destroy(&delivery);
    double stop_s = s_now_s() - t;
    store_cursor_t cursor;
    if (store_get_cursor(store, &cursor) != 0)
        return 1;
    printf("stop half way:       delivery_destroy took %.0f ms (cursor %s)\n", stop_s * 1000,
           cursor.last_seq == 0 ? "not moved" : "MOVED");
    fflush(stdout);

    /* 3. ingest: warm-up, then rounds of alone / during a delivery of W, alone */
    double alone[BENCH_MAX_ROUNDS + 1], alone_cpu[BENCH_MAX_ROUNDS + 1];
    double during[BENCH_MAX_ROUNDS], during_cpu[BENCH_MAX_ROUNDS], busy_s[BENCH_MAX_ROUNDS];
    double ratio_sum = 0, cpu_ratio_sum = 0, alone_sum = 0, during_sum = 0, busy_sum = 0;
    if (ingest_s > 0) {
        double unused;
        double warm = s_ingest(b, store, ingest_s, NULL, &unused);
        printf("ingest warm-up:      %.0f events/s\n", warm);
        for (int r = 0; r <= rounds; r++) {
            alone[r] = s_ingest(b, store, ingest_s, NULL, &alone_cpu[r]);
            printf("ingest alone:        %.0f events/s (%.0f per CPU second)\n", alone[r],
                   alone_cpu[r]);
            alone_sum += alone[r];
            if (r == rounds)
                break;
            if (store_set_cursor(store, &none) != 0)
                return 1;
            sync();
            t = s_now_s();
            delivery = s_start_delivery(store, bucket_dir, &options);
            during[r] = s_ingest(b, store, 0, delivery, &during_cpu[r]);
            busy_s[r] = s_now_s() - t;
            delivery_get_stats(delivery, &stats);
            delivery_destroy(&delivery);
            printf("delivery + ingest:   %.2f s (%llu objects); ingest meanwhile %.0f events/s "
                   "(%.0f per CPU second)\n",
                   busy_s[r], (unsigned long long)stats.objects_put, during[r], during_cpu[r]);
            during_sum += during[r];
            busy_sum += busy_s[r];
        }
        for (int r = 0; r < rounds; r++) {
            ratio_sum += during[r] / ((alone[r] + alone[r + 1]) / 2);
            cpu_ratio_sum += during_cpu[r] / ((alone_cpu[r] + alone_cpu[r + 1]) / 2);
        }
        printf("ingest during delivery / alone (mean of the phases around it, over %d "
               "rounds): %.0f %% (per CPU second: %.0f %%)\n",
               rounds, 100 * ratio_sum / rounds, 100 * cpu_ratio_sum / rounds);
    }
    printf("{\"events\":%llu,\"json_bytes\":%llu,\"gzip_bytes\":%llu,\"objects\":%llu,"
           "\"deliver_s\":%.3f,\"deliver_mb_s\":%.1f,\"deliver_cpu_s\":%.2f,"
           "\"deliver_with_ingest_s\":%.3f,\"stop_ms\":%.0f,\"ingest_alone\":%.0f,"
           "\"ingest_during_delivery\":%.0f,\"ingest_ratio\":%.3f,\"ingest_cpu_ratio\":%.3f}\n",
           (unsigned long long)event_count, (unsigned long long)window_json_bytes,
           (unsigned long long)s_bucket_bytes, (unsigned long long)s_bucket_files, deliver_s,
           (double)window_json_bytes / 1e6 / deliver_s, deliver_cpu_s,
           ingest_s > 0 ? busy_sum / rounds : 0.0, stop_s * 1000,
           ingest_s > 0 ? alone_sum / (rounds + 1) : 0.0, ingest_s > 0 ? during_sum / rounds : 0.0,
           ingest_s > 0 ? ratio_sum / rounds : 0.0, ingest_s > 0 ? cpu_ratio_sum / rounds : 0.0);

    store_destroy(&store);
    for (size_t i = 0; i < b->count; i++)
        cairn__event__free_unpacked(b->samples[i].event, NULL);
    for (size_t i = 0; i < BENCH_CALL_EVENTS; i++)
        free(b->json[i]);
    free(b->samples);
    free(b);
    return 0;
}
