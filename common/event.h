/* event.h: the event model. Parses CloudTrail records (JSON) into the
 * protobuf Event that the tiers exchange, at the edge, once.
 *
 * A parser is reusable and not thread-safe: one per thread. After warm-up it
 * does not allocate: the strings of a parsed Event and its canonical JSON
 * live in the parser's buffers, valid until the next call on that parser. */
#ifndef CAIRN_EVENT_H
#define CAIRN_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "cairn.pb-c.h"

#define EVENT_MAX_RECORD_BYTES (256 * 1024) /* CloudTrail's limit for one record */
#define EVENT_ID_MAX_BYTES     128          /* longest eventID accepted */
#define EVENT_VERSION_DEFAULT  "1.11"       /* eventVersion filled when missing */
#define EVENT_TYPE_DEFAULT     "AwsApiCall" /* eventType filled when missing */

typedef struct event_parser event_parser_t;

/* What the agent fills in when a record lacks it. Strings are copied. */
typedef struct {
    const char *region;     /* awsRegion */
    const char *account_id; /* recipientAccountId; may be NULL or "" (then not filled) */
} event_defaults_t;

/* Called once per record of a body by event_parser_parse_body. index is the
 * record's position in the body (0-based). event is borrowed: valid only
 * during the call. Return 0 to go on, -1 to stop (the body call returns -1).
 * It must not call the parser that called it. */
typedef int(event_record_fn)(void *ctx, size_t index, const Cairn__Event *event);

/* Creates a parser. Returns NULL (after logging why) only if defaults or
 * defaults->region is NULL or "". Destroy with event_parser_destroy. */
event_parser_t *event_parser_new(const event_defaults_t *defaults);

/* Frees the parser and sets *self_p to NULL. Accepts NULL. */
void event_parser_destroy(event_parser_t **self_p);

/* Parses one record: a JSON object of len bytes (need not be NUL-terminated).
 *
 * Requires eventName and eventSource (non-empty strings). eventTime, when
 * present, must be an ISO-8601 UTC string. eventID, awsRegion,
 * recipientAccountId, eventVersion, eventType, eventCategory, when present,
 * must be non-empty strings; userIdentity an object; readOnly and
 * managementEvent booleans; resources an array of objects. eventCategory and
 * managementEvent are read, never filled: "" and false when absent. Fills
 * what is missing: eventID (a random UUID v4), eventTime (now), awsRegion and
 * recipientAccountId (from the defaults), eventVersion, eventType.
 * event->json is the record as compact JSON with the filled fields appended
 * (in that order, after the record's own keys), keys and values otherwise
 * as given: strings decoded and re-escaped, numbers as
 * their original text. A filled eventTime is now in whole seconds, and
 * event_time_ms is that same second.
 *
 * Also rejected: a duplicated top-level key among those named above, a
 * string that is "" or holds a NUL (\u0000) in a field cairn indexes, an
 * eventID over EVENT_ID_MAX_BYTES, more than 127 levels of objects and arrays
 * (the record is the first), invalid UTF-8, anything after the object. userIdentity's
 * type, arn, userName and accessKeyId are read at its first level only; each
 * resource's ARN, type and accountId; the first 64 resources are indexed and
 * the JSON keeps them all. A nested value that is not a string is left out of
 * the index (kept in the JSON); a duplicated nested key is an error.
 *
 * Returns 0 and fills *event (pointers into the parser, valid until the next
 * call), or -1 with *event emptied and a message in err (may be NULL, is
 * truncated to errlen) naming the problem, e.g.
 * "missing required field eventName", "eventTime is not an ISO-8601 UTC time",
 * "duplicate field eventName", "readOnly is not a boolean (found string)",
 * "invalid JSON at byte 17: lexical error: invalid char in json text.",
 * "record is 300000 bytes, over the 262144-byte limit". A byte offset is where
 * yajl stopped, counted from the start of the input. */
int event_parser_parse(event_parser_t *self, const char *json, size_t len, Cairn__Event *event,
                       char *err, size_t errlen);

/* Parses a request body holding one record (an object), a JSON array of
 * records, or {"Records":[...]}, calling fn for each valid record in order.
 * The wrapper is an object whose first key is "Records" holding an array; it
 * may have no other key. Each record is checked as by event_parser_parse and
 * is limited to EVENT_MAX_RECORD_BYTES; the body is not (the caller limits
 * it). The body is parsed once, in place.
 *
 * fn is called as records are parsed, so a caller that needs all-or-nothing
 * buffers what fn gives it and commits only when this returns >= 0.
 *
 * Returns the number of records (>= 0), or -1 with err naming the bad record
 * and why ("record 3: missing required field eventSource", "record 1: not a
 * JSON object (found number)"; for a body that is not JSON: "invalid JSON at
 * byte N: ...", prefixed "record N: " when the error is inside a record, the
 * byte counted from the start of the body; "Records is not an array (found
 * number)"),
 * or -1 if fn returned -1 (err then says "stopped at record N"). An empty
 * array is 0 records. */
long event_parser_parse_body(event_parser_t *self, const char *body, size_t len,
                             event_record_fn *fn, void *ctx, char *err, size_t errlen);

/* Formats a random UUID v4 (lower-case, 36 chars + NUL) into out[37]. */
void event_uuid_v4(char out[37]);

#endif
