/* cairn_time.h: wall-clock time and CloudTrail's ISO-8601 UTC timestamps. */
#ifndef CAIRN_TIME_H
#define CAIRN_TIME_H

#include <stddef.h>
#include <stdint.h>

/* Milliseconds since the epoch, from CLOCK_REALTIME. */
int64_t cairn_time_now_ms(void);

/* Milliseconds from CLOCK_MONOTONIC, for timeouts. */
int64_t cairn_time_mono_ms(void);

/* Parses an ISO-8601 UTC time: "YYYY-MM-DDTHH:MM:SSZ", optionally with a
 * fraction of a second (".123Z") or "+00:00" for "Z". len is the length of
 * text (it need not be NUL-terminated). Returns 0 and sets *ms, or -1 if the
 * text is not such a time (including impossible dates like 02-30). */
int cairn_time_parse_iso8601(const char *text, size_t len, int64_t *ms);

/* Writes "YYYY-MM-DDTHH:MM:SSZ" (20 bytes + NUL) for ms into out[21]. */
void cairn_time_format_iso8601(int64_t ms, char out[21]);

/* Writes strftime(fmt) of ms in UTC into out; returns its length. */
size_t cairn_time_format(int64_t ms, const char *fmt, char *out, size_t size);

#endif
