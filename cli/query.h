/* query.h: `cairn query` — finds events in the aggregator's store: who did
 * what, when. Reads the store directly and read-only (LMDB readers never
 * block the writer), so it works while the aggregator runs. */
#ifndef CAIRN_CLI_QUERY_H
#define CAIRN_CLI_QUERY_H

#include <stdint.h>

/* Runs the subcommand (argv[0] is "query"). Returns the exit code: 0 (even
 * when nothing matched), 1 when the store cannot be read, 2 for usage
 * errors (each names the option and what it accepts). */
int query_main(int argc, char **argv);

/* Parses a --start/--end value: an ISO-8601 UTC time
 * ("2025-03-04T10:02:37Z", with optional fraction or "+00:00"), a date
 * ("2025-03-04", midnight UTC), "now", or a duration before now_ms ("30s",
 * "30m", "2h", "7d", "2w"). Returns 0 and sets *ms, or -1. */
int query_parse_time(const char *text, int64_t now_ms, int64_t *ms);

#endif
