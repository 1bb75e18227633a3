/* audit_api.c: PutAuditEvents (see audit_api.h).
 *
 * DESIGN
 *
 * One call is three passes over small things, never a DOM:
 * 1. the body is parsed once with yajl's streaming callbacks; every value is
 *    a string, so a small state machine checks the shape and copies the
 *    decoded id, eventData and eventDataChecksum of each event into one
 *    buffer (offsets, since the buffer may grow);
 * 2. each event is checked on its own: checksum, then its record is given to
 *    the event parser with the derived eventID written in front of the
 *    record's own keys ({"eventID":"...", + the rest of eventData), so the
 *    parser fills everything else exactly as for POST /v1/events and refuses
 *    an eventData that has its own eventID as a duplicate field; good events
 *    are packed back to back, bad ones get an entry in "failed";
 * 3. the packed events go to the spool in one spool_append, and only after
 *    that commit is the answer written.
 *
 * Request-level problems stop at pass 1 and spool nothing. The buffers (strings,
 * record, packed events) and the yajl_gen of the answer are kept between calls
 * and only grow, so after warm-up a call allocates only yajl's parse handle
 * (yajl 2.1 cannot reset one) and the answer the HTTP server takes over.
 *
 * THREADS: one audit_api_t per thread (the intake keeps one per pool thread). */
#include "audit_api.h"

#include "cairn_log.h"
#include "cairn_mem.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>

#define UUID_TEXT_BYTES    36
#define PREFIX_MAX_BYTES   64   /* {"eventID":"<uuid>", */
#define MESSAGE_BYTES      1024 /* CloudTrail's errorMessage limit */
#define CHECKSUM_B64_BYTES 44   /* base64 of 32 bytes */

/* Where the body parse is. Every value is a string, so it never nests deeper. */
typedef enum {
    PARSE_START,        /* nothing read */
    PARSE_TOP,          /* in the top-level object: a key or its end */
    PARSE_EVENTS_VALUE, /* after "auditEvents": its array */
    PARSE_EVENTS,       /* in the array: an event object or the array's end */
    PARSE_EVENT,        /* in an event: a key or its end */
    PARSE_EVENT_VALUE,  /* after an event's key: its string */
    PARSE_DONE,         /* the top-level object has closed */
} s_parse_state_t;

typedef enum { FIELD_ID, FIELD_EVENT_DATA, FIELD_CHECKSUM, FIELD_COUNT } s_field_t;

static const char *const s_field_names[FIELD_COUNT] = {"id", "eventData", "eventDataChecksum"};

/* A decoded string in self->strings. */
typedef struct {
    size_t offset;
    size_t len;
    bool is_set;
} s_string_t;

/* One auditEvents entry. */
typedef struct {
    s_string_t fields[FIELD_COUNT];
    char event_id[UUID_TEXT_BYTES + 1]; /* derived eventID */
    const char *error_code;             /* NULL if spooled */
    char *error_message;                /* into messages, when error_code is set */
} s_entry_t;

struct audit_api {
    event_parser_t *parser;
    yajl_gen gen;                            /* the answer; reused */
    s_entry_t entries[AUDIT_API_MAX_EVENTS]; /* this call's events */
    size_t entry_count;
    char *strings; /* decoded strings of the body */
    size_t strings_len;
    size_t strings_cap;
    char *record;    /* prefix + one eventData */
    uint8_t *packed; /* packed good events, back to back */
    size_t packed_len;
    size_t packed_cap;
    size_t packed_offsets[AUDIT_API_MAX_EVENTS];
    size_t packed_count;
    char messages[AUDIT_API_MAX_EVENTS][MESSAGE_BYTES]; /* per-event error messages */
    /* body parse */
    s_parse_state_t state;
    s_field_t field;           /* key being read in PARSE_EVENT_VALUE */
    bool has_events;           /* "auditEvents" seen */
    const char *error_type;    /* request-level __type, NULL if fine */
    char error[MESSAGE_BYTES]; /* request-level message */
};

/* ---- helpers ---- */

static int s_reject(audit_api_t *self, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records a request-level error; returns 0 so a yajl callback can return it. */
static int s_reject(audit_api_t *self, const char *type, const char *fmt, ...)
{
    if (!self->error_type) {
        self->error_type = type;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(self->error, sizeof self->error, fmt, ap);
        va_end(ap);
    }
    return 0;
}

static void s_fail_event(audit_api_t *self, s_entry_t *entry, const char *code, const char *fmt,
                         ...) __attribute__((format(printf, 4, 5)));

static void s_fail_event(audit_api_t *self, s_entry_t *entry, const char *code, const char *fmt,
                         ...)
{
    entry->error_code = code;
    entry->error_message = self->messages[entry - self->entries];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(entry->error_message, MESSAGE_BYTES, fmt, ap);
    va_end(ap);
}

static const char *s_str(const audit_api_t *self, const s_string_t *s)
{
    return self->strings + s->offset;
}

static bool s_is_id_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static bool s_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* ---- pass 1: the body ---- */

static int s_on_unexpected(audit_api_t *self, const char *what)
{
    switch (self->state) {
    case PARSE_START:
        return s_reject(self, "ValidationException",
                        "request body must be a JSON object {\"auditEvents\":[...]}, found %s",
                        what);
    case PARSE_EVENTS_VALUE:
        return s_reject(self, "ValidationException", "auditEvents must be an array, found %s",
                        what);
    case PARSE_EVENTS:
        return s_reject(self, "ValidationException",
                        "auditEvents[%zu] must be an object {\"id\",\"eventData\"}, found %s",
                        self->entry_count, what);
    case PARSE_EVENT_VALUE:
        return s_reject(self, "ValidationException",
                        "auditEvents[%zu].%s must be a string, found %s", self->entry_count - 1,
                        s_field_names[self->field], what);
    default:
        return s_reject(self, "ValidationException", "unexpected %s in the request body", what);
    }
}

static int s_on_null(void *ctx)
{
    return s_on_unexpected(ctx, "null");
}

static int s_on_boolean(void *ctx, int value)
{
    return s_on_unexpected(ctx, "a boolean");
}

static int s_on_number(void *ctx, const char *text, size_t len)
{
    return s_on_unexpected(ctx, "a number");
}

static int s_on_string(void *ctx, const unsigned char *text, size_t len)
{
    audit_api_t *self = ctx;
    if (self->state != PARSE_EVENT_VALUE)
        return s_on_unexpected(self, "a string");
    if (self->strings_len + len + 1 > self->strings_cap) {
        self->strings_cap = (self->strings_len + len + 1) * 2;
        self->strings = cairn_realloc(self->strings, self->strings_cap);
    }
    s_string_t *s = &self->entries[self->entry_count - 1].fields[self->field];
    s->offset = self->strings_len;
    s->len = len;
    s->is_set = true;
    memcpy(self->strings + self->strings_len, text, len);
    self->strings[self->strings_len + len] = '\0';
    self->strings_len += len + 1;
    self->state = PARSE_EVENT;
    return 1;
}

static int s_on_map_key(void *ctx, const unsigned char *text, size_t len)
{
    audit_api_t *self = ctx;
    if (self->state == PARSE_TOP) {
        if (len != 11 || memcmp(text, "auditEvents", 11) != 0)
            return s_reject(self, "ValidationException",
                            "unknown field \"%.*s\" in the request body (expected auditEvents)",
                            (int)(len > 64 ? 64 : len), text);
        if (self->has_events)
            return s_reject(self, "ValidationException", "auditEvents is given twice");
        self->has_events = true;
        self->state = PARSE_EVENTS_VALUE;
        return 1;
    }
    /* PARSE_EVENT: the only other place yajl can give a key. */
    size_t index = self->entry_count - 1;
    for (int f = 0; f < FIELD_COUNT; f++) {
        if (strlen(s_field_names[f]) == len && memcmp(text, s_field_names[f], len) == 0) {
            if (self->entries[index].fields[f].is_set)
                return s_reject(self, "ValidationException", "auditEvents[%zu].%s is given twice",
                                index, s_field_names[f]);
            self->field = (s_field_t)f;
            self->state = PARSE_EVENT_VALUE;
            return 1;
        }
    }
    return s_reject(self, "ValidationException",
                    "auditEvents[%zu] has an unknown field \"%.*s\" (expected id, eventData, "
                    "eventDataChecksum)",
                    index, (int)(len > 64 ? 64 : len), text);
}

static int s_on_start_map(void *ctx)
{
    audit_api_t *self = ctx;
    if (self->state == PARSE_START) {
        self->state = PARSE_TOP;
        return 1;
    }
    if (self->state != PARSE_EVENTS)
        return s_on_unexpected(self, "an object");
    if (self->entry_count == AUDIT_API_MAX_EVENTS)
        return s_reject(self, "ValidationException",
                        "auditEvents has more than %d events; send at most %d per request",
                        AUDIT_API_MAX_EVENTS, AUDIT_API_MAX_EVENTS);
    s_entry_t *entry = &self->entries[self->entry_count++];
    memset(entry, 0, sizeof *entry);
    self->state = PARSE_EVENT;
    return 1;
}

/* The end of one event: it must have a valid id and an eventData. */
static int s_event_end(audit_api_t *self)
{
    size_t index = self->entry_count - 1;
    s_entry_t *entry = &self->entries[index];
    const s_string_t *id = &entry->fields[FIELD_ID];
    if (!id->is_set)
        return s_reject(self, "ValidationException", "auditEvents[%zu] has no id", index);
    bool is_id_ok = id->len >= 1 && id->len <= AUDIT_API_MAX_ID_BYTES;
    for (size_t i = 0; is_id_ok && i < id->len; i++)
        is_id_ok = s_is_id_char(s_str(self, id)[i]);
    if (!is_id_ok)
        return s_reject(self, "ValidationException",
                        "auditEvents[%zu].id must be 1 to %d characters of A-Z, a-z, 0-9, - and _",
                        index, AUDIT_API_MAX_ID_BYTES);
    if (!entry->fields[FIELD_EVENT_DATA].is_set)
        return s_reject(self, "ValidationException", "auditEvents[%zu] (id %s) has no eventData",
                        index, s_str(self, id));
    self->state = PARSE_EVENTS;
    return 1;
}

static int s_on_end_map(void *ctx)
{
    audit_api_t *self = ctx;
    if (self->state == PARSE_EVENT)
        return s_event_end(self);
    /* PARSE_TOP: yajl gives '}' only where a key or '}' may come. */
    self->state = PARSE_DONE;
    return 1;
}

static int s_on_start_array(void *ctx)
{
    audit_api_t *self = ctx;
    if (self->state != PARSE_EVENTS_VALUE)
        return s_on_unexpected(self, "an array");
    self->state = PARSE_EVENTS;
    return 1;
}

static int s_on_end_array(void *ctx)
{
    audit_api_t *self = ctx;
    /* Only the auditEvents array can be open here. */
    self->state = PARSE_TOP;
    return 1;
}

static const yajl_callbacks s_callbacks = {
    .yajl_null = s_on_null,
    .yajl_boolean = s_on_boolean,
    .yajl_number = s_on_number,
    .yajl_string = s_on_string,
    .yajl_start_map = s_on_start_map,
    .yajl_map_key = s_on_map_key,
    .yajl_end_map = s_on_end_map,
    .yajl_start_array = s_on_start_array,
    .yajl_end_array = s_on_end_array,
};

/* Parses the body into self->entries. Returns 0, or -1 with the request
 * error set. */
static int s_parse_body(audit_api_t *self, const char *body, size_t len)
{
    self->state = PARSE_START;
    self->has_events = false;
    self->entry_count = 0;
    self->strings_len = 0;
    yajl_handle yajl = yajl_alloc(&s_callbacks, NULL, self);
    yajl_status status = yajl_parse(yajl, (const unsigned char *)body, len);
    size_t offset = yajl_get_bytes_consumed(yajl);
    if (status == yajl_status_ok) {
        status = yajl_complete_parse(yajl);
        offset = len;
    }
    if (status == yajl_status_error) {
        unsigned char *msg = yajl_get_error(yajl, 0, (const unsigned char *)body, len);
        s_reject(self, "ValidationException", "request body is not valid JSON at byte %zu: %.*s",
                 offset, (int)strcspn((const char *)msg, "\r\n"), msg);
        yajl_free_error(yajl, msg);
    }
    yajl_free(yajl);
    if (!self->error_type && !self->has_events)
        s_reject(self, "ValidationException", "request body has no auditEvents");
    if (!self->error_type && self->entry_count == 0)
        s_reject(self, "ValidationException", "auditEvents must hold 1 to %d events",
                 AUDIT_API_MAX_EVENTS);
    for (size_t i = 0; !self->error_type && i < self->entry_count; i++)
        for (size_t j = 0; j < i; j++) {
            const s_string_t *a = &self->entries[i].fields[FIELD_ID];
            const s_string_t *b = &self->entries[j].fields[FIELD_ID];
            if (a->len == b->len && memcmp(s_str(self, a), s_str(self, b), a->len) == 0) {
                s_reject(self, "DuplicatedAuditEventId",
                         "Two or more entries in the request have the same event ID: %s",
                         s_str(self, a));
                break;
            }
        }
    return self->error_type ? -1 : 0;
}

/* ---- the channel ---- */

/* Checks channelArn ("arn:PARTITION:cloudtrail:REGION:ACCOUNT:channel/ID" or
 * a bare channel ID) and copies the ARN's account (or "") into account. */
static int s_check_channel(audit_api_t *self, const audit_api_request_t *request, char account[13])
{
    const char *arn = request->channel_arn;
    account[0] = '\0';
    if (!arn || !arn[0])
        return s_reject(self, "ValidationException", "the channelArn query parameter is required");
    size_t len = strlen(arn);
    bool is_printable = len <= AUDIT_API_MAX_CHANNEL_ARN_BYTES;
    for (size_t i = 0; is_printable && i < len; i++)
        is_printable = arn[i] > ' ' && arn[i] < 0x7f;
    if (!is_printable)
        return s_reject(self, "InvalidChannelARN",
                        "channelArn must be 1 to %d printable ASCII characters",
                        AUDIT_API_MAX_CHANNEL_ARN_BYTES);
    if (strncmp(arn, "arn:", 4) != 0) {
        for (size_t i = 0; i < len; i++)
            if (!s_is_id_char(arn[i]))
                return s_reject(self, "InvalidChannelARN",
                                "channelArn %s is neither an ARN nor a channel ID", arn);
    } else {
        /* arn : partition : service : region : account : resource */
        const char *parts[6];
        size_t lens[6], n = 0;
        const char *p = arn;
        while (n < 5) {
            const char *colon = strchr(p, ':');
            if (!colon)
                break;
            parts[n] = p;
            lens[n++] = (size_t)(colon - p);
            p = colon + 1;
        }
        bool is_ok = n == 5;
        if (is_ok) {
            parts[5] = p;
            lens[5] = strlen(p);
            is_ok = lens[1] > 0 && lens[2] == 10 && memcmp(parts[2], "cloudtrail", 10) == 0 &&
                    (lens[4] == 0 || (lens[4] == 12 && strspn(parts[4], "0123456789") >= 12)) &&
                    lens[5] > 8 && strncmp(parts[5], "channel/", 8) == 0;
        }
        if (!is_ok)
            return s_reject(self, "InvalidChannelARN",
                            "channelArn %s is not a channel ARN "
                            "(arn:aws:cloudtrail:REGION:ACCOUNT:channel/ID)",
                            arn);
        memcpy(account, parts[4], lens[4]);
        account[lens[4]] = '\0';
    }
    const char *ext = request->external_id;
    if (ext) {
        size_t ext_len = strlen(ext);
        bool is_ext_ok = ext_len >= 2 && ext_len <= 1224;
        for (size_t i = 0; is_ext_ok && i < ext_len; i++)
            is_ext_ok = s_is_id_char(ext[i]) || strchr("+=,.@:/", ext[i]);
        if (!is_ext_ok)
            return s_reject(self, "ValidationException",
                            "externalId must be 2 to 1224 characters of A-Z, a-z, 0-9 and "
                            "_+=,.@:/-");
    }
    return 0;
}

void audit_api_event_id(const char *channel_arn, const char *id, char out[37])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(md, channel_arn, strlen(channel_arn)) == 1 &&
             EVP_DigestUpdate(md, "\n", 1) == 1 && EVP_DigestUpdate(md, id, strlen(id)) == 1 &&
             EVP_DigestFinal_ex(md, digest, &digest_len) == 1;
    EVP_MD_CTX_free(md);
    if (!ok) {
        /* Only a broken OpenSSL; an eventID that is not this one would
         * defeat deduplication of retries, so this is as fatal as OOM. */
        cairn_log_error("audit_api: SHA-256 failed, cannot derive an eventID; aborting");
        abort();
    }
    digest[6] = (unsigned char)((digest[6] & 0x0f) | 0x50); /* version 5 (name-based, SHA) */
    digest[8] = (unsigned char)((digest[8] & 0x3f) | 0x80); /* variant 10 (RFC 4122) */
    size_t j = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[j++] = '-';
        out[j++] = hex[digest[i] >> 4];
        out[j++] = hex[digest[i] & 0x0f];
    }
    out[j] = '\0';
}

/* ---- pass 2: each event ---- */

static bool s_checksum_matches(const char *data, size_t len, const char *given)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    char b64[CHECKSUM_B64_BYTES + 1];
    if (EVP_Digest(data, len, digest, &digest_len, EVP_sha256(), NULL) != 1) {
        cairn_log_error("audit_api: SHA-256 failed; aborting");
        abort();
    }
    EVP_EncodeBlock((unsigned char *)b64, digest, (int)digest_len);
    return strcmp(b64, given) == 0;
}

static void s_pack(audit_api_t *self, const Cairn__Event *event)
{
    size_t size = cairn__event__get_packed_size(event);
    if (self->packed_len + size > self->packed_cap) {
        self->packed_cap = (self->packed_len + size) * 2;
        self->packed = cairn_realloc(self->packed, self->packed_cap);
    }
    self->packed_offsets[self->packed_count++] = self->packed_len;
    self->packed_len += cairn__event__pack(event, self->packed + self->packed_len);
}

/* Turns the parser's message about the prefixed record into one about
 * eventData, with the CloudTrail Lake errorCode that fits. */
static void s_fail_record(audit_api_t *self, s_entry_t *entry, const char *why, size_t prefix_len,
                          size_t brace_offset)
{
    size_t byte = 0;
    int used = 0;
    if (strcmp(why, "duplicate field eventID") == 0)
        s_fail_event(self, entry, "InvalidData",
                     "eventData must not have an eventID: PutAuditEvents assigns it (from "
                     "channelArn and id)");
    else if (strncmp(why, "missing required field ", 23) == 0)
        s_fail_event(self, entry, "FieldNotFound", "eventData is missing required field %s",
                     why + 23);
    else if (sscanf(why, "invalid JSON at byte %zu: %n", &byte, &used) == 1 && used > 0 &&
             byte >= prefix_len)
        /* Bytes counted in the prefixed text: give the offset in eventData. */
        s_fail_event(self, entry, "InvalidData", "eventData is not valid JSON at byte %zu: %s",
                     byte - prefix_len + brace_offset + 1, why + used);
    else
        s_fail_event(self, entry, "InvalidData", "eventData: %s", why);
}

/* Checks one event and packs it, unless it is bad (listed in "failed") or
 * the filter drops it (*is_filtered; listed in "successful"). */
static void s_check_event(audit_api_t *self, s_entry_t *entry, const audit_api_request_t *request,
                          const char *account, bool *is_filtered)
{
    const char *channel_arn = request->channel_arn;
    *is_filtered = false;
    const char *id = s_str(self, &entry->fields[FIELD_ID]);
    const s_string_t *data_s = &entry->fields[FIELD_EVENT_DATA];
    const char *data = s_str(self, data_s);
    const s_string_t *sum = &entry->fields[FIELD_CHECKSUM];
    audit_api_event_id(channel_arn, id, entry->event_id);
    if (sum->is_set && !s_checksum_matches(data, data_s->len, s_str(self, sum))) {
        s_fail_event(self, entry, "InvalidChecksum",
                     "eventDataChecksum is not the base64 SHA-256 of eventData");
        return;
    }
    size_t brace = 0;
    while (brace < data_s->len && s_is_space(data[brace]))
        brace++;
    if (brace == data_s->len || data[brace] != '{') {
        s_fail_event(self, entry, "InvalidData", "eventData is not a JSON object");
        return;
    }
    size_t rest = brace + 1;
    while (rest < data_s->len && s_is_space(data[rest]))
        rest++;
    bool is_empty_object = rest < data_s->len && data[rest] == '}';
    int prefix_len = snprintf(self->record, PREFIX_MAX_BYTES + 1, "{\"eventID\":\"%s\"%s",
                              entry->event_id, is_empty_object ? "" : ",");
    size_t tail_len = data_s->len - brace - 1;
    if ((size_t)prefix_len + tail_len > EVENT_MAX_RECORD_BYTES) {
        s_fail_event(self, entry, "FieldTooLong",
                     "eventData is %zu bytes; a record may be at most %zu bytes", data_s->len,
                     (size_t)(EVENT_MAX_RECORD_BYTES - prefix_len + brace + 1));
        return;
    }
    memcpy(self->record + prefix_len, data + brace + 1, tail_len);
    Cairn__Event event;
    char why[MESSAGE_BYTES - 64];
    if (event_parser_parse(self->parser, self->record, (size_t)prefix_len + tail_len, &event, why,
                           sizeof why) != 0) {
        s_fail_record(self, entry, why, (size_t)prefix_len, brace);
        return;
    }
    if (account[0] && event.recipient_account_id && strcmp(event.recipient_account_id, account)) {
        s_fail_event(self, entry, "InvalidRecipient",
                     "recipientAccountId %s is not the account of the channel (%s)",
                     event.recipient_account_id, account);
        return;
    }
    if (request->filter && !request->filter(request->filter_ctx, &event)) {
        *is_filtered = true;
        return;
    }
    s_pack(self, &event);
}

/* ---- pass 3 and the answer ---- */

static void s_gen_string(yajl_gen gen, const char *s)
{
    yajl_gen_string(gen, (const unsigned char *)s, strlen(s));
}

static void s_respond_gen(audit_api_t *self, cairn_http_response_t *response, int status)
{
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(self->gen, &buf, &len);
    free(response->body);
    response->body = cairn_malloc(len + 1);
    memcpy(response->body, buf, len);
    response->body[len] = '\0';
    response->body_len = len;
    response->status = status;
    response->content_type = "application/json";
    yajl_gen_reset(self->gen, NULL);
    yajl_gen_clear(self->gen);
}

/* {"__type":type,"message":message}: the shape botocore reads for rest-json. */
static void s_respond_error(audit_api_t *self, cairn_http_response_t *response, int status,
                            const char *type, const char *message)
{
    yajl_gen_map_open(self->gen);
    s_gen_string(self->gen, "__type");
    s_gen_string(self->gen, type);
    s_gen_string(self->gen, "message");
    if (yajl_gen_string(self->gen, (const unsigned char *)message, strlen(message)) !=
        yajl_gen_status_ok)
        s_gen_string(self->gen, "(message not valid UTF-8)");
    yajl_gen_map_close(self->gen);
    s_respond_gen(self, response, status);
}

static void s_respond_results(audit_api_t *self, cairn_http_response_t *response)
{
    yajl_gen gen = self->gen;
    yajl_gen_map_open(gen);
    s_gen_string(gen, "successful");
    yajl_gen_array_open(gen);
    for (size_t i = 0; i < self->entry_count; i++) {
        const s_entry_t *entry = &self->entries[i];
        if (entry->error_code)
            continue;
        yajl_gen_map_open(gen);
        s_gen_string(gen, "id");
        s_gen_string(gen, s_str(self, &entry->fields[FIELD_ID]));
        s_gen_string(gen, "eventID");
        s_gen_string(gen, entry->event_id);
        yajl_gen_map_close(gen);
    }
    yajl_gen_array_close(gen);
    s_gen_string(gen, "failed");
    yajl_gen_array_open(gen);
    for (size_t i = 0; i < self->entry_count; i++) {
        const s_entry_t *entry = &self->entries[i];
        if (!entry->error_code)
            continue;
        yajl_gen_map_open(gen);
        s_gen_string(gen, "id");
        s_gen_string(gen, s_str(self, &entry->fields[FIELD_ID]));
        s_gen_string(gen, "errorCode");
        s_gen_string(gen, entry->error_code);
        s_gen_string(gen, "errorMessage");
        if (yajl_gen_string(gen, (const unsigned char *)entry->error_message,
                            strlen(entry->error_message)) != yajl_gen_status_ok)
            s_gen_string(gen, "(message not valid UTF-8)");
        yajl_gen_map_close(gen);
    }
    yajl_gen_array_close(gen);
    yajl_gen_map_close(gen);
    s_respond_gen(self, response, 200);
}

void audit_api_put_audit_events(audit_api_t *self, spool_t *spool,
                                const audit_api_request_t *request, cairn_http_response_t *response,
                                audit_api_outcome_t *outcome)
{
    memset(outcome, 0, sizeof *outcome);
    self->error_type = NULL;
    self->error[0] = '\0';
    self->packed_len = 0;
    self->packed_count = 0;
    char account[13];
    if (request->body_len > AUDIT_API_MAX_BODY_BYTES) {
        char message[128];
        snprintf(message, sizeof message,
                 "request body is %zu bytes, over PutAuditEvents' %d-byte limit", request->body_len,
                 AUDIT_API_MAX_BODY_BYTES);
        outcome->is_rejected = true;
        s_respond_error(self, response, 413, "ValidationException", message);
        return;
    }
    if (s_check_channel(self, request, account) != 0 ||
        s_parse_body(self, request->body, request->body_len) != 0) {
        outcome->is_rejected = true;
        s_respond_error(self, response, 400, self->error_type, self->error);
        return;
    }
    size_t filtered_count = 0;
    for (size_t i = 0; i < self->entry_count; i++) {
        bool is_filtered;
        s_check_event(self, &self->entries[i], request, account, &is_filtered);
        filtered_count += is_filtered;
    }

    int rc = 0;
    if (self->packed_count) {
        const uint8_t *bufs[AUDIT_API_MAX_EVENTS];
        size_t lens[AUDIT_API_MAX_EVENTS];
        for (size_t i = 0; i < self->packed_count; i++) {
            size_t end =
                i + 1 < self->packed_count ? self->packed_offsets[i + 1] : self->packed_len;
            bufs[i] = self->packed + self->packed_offsets[i];
            lens[i] = end - self->packed_offsets[i];
        }
        rc = spool_append(spool, bufs, lens, self->packed_count, NULL);
    }
    if (rc == SPOOL_FULL) {
        outcome->is_spool_full = true;
        s_respond_error(self, response, 503, "ServiceUnavailableException",
                        "the agent's spool is full; nothing was stored; retry later");
        response->retry_after_s = 1;
    } else if (rc != 0) {
        outcome->is_spool_error = true;
        s_respond_error(self, response, 500, "InternalFailure",
                        "the agent could not write its spool; nothing was stored");
    } else {
        outcome->accepted_count = self->packed_count;
        outcome->filtered_count = filtered_count;
        outcome->failed_count = self->entry_count - self->packed_count - filtered_count;
        s_respond_results(self, response);
    }
}

/* ---- life cycle ---- */

audit_api_t *audit_api_new(const event_defaults_t *defaults)
{
    audit_api_t *self = cairn_calloc(1, sizeof *self);
    self->parser = event_parser_new(defaults);
    if (!self->parser) {
        audit_api_destroy(&self);
        return NULL;
    }
    self->gen = yajl_gen_alloc(NULL);
    self->record = cairn_malloc(EVENT_MAX_RECORD_BYTES + PREFIX_MAX_BYTES + 1);
    return self;
}

void audit_api_destroy(audit_api_t **self_p)
{
    audit_api_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    event_parser_destroy(&self->parser);
    if (self->gen)
        yajl_gen_free(self->gen);
    free(self->strings);
    free(self->record);
    free(self->packed);
    free(self);
    *self_p = NULL;
}
