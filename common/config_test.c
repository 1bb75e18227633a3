/* config_test.c: the INI parser and its typed, line-numbered errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"

static const char *s_good = "# cairn-agent\n"
                            "\n"
                            "[agent]\n"
                            "region = us-east-1   # the agent's region\n"
                            "id = \"agent #1\"\n"
                            "; another comment\n"
                            "[http]\n"
                            "listen = 127.0.0.1:8080\n"
                            "max_body = 8M\n"
                            "timeout = 1500ms\n"
                            "linger = 2\n"
                            "fsync = off\n";

static void reads_values_of_every_type(void **state)
{
    config_t *cfg = config_parse("agent.conf", s_good);
    assert_non_null(cfg);
    assert_string_equal(config_str(cfg, "agent", "region", NULL), "us-east-1");
    assert_string_equal(config_str(cfg, "agent", "id", NULL), "agent #1");
    assert_string_equal(config_str(cfg, "http", "listen", NULL), "127.0.0.1:8080");
    assert_int_equal(config_size(cfg, "http", "max_body", 0, 0, INT64_MAX), 8 << 20);
    assert_int_equal(config_duration_ms(cfg, "http", "timeout", 0, 0, INT64_MAX), 1500);
    assert_int_equal(config_duration_ms(cfg, "http", "linger", 0, 0, INT64_MAX), 2000);
    assert_false(config_bool(cfg, "http", "fsync", true));
    assert_string_equal(config_str(cfg, "http", "absent", "dflt"), "dflt");
    config_check_unknown(cfg);
    assert_int_equal(config_error_count(cfg), 0);
    config_destroy(&cfg);
    assert_null(cfg);
}

static void errors_name_file_line_and_reason(void **state)
{
    config_t *cfg = config_parse("agg.conf", "[store]\n"
                                             "map_size = lots\n"
                                             "interval = 0\n"
                                             "this line is wrong\n"
                                             "[store]\n"
                                             "map_size = 2G\n"
                                             "typo_key = 1\n");
    assert_int_equal(config_error_count(cfg), 2); /* bad line 4, duplicate at 6 */
    assert_non_null(strstr(config_error_at(cfg, 0), "agg.conf:4: expected key = value"));
    assert_non_null(strstr(config_error_at(cfg, 1), "agg.conf:6: store.map_size: given twice"));
    config_size(cfg, "store", "map_size", 1, 1, INT64_MAX);
    assert_non_null(strstr(config_error_at(cfg, 2), "agg.conf:2: store.map_size: expected a size"));
    config_int(cfg, "store", "interval", 300, 1, 3600);
    assert_non_null(strstr(config_error_at(cfg, 3), "agg.conf:3: store.interval: 0 is out of range"));
    assert_null(config_str_required(cfg, "store", "dir"));
    assert_non_null(strstr(config_error_at(cfg, 4), "store.dir: missing required key"));
    config_check_unknown(cfg);
    assert_non_null(strstr(config_error_at(cfg, 5), "agg.conf:7: store.typo_key: unknown key"));
    config_destroy(&cfg);
}

static void missing_file_is_reported(void **state)
{
    char err[256];
    assert_null(config_load("/nonexistent/cairn.conf", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/cairn.conf"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_values_of_every_type),
        cmocka_unit_test(errors_name_file_line_and_reason),
        cmocka_unit_test(missing_file_is_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
