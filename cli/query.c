/* query.c: `cairn query` (see query.h).
 *
 * DESIGN: the filters become one store_query_t; the store picks the most
 * selective index and streams the matches newest first, and each one is
 * written out as it comes (nothing is collected), so --limit 0 over a
 * time range streams the whole store in constant memory. The store is
 * opened with store_open_readonly: an MDB_RDONLY environment that reads a
 * consistent snapshot while the aggregator keeps committing. Output goes
 * through one large stdio buffer: ndjson is one fwrite of the stored
 * record per event. */
#include "query.h"

#include "cairn_log.h"
#include "cairn_time.h"
#include "store.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_DEFAULT_LIMIT 50
#define S_STDOUT_BUFFER (1 << 20)

typedef enum { S_TABLE, S_JSON, S_NDJSON } s_output_t;

/* The command line options that filter on an indexed attribute. */
static const struct {
    const char *option; /* without "--" */
    store_attr_t attr;
} s_filters[] = {
    {"event-name", STORE_ATTR_EVENT_NAME},
    {"read-only", STORE_ATTR_READ_ONLY},
    {"username", STORE_ATTR_USERNAME},
    {"resource-type", STORE_ATTR_RESOURCE_TYPE},
    {"resource-name", STORE_ATTR_RESOURCE_NAME},
    {"event-source", STORE_ATTR_EVENT_SOURCE},
    {"access-key-id", STORE_ATTR_ACCESS_KEY_ID},
    {"region", STORE_ATTR_REGION},
    {"account", STORE_ATTR_ACCOUNT},
};
#define S_FILTER_COUNT (sizeof s_filters / sizeof *s_filters)

enum { OPT_EVENT_ID = 256, OPT_START, OPT_END, OPT_STORE, OPT_TIMING, OPT_FILTER_0 };

typedef struct {
    s_output_t output;
    unsigned long long limit; /* 0: no limit */
    unsigned long long count; /* events written */
    bool has_more;            /* stopped at the limit with more to come */
} s_writer_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "Usage: cairn query [--store DIR] [FILTERS] [--start TIME] [--end TIME]\n"
            "                   [--limit N] [--output table|json|ndjson]\n"
            "\n"
            "Finds events in the aggregator's store, newest first (by eventTime). Filters\n"
            "combine with AND and match exact values (case-sensitive, as CloudTrail's).\n"
            "Reads the store read-only: safe while cairn-aggregator runs.\n"
            "\n"
            "  --store DIR            the aggregator's [aggregator] data_dir\n"
            "                         (default: $CAIRN_STORE_DIR)\n"
            "Filters (LookupEvents' attributes, and more):\n"
            "  --event-id ID          eventID\n"
            "  --event-name NAME      eventName, e.g. DeleteBucket\n"
            "  --read-only true|false readOnly\n"
            "  --username NAME        userIdentity.userName; for assumed roles and federated\n"
            "                         users the session name; \"root\" for the root user\n"
            "  --resource-type TYPE   resources[].type, e.g. AWS::S3::Bucket\n"
            "  --resource-name NAME   resources[].ARN, or its last part (bucket, i-0abc...)\n"
            "  --event-source SOURCE  eventSource, e.g. s3.amazonaws.com\n"
            "  --access-key-id KEY    userIdentity.accessKeyId\n"
            "  --region REGION        awsRegion\n"
            "  --account ID           recipientAccountId\n"
            "  --start TIME, --end TIME\n"
            "                         eventTime range, inclusive: ISO-8601 UTC\n"
            "                         (2025-03-04T10:02:37Z), a date (2025-03-04), \"now\",\n"
            "                         or a time ago: 30s, 30m, 2h, 7d, 2w\n"
            "Output:\n"
            "  --limit N              at most N events (default %d; 0: all)\n"
            "  --output FORMAT        table (default), json (an array of the records) or\n"
            "                         ndjson (one record a line)\n"
            "  --timing               print to stderr how long opening the store and the\n"
            "                         query took (for benchmarks)\n",
            S_DEFAULT_LIMIT);
}

static double s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

int query_parse_time(const char *text, int64_t now_ms, int64_t *ms)
{
    size_t len = strlen(text);
    if (!strcmp(text, "now")) {
        *ms = now_ms;
        return 0;
    }
    if (cairn_time_parse_iso8601(text, len, ms) == 0)
        return 0;
    if (len == 10 && text[4] == '-' && text[7] == '-') {
        char full[32];
        snprintf(full, sizeof full, "%sT00:00:00Z", text);
        return cairn_time_parse_iso8601(full, strlen(full), ms);
    }
    static const struct {
        char unit;
        int64_t ms;
    } units[] = {{'s', 1000}, {'m', 60000}, {'h', 3600000}, {'d', 86400000}, {'w', 604800000}};
    if (len < 2 || !isdigit((unsigned char)text[0]))
        return -1;
    char *end;
    errno = 0;
    unsigned long long count = strtoull(text, &end, 10);
    if (errno || end != text + len - 1 || count > 100ULL * 365 * 86400)
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof *units; i++)
        if (*end == units[i].unit) {
            *ms = now_ms - (int64_t)count * units[i].ms;
            return 0;
        }
    return -1;
}

/* Writes s cut or padded to width columns (bytes; the table is for eyes). */
static void s_cell(const char *s, int width)
{
    int len = (int)strlen(s);
    if (len > width)
        printf("%.*s~ ", width - 1, s);
    else
        printf("%-*s ", width, s);
}

static int s_on_hit(void *ctx, const store_position_t *position, const Cairn__StoredEvent *stored)
{
    s_writer_t *w = ctx;
    const Cairn__Event *event = stored->event;
    if (w->limit && w->count == w->limit) {
        w->has_more = true;
        return 1;
    }
    if (w->output == S_TABLE) {
        char time[21], username[128];
        const char *name;
        size_t name_len = store_username(event, &name);
        snprintf(username, sizeof username, "%.*s", (int)name_len, name_len ? name : "-");
        cairn_time_format_iso8601(event->event_time_ms, time);
        s_cell(time, 20);
        s_cell(event->event_name, 26);
        s_cell(username, 20);
        s_cell(event->event_source, 26);
        s_cell(event->aws_region, 14);
        printf("%s\n", event->event_id);
    } else {
        if (w->output == S_JSON)
            fputs(w->count ? ",\n" : "[\n", stdout);
        fwrite(event->json.data, 1, event->json.len, stdout);
        if (w->output == S_NDJSON)
            putchar('\n');
    }
    w->count++;
    return ferror(stdout) ? -1 : 0;
}

int query_main(int argc, char **argv)
{
    struct option longopts[S_FILTER_COUNT + 11];
    size_t n = 0;
    longopts[n++] = (struct option){"store", required_argument, NULL, OPT_STORE};
    longopts[n++] = (struct option){"event-id", required_argument, NULL, OPT_EVENT_ID};
    longopts[n++] = (struct option){"start", required_argument, NULL, OPT_START};
    longopts[n++] = (struct option){"end", required_argument, NULL, OPT_END};
    longopts[n++] = (struct option){"limit", required_argument, NULL, 'n'};
    longopts[n++] = (struct option){"output", required_argument, NULL, 'o'};
    longopts[n++] = (struct option){"help", no_argument, NULL, 'h'};
    longopts[n++] = (struct option){"timing", no_argument, NULL, OPT_TIMING};
    for (size_t i = 0; i < S_FILTER_COUNT; i++)
        longopts[n++] =
            (struct option){s_filters[i].option, required_argument, NULL, OPT_FILTER_0 + (int)i};
    longopts[n] = (struct option){NULL, 0, NULL, 0};

    const char *store_dir = getenv("CAIRN_STORE_DIR");
    const char *start = NULL, *end = NULL;
    store_query_t query = STORE_QUERY_ALL;
    s_writer_t writer = {.output = S_TABLE, .limit = S_DEFAULT_LIMIT};
    bool is_timed = false;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "n:o:h", longopts, NULL)) != -1) {
        char *rest;
        switch (opt) {
        case OPT_STORE:
            store_dir = optarg;
            break;
        case OPT_EVENT_ID:
            query.event_id = optarg;
            break;
        case OPT_START:
            start = optarg;
            break;
        case OPT_END:
            end = optarg;
            break;
        case OPT_TIMING:
            is_timed = true;
            break;
        case 'n':
            errno = 0;
            writer.limit = strtoull(optarg, &rest, 10);
            if (errno || rest == optarg || *rest || optarg[0] == '-') {
                fprintf(stderr,
                        "cairn query: --limit \"%s\": expected a whole number >= 0 "
                        "(0: no limit)\n",
                        optarg);
                return 2;
            }
            break;
        case 'o':
            if (!strcmp(optarg, "table"))
                writer.output = S_TABLE;
            else if (!strcmp(optarg, "json"))
                writer.output = S_JSON;
            else if (!strcmp(optarg, "ndjson"))
                writer.output = S_NDJSON;
            else {
                fprintf(stderr, "cairn query: --output \"%s\": expected table, json or ndjson\n",
                        optarg);
                return 2;
            }
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        default:
            if (opt >= OPT_FILTER_0 && opt < OPT_FILTER_0 + (int)S_FILTER_COUNT) {
                size_t i = (size_t)(opt - OPT_FILTER_0);
                if (!optarg[0]) {
                    fprintf(stderr, "cairn query: --%s: the value is empty\n", s_filters[i].option);
                    return 2;
                }
                if (s_filters[i].attr == STORE_ATTR_READ_ONLY && strcmp(optarg, "true") != 0 &&
                    strcmp(optarg, "false") != 0) {
                    fprintf(stderr, "cairn query: --read-only \"%s\": expected true or false\n",
                            optarg);
                    return 2;
                }
                query.values[s_filters[i].attr] = optarg;
                break;
            }
            s_usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr,
                "cairn query: unexpected argument \"%s\" (filters are options, e.g. "
                "--username alice)\n",
                argv[optind]);
        return 2;
    }
    if (!store_dir || !store_dir[0]) {
        fprintf(stderr, "cairn query: --store DIR is required (the aggregator's data_dir; or "
                        "set CAIRN_STORE_DIR)\n");
        return 2;
    }
    int64_t now_ms = cairn_time_now_ms();
    const char *const times[2] = {start, end};
    int64_t *const bounds[2] = {&query.start_ms, &query.end_ms};
    for (int i = 0; i < 2; i++)
        if (times[i] && query_parse_time(times[i], now_ms, bounds[i]) != 0) {
            fprintf(stderr,
                    "cairn query: --%s \"%s\": expected an ISO-8601 UTC time "
                    "(2025-03-04T10:02:37Z), a date (2025-03-04), \"now\", or a time ago "
                    "(30s, 30m, 2h, 7d, 2w)\n",
                    i ? "end" : "start", times[i]);
            return 2;
        }
    if (query.start_ms > query.end_ms) {
        fprintf(stderr, "cairn query: --start is after --end\n");
        return 2;
    }

    double t0_us = s_now_us();
    store_t *store = store_open_readonly(store_dir); /* logs why it cannot */
    if (!store)
        return 1;
    double t1_us = s_now_us();
    static char out_buffer[S_STDOUT_BUFFER];
    setvbuf(stdout, out_buffer, _IOFBF, sizeof out_buffer);
    if (writer.output == S_TABLE) {
        s_cell("EVENT TIME", 20);
        s_cell("EVENT NAME", 26);
        s_cell("USERNAME", 20);
        s_cell("EVENT SOURCE", 26);
        s_cell("REGION", 14);
        printf("EVENT ID\n");
    }
    long rc = store_query(store, &query, s_on_hit, &writer);
    if (writer.output == S_JSON)
        fputs(writer.count ? "\n]\n" : "[]\n", stdout);
    int exit_code = rc < 0 || fflush(stdout) != 0 ? 1 : 0;
    if (is_timed) {
        double t2_us = s_now_us();
        fprintf(stderr,
                "cairn query: %llu events in %.3f ms (store opened in %.3f ms); "
                "%.0f events/s\n",
                writer.count, (t2_us - t1_us) / 1000.0, (t1_us - t0_us) / 1000.0,
                (double)writer.count / ((t2_us - t1_us) / 1e6));
    }
    if (rc < 0 && ferror(stdout))
        fprintf(stderr, "cairn query: cannot write the output: %s\n", strerror(errno));
    if (writer.output == S_TABLE && writer.has_more)
        fprintf(stderr, "(first %llu events shown; --limit N or --limit 0 for more)\n",
                writer.limit);
    store_destroy(&store);
    setvbuf(stdout, NULL, _IONBF, 0); /* out_buffer is about to go out of use */
    return exit_code;
}
