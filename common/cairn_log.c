/* cairn_log.c: leveled logging to stderr.
 *
 * DESIGN: one formatted line per call, written with one write(2) so lines
 * from several threads never interleave. When systemd's journald owns stderr
 * (JOURNAL_STREAM is set) the line carries a "<N>" priority prefix instead of
 * a timestamp, which journald turns into the entry's priority. */
#include "cairn_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int cairn_log_level = CAIRN_LOG_INFO;
static const char *s_ident = "cairn";

static const char *const s_names[] = {"error", "warning", "notice", "info", "debug"};
static const int s_syslog_prio[] = {3, 4, 5, 6, 7};

int cairn_log_level_parse(const char *name)
{
    for (int i = 0; i < (int)(sizeof s_names / sizeof s_names[0]); i++)
        if (name && strcmp(name, s_names[i]) == 0)
            return i;
    return -1;
}

void cairn_log_set_ident(const char *ident)
{
    s_ident = ident;
}

void cairn_log_write(cairn_log_level_t level, const char *fmt, ...)
{
    char line[2048];
    size_t len = 0;
    if (getenv("JOURNAL_STREAM"))
        len = (size_t)snprintf(line, sizeof line, "<%d>%s: ", s_syslog_prio[level], s_names[level]);
    else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        len = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
        len += (size_t)snprintf(line + len, sizeof line - len, ".%03ldZ %s[%d] %s: ",
                                ts.tv_nsec / 1000000, s_ident, (int)getpid(), s_names[level]);
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line + len, sizeof line - len - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    len += (size_t)n;
    if (len > sizeof line - 2)
        len = sizeof line - 2; /* truncated: still end the line */
    line[len++] = '\n';
    ssize_t rc = write(STDERR_FILENO, line, len);
    (void)rc; /* nowhere to report a failed log write */
}
