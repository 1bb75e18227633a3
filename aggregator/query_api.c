/* query_api.c: LookupEvents over CloudTrail's JSON 1.1 protocol (see query_api.h).
 *
 * DESIGN: one request is one store_query. The request is small, so it is
 * parsed with yajl's tree API; the answer can be large (50 records of up to
 * 256 KB each, escaped into JSON strings), so it is written straight into
 * one buffer as store_query streams the hits, and the store is asked for
 * one hit more than the page holds: that hit's existence is what decides
 * whether a NextToken is given ("no NextToken" means the last page, as
 * CloudTrail's clients expect).
 *
 * A NextToken is base64url("\x01" | eventTime ms (8) | seq (8) | mac (16)):
 * the store position of the page's last event, which store_query resumes
 * strictly below, and a truncated HMAC-SHA256 over the position and the
 * query's parameters. Binding the parameters means a token cannot be moved
 * to another attribute or a wider time range; the position itself reveals
 * nothing the caller was not just shown.
 *
 * THREADS: handlers run on many HTTP pool threads at once. After
 * query_api_new nothing here changes: the store and the keys are safe for
 * concurrent readers, and the HMAC is computed with one-shot calls. */
#include "query_api.h"

#include "cairn_buf.h"
#include "cairn_log.h"
#include "cairn_mem.h"
#include "cairn_time.h"

#include <math.h>
#include <stdarg.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

#define S_TARGET_LONG   "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101."
#define S_TARGET_SHORT  "CloudTrail_20131101."
#define S_TOKEN_VERSION 1
#define S_MAC_BYTES     16
#define S_TOKEN_BYTES   (1 + 8 + 8 + S_MAC_BYTES)
#define S_TOKEN_CHARS   44     /* base64url of S_TOKEN_BYTES, unpadded */
#define S_KEY_BYTES     32     /* random token key */
#define S_MAX_SECONDS   1.0e13 /* |StartTime|, |EndTime| beyond this are not times */

struct query_api {
    store_t *store;           /* borrowed */
    const sigv4_keys_t *keys; /* borrowed; NULL: no signature checked */
    unsigned char *token_key; /* HMAC key of NextTokens */
    size_t token_key_len;
};

/* The lookup attributes CloudTrail accepts, and the store's index of each. */
static const struct {
    const char *name;
    int attr; /* store_attr_t, or -1 for EventId (the ids database) */
} s_keys[] = {
    {"EventId", -1},
    {"EventName", STORE_ATTR_EVENT_NAME},
    {"ReadOnly", STORE_ATTR_READ_ONLY},
    {"Username", STORE_ATTR_USERNAME},
    {"ResourceType", STORE_ATTR_RESOURCE_TYPE},
    {"ResourceName", STORE_ATTR_RESOURCE_NAME},
    {"EventSource", STORE_ATTR_EVENT_SOURCE},
    {"AccessKeyId", STORE_ATTR_ACCESS_KEY_ID},
};
#define S_KEY_COUNT (sizeof s_keys / sizeof *s_keys)
#define S_KEY_LIST                                                                                 \
    "[EventId, EventName, ReadOnly, Username, ResourceType, ResourceName, EventSource, "           \
    "AccessKeyId]"

/* One parsed request. */
typedef struct {
    int key_index;     /* into s_keys, or -1: no lookup attribute */
    const char *value; /* its AttributeValue (borrowed from the tree) */
    bool has_start;
    int64_t start_ms;
    bool has_end;
    int64_t end_ms;
    size_t max_results;
    bool is_insight; /* EventCategory "insight": cairn stores no Insights events */
    const char *next_token;
} s_lookup_t;

/* --- output -------------------------------------------------------------- */

static void s_reserve(cairn_buf_t *out, size_t more)
{
    if (out->cap - out->len > more)
        return;
    out->cap = (out->len + more + 1) * 2;
    out->text = cairn_realloc(out->text, out->cap);
}

static void s_append(cairn_buf_t *out, const char *text, size_t len)
{
    s_reserve(out, len);
    memcpy(out->text + out->len, text, len);
    out->len += len;
    out->text[out->len] = '\0';
}

/* Appends text[0..len) as a JSON string, quotes included. Bytes >= 0x80
 * (UTF-8, already validated by whoever made the text) pass through. */
static void s_append_string(cairn_buf_t *out, const char *text, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    s_reserve(out, len + 2);
    out->text[out->len++] = '"';
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        s_append(out, text + run, i - run);
        char esc[6] = {'\\', (char)c, 0};
        size_t esc_len = 2;
        if (c < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            esc_len = 6;
        }
        s_append(out, esc, esc_len);
        run = i + 1;
    }
    s_append(out, text + run, len - run);
    s_append(out, "\"", 1);
}

static void s_append_cstring(cairn_buf_t *out, const char *text)
{
    s_append_string(out, text ? text : "", text ? strlen(text) : 0);
}

/* An AWS-shaped error: {"__type":NAME,"message":TEXT}. */
static void s_respond_error(cairn_http_response_t *response, int status, const char *type,
                            const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void s_respond_error(cairn_http_response_t *response, int status, const char *type,
                            const char *fmt, ...)
{
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    /* The message may quote the request: bytes outside ASCII become '?', so
     * a value cut mid-character cannot make the answer invalid JSON. */
    for (char *p = message; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    cairn_buf_t out;
    cairn_buf_init(&out);
    s_append(&out, "{\"__type\":", 10);
    s_append_cstring(&out, type);
    s_append(&out, ",\"message\":", 11);
    s_append_cstring(&out, message);
    s_append(&out, "}", 1);
    free(response->body);
    response->status = status;
    response->content_type = QUERY_API_CONTENT_TYPE;
    response->body = cairn_buf_take(&out, &response->body_len);
}

/* --- NextToken ----------------------------------------------------------- */

static void s_put_u64(uint8_t *out, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (uint8_t)v;
}

static uint64_t s_get_u64(const uint8_t *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | in[i];
    return v;
}

/* The MAC of a token: over its first 17 bytes and the query's parameters. */
static void s_token_mac(const query_api_t *self, const uint8_t *head, const s_lookup_t *lookup,
                        uint8_t mac[S_MAC_BYTES])
{
    cairn_buf_t msg;
    cairn_buf_init(&msg);
    uint8_t times[18] = {0};
    times[0] = lookup->has_start;
    s_put_u64(times + 1, (uint64_t)lookup->start_ms);
    times[9] = lookup->has_end;
    s_put_u64(times + 10, (uint64_t)lookup->end_ms);
    const char *key = lookup->key_index >= 0 ? s_keys[lookup->key_index].name : "";
    const char *value = lookup->key_index >= 0 ? lookup->value : "";
    s_append(&msg, "cairn LookupEvents NextToken v1", 32); /* with its NUL */
    s_append(&msg, (const char *)head, 17);
    s_append(&msg, key, strlen(key) + 1);
    s_append(&msg, value, strlen(value) + 1);
    s_append(&msg, (const char *)times, sizeof times);
    unsigned char full[EVP_MAX_MD_SIZE];
    unsigned int full_len = 0;
    HMAC(EVP_sha256(), self->token_key, (int)self->token_key_len, (const unsigned char *)msg.text,
         msg.len, full, &full_len);
    memcpy(mac, full, S_MAC_BYTES);
    cairn_buf_fini(&msg);
}

/* Writes the token for position into out. */
static void s_token_make(const query_api_t *self, const s_lookup_t *lookup,
                         const store_position_t *position, char out[S_TOKEN_CHARS + 1])
{
    uint8_t raw[S_TOKEN_BYTES];
    unsigned char b64[S_TOKEN_CHARS + 8] = {0}; /* EVP_EncodeBlock adds a NUL */
    raw[0] = S_TOKEN_VERSION;
    s_put_u64(raw + 1, (uint64_t)position->event_time_ms);
    s_put_u64(raw + 9, position->seq);
    s_token_mac(self, raw, lookup, raw + 17);
    EVP_EncodeBlock(b64, raw, sizeof raw); /* 44 chars: 33 bytes need no padding */
    for (size_t i = 0; i < S_TOKEN_CHARS; i++)
        out[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char)b64[i];
    out[S_TOKEN_CHARS] = '\0';
}

/* Checks token against lookup's parameters. Returns 0 and sets *position,
 * or -1 if it is not a token this API made for these parameters. */
static int s_token_check(const query_api_t *self, const s_lookup_t *lookup, const char *token,
                         store_position_t *position)
{
    unsigned char b64[S_TOKEN_CHARS + 1];
    uint8_t raw[S_TOKEN_BYTES + 3];
    uint8_t mac[S_MAC_BYTES];
    if (strlen(token) != S_TOKEN_CHARS)
        return -1;
    for (size_t i = 0; i < S_TOKEN_CHARS; i++) {
        char c = token[i];
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (c == '+' || c == '/' || c == '=')
            return -1; /* one spelling only */
        b64[i] = (unsigned char)c;
    }
    if (EVP_DecodeBlock(raw, b64, S_TOKEN_CHARS) != S_TOKEN_BYTES || raw[0] != S_TOKEN_VERSION)
        return -1;
    s_token_mac(self, raw, lookup, mac);
    if (CRYPTO_memcmp(mac, raw + 17, S_MAC_BYTES) != 0)
        return -1;
    position->event_time_ms = (int64_t)s_get_u64(raw + 1);
    position->seq = s_get_u64(raw + 9);
    return 0;
}

/* --- request ------------------------------------------------------------- */

static yajl_val s_member(yajl_val object, const char *name)
{
    for (size_t i = 0; i < object->u.object.len; i++)
        if (!strcmp(object->u.object.keys[i], name))
            return object->u.object.values[i];
    return NULL;
}

/* The text of a string value (checked to be one by the caller), else "". */
static const char *s_string(yajl_val v)
{
    return YAJL_IS_STRING(v) && v->u.string ? v->u.string : "";
}

static size_t s_utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

/* Reads epoch seconds (fractional allowed) into *ms. Returns 0, or -1 after
 * answering. An absent or null member leaves *has false. */
static int s_parse_time(yajl_val root, const char *name, bool *has, int64_t *ms,
                        cairn_http_response_t *response)
{
    yajl_val v = s_member(root, name);
    *has = false;
    if (!v || YAJL_IS_NULL(v))
        return 0;
    if (!YAJL_IS_NUMBER(v) || !YAJL_IS_DOUBLE(v)) {
        s_respond_error(response, 400, "SerializationException",
                        "%s must be a timestamp in epoch seconds (a number)", name);
        return -1;
    }
    double seconds = YAJL_GET_DOUBLE(v);
    if (!isfinite(seconds) || fabs(seconds) > S_MAX_SECONDS) {
        s_respond_error(response, 400, "InvalidTimeRangeException",
                        "%s %g is not a time in epoch seconds", name, seconds);
        return -1;
    }
    *ms = llround(seconds * 1000.0);
    *has = true;
    return 0;
}

/* Checks LookupAttributes. Returns 0, or -1 after answering. */
static int s_parse_attributes(yajl_val root, s_lookup_t *lookup, cairn_http_response_t *response)
{
    yajl_val list = s_member(root, "LookupAttributes");
    lookup->key_index = -1;
    if (!list || YAJL_IS_NULL(list))
        return 0;
    if (!YAJL_IS_ARRAY(list)) {
        s_respond_error(response, 400, "SerializationException", "LookupAttributes must be a list");
        return -1;
    }
    if (list->u.array.len > 1) {
        s_respond_error(response, 400, "InvalidLookupAttributesException",
                        "You can specify at most one lookup attribute; %zu were given",
                        list->u.array.len);
        return -1;
    }
    if (list->u.array.len == 0)
        return 0;
    yajl_val item = list->u.array.values[0];
    if (!YAJL_IS_OBJECT(item)) {
        s_respond_error(response, 400, "SerializationException",
                        "LookupAttributes.1 must be an object");
        return -1;
    }
    yajl_val key = s_member(item, "AttributeKey");
    yajl_val value = s_member(item, "AttributeValue");
    if (!key || YAJL_IS_NULL(key) || !value || YAJL_IS_NULL(value)) {
        s_respond_error(response, 400, "ValidationException",
                        "1 validation error detected: Value null at "
                        "'lookupAttributes.1.member.%s' failed to satisfy constraint: Member "
                        "must not be null",
                        !key || YAJL_IS_NULL(key) ? "attributeKey" : "attributeValue");
        return -1;
    }
    if (!YAJL_IS_STRING(key) || !YAJL_IS_STRING(value)) {
        s_respond_error(response, 400, "SerializationException",
                        "AttributeKey and AttributeValue must be strings");
        return -1;
    }
    for (size_t i = 0; i < S_KEY_COUNT && lookup->key_index < 0; i++)
        if (!strcmp(s_string(key), s_keys[i].name))
            lookup->key_index = (int)i;
    if (lookup->key_index < 0) {
        s_respond_error(response, 400, "ValidationException",
                        "1 validation error detected: Value '%.100s' at "
                        "'lookupAttributes.1.member.attributeKey' failed to satisfy constraint: "
                        "Member must satisfy enum value set: " S_KEY_LIST,
                        s_string(key));
        return -1;
    }
    lookup->value = s_string(value);
    size_t chars = s_utf8_chars(lookup->value);
    if (chars < 1 || chars > QUERY_API_MAX_VALUE_CHARS) {
        s_respond_error(response, 400, "ValidationException",
                        "1 validation error detected: Value at "
                        "'lookupAttributes.1.member.attributeValue' failed to satisfy "
                        "constraint: Member must have length %s %d",
                        chars < 1 ? "greater than or equal to" : "less than or equal to",
                        chars < 1 ? 1 : QUERY_API_MAX_VALUE_CHARS);
        return -1;
    }
    if (s_keys[lookup->key_index].attr == STORE_ATTR_READ_ONLY &&
        strcmp(lookup->value, "true") != 0 && strcmp(lookup->value, "false") != 0) {
        s_respond_error(response, 400, "InvalidLookupAttributesException",
                        "ReadOnly must be \"true\" or \"false\", not \"%.100s\"", lookup->value);
        return -1;
    }
    return 0;
}

/* Parses and checks the whole request. Returns 0, or -1 after answering. */
static int s_parse(yajl_val root, s_lookup_t *lookup, cairn_http_response_t *response)
{
    if (s_parse_attributes(root, lookup, response) != 0 ||
        s_parse_time(root, "StartTime", &lookup->has_start, &lookup->start_ms, response) != 0 ||
        s_parse_time(root, "EndTime", &lookup->has_end, &lookup->end_ms, response) != 0)
        return -1;
    if (lookup->has_start && lookup->has_end && lookup->start_ms > lookup->end_ms) {
        s_respond_error(response, 400, "InvalidTimeRangeException",
                        "StartTime must be before or equal to EndTime");
        return -1;
    }
    yajl_val max = s_member(root, "MaxResults");
    lookup->max_results = QUERY_API_MAX_RESULTS;
    if (max && !YAJL_IS_NULL(max)) {
        if (!YAJL_IS_INTEGER(max) || YAJL_GET_INTEGER(max) < 1 ||
            YAJL_GET_INTEGER(max) > QUERY_API_MAX_RESULTS) {
            s_respond_error(response, 400, "InvalidMaxResultsException",
                            "MaxResults must be an integer from 1 to %d", QUERY_API_MAX_RESULTS);
            return -1;
        }
        lookup->max_results = (size_t)YAJL_GET_INTEGER(max);
    }
    yajl_val category = s_member(root, "EventCategory");
    if (category && !YAJL_IS_NULL(category)) {
        if (!YAJL_IS_STRING(category) || strcmp(s_string(category), "insight") != 0) {
            s_respond_error(response, 400, "InvalidEventCategoryException",
                            "EventCategory must be insight");
            return -1;
        }
        lookup->is_insight = true;
    }
    yajl_val token = s_member(root, "NextToken");
    if (token && !YAJL_IS_NULL(token)) {
        if (!YAJL_IS_STRING(token)) {
            s_respond_error(response, 400, "InvalidNextTokenException", "Invalid NextToken");
            return -1;
        }
        lookup->next_token = s_string(token);
    }
    return 0;
}

/* --- the page ------------------------------------------------------------ */

typedef struct {
    cairn_buf_t *out;
    size_t max_results;
    size_t count;          /* events written */
    bool has_more;         /* the store had one more */
    store_position_t last; /* position of the last event written */
} s_page_t;

static void s_append_event(cairn_buf_t *out, const Cairn__Event *event)
{
    char number[64];
    const char *username;
    size_t username_len = store_username(event, &username);
    s_append(out, "{\"EventId\":", 11);
    s_append_cstring(out, event->event_id);
    s_append(out, ",\"EventName\":", 13);
    s_append_cstring(out, event->event_name);
    if (event->read_only == CAIRN__READ_ONLY__READ_ONLY_TRUE)
        s_append(out, ",\"ReadOnly\":\"true\"", 18);
    else if (event->read_only == CAIRN__READ_ONLY__READ_ONLY_FALSE)
        s_append(out, ",\"ReadOnly\":\"false\"", 19);
    if (event->access_key_id && event->access_key_id[0]) {
        s_append(out, ",\"AccessKeyId\":", 15);
        s_append_cstring(out, event->access_key_id);
    }
    int n = snprintf(number, sizeof number, ",\"EventTime\":%.3f",
                     (double)event->event_time_ms / 1000.0);
    s_append(out, number, (size_t)n);
    s_append(out, ",\"EventSource\":", 15);
    s_append_cstring(out, event->event_source);
    if (username_len) {
        s_append(out, ",\"Username\":", 12);
        s_append_string(out, username, username_len);
    }
    s_append(out, ",\"Resources\":[", 14);
    for (size_t i = 0; i < event->n_resources; i++) {
        const Cairn__Resource *resource = event->resources[i];
        s_append(out, i ? ",{" : "{", i ? 2 : 1);
        if (resource->type && resource->type[0]) {
            s_append(out, "\"ResourceType\":", 15);
            s_append_cstring(out, resource->type);
            s_append(out, ",", 1);
        }
        s_append(out, "\"ResourceName\":", 15);
        s_append_cstring(out, resource->arn);
        s_append(out, "}", 1);
    }
    s_append(out, "],\"CloudTrailEvent\":", 20);
    s_append_string(out, (const char *)event->json.data, event->json.len);
    s_append(out, "}", 1);
}

static int s_on_hit(void *ctx, const store_position_t *position, const Cairn__StoredEvent *stored)
{
    s_page_t *page = ctx;
    if (page->count == page->max_results) {
        page->has_more = true;
        return 1;
    }
    if (page->count)
        s_append(page->out, ",", 1);
    s_append_event(page->out, stored->event);
    page->count++;
    page->last = *position;
    return 0;
}

void query_api_lookup_events(query_api_t *self, const char *body, size_t len,
                             cairn_http_response_t *response)
{
    char err[256];
    s_lookup_t lookup = {.key_index = -1, .max_results = QUERY_API_MAX_RESULTS};
    yajl_val root = len ? yajl_tree_parse(body, err, sizeof err) : NULL;
    if (len && (!root || !YAJL_IS_OBJECT(root))) {
        s_respond_error(response, 400, "SerializationException",
                        "the request body is not a JSON object");
        goto out;
    }
    if (root && s_parse(root, &lookup, response) != 0)
        goto out;
    store_query_t query = STORE_QUERY_ALL;
    if (lookup.has_start)
        query.start_ms = lookup.start_ms;
    if (lookup.has_end)
        query.end_ms = lookup.end_ms;
    if (lookup.key_index >= 0 && s_keys[lookup.key_index].attr < 0)
        query.event_id = lookup.value;
    else if (lookup.key_index >= 0)
        query.values[s_keys[lookup.key_index].attr] = lookup.value;
    if (lookup.next_token) {
        if (s_token_check(self, &lookup, lookup.next_token, &query.after) != 0) {
            s_respond_error(response, 400, "InvalidNextTokenException",
                            "Invalid NextToken: not one this API made for these parameters "
                            "(or made before the aggregator restarted)");
            goto out;
        }
        query.has_after = true;
    }
    cairn_buf_t out;
    cairn_buf_init(&out);
    s_append(&out, "{\"Events\":[", 11);
    s_page_t page = {.out = &out, .max_results = lookup.max_results};
    long rc = lookup.is_insight ? 0 : store_query(self->store, &query, s_on_hit, &page);
    if (rc < 0) {
        cairn_buf_fini(&out);
        s_respond_error(response, 500, "InternalFailure", "the store could not be read");
        goto out;
    }
    s_append(&out, "]", 1);
    if (page.has_more) {
        char token[S_TOKEN_CHARS + 1];
        s_token_make(self, &lookup, &page.last, token);
        s_append(&out, ",\"NextToken\":\"", 14);
        s_append(&out, token, S_TOKEN_CHARS);
        s_append(&out, "\"", 1);
    }
    s_append(&out, "}", 1);
    response->status = 200;
    response->content_type = QUERY_API_CONTENT_TYPE;
    free(response->body);
    response->body = cairn_buf_take(&out, &response->body_len);
out:
    yajl_tree_free(root);
}

/* --- the endpoint -------------------------------------------------------- */

static const char *s_header(void *ctx, const char *name)
{
    return cairn_http_header(ctx, name);
}

/* Checks the request's SigV4 signature (service "cloudtrail"). Returns 0 to
 * go on, or -1 after answering 403. */
static int s_authenticate(query_api_t *self, const cairn_http_request_t *request,
                          cairn_http_response_t *response)
{
    if (!self->keys)
        return 0;
    /* The raw request target: MHD has decoded request->path in place. */
    char target[SIGV4_MAX_PATH_BYTES + 1];
    const char *uri = request->uri ? request->uri : request->path;
    const char *question = strchr(uri, '?');
    size_t path_len = question ? (size_t)(question - uri) : strlen(uri);
    sigv4_error_t error;
    if (path_len > SIGV4_MAX_PATH_BYTES) {
        s_respond_error(response, 403, "IncompleteSignature", "request path is over %d bytes",
                        SIGV4_MAX_PATH_BYTES);
        return -1;
    }
    memcpy(target, uri, path_len);
    target[path_len] = '\0';
    sigv4_request_t signed_request = {
        request->method, target,           question ? question + 1 : "", s_header, (void *)request,
        request->body,   request->body_len};
    if (sigv4_verify(self->keys, &signed_request, QUERY_API_SIGNING_SERVICE, NULL,
                     cairn_time_now_ms(), &error) == 0)
        return 0;
    cairn_log_debug("query: LookupEvents refused (403 %s, key \"%s\"): %s", error.code,
                    error.access_key_id, error.message);
    s_respond_error(response, 403, error.code, "%s", error.message);
    return -1;
}

bool query_api_handle(query_api_t *self, const cairn_http_request_t *request,
                      cairn_http_response_t *response)
{
    if (strcmp(request->path, "/") != 0 || strcmp(request->method, "POST") != 0)
        return false;
    if (s_authenticate(self, request, response) != 0)
        return true;
    const char *target = cairn_http_header(request, "X-Amz-Target");
    const char *operation = NULL;
    if (target && !strncmp(target, S_TARGET_LONG, strlen(S_TARGET_LONG)))
        operation = target + strlen(S_TARGET_LONG);
    else if (target && !strncmp(target, S_TARGET_SHORT, strlen(S_TARGET_SHORT)))
        operation = target + strlen(S_TARGET_SHORT);
    if (!operation || strcmp(operation, "LookupEvents") != 0) {
        s_respond_error(response, 400, "UnknownOperationException",
                        "cairn serves only CloudTrail's LookupEvents (X-Amz-Target: " S_TARGET_LONG
                        "LookupEvents); got %.200s",
                        target ? target : "no X-Amz-Target");
        return true;
    }
    query_api_lookup_events(self, request->body, request->body_len, response);
    return true;
}

query_api_t *query_api_new(store_t *store, const query_api_options_t *options)
{
    const char *secret = options->token_secret;
    if (secret && secret[0] && strlen(secret) < QUERY_API_MIN_SECRET_BYTES) {
        cairn_log_error("query: token_secret is %zu bytes; use at least %d (e.g. the output "
                        "of: openssl rand -hex 32)",
                        strlen(secret), QUERY_API_MIN_SECRET_BYTES);
        return NULL;
    }
    query_api_t *self = cairn_calloc(1, sizeof *self);
    self->store = store;
    self->keys = options->keys;
    if (secret && secret[0]) {
        self->token_key_len = strlen(secret);
        self->token_key = (unsigned char *)cairn_strdup(secret);
    } else {
        self->token_key_len = S_KEY_BYTES;
        self->token_key = cairn_malloc(S_KEY_BYTES);
        if (RAND_bytes(self->token_key, S_KEY_BYTES) != 1) {
            cairn_log_error("query: cannot draw a random NextToken key");
            query_api_destroy(&self);
            return NULL;
        }
        cairn_log_info("query: no token_secret set: NextTokens are signed with a random key "
                       "and stop working at the next restart");
    }
    return self;
}

void query_api_destroy(query_api_t **self_p)
{
    query_api_t *self = *self_p;
    if (!self)
        return;
    if (self->token_key)
        OPENSSL_cleanse(self->token_key, self->token_key_len);
    free(self->token_key);
    free(self);
    *self_p = NULL;
}
