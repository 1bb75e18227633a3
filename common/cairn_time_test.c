/* cairn_time_test.c: ISO-8601 parsing and formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cairn_time.h"

static int parse(const char *s, int64_t *ms)
{
    return cairn_time_parse_iso8601(s, strlen(s), ms);
}

static void accepts_cloudtrail_forms(void **state)
{
    int64_t ms = 0;
    assert_int_equal(parse("2025-03-04T10:02:37Z", &ms), 0);
    assert_int_equal(ms, 1741082557000LL);
    assert_int_equal(parse("2025-03-04T10:02:37.250Z", &ms), 0);
    assert_int_equal(ms, 1741082557250LL);
    assert_int_equal(parse("2025-03-04T10:02:37+00:00", &ms), 0);
    assert_int_equal(ms, 1741082557000LL);
    assert_int_equal(parse("2024-02-29T00:00:00Z", &ms), 0);
}

static void rejects_what_is_not_a_utc_time(void **state)
{
    int64_t ms;
    const char *bad[] = {"", "yesterday", "2025-03-04", "2025-03-04 10:02:37Z",
                         "2025-03-04T10:02:37", "2025-03-04T10:02:37+02:00",
                         "2025-02-30T10:02:37Z", "2023-02-29T00:00:00Z", "2025-13-01T00:00:00Z",
                         "2025-03-04T24:00:00Z", "2025-03-04T10:02:37.Z", "2025-03-04T10:02:37Zjunk",
                         "1969-12-31T23:59:59Z"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(parse(bad[i], &ms), -1);
}

static void formats_round_trip(void **state)
{
    char out[21];
    cairn_time_format_iso8601(1741082557999LL, out);
    assert_string_equal(out, "2025-03-04T10:02:37Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accepts_cloudtrail_forms),
        cmocka_unit_test(rejects_what_is_not_a_utc_time),
        cmocka_unit_test(formats_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
