/* intake.h: the agent's HTTP intake (libmicrohttpd).
 *
 *   POST /v1/events   body: one record, a JSON array of records, or
 *                     {"Records":[...]}. 200 {"accepted":N} only after the
 *                     events are committed to the spool; 400 {"error":...,
 *                     "record":K} naming the bad record (nothing of the request
 *                     is stored); 413 over max_body; 503 + Retry-After when the
 *                     spool is full.
 *   GET /health       200 {"status":"ok"}.
 *
 * Requests are served by libmicrohttpd's thread pool; each pool thread has
 * its own event parser. The spool must outlive the intake. */
#ifndef CAIRN_INTAKE_H
#define CAIRN_INTAKE_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "spool.h"

typedef struct intake intake_t;

typedef struct {
    const char *listen;        /* "HOST:PORT" (IPv4 or [IPv6]) */
    size_t max_body_bytes;     /* largest request body accepted */
    unsigned thread_count;     /* HTTP worker threads */
    event_defaults_t defaults; /* awsRegion, recipientAccountId filled in */
} intake_options_t;

typedef struct {
    uint64_t requests;         /* requests answered */
    uint64_t events_accepted;  /* events committed to the spool */
    uint64_t events_rejected;  /* records rejected as bad input */
    uint64_t requests_rejected; /* 400 answers */
    uint64_t spool_full;       /* 503 answers */
} intake_stats_t;

/* Starts listening. Returns NULL after logging why (address in use, bad
 * address). The spool is borrowed. */
intake_t *intake_new(spool_t *spool, const intake_options_t *options);

/* Stops serving (finishing requests in progress) and frees the intake. */
void intake_destroy(intake_t **self_p);

/* The port actually bound (useful with port 0). */
int intake_port(const intake_t *self);

void intake_get_stats(intake_t *self, intake_stats_t *stats);

#endif
