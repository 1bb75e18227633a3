/* gzip_bench.c: cairn-gzip-bench, the CPU that gzip alone costs per record.
 *
 *     cairn-gzip-bench --file PATH [--level N ...] [--rounds N]
 *
 * Reads a JSON-lines file (cairn-loadgen --write-file writes one) and
 * compresses it whole with libdeflate, as the delivery does its parts, once
 * per level and round, timing each call with the process's CPU clock. It
 * prints, per level, the CPU seconds, MB/s, the ratio and the CPU seconds
 * per million records (lines), then one JSON line. What the delivery adds
 * on top (reading the store, cutting parts, the bucket) is measured by
 * bench/delivery_bench.sh; this is the floor under it (BENCHMARKS.md,
 * "Where the CPU goes"). */
#include <errno.h>
#include <getopt.h>
#include <libdeflate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_MAX_LEVELS 12

static void s_usage(FILE *out)
{
    fprintf(out,
            "Usage: cairn-gzip-bench --file PATH [--level N ...] [--rounds N]\n"
            "\n"
            "Compresses PATH (JSON lines, e.g. from cairn-loadgen --write-file) whole\n"
            "with libdeflate at each level (default 1, 4 and 6) and prints the CPU\n"
            "seconds, MB/s, ratio and CPU seconds per million lines, then one JSON line.\n"
            "\n"
            "  -f, --file PATH   the input\n"
            "  -l, --level N     a libdeflate level, 0-12 (repeat for several)\n"
            "  -r, --rounds N    compressions per level; the fastest counts (default 1)\n"
            "  -h, --help        show this help\n");
}

/* Parses text as a whole number in [lo, hi] into *out; else says why. */
static int s_parse_range(const char *text, long lo, long hi, const char *option, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi) {
        fprintf(stderr, "cairn-gzip-bench: %s wants %ld to %ld, not '%s'\n", option, lo, hi, text);
        return -1;
    }
    *out = v;
    return 0;
}

static double s_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *s_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cairn-gzip-bench: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char *data = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : (size_t)1 << 24;
            char *grown = realloc(data, cap);
            if (!grown) {
                fprintf(stderr, "cairn-gzip-bench: out of memory reading %s\n", path);
                free(data);
                fclose(f);
                return NULL;
            }
            data = grown;
        }
        size_t got = fread(data + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed || n == 0) {
        fprintf(stderr, "cairn-gzip-bench: %s: %s\n", path, failed ? "read error" : "empty");
        free(data);
        return NULL;
    }
    *len = n;
    return data;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {{"file", required_argument, NULL, 'f'},
                                            {"level", required_argument, NULL, 'l'},
                                            {"rounds", required_argument, NULL, 'r'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    const char *path = NULL;
    int levels[S_MAX_LEVELS], level_count = 0;
    long rounds = 1;
    int c;
    while ((c = getopt_long(argc, argv, "f:l:r:h", options, NULL)) != -1) {
        long v = 0;
        switch (c) {
        case 'f':
            path = optarg;
            break;
        case 'l':
            if (s_parse_range(optarg, 0, 12, "--level", &v) != 0)
                return 2;
            if (level_count == S_MAX_LEVELS) {
                fprintf(stderr, "cairn-gzip-bench: at most %d levels\n", S_MAX_LEVELS);
                return 2;
            }
            levels[level_count++] = (int)v;
            break;
        case 'r':
            if (s_parse_range(optarg, 1, 1000, "--rounds", &rounds) != 0)
                return 2;
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        default:
            s_usage(stderr);
            return 2;
        }
    }
    if (!path || optind != argc) {
        s_usage(stderr);
        return 2;
    }
    if (level_count == 0) {
        levels[level_count++] = 1;
        levels[level_count++] = 4;
        levels[level_count++] = 6;
    }
    size_t len = 0;
    char *data = s_read_file(path, &len);
    if (!data)
        return 1;
    size_t lines = 0;
    for (const char *p = data; (p = memchr(p, '\n', (size_t)(data + len - p))) != NULL; p++)
        lines++;
    if (len && data[len - 1] != '\n')
        lines++;
    printf("%s: %zu bytes, %zu lines\n", path, len, lines);
    printf("level  CPU s    MB/s   ratio  CPU s per million lines\n");
    char json[2048];
    int at = snprintf(json, sizeof json, "{\"bytes\": %zu, \"lines\": %zu, \"levels\": [", len, lines);
    int rc = 0;
    for (int i = 0; i < level_count && rc == 0; i++) {
        struct libdeflate_compressor *z = libdeflate_alloc_compressor(levels[i]);
        size_t cap = z ? libdeflate_gzip_compress_bound(z, len) : 0;
        char *out = cap ? malloc(cap) : NULL;
        if (!out) {
            fprintf(stderr, "cairn-gzip-bench: cannot set up level %d\n", levels[i]);
            libdeflate_free_compressor(z);
            rc = 1;
            break;
        }
        double best = -1;
        size_t out_len = 0;
        for (long r = 0; r < rounds; r++) {
            double t0 = s_cpu_s();
            out_len = libdeflate_gzip_compress(z, data, len, out, cap);
            double t = s_cpu_s() - t0;
            if (best < 0 || t < best)
                best = t;
        }
        free(out);
        libdeflate_free_compressor(z);
        if (out_len == 0) {
            fprintf(stderr, "cairn-gzip-bench: level %d: compression failed\n", levels[i]);
            rc = 1;
            break;
        }
        double ratio = (double)len / (double)out_len;
        double per_million = lines ? best * 1e6 / (double)lines : 0;
        printf("%5d  %6.3f  %6.0f  %6.2f  %6.2f\n", levels[i], best,
               best > 0 ? (double)len / best / 1e6 : 0, ratio, per_million);
        if (at > 0 && (size_t)at < sizeof json)
            at += snprintf(json + at, sizeof json - (size_t)at,
                           "%s{\"level\": %d, \"cpu_s\": %.3f, \"gzip_bytes\": %zu, \"ratio\": %.2f, "
                           "\"cpu_s_per_million\": %.2f}",
                           i ? ", " : "", levels[i], best, out_len, ratio, per_million);
    }
    free(data);
    if (rc == 0 && at > 0 && (size_t)at < sizeof json)
        printf("%s]}\n", json);
    return rc;
}
