/* selector_test.c: selector rules from the config, matching, and swapping
 * rules under readers on other threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_log.h"
#include "cairn_mem.h"
#include "config.h"
#include "selector.h"

/* Rules from a [selectors] section; fails the test on a config error. */
static selector_rules_t *rules_of(const char *section_body)
{
    char text[4096];
    snprintf(text, sizeof text, "[selectors]\n%s\n", section_body);
    config_t *cfg = config_parse("test.conf", text);
    selector_rules_t *rules = selector_rules_read(cfg);
    if (!rules || config_error_count(cfg))
        fail_msg("config error: %s", config_error_count(cfg) ? config_error_at(cfg, 0) : "?");
    config_check_unknown(cfg);
    assert_int_equal(config_error_count(cfg), 0);
    config_destroy(&cfg);
    return rules;
}

/* The first error reading section_body records, or "" if none. */
static void error_of(const char *section_body, char *out, size_t size)
{
    char text[8192];
    snprintf(text, sizeof text, "[agent]\nregion = x\n[selectors]\n%s\n", section_body);
    config_t *cfg = config_parse("test.conf", text);
    config_str(cfg, "agent", "region", NULL);
    selector_rules_t *rules = selector_rules_read(cfg);
    snprintf(out, size, "%s", config_error_count(cfg) ? config_error_at(cfg, 0) : "");
    if (config_error_count(cfg))
        assert_null(rules);
    selector_rules_destroy(&rules);
    config_destroy(&cfg);
}

static Cairn__Event event_of(const char *source, const char *name, const char *category,
                             Cairn__ReadOnly read_only)
{
    Cairn__Event event = CAIRN__EVENT__INIT;
    event.event_source = (char *)source;
    event.event_name = (char *)name;
    event.event_category = (char *)category;
    event.read_only = read_only;
    return event;
}

#define READ  CAIRN__READ_ONLY__READ_ONLY_TRUE
#define WRITE CAIRN__READ_ONLY__READ_ONLY_FALSE
#define UNSET CAIRN__READ_ONLY__READ_ONLY_UNSET

static void absent_section_keeps_everything(void **state)
{
    config_t *cfg = config_parse("test.conf", "[agent]\nregion = x\n");
    selector_rules_t *rules = selector_rules_read(cfg);
    assert_non_null(rules);
    assert_true(selector_rules_is_keep_all(rules));
    char text[256];
    selector_rules_describe(rules, text, sizeof text);
    assert_string_equal(text, "keep all events");
    Cairn__Event ev = event_of("kms.amazonaws.com", "Decrypt", "Data", READ);
    assert_int_equal(selector_rules_match(rules, &ev), SELECTOR_KEEP);
    assert_int_equal(selector_match(NULL, &ev), SELECTOR_KEEP);
    selector_rules_destroy(&rules);
    assert_null(rules);
    config_destroy(&cfg);
}

static void read_write_selects_by_read_only(void **state)
{
    Cairn__Event read = event_of("s3.amazonaws.com", "GetObject", "Data", READ);
    Cairn__Event write = event_of("s3.amazonaws.com", "PutObject", "Data", WRITE);
    Cairn__Event unset = event_of("signin.amazonaws.com", "ConsoleLogin", "", UNSET);

    selector_rules_t *all = rules_of("read_write = all");
    assert_true(selector_rules_is_keep_all(all));
    assert_int_equal(selector_rules_match(all, &read), SELECTOR_KEEP);
    assert_int_equal(selector_rules_match(all, &write), SELECTOR_KEEP);
    assert_int_equal(selector_rules_match(all, &unset), SELECTOR_KEEP);
    selector_rules_destroy(&all);

    selector_rules_t *ro = rules_of("read_write = read_only");
    assert_int_equal(selector_rules_match(ro, &read), SELECTOR_KEEP);
    assert_int_equal(selector_rules_match(ro, &write), SELECTOR_BY_READ_WRITE);
    assert_int_equal(selector_rules_match(ro, &unset), SELECTOR_BY_READ_WRITE);
    selector_rules_destroy(&ro);

    /* What is not known to be a read is kept as a possible write. */
    selector_rules_t *wo = rules_of("read_write = write_only");
    assert_int_equal(selector_rules_match(wo, &read), SELECTOR_BY_READ_WRITE);
    assert_int_equal(selector_rules_match(wo, &write), SELECTOR_KEEP);
    assert_int_equal(selector_rules_match(wo, &unset), SELECTOR_KEEP);
    selector_rules_destroy(&wo);
}

static void exclude_lists_drop_what_they_name(void **state)
{
    selector_rules_t *rules =
        rules_of("exclude_event_sources = kms.amazonaws.com, rdsdata.amazonaws.com\n"
                 "exclude_event_names = GetObject,HeadObject\n"
                 "exclude_event_categories = NetworkActivity");
    Cairn__Event kms = event_of("kms.amazonaws.com", "Decrypt", "Management", READ);
    Cairn__Event rds = event_of("rdsdata.amazonaws.com", "ExecuteStatement", "Data", WRITE);
    Cairn__Event get = event_of("s3.amazonaws.com", "GetObject", "Data", READ);
    Cairn__Event head = event_of("s3.amazonaws.com", "HeadObject", "Data", READ);
    Cairn__Event vpce = event_of("ec2.amazonaws.com", "CreateVpc", "NetworkActivity", WRITE);
    Cairn__Event run = event_of("ec2.amazonaws.com", "RunInstances", "Management", WRITE);
    Cairn__Event near = event_of("KMS.amazonaws.com", "getobject", "networkactivity", WRITE);
    assert_int_equal(selector_rules_match(rules, &kms), SELECTOR_BY_EVENT_SOURCE);
    assert_int_equal(selector_rules_match(rules, &rds), SELECTOR_BY_EVENT_SOURCE);
    assert_int_equal(selector_rules_match(rules, &get), SELECTOR_BY_EVENT_NAME);
    assert_int_equal(selector_rules_match(rules, &head), SELECTOR_BY_EVENT_NAME);
    assert_int_equal(selector_rules_match(rules, &vpce), SELECTOR_BY_EVENT_CATEGORY);
    assert_int_equal(selector_rules_match(rules, &run), SELECTOR_KEEP);
    /* Exact, case-sensitive matches, as CloudTrail's Equals. */
    assert_int_equal(selector_rules_match(rules, &near), SELECTOR_KEEP);
    char text[512];
    selector_rules_describe(rules, text, sizeof text);
    assert_string_equal(text, "exclude_event_sources = kms.amazonaws.com, rdsdata.amazonaws.com; "
                              "exclude_event_names = GetObject, HeadObject; "
                              "exclude_event_categories = NetworkActivity");
    selector_rules_destroy(&rules);
}

static void include_lists_keep_only_what_they_name(void **state)
{
    selector_rules_t *rules =
        rules_of("read_write = write_only\n"
                 "include_event_sources = s3.amazonaws.com, ec2.amazonaws.com\n"
                 "include_event_categories = Management");
    Cairn__Event run = event_of("ec2.amazonaws.com", "RunInstances", "Management", WRITE);
    Cairn__Event put = event_of("s3.amazonaws.com", "PutObject", "Data", WRITE);
    Cairn__Event iam = event_of("iam.amazonaws.com", "CreateUser", "Management", WRITE);
    Cairn__Event list = event_of("s3.amazonaws.com", "ListBuckets", "Management", READ);
    /* No eventCategory: matched as Management, the category of API calls. */
    Cairn__Event bare = event_of("ec2.amazonaws.com", "StopInstances", "", UNSET);
    assert_int_equal(selector_rules_match(rules, &run), SELECTOR_KEEP);
    assert_int_equal(selector_rules_match(rules, &put), SELECTOR_BY_EVENT_CATEGORY);
    assert_int_equal(selector_rules_match(rules, &iam), SELECTOR_BY_EVENT_SOURCE);
    /* read_write is tried first: it is the reason. */
    assert_int_equal(selector_rules_match(rules, &list), SELECTOR_BY_READ_WRITE);
    assert_int_equal(selector_rules_match(rules, &bare), SELECTOR_KEEP);
    selector_rules_destroy(&rules);

    /* Many values, given in any order and with repeats, are searched right. */
    char body[8192] = "include_event_names = ", name[32];
    for (int i = 299; i >= 0; i--) {
        snprintf(name, sizeof name, "Op%03d%s", i % 250, i ? ", " : "");
        strcat(body, name);
    }
    rules = rules_of(body);
    for (int i = 0; i < 260; i++) {
        snprintf(name, sizeof name, "Op%03d", i);
        Cairn__Event ev = event_of("x", name, "Management", WRITE);
        assert_int_equal(selector_rules_match(rules, &ev),
                         i < 250 ? SELECTOR_KEEP : SELECTOR_BY_EVENT_NAME);
    }
    selector_rules_destroy(&rules);
}

static void config_mistakes_name_file_line_and_reason(void **state)
{
    char err[512];
    error_of("read_write = sometimes", err, sizeof err);
    assert_non_null(strstr(err, "test.conf:4: selectors.read_write"));
    assert_non_null(strstr(err, "not one of all, read_only, write_only"));
    error_of("include_event_sources = a, , b", err, sizeof err);
    assert_non_null(strstr(err, "selectors.include_event_sources: empty value"));
    error_of("exclude_event_names = a,", err, sizeof err);
    assert_non_null(strstr(err, "exclude_event_names: empty value"));
    error_of("include_event_sources = a\nexclude_event_sources = b", err, sizeof err);
    assert_non_null(strstr(err, "test.conf:5: selectors.exclude_event_sources: give "
                                "include_event_sources or exclude_event_sources, not both"));

    char *body = cairn_malloc(SELECTOR_MAX_VALUE_BYTES + 64);
    strcpy(body, "exclude_event_names = ");
    size_t len = strlen(body);
    memset(body + len, 'x', SELECTOR_MAX_VALUE_BYTES + 1);
    body[len + SELECTOR_MAX_VALUE_BYTES + 1] = '\0';
    error_of(body, err, sizeof err);
    assert_non_null(strstr(err, "2049 bytes, over the 2048-byte limit"));
    free(body);

    char many[8192] = "exclude_event_names = ", name[16];
    for (int i = 0; i < SELECTOR_MAX_VALUES + 1; i++) {
        snprintf(name, sizeof name, "%s%d", i ? "," : "", i);
        strcat(many, name);
    }
    error_of(many, err, sizeof err);
    assert_non_null(strstr(err, "more than 500 values"));

    /* A typo in a key is an unknown key once the section is read. */
    config_t *cfg = config_parse("test.conf", "[selectors]\nexclude_event_source = kms\n");
    selector_rules_t *rules = selector_rules_read(cfg);
    assert_non_null(rules);
    config_check_unknown(cfg);
    assert_int_equal(config_error_count(cfg), 1);
    selector_rules_destroy(&rules);
    config_destroy(&cfg);
}

/* ---- swapping rules under readers ---- */

typedef struct {
    selector_t *selector;
    atomic_bool is_stopping;
    atomic_uint_fast64_t matched;      /* rule sets acquired and checked */
    atomic_uint_fast64_t inconsistent; /* a rule set that was neither A nor B */
} swap_ctx_t;

/* A drops source "a", B drops source "b": one acquired rule set must drop
 * exactly one of the two events, whatever the reload does meanwhile. */
static void *reader(void *arg)
{
    swap_ctx_t *ctx = arg;
    Cairn__Event a = event_of("a", "x", "Management", WRITE);
    Cairn__Event b = event_of("b", "x", "Management", WRITE);
    while (!atomic_load(&ctx->is_stopping)) {
        const selector_rules_t *rules = selector_acquire(ctx->selector);
        for (int i = 0; i < 20; i++) {
            bool drops_a = selector_match(rules, &a) != SELECTOR_KEEP;
            bool drops_b = selector_match(rules, &b) != SELECTOR_KEEP;
            if (drops_a == drops_b)
                atomic_fetch_add(&ctx->inconsistent, 1);
        }
        selector_release(ctx->selector, &rules);
        if (rules) /* cmocka's asserts are for the main thread */
            atomic_fetch_add(&ctx->inconsistent, 1);
        atomic_fetch_add(&ctx->matched, 1);
    }
    return NULL;
}

static void replace_is_atomic_for_readers(void **state)
{
    selector_rules_t *first = rules_of("exclude_event_sources = a");
    swap_ctx_t ctx = {.selector = selector_new(&first)};
    assert_null(first);
    pthread_t threads[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, reader, &ctx), 0);
    int level = cairn_log_level;
    cairn_log_level = CAIRN_LOG_WARNING; /* each replace logs its change */
    for (int i = 0; i < 2000; i++) {
        selector_rules_t *next =
            rules_of(i % 2 ? "exclude_event_sources = a" : "exclude_event_sources = b");
        selector_replace(ctx.selector, &next);
        assert_null(next);
    }
    cairn_log_level = level;
    atomic_store(&ctx.is_stopping, true);
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);
    assert_true(atomic_load(&ctx.matched) > 0);
    assert_int_equal(atomic_load(&ctx.inconsistent), 0);

    /* Rules held across a replace stay valid until released. */
    const selector_rules_t *held = selector_acquire(ctx.selector);
    selector_rules_t *other = rules_of("include_event_names = y");
    selector_replace(ctx.selector, &other);
    Cairn__Event ev = event_of("a", "x", "Management", WRITE);
    assert_int_equal(selector_match(held, &ev), SELECTOR_BY_EVENT_SOURCE);
    selector_release(ctx.selector, &held);
    const selector_rules_t *now = selector_acquire(ctx.selector);
    assert_int_equal(selector_match(now, &ev), SELECTOR_BY_EVENT_NAME);
    selector_release(ctx.selector, &now);

    selector_destroy(&ctx.selector);
    assert_null(ctx.selector);
    selector_destroy(&ctx.selector); /* accepts NULL */
    assert_null(selector_acquire(NULL));
}

static void matching_does_not_allocate(void **state)
{
    selector_rules_t *rules = rules_of("exclude_event_sources = kms.amazonaws.com, a, b, c");
    selector_t *selector = selector_new(&rules);
    Cairn__Event ev = event_of("s3.amazonaws.com", "GetObject", "Data", READ);
    uint64_t before = cairn_alloc_count();
    for (int i = 0; i < 1000; i++) {
        const selector_rules_t *r = selector_acquire(selector);
        assert_int_equal(selector_match(r, &ev), SELECTOR_KEEP);
        selector_release(selector, &r);
    }
    assert_int_equal(cairn_alloc_count(), before);
    assert_string_equal(selector_reason_name(SELECTOR_BY_EVENT_SOURCE), "event_source");
    assert_string_equal(selector_reason_name(SELECTOR_BY_READ_WRITE), "read_write");
    selector_destroy(&selector);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(absent_section_keeps_everything),
        cmocka_unit_test(read_write_selects_by_read_only),
        cmocka_unit_test(exclude_lists_drop_what_they_name),
        cmocka_unit_test(include_lists_keep_only_what_they_name),
        cmocka_unit_test(config_mistakes_name_file_line_and_reason),
        cmocka_unit_test(replace_is_atomic_for_readers),
        cmocka_unit_test(matching_does_not_allocate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
