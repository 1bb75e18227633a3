/* cairn-aggregator: receives agents' batches, keeps the deduplicated store
 * and delivers five-minute CloudTrail log files to the bucket. Reads the
 * config, builds the objects, runs the loop, destroys them in reverse. */
#include "bucket.h"
#include "cairn_http.h"
#include "cairn_log.h"
#include "cairn_mem.h"
#include "config.h"
#include "delivery.h"
#include "notify.h"
#include "query_api.h"
#include "receiver.h"
#include "sigv4.h"
#include "status.h"
#include "store.h"
#include "cairn_time.h"
#include "cairn_signal.h"

#include <czmq.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *data_dir;
    const char *http_listen;
    int64_t store_map_bytes;
    bool is_durable;
    int64_t retention_ms;
    const char *bucket_url;
    bucket_options_t bucket;
    receiver_options_t receiver;
    delivery_options_t delivery;
    notify_options_t notify;     /* [delivery] webhook_*; url NULL: no webhook */
    bool is_query_on;            /* [query] enable */
    sigv4_keys_t *query_keys;    /* [query] credentials_file, loaded */
    query_api_options_t query;
} s_settings_t;


static void s_usage(FILE *out)
{
    fprintf(out,
            "Usage: cairn-aggregator --config FILE [--check-config]\n"
            "\n"
            "Receives batches of audit events from cairn agents, stores each event once\n"
            "(deduplicated on eventID) and delivers gzip'd CloudTrail log files to the\n"
            "bucket when each delivery window closes.\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE   configuration file (INI; see deploy/cairn-aggregator.conf)\n"
            "      --check-config  check the configuration, print every error, and exit\n"
            "                      (0 if it is valid)\n"
            "  -h, --help          show this help\n"
            "  -V, --version       show the version\n"
            "\n"
            "HTTP endpoints (address from [http] listen):\n"
            "  GET /health         200 when the aggregator can do its job, else 503 + reason\n"
            "  GET /metrics        Prometheus metrics\n"
            "  GET /v1/status      per-agent state and delivery progress (cairn status)\n"
            "  POST /              CloudTrail's LookupEvents, SigV4-signed ([query] enable)\n"
            "                      (aws cloudtrail lookup-events --endpoint-url ...)\n"
            "\n"
            "Signals: SIGTERM/SIGINT stop cleanly after the current commit; SIGHUP\n"
            "reloads the log level and the agent allow-list.\n");
}

static void s_read_settings(config_t *cfg, s_settings_t *s)
{
    const char *level = config_str(cfg, "aggregator", "log_level", "info");
    if (cairn_log_level_parse(level) < 0)
        config_error(cfg, "aggregator", "log_level",
                     "\"%s\" is not one of error, warning, notice, info, debug", level);
    else
        cairn_log_level = cairn_log_level_parse(level);
    s->delivery.aggregator_id = config_str(cfg, "aggregator", "id", "aggregator-1");
    for (const char *p = s->delivery.aggregator_id; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", *p)) {
            config_error(cfg, "aggregator", "id", "use letters, digits, '-', '_' or '.' only");
            break;
        }
    s->data_dir = config_str_required(cfg, "aggregator", "data_dir");
    s->receiver.listen = config_str(cfg, "aggregator", "listen", "tcp://127.0.0.1:4790");
    s->receiver.group_max = (size_t)config_int(cfg, "aggregator", "group_commit_max", 64, 1, 4096);
    s->receiver.group_max_bytes = (size_t)config_size(cfg, "aggregator", "group_commit_max_bytes",
                                                      4 << 20, 1 << 20, (int64_t)1 << 30);
    s->http_listen = config_str(cfg, "http", "listen", "127.0.0.1:4791");
    s->store_map_bytes =
        config_size(cfg, "store", "map_size", (int64_t)16 << 30, 1 << 20, (int64_t)1 << 46);
    s->is_durable = config_bool(cfg, "store", "durable", true);
    s->retention_ms = config_duration_ms(cfg, "store", "retention", 90 * 86400000LL, 1000,
                                         100 * 365 * 86400000LL);
    s->bucket_url = config_str_required(cfg, "delivery", "bucket");
    /* S3 settings; empty ones fall back to the AWS_* variables (bucket.h). */
    s->bucket.region = config_str(cfg, "delivery", "s3_region", NULL);
    s->bucket.endpoint = config_str(cfg, "delivery", "s3_endpoint", NULL);
    s->bucket.access_key_id = config_str(cfg, "delivery", "s3_access_key_id", NULL);
    s->bucket.secret_access_key = config_str(cfg, "delivery", "s3_secret_access_key", NULL);
    s->bucket.session_token = config_str(cfg, "delivery", "s3_session_token", NULL);
    if (config_str(cfg, "delivery", "s3_path_style", NULL))
        s->bucket.path_style = config_bool(cfg, "delivery", "s3_path_style", false)
                                   ? BUCKET_PATH_STYLE_ON
                                   : BUCKET_PATH_STYLE_OFF;
    s->bucket.is_insecure = !config_bool(cfg, "delivery", "s3_verify_tls", true);
    s->bucket.connect_timeout_ms =
        config_duration_ms(cfg, "delivery", "s3_connect_timeout", 10000, 100, 600000);
    s->bucket.timeout_ms =
        config_duration_ms(cfg, "delivery", "s3_timeout", 300000, 1000, 24 * 3600 * 1000LL);
    s->delivery.interval_ms = config_duration_ms(cfg, "delivery", "interval", 300000, 1000,
                                                 24 * 3600 * 1000LL);
    s->delivery.part_max_bytes = (size_t)config_size(cfg, "delivery", "part_max_bytes", 8 << 20,
                                                     64 << 10, (int64_t)1 << 32);
    s->delivery.gzip_level = (int)config_int(cfg, "delivery", "gzip_level", 6, 1, 12);
    s->delivery.buffer_max_bytes = (size_t)config_size(cfg, "delivery", "buffer_max_bytes",
                                                       16 << 20, 1 << 20, (int64_t)1 << 40);
    s->delivery.gzip_threads = (int)config_int(cfg, "delivery", "gzip_threads", 2, 1, 16);
    /* The webhook: a POST of CloudTrail's SNS message after each window;
     * pending notifications are kept in <data_dir>/notify (notify.h). */
    s->notify.url = config_str(cfg, "delivery", "webhook_url", NULL);
    if (s->notify.url && !s->notify.url[0])
        s->notify.url = NULL;
    if (s->notify.url && strncmp(s->notify.url, "http://", 7) != 0 &&
        strncmp(s->notify.url, "https://", 8) != 0)
        config_error(cfg, "delivery", "webhook_url", "must start with http:// or https://");
    s->notify.header = config_str(cfg, "delivery", "webhook_header", NULL);
    if (s->notify.header && !s->notify.header[0])
        s->notify.header = NULL;
    if (s->notify.header && (!strchr(s->notify.header, ':') || strpbrk(s->notify.header, "\r\n")))
        config_error(cfg, "delivery", "webhook_header", "must be one header line, \"Name: value\"");
    s->notify.timeout_ms =
        config_duration_ms(cfg, "delivery", "webhook_timeout", 10000, 100, 600000);
    s->delivery.poll_ms = 100;
    s->receiver.aggregator_id = s->delivery.aggregator_id;
    if (config_bool(cfg, "security", "curve", true)) {
        s->receiver.secret_key_file = config_str_required(cfg, "security", "secret_key_file");
        s->receiver.allow_dir = config_str_required(cfg, "security", "allow_dir");
    } else {
        /* Known, and unused in plain text (as in the agent). */
        config_str(cfg, "security", "secret_key_file", NULL);
        config_str(cfg, "security", "allow_dir", NULL);
    }
    /* The LookupEvents API: same credentials file format as the agent's [auth]. */
    s->is_query_on = config_bool(cfg, "query", "enable", false);
    s->query.token_secret = config_str(cfg, "query", "token_secret", NULL);
    if (s->query.token_secret && s->query.token_secret[0] &&
        strlen(s->query.token_secret) < QUERY_API_MIN_SECRET_BYTES)
        config_error(cfg, "query", "token_secret", "use at least %d characters",
                     QUERY_API_MIN_SECRET_BYTES);
    if (s->is_query_on) {
        const char *path = config_str_required(cfg, "query", "credentials_file");
        char err[512];
        s->query_keys = sigv4_keys_new();
        if (path && sigv4_keys_load(s->query_keys, path, err, sizeof err) < 0)
            config_error(cfg, "query", "credentials_file", "%s", err);
        s->query.keys = s->query_keys;
    } else
        config_str(cfg, "query", "credentials_file", NULL); /* allowed, unused when off */
    config_check_unknown(cfg);
}

/* What the HTTP server's handler routes to. */
typedef struct {
    const status_sources_t *status;
    query_api_t *query; /* NULL when [query] enable = off */
} s_routes_t;

/* Routes a request to the endpoints of the aggregator's HTTP server. */
static void s_handle(void *ctx, const cairn_http_request_t *request,
                     cairn_http_response_t *response)
{
    const s_routes_t *routes = ctx;
    if (status_handle(routes->status, request, response))
        return;
    if (routes->query && query_api_handle(routes->query, request, response))
        return;
    cairn_http_respond_error(response, 404,
                             "no such endpoint (try GET /health, /metrics or /v1/status; "
                             "POST / is LookupEvents when [query] enable = on)");
}

typedef struct {
    const char *config_path;
    receiver_t *receiver;
} s_reload_t;

typedef struct {
    store_t *store;
    int64_t retention_ms;
    uint64_t logged_count;  /* pruned events already reported */
    int64_t logged_at_ms;   /* monotonic time of the last report */
} s_retention_t;

#define RETENTION_STEP_EVENTS 1000 /* events per transaction */
#define RETENTION_BUDGET_MS   20   /* writer time per second, at most */

/* Once a second: prunes events older than the retention time (and already
 * delivered) in small transactions, for at most RETENTION_BUDGET_MS, so that
 * ingest, which shares this thread and the writer lock, never waits long. */
static int s_on_retention_tick(zloop_t *loop, int timer_id, void *arg)
{
    s_retention_t *r = arg;
    store_cursor_t cursor;
    if (store_get_cursor(r->store, &cursor) != 0 || cursor.last_seq == 0)
        return 0;
    int64_t start = cairn_time_mono_ms();
    int64_t before_ms = cairn_time_now_ms() - r->retention_ms;
    long pruned;
    do
        pruned = store_prune(r->store, before_ms, cursor.last_seq, RETENTION_STEP_EVENTS);
    while (pruned == RETENTION_STEP_EVENTS &&
           cairn_time_mono_ms() - start < RETENTION_BUDGET_MS);
    uint64_t total = store_pruned_count(r->store);
    int64_t now = cairn_time_mono_ms();
    if (total != r->logged_count && now - r->logged_at_ms >= 60000) {
        char when[21];
        cairn_time_format_iso8601(before_ms, when);
        cairn_log_info("retention: pruned %llu events ingested before %s (%llu since start)",
                       (unsigned long long)(total - r->logged_count), when,
                       (unsigned long long)total);
        r->logged_count = total;
        r->logged_at_ms = now;
    }
    return 0;
}

/* On SIGHUP: re-reads the config and applies what can change without a
 * restart (log level, agent allow-list); a config with errors is refused
 * whole and the running settings stay. */
static int s_on_reload_tick(zloop_t *loop, int timer_id, void *arg)
{
    s_reload_t *reload = arg;
    if (!cairn_signal_take_reload())
        return 0;
    char err[512];
    config_t *cfg = config_load(reload->config_path, err, sizeof err);
    if (!cfg) {
        cairn_log_error("reload: %s; keeping the running configuration", err);
        return 0;
    }
    int old_level = cairn_log_level;
    s_settings_t settings = {0};
    s_read_settings(cfg, &settings);
    sigv4_keys_destroy(&settings.query_keys); /* query keys take effect at restart */
    if (config_log_errors(cfg) > 0) {
        cairn_log_level = old_level;
        cairn_log_error("reload: %s has %zu error(s); keeping the running configuration",
                        reload->config_path, config_error_count(cfg));
    } else {
        static const char *const names[] = {"error", "warning", "notice", "info", "debug"};
        if (old_level != cairn_log_level)
            cairn_log_notice("reload: log level %s -> %s", names[old_level],
                             names[cairn_log_level]);
        int keys = receiver_reload_allow_list(reload->receiver);
        if (keys >= 0)
            cairn_log_notice("reload: allow-list %s re-read: %d key files",
                             settings.receiver.allow_dir, keys);
        cairn_log_notice("reload: done (listen addresses, store, bucket and delivery settings "
                         "take effect at restart)");
    }
    config_destroy(&cfg);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                             {"check-config", no_argument, NULL, 'k'},
                                             {"help", no_argument, NULL, 'h'},
                                             {"version", no_argument, NULL, 'V'},
                                             {NULL, 0, NULL, 0}};
    const char *config_path = NULL;
    int is_check_only = 0, opt;
    cairn_log_set_ident("cairn-aggregator");
    while ((opt = getopt_long(argc, argv, "c:hV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; break;
        case 'k': is_check_only = 1; break;
        case 'h': s_usage(stdout); return 0;
        case 'V': printf("cairn-aggregator %s\n", CAIRN_VERSION); return 0;
        default: s_usage(stderr); return 2;
        }
    }
    if (!config_path || optind != argc) {
        s_usage(stderr);
        return 2;
    }
    char err[512];
    config_t *cfg = config_load(config_path, err, sizeof err);
    if (!cfg) {
        cairn_log_error("%s", err);
        return 1;
    }
    s_settings_t settings = {0};
    s_read_settings(cfg, &settings);
    if (config_log_errors(cfg) > 0) {
        cairn_log_error("config %s: %zu error(s); not starting", config_path,
                        config_error_count(cfg));
        sigv4_keys_destroy(&settings.query_keys);
        config_destroy(&cfg);
        return 1;
    }
    if (is_check_only) {
        printf("%s: configuration is valid\n", config_path);
        sigv4_keys_destroy(&settings.query_keys);
        config_destroy(&cfg);
        return 0;
    }

    zsys_init();
    zsys_set_logsystem(false);
    int rc = 1;
    status_sources_t app = {.aggregator_id = settings.delivery.aggregator_id,
                            .interval_ms = settings.delivery.interval_ms,
                            .started_ms = cairn_time_now_ms()};
    char bucket_name[512] = "";
    cairn_http_t *http = NULL;
    zloop_t *loop = zloop_new();
    bucket_t *bucket = bucket_new(settings.bucket_url, &settings.bucket, err, sizeof err);
    if (!bucket)
        cairn_log_error("bucket %s: %s", settings.bucket_url, err);
    else {
        snprintf(bucket_name, sizeof bucket_name, "%s", bucket_describe(bucket));
        cairn_log_info("bucket: %s", bucket_name);
    }
    app.bucket = bucket_name;
    app.store = bucket ? store_new(settings.data_dir, settings.store_map_bytes, settings.is_durable)
                       : NULL;
    notify_t *notify = NULL;
    char notify_dir[4096];
    snprintf(notify_dir, sizeof notify_dir, "%s/notify", settings.data_dir);
    settings.notify.queue_dir = notify_dir;
    if (app.store && settings.notify.url) {
        notify = notify_new(&settings.notify);
        settings.delivery.notify = notify;
        app.notify = notify;
    }
    bool is_notify_ready = !settings.notify.url || notify;
    app.delivery = app.store && is_notify_ready
                       ? delivery_new(app.store, &bucket, &settings.delivery)
                       : NULL;
    app.receiver = app.delivery ? receiver_new(app.store, loop, &settings.receiver) : NULL;
    s_routes_t routes = {&app, NULL};
    bool is_query_ready = app.receiver && !settings.is_query_on;
    if (app.receiver && settings.is_query_on) {
        routes.query = query_api_new(app.store, &settings.query);
        is_query_ready = routes.query != NULL;
    }
    /* 4 threads: a LookupEvents page (up to 50 records, each up to 256 KB)
     * must not hold up /health. Request bodies stay small (64 KiB). */
    if (is_query_ready)
        http = cairn_http_new("http", settings.http_listen, 4, 64 << 10, s_handle, &routes);
    if (http && routes.query)
        cairn_log_notice("aggregator %s: LookupEvents API on http://%s/ (%zu access keys)",
                         settings.delivery.aggregator_id, settings.http_listen,
                         sigv4_keys_count(settings.query_keys));
    s_reload_t reload = {config_path, app.receiver};
    s_retention_t retention = {.store = app.store, .retention_ms = settings.retention_ms};
    if (http) {
        cairn_signal_catch_reload();
        zloop_timer(loop, 250, 0, s_on_reload_tick, &reload);
        zloop_timer(loop, 1000, 0, s_on_retention_tick, &retention);
        zloop_timer(loop, 1000, 0, cairn_mem_trim_timer, NULL);
        cairn_log_notice("aggregator %s: ready; receiving on %s, delivering every %lld s to %s",
                         settings.delivery.aggregator_id, settings.receiver.listen,
                         (long long)(settings.delivery.interval_ms / 1000), settings.bucket_url);
        /* zloop_start also returns when a SIGHUP interrupts its poll; only
         * SIGTERM/SIGINT (zsys_interrupted) end the process. */
        while (zloop_start(loop) == 0 && !zsys_interrupted)
            ;
        cairn_log_notice("aggregator %s: stopping", settings.delivery.aggregator_id);
        rc = 0;
    }
    cairn_http_destroy(&http);
    query_api_destroy(&routes.query);
    sigv4_keys_destroy(&settings.query_keys);
    receiver_destroy(&app.receiver);
    delivery_destroy(&app.delivery);
    notify_destroy(&notify);
    store_destroy(&app.store);
    bucket_destroy(&bucket);
    zloop_destroy(&loop);
    config_destroy(&cfg);
    return rc;
}
