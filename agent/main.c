/* cairn-agent: captures a region's audit events, spools them durably and
 * ships them to the aggregator. Reads the config, builds the objects, runs
 * the loop, destroys them in reverse order. */
#include "agent_metrics.h"
#include "cairn_log.h"
#include "cairn_mem.h"
#include "cairn_signal.h"
#include "config.h"
#include "intake.h"
#include "selector.h"
#include "shipper.h"
#include "sigv4.h"
#include "spool.h"
#include "tail.h"

#include <czmq.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *data_dir;
    int64_t spool_map_bytes;
    bool is_durable;
    intake_options_t intake;
    shipper_options_t shipper;
    sigv4_keys_t *keys; /* [auth] senders' keys; NULL when sigv4 = off */
    selector_rules_t *selector_rules; /* [selectors]; NULL after an error or once taken */
    tail_options_t tail;              /* [tail]; tail.paths "" when there is nothing to follow */
} s_settings_t;

/* What a SIGHUP reload changes. */
typedef struct {
    const char *config_path;
    selector_t *selector;
} s_reload_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "Usage: cairn-agent --config FILE [--check-config]\n"
            "\n"
            "Captures a region's API-call events (CloudTrail JSON records), keeps them\n"
            "in a durable LMDB spool and ships them to the cairn aggregator.\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE   configuration file (INI; see deploy/cairn-agent.conf)\n"
            "      --check-config  check the configuration, print every error, and exit\n"
            "                      (0 if it is valid)\n"
            "  -h, --help          show this help\n"
            "  -V, --version       show the version\n"
            "\n"
            "HTTP endpoints (address from [http] listen):\n"
            "  POST /v1/events     one record, a JSON array of records, or {\"Records\":[...]}\n"
            "  POST /PutAuditEvents?channelArn=ARN  CloudTrail Lake's PutAuditEvents\n"
            "                      (aws cloudtrail-data put-audit-events --endpoint-url ...)\n"
            "  GET  /health        200 when the agent can accept events, else 503 + reason\n"
            "  GET  /metrics       Prometheus metrics\n"
            "\n"
            "JSON-lines files named by [tail] paths are followed too, one record a line.\n"
            "\n"
            "Signals: SIGTERM/SIGINT stop cleanly; spooled events are kept. SIGHUP\n"
            "reloads the log level and the [selectors].\n");
}

/* Reads every setting, recording all errors in cfg. */
static void s_read_settings(config_t *cfg, s_settings_t *s)
{
    const char *level = config_str(cfg, "agent", "log_level", "info");
    if (cairn_log_level_parse(level) < 0)
        config_error(cfg, "agent", "log_level",
                     "\"%s\" is not one of error, warning, notice, info, debug", level);
    else
        cairn_log_level = cairn_log_level_parse(level);
    const char *region = config_str_required(cfg, "agent", "region");
    s->data_dir = config_str_required(cfg, "agent", "data_dir");
    const char *account = config_str_required(cfg, "agent", "account_id");
    if (account && (strlen(account) != 12 || strspn(account, "0123456789") != 12))
        config_error(cfg, "agent", "account_id", "\"%s\" is not a 12-digit account id", account);
    s->intake.listen = config_str(cfg, "http", "listen", "127.0.0.1:4780");
    s->intake.max_body_bytes =
        (size_t)config_size(cfg, "http", "max_body", 16 << 20, 1024, (int64_t)1 << 30);
    s->intake.thread_count = (unsigned)config_int(cfg, "http", "threads", 4, 1, 256);
    s->intake.request_timeout_s =
        (unsigned)(config_duration_ms(cfg, "http", "request_timeout", 10000, 1000, 3600000) / 1000);
    if (config_bool(cfg, "auth", "sigv4", false)) {
        const char *path = config_str_required(cfg, "auth", "credentials_file");
        char err[512];
        s->keys = sigv4_keys_new();
        if (path && sigv4_keys_load(s->keys, path, err, sizeof err) < 0)
            config_error(cfg, "auth", "credentials_file", "%s", err);
        s->intake.keys = s->keys;
    } else
        config_str(cfg, "auth", "credentials_file", NULL); /* allowed, unused when off */
    s->intake.defaults.region = region;
    s->intake.defaults.account_id = account;
    s->spool_map_bytes =
        config_size(cfg, "spool", "map_size", (int64_t)1 << 30, 1 << 20, (int64_t)1 << 44);
    s->is_durable = config_bool(cfg, "spool", "durable", true);
    s->selector_rules = selector_rules_read(cfg);
    s->tail.paths = config_str(cfg, "tail", "paths", "");
    char paths_err[512];
    if (tail_paths_check(s->tail.paths, paths_err, sizeof paths_err) < 0)
        config_error(cfg, "tail", "paths", "%s", paths_err);
    s->tail.poll_ms = config_duration_ms(cfg, "tail", "poll_interval", 250, 10, 60000);
    s->tail.rotate_wait_ms = config_duration_ms(cfg, "tail", "rotate_wait", 2000, 0, 3600000);
    s->tail.batch_max_lines = (size_t)config_int(cfg, "tail", "batch_max_lines", 1000, 1, 100000);
    s->tail.defaults.region = region;
    s->tail.defaults.account_id = account;
    s->shipper.endpoint = config_str_required(cfg, "aggregator", "endpoint");
    s->shipper.agent_id = config_str(cfg, "agent", "id", region);
    s->shipper.region = region;
    s->shipper.batch_max_events =
        (size_t)config_int(cfg, "aggregator", "batch_max_events", 1000, 1, 10000);
    s->shipper.batch_max_bytes = (size_t)config_size(cfg, "aggregator", "batch_max_bytes",
                                                     4 << 20, 512 << 10, 64 << 20);
    s->shipper.linger_ms = config_duration_ms(cfg, "aggregator", "linger", 20, 1, 10000);
    s->shipper.window_batches = (size_t)config_int(cfg, "aggregator", "window", 16, 1, 1024);
    s->shipper.window_bytes = (size_t)config_size(cfg, "aggregator", "window_bytes", 8 << 20,
                                                  64 << 10, (int64_t)1 << 30);
    s->shipper.ack_timeout_ms =
        config_duration_ms(cfg, "aggregator", "ack_timeout", 5000, 100, 600000);
    s->shipper.heartbeat_ms = config_duration_ms(cfg, "aggregator", "heartbeat", 1000, 100, 60000);
    s->shipper.silence_ms =
        config_duration_ms(cfg, "aggregator", "silence_timeout", 5000, 500, 600000);
    if (s->shipper.silence_ms <= s->shipper.heartbeat_ms)
        config_error(cfg, "aggregator", "silence_timeout", "must be longer than heartbeat");
    if (config_bool(cfg, "security", "curve", true)) {
        s->shipper.secret_key_file = config_str_required(cfg, "security", "secret_key_file");
        s->shipper.aggregator_public_key_file =
            config_str_required(cfg, "security", "aggregator_public_key_file");
    } else {
        /* Known, and unused in plain text: a config that turns CURVE off
         * keeps its key files for when it is turned on again. */
        config_str(cfg, "security", "secret_key_file", NULL);
        config_str(cfg, "security", "aggregator_public_key_file", NULL);
    }
    config_check_unknown(cfg);
}

/* On SIGHUP: re-reads the config and applies what can change without a
 * restart (the log level and the selectors); a config with errors is
 * refused whole and the running settings stay. */
static int s_on_reload_tick(zloop_t *loop, int timer_id, void *arg)
{
    const s_reload_t *reload = arg;
    const char *config_path = reload->config_path;
    if (!cairn_signal_take_reload())
        return 0;
    char err[512];
    config_t *cfg = config_load(config_path, err, sizeof err);
    if (!cfg) {
        cairn_log_error("reload: %s; keeping the running configuration", err);
        return 0;
    }
    int old_level = cairn_log_level;
    s_settings_t settings = {0};
    s_read_settings(cfg, &settings);
    if (config_log_errors(cfg) > 0) {
        cairn_log_level = old_level;
        cairn_log_error("reload: %s has %zu error(s); keeping the running configuration",
                        config_path, config_error_count(cfg));
    } else {
        static const char *const names[] = {"error", "warning", "notice", "info", "debug"};
        if (old_level != cairn_log_level)
            cairn_log_notice("reload: log level %s -> %s", names[old_level],
                             names[cairn_log_level]);
        /* Logs each selector key that changed; requests and tail batches
         * in progress finish with the rules they started with. */
        selector_replace(reload->selector, &settings.selector_rules);
        cairn_log_notice("reload: done (addresses, spool, credentials, tail and shipping "
                         "settings take effect at restart)");
    }
    selector_rules_destroy(&settings.selector_rules);
    sigv4_keys_destroy(&settings.keys);
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
    cairn_log_set_ident("cairn-agent");
    while ((opt = getopt_long(argc, argv, "c:hV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; break;
        case 'k': is_check_only = 1; break;
        case 'h': s_usage(stdout); return 0;
        case 'V': printf("cairn-agent %s\n", CAIRN_VERSION); return 0;
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
        selector_rules_destroy(&settings.selector_rules);
        sigv4_keys_destroy(&settings.keys);
        config_destroy(&cfg);
        return 1;
    }
    if (is_check_only) {
        printf("%s: configuration is valid\n", config_path);
        selector_rules_destroy(&settings.selector_rules);
        sigv4_keys_destroy(&settings.keys);
        config_destroy(&cfg);
        return 0;
    }

    zsys_init();
    zsys_set_logsystem(false);
    int rc = 1;
    zloop_t *loop = zloop_new();
    spool_t *spool = spool_new(settings.data_dir, settings.spool_map_bytes, settings.is_durable);
    agent_metrics_t metrics = {.spool = spool,
                               .agent_id = settings.shipper.agent_id,
                               .region = settings.shipper.region};
    selector_t *selector = selector_new(&settings.selector_rules);
    settings.intake.fallback = agent_metrics_handle;
    settings.intake.fallback_ctx = &metrics;
    settings.intake.selector = selector;
    intake_t *intake = spool ? intake_new(spool, &settings.intake) : NULL;
    atomic_store(&metrics.intake, intake);
    settings.tail.selector = selector;
    bool has_tail = settings.tail.paths[0] != '\0';
    tail_t *tail = intake && has_tail ? tail_new(spool, &settings.tail) : NULL;
    atomic_store(&metrics.tail, tail);
    bool is_capturing = intake && (tail || !has_tail);
    shipper_t *shipper = is_capturing ? shipper_new(spool, loop, &settings.shipper) : NULL;
    atomic_store(&metrics.shipper, shipper);
    if (shipper && !settings.shipper.secret_key_file)
        cairn_log_warning("agent %s: [security] curve = off: events travel to the aggregator in "
                          "PLAIN TEXT and unauthenticated",
                          settings.shipper.agent_id);
    if (shipper) {
        cairn_log_notice("agent %s (%s): ready; intake on %s, shipping to %s",
                         settings.shipper.agent_id, settings.shipper.region,
                         settings.intake.listen, settings.shipper.endpoint);
        cairn_signal_catch_reload();
        s_reload_t reload = {config_path, selector};
        zloop_timer(loop, 250, 0, s_on_reload_tick, &reload);
        zloop_timer(loop, 1000, 0, cairn_mem_trim_timer, NULL);
        /* zloop_start also returns when a SIGHUP interrupts its poll; only
         * SIGTERM/SIGINT (zsys_interrupted) end the process. */
        while (zloop_start(loop) == 0 && !zsys_interrupted)
            ;
        cairn_log_notice("agent %s: stopping; %llu events stay spooled for the next start",
                         settings.shipper.agent_id,
                         (unsigned long long)spool_pending_count(spool));
        rc = 0;
    }
    /* The intake (and its /metrics) stops first: nothing reads the others then. */
    intake_destroy(&intake);
    tail_destroy(&tail);
    shipper_destroy(&shipper);
    selector_destroy(&selector);
    sigv4_keys_destroy(&settings.keys);
    spool_destroy(&spool);
    zloop_destroy(&loop);
    config_destroy(&cfg);
    return rc;
}
