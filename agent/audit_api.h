/* audit_api.h: CloudTrail Lake's PutAuditEvents on the agent's intake, so
 * `aws cloudtrail-data put-audit-events --endpoint-url ...` and the SDKs can
 * send to cairn unchanged.
 *
 *   POST /PutAuditEvents?channelArn=ARN[&externalId=ID]
 *   {"auditEvents":[{"id":"...","eventData":"<record JSON>","eventDataChecksum":"..."}]}
 *
 *   200 {"successful":[{"id","eventID"}],"failed":[{"id","errorCode","errorMessage"}]}
 *
 * Each eventData is one CloudTrail record, checked by the same event parser
 * as POST /v1/events. Partial success: the good events are spooled in one
 * transaction, the bad ones are listed in "failed" with CloudTrail Lake's
 * errorCode (InvalidChecksum, InvalidData, FieldNotFound, FieldTooLong,
 * InvalidRecipient). A request that is wrong as a whole gets 4xx with AWS's
 * error shape {"__type":CODE,"message":...} and nothing is spooled:
 * ValidationException (not JSON, wrong shape, 0 or over 100 events, a bad id,
 * no channelArn), DuplicatedAuditEventId, InvalidChannelARN; 413 over 1 MB.
 * A full spool answers 503 + Retry-After (the AWS CLI retries it).
 *
 * eventID: CloudTrail assigns it, and here it is derived from channelArn (as
 * sent) and the event's id (audit_api_event_id), so a retried call gives each
 * event the eventID it got the first time and the aggregator stores it once.
 * An eventData that carries its own eventID fails with InvalidData (CloudTrail
 * Lake's eventData schema has no eventID; silently replacing the sender's
 * would lose it). Missing awsRegion, recipientAccountId, eventTime etc. are
 * filled as for /v1/events; a recipientAccountId other than the channel ARN's
 * account fails with InvalidRecipient. externalId is checked for shape and
 * otherwise ignored (cairn has no channel resource policies).
 *
 * Selectors: a valid event the request's filter drops is not spooled and is
 * still listed in "successful" with its eventID, as in CloudTrail Lake,
 * where the channel accepts the event and the event data store's selectors
 * decide afterwards, unseen by the caller, whether it is kept. A caller
 * that retried a "failed" filtered event would only be filtered again.
 *
 * THREADS: an audit_api_t is used by one thread at a time (the intake keeps
 * one per HTTP pool thread); spool_append may be called from any thread. */
#ifndef CAIRN_AUDIT_API_H
#define CAIRN_AUDIT_API_H

#include <stdbool.h>
#include <stddef.h>

#include "cairn_http.h"
#include "event.h"
#include "spool.h"

#define AUDIT_API_MAX_EVENTS            100           /* auditEvents per request (CloudTrail's) */
#define AUDIT_API_MAX_BODY_BYTES        (1024 * 1024) /* request body (CloudTrail's 1 MB) */
#define AUDIT_API_MAX_ID_BYTES          128           /* id: 1..128 of [-_A-Za-z0-9] */
#define AUDIT_API_MAX_CHANNEL_ARN_BYTES 2048          /* channelArn accepted */

typedef struct audit_api audit_api_t;

/* Decides whether a valid event is spooled: true keeps it. event is
 * borrowed for the call. */
typedef bool(audit_api_filter_fn)(void *ctx, const Cairn__Event *event);

/* One PutAuditEvents call as received. Strings are borrowed. */
typedef struct {
    const char *channel_arn; /* channelArn query parameter, decoded; NULL if absent */
    const char *external_id; /* externalId, decoded; NULL if absent */
    const char *body;        /* request body */
    size_t body_len;
    audit_api_filter_fn *filter; /* selectors; NULL keeps every valid event */
    void *filter_ctx;
} audit_api_request_t;

/* What one call did, for the intake's counters. */
typedef struct {
    size_t accepted_count; /* events spooled (listed in "successful") */
    size_t filtered_count; /* valid events the filter dropped (also in "successful") */
    size_t failed_count;   /* events listed in "failed" */
    bool is_rejected;      /* the request was refused as a whole (4xx) */
    bool is_spool_full;    /* 503: nothing was spooled */
    bool is_spool_error;   /* 500: the spool write failed, nothing was spooled */
} audit_api_outcome_t;

/* Creates a handler with its own event parser (defaults as for the parser).
 * Returns NULL after logging why (no region). */
audit_api_t *audit_api_new(const event_defaults_t *defaults);

/* Frees the handler and sets *self_p to NULL. Accepts NULL. */
void audit_api_destroy(audit_api_t **self_p);

/* Serves one PutAuditEvents call: checks it, spools the good events with one
 * spool_append (the answer is written only after that commit), and fills
 * response (status, JSON body) and *outcome. The spool is borrowed. */
void audit_api_put_audit_events(audit_api_t *self, spool_t *spool,
                                const audit_api_request_t *request, cairn_http_response_t *response,
                                audit_api_outcome_t *outcome);

/* The eventID of the event id sent on channel_arn: the first 16 bytes of
 * SHA-256(channel_arn "\n" id) as a lower-case UUID with version 5 and the
 * RFC 4122 variant (36 chars + NUL into out). */
void audit_api_event_id(const char *channel_arn, const char *id, char out[37]);

#endif
