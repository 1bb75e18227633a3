/* status.h: `cairn status` — asks the aggregator's /v1/status and shows, per
 * region, its agent's state, lag and backlog, then the delivery cursor and
 * the last delivered object. */
#ifndef CAIRN_CLI_STATUS_H
#define CAIRN_CLI_STATUS_H

/* Runs the subcommand (argv[0] is "status"). Returns the exit code: 0 when
 * the aggregator is healthy and every agent connected, 1 otherwise, 2 for
 * usage errors. */
int status_main(int argc, char **argv);

#endif
