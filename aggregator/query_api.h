/* query_api.h: the aggregator's LookupEvents-compatible API.
 *
 * CloudTrail's own protocol (AWS JSON 1.1), so that
 *     aws cloudtrail lookup-events --endpoint-url http://HOST:PORT ...
 * and the SDKs work unchanged:
 *
 *   POST /   X-Amz-Target: com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents
 *            (or the short form CloudTrail_20131101.LookupEvents)
 *            Content-Type: application/x-amz-json-1.1, signed with SigV4 for
 *            the service "cloudtrail" with a configured access key.
 *   request  {"LookupAttributes":[{"AttributeKey":K,"AttributeValue":V}],
 *             "StartTime":s, "EndTime":s, "MaxResults":n, "NextToken":t,
 *             "EventCategory":"insight"}            (every member optional)
 *   answer   {"Events":[{EventId, EventName, ReadOnly ("true"/"false"),
 *             AccessKeyId, EventTime (epoch seconds), EventSource, Username,
 *             Resources[{ResourceType, ResourceName}], CloudTrailEvent (the
 *             record as a JSON string)}], "NextToken":t}
 *
 * Newest events first; at most MaxResults (1..50, default 50) per page;
 * NextToken only when there is another page. Errors are CloudTrail's:
 * HTTP 400 {"__type":NAME,"message":TEXT} with NAME one of
 * InvalidLookupAttributesException (more than one attribute, a ReadOnly
 * value other than true/false), ValidationException (unknown AttributeKey,
 * value missing or not 1..2000 characters), InvalidTimeRangeException
 * (StartTime after EndTime), InvalidMaxResultsException,
 * InvalidNextTokenException, InvalidEventCategoryException,
 * SerializationException (a body that is not a JSON object, a member of
 * the wrong type), UnknownOperationException (another X-Amz-Target); 403
 * with the SigV4 verifier's code (SignatureDoesNotMatch, ...) when the
 * signature does not hold.
 *
 * NextToken is opaque: the position of the page's last event and an HMAC
 * (SHA-256, truncated to 128 bits) over it and the query's parameters
 * (attribute, value, StartTime, EndTime). A token altered, forged, or
 * replayed with other parameters is InvalidNextTokenException, so a token
 * cannot widen a query. The HMAC key is [query] token_secret, or random at
 * each start when none is set: a restart then invalidates the tokens handed
 * out before it (a client starts its listing again).
 *
 * THREADS: query_api_handle runs on the HTTP pool threads, many at once;
 * the API keeps no state that changes after query_api_new. */
#ifndef CAIRN_QUERY_API_H
#define CAIRN_QUERY_API_H

#include <stdbool.h>
#include <stddef.h>

#include "cairn_http.h"
#include "sigv4.h"
#include "store.h"

#define QUERY_API_MAX_RESULTS      50   /* CloudTrail's limit and default */
#define QUERY_API_MAX_VALUE_CHARS  2000 /* longest AttributeValue (characters) */
#define QUERY_API_MIN_SECRET_BYTES 16   /* shortest [query] token_secret */
#define QUERY_API_SIGNING_SERVICE  "cloudtrail"
#define QUERY_API_CONTENT_TYPE     "application/x-amz-json-1.1"

typedef struct query_api query_api_t;

typedef struct {
    const sigv4_keys_t *keys; /* callers' access keys; borrowed, must outlive the API;
                                 NULL: no signature checked (tests only) */
    const char *token_secret; /* NextToken HMAC key (>= 16 bytes); NULL or "": random */
} query_api_options_t;

/* Makes the API over store (borrowed; must outlive it). Returns NULL after
 * logging why (a token_secret shorter than QUERY_API_MIN_SECRET_BYTES). */
query_api_t *query_api_new(store_t *store, const query_api_options_t *options);

/* Frees the API (wiping the token key) and sets *self_p to NULL. Accepts NULL. */
void query_api_destroy(query_api_t **self_p);

/* Answers request if it is for the API (POST /); returns false, answering
 * nothing, for any other path or method. Checks the signature, then the
 * X-Amz-Target, then runs the lookup. Any thread. */
bool query_api_handle(query_api_t *self, const cairn_http_request_t *request,
                      cairn_http_response_t *response);

/* Runs one LookupEvents request body (len bytes, NUL-terminated) and fills
 * response: the answer (200) or the error (400). No signature is checked:
 * query_api_handle calls it after checking; tests call it directly. */
void query_api_lookup_events(query_api_t *self, const char *body, size_t len,
                             cairn_http_response_t *response);

#endif
