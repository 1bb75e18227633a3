/* intake.h: the agent's HTTP intake (libmicrohttpd).
 *
 *   POST /v1/events   body: one record, a JSON array of records, or
 *                     {"Records":[...]}. 200 {"accepted":N,"filtered":M}
 *                     only after the events are committed to the spool (M
 *                     valid records the selectors dropped: counted, not
 *                     spooled; all of them may be); 400 {"error":...,
 *                     "record":K} naming the bad record (nothing of the request
 *                     is stored); 413 over max_body; 503 + Retry-After when the
 *                     spool is full.
 *   POST /PutAuditEvents?channelArn=...[&externalId=...]
 *                     CloudTrail Lake's PutAuditEvents (see audit_api.h):
 *                     partial success, {"successful":[...],"failed":[...]};
 *                     events the selectors drop are listed in "successful"
 *                     (see audit_api.h).
 *   GET /health       200 {"status":"ok"}, or 503 with the reason while the
 *                     spool is full; never needs a signature.
 *   anything else     the fallback handler's (GET /metrics), else 404.
 *
 * Both POST endpoints take Content-Type application/json (or any
 * application/...+json, or text/plain, or none; a charset, if given, must be
 * utf-8); another type gets 415. With options.keys set, both need an AWS
 * SigV4 signature (service "cloudtrail-data", any region) by one of those
 * keys; a request without a valid one gets 403 with an AWS error body
 * {"__type":"SignatureDoesNotMatch","message":...} and changes nothing. A
 * request not received whole within request_timeout_s is dropped (the
 * connection is closed).
 *
 * Requests are served by libmicrohttpd's thread pool; each pool thread has
 * its own event parser and PutAuditEvents handler. The spool and the keys
 * must outlive the intake. */
#ifndef CAIRN_INTAKE_H
#define CAIRN_INTAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cairn_http.h"

#include "event.h"
#include "selector.h"
#include "sigv4.h"
#include "spool.h"

typedef struct intake intake_t;

/* Answers a request the intake does not know (e.g. GET /metrics), from an
 * HTTP pool thread. Returns true if it did. */
typedef bool(intake_fallback_fn)(void *ctx, const cairn_http_request_t *request,
                                 cairn_http_response_t *response);

typedef struct {
    const char *listen;         /* "HOST:PORT" (IPv4 or [IPv6]) */
    size_t max_body_bytes;      /* largest request body accepted */
    unsigned thread_count;      /* HTTP worker threads */
    event_defaults_t defaults;  /* awsRegion, recipientAccountId filled in */
    unsigned request_timeout_s; /* a request must arrive whole within this; 0 means 10 */
    const sigv4_keys_t *keys;   /* not NULL: POSTs need SigV4 by one of these (borrowed) */
    intake_fallback_fn *fallback; /* other endpoints, or NULL */
    void *fallback_ctx;
    selector_t *selector; /* drops events before the spool (borrowed); NULL keeps all */
} intake_options_t;

typedef struct {
    uint64_t requests;           /* requests answered */
    uint64_t events_accepted;    /* events committed to the spool */
    uint64_t events_rejected;    /* records rejected as bad input */
    uint64_t requests_rejected;  /* 400/413 answers from /v1/events and PutAuditEvents */
    uint64_t spool_full;         /* 503 answers */
    uint64_t audit_calls;        /* PutAuditEvents calls answered 200 (events counted above) */
    uint64_t bad_content_type;   /* 415 answers */
    uint64_t bad_method;         /* 405 answers */
    uint64_t auth_missing;       /* 403: no signature (MissingAuthenticationToken) */
    uint64_t auth_incomplete;    /* 403: malformed signature or X-Amz-Date (IncompleteSignature) */
    uint64_t auth_unknown_key;   /* 403: access key not configured */
    uint64_t auth_bad_signature; /* 403: signature, scope or payload hash wrong */
    uint64_t auth_expired;       /* 403: X-Amz-Date more than 15 minutes off */
    uint64_t timeouts;           /* requests dropped: not received within request_timeout_s */
    uint64_t events_filtered[SELECTOR_REASON_COUNT]; /* valid events the selectors dropped */
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
