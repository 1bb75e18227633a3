/* cairn_time.c: clocks and ISO-8601 UTC timestamps. */
#include "cairn_time.h"

#include <string.h>
#include <time.h>

int64_t cairn_time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cairn_time_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int s_digits(const char *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 0;
}

static int s_days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : days[month - 1];
}

int cairn_time_parse_iso8601(const char *s, size_t len, int64_t *ms)
{
    int year, month, day, hour, minute, second, millis = 0;
    if (len < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
        s[13] != ':' || s[16] != ':')
        return -1;
    if (s_digits(s, 4, &year) || s_digits(s + 5, 2, &month) || s_digits(s + 8, 2, &day) ||
        s_digits(s + 11, 2, &hour) || s_digits(s + 14, 2, &minute) ||
        s_digits(s + 17, 2, &second))
        return -1;
    if (year < 1970 || month < 1 || month > 12 || day < 1 ||
        day > s_days_in_month(year, month) || hour > 23 || minute > 59 || second > 60)
        return -1;
    size_t i = 19;
    if (s[i] == '.') {
        int scale = 100;
        i++;
        if (i >= len || s[i] < '0' || s[i] > '9')
            return -1;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            millis += (s[i] - '0') * scale;
            scale /= 10;
            i++;
        }
    }
    if (i + 1 == len && (s[i] == 'Z' || s[i] == 'z'))
        ;
    else if (i + 6 == len && strncmp(s + i, "+00:00", 6) == 0)
        ;
    else
        return -1;
    struct tm tm = {.tm_year = year - 1900, .tm_mon = month - 1, .tm_mday = day,
                    .tm_hour = hour, .tm_min = minute, .tm_sec = second};
    *ms = (int64_t)timegm(&tm) * 1000 + millis;
    return 0;
}

size_t cairn_time_format(int64_t ms, const char *fmt, char *out, size_t size)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    return strftime(out, size, fmt, &tm);
}

void cairn_time_format_iso8601(int64_t ms, char out[21])
{
    cairn_time_format(ms, "%Y-%m-%dT%H:%M:%SZ", out, 21);
}
