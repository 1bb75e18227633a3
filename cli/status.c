/* status.c: `cairn status` (see status.h). The answer is small, so the
 * document is parsed with yajl's tree API; the hot paths never use it. */
#include "status.h"

#include "cairn_buf.h"

#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

static void s_usage(FILE *out)
{
    fprintf(out, "Usage: cairn status [--url URL] [--output table|json]\n"
                 "\n"
                 "Shows each region's agent (connected or silent, last seen, backlog), the\n"
                 "delivery cursor, the delivery lag and the last delivered object, from the\n"
                 "aggregator's HTTP endpoint.\n"
                 "  --url URL      the aggregator's HTTP endpoint (default: $CAIRN_AGGREGATOR_URL,\n"
                 "                 else http://127.0.0.1:4791)\n"
                 "  --output FMT   table (default) or json (the raw document, for scripts)\n"
                 "Exit status: 0 healthy and every agent connected, 1 otherwise.\n");
}

static size_t s_write(char *data, size_t size, size_t nmemb, void *ctx)
{
    cairn_buf_printf(ctx, "%.*s", (int)(size * nmemb), data);
    return size * nmemb;
}

static const char *s_str(yajl_val obj, const char *key)
{
    const char *path[] = {key, NULL};
    yajl_val v = yajl_tree_get(obj, path, yajl_t_string);
    return v ? YAJL_GET_STRING(v) : "-";
}

static double s_num(yajl_val obj, const char *key)
{
    const char *path[] = {key, NULL};
    yajl_val v = yajl_tree_get(obj, path, yajl_t_number);
    return v ? YAJL_GET_DOUBLE(v) : 0;
}

int status_main(int argc, char **argv)
{
    static const struct option longopts[] = {{"url", required_argument, NULL, 'u'},
                                             {"output", required_argument, NULL, 'o'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *url = getenv("CAIRN_AGGREGATOR_URL");
    const char *output = "table";
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "u:o:h", longopts, NULL)) != -1) {
        if (opt == 'u')
            url = optarg;
        else if (opt == 'o')
            output = optarg;
        else if (opt == 'h') {
            s_usage(stdout);
            return 0;
        } else {
            s_usage(stderr);
            return 2;
        }
    }
    if (optind != argc || (strcmp(output, "table") && strcmp(output, "json"))) {
        fprintf(stderr, "cairn status: --output must be table or json\n");
        return 2;
    }
    if (!url || !*url)
        url = "http://127.0.0.1:4791";
    char full[2048];
    size_t url_len = strlen(url);
    while (url_len > 0 && url[url_len - 1] == '/')
        url_len--;
    snprintf(full, sizeof full, "%.*s/v1/status", (int)url_len, url);
    cairn_buf_t body;
    cairn_buf_init(&body);
    CURL *curl = curl_easy_init();
    long http_code = 0;
    CURLcode crc = CURLE_FAILED_INIT;
    if (curl) {
        curl_easy_setopt(curl, CURLOPT_URL, full);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, s_write);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
        crc = curl_easy_perform(curl);
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &http_code);
        curl_easy_cleanup(curl);
    }
    int rc = 1;
    char err[256] = "";
    yajl_val doc = NULL;
    if (crc != CURLE_OK)
        fprintf(stderr, "cairn status: cannot reach %s: %s\n", full, curl_easy_strerror(crc));
    else if (http_code != 200)
        fprintf(stderr, "cairn status: %s answered HTTP %ld: %s\n", full, http_code, body.text);
    else if (!(doc = yajl_tree_parse(body.text, err, sizeof err)))
        fprintf(stderr, "cairn status: %s sent something that is not JSON: %s\n", full, err);
    if (!doc)
        goto out;
    const char *agents_path[] = {"agents", NULL};
    const char *delivery_path[] = {"delivery", NULL};
    const char *healthy_path[] = {"healthy", NULL};
    yajl_val agents = yajl_tree_get(doc, agents_path, yajl_t_array);
    yajl_val delivery = yajl_tree_get(doc, delivery_path, yajl_t_object);
    int is_healthy = YAJL_IS_TRUE(yajl_tree_get(doc, healthy_path, yajl_t_any));
    int is_all_connected = 1;
    size_t agent_count = agents ? YAJL_GET_ARRAY(agents)->len : 0;
    for (size_t i = 0; i < agent_count; i++)
        if (strcmp(s_str(YAJL_GET_ARRAY(agents)->values[i], "state"), "connected") != 0)
            is_all_connected = 0;
    rc = is_healthy && is_all_connected ? 0 : 1;
    if (strcmp(output, "json") == 0) {
        printf("%s\n", body.text);
        goto out;
    }
    printf("aggregator %s: %s, %.0f events stored\n", s_str(doc, "aggregator_id"),
           is_healthy ? "healthy" : "UNHEALTHY", s_num(doc, "events_stored"));
    if (!is_healthy)
        printf("  reason: %s\n", s_str(doc, "reason"));
    printf("\n%-20s %-16s %-10s %10s %12s %14s %12s\n", "REGION", "AGENT", "STATE", "LAST SEEN",
           "LAST SEQ", "EVENTS STORED", "BACKLOG");
    for (size_t i = 0; i < agent_count; i++) {
        yajl_val a = YAJL_GET_ARRAY(agents)->values[i];
        char seen[32];
        snprintf(seen, sizeof seen, "%.1fs ago", s_num(a, "last_seen_age_s"));
        printf("%-20s %-16s %-10s %10s %12.0f %14.0f %12.0f\n", s_str(a, "region"),
               s_str(a, "agent_id"), s_str(a, "state"), seen, s_num(a, "last_seq"),
               s_num(a, "events_stored"), s_num(a, "spool_pending"));
    }
    if (agent_count == 0)
        printf("(no agent has connected since the aggregator started)\n");
    if (delivery) {
        printf("\ndelivery to %s every %.0f s\n", s_str(delivery, "bucket"),
               s_num(delivery, "interval_s"));
        printf("  cursor: window ending %s; lag %.1f s; %.0f windows, %.0f events delivered; "
               "%.0f upload errors\n",
               s_str(delivery, "last_window_end"), s_num(delivery, "lag_s"),
               s_num(delivery, "windows_delivered"), s_num(delivery, "events_delivered"),
               s_num(delivery, "upload_errors"));
        const char *last = s_str(delivery, "last_object");
        printf("  last object: %s\n", *last ? last : "(none yet)");
    }
out:
    yajl_tree_free(doc);
    cairn_buf_fini(&body);
    return rc;
}
