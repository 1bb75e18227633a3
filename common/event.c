/* event.c: CloudTrail records (JSON) into the protobuf Event, in one streaming pass.
 *
 * DESIGN
 *
 * One yajl parse of the input drives everything. Each callback turns into a
 * token_t and goes to one of two small state machines:
 *
 * - the envelope, outside any record: decides whether a body is one record,
 *   a bare array of records or the {"Records":[...]} wrapper (only the first
 *   key is looked at: "Records" holding an array means the wrapper), and
 *   rejects what is none of these;
 * - the record, from its '{' to its '}': writes every token again as
 *   compact JSON (strings escaped as yajl_gen escapes them, numbers as their
 *   original text), checks the top-level fields cairn reads, copies the
 *   indexed strings, and at the closing '}' appends the missing fields
 *   before closing the object.
 *
 * So a body is parsed once, never copied, and each record reaches the caller's
 * callback as soon as its '}' is read. Record sizes come from
 * yajl_get_bytes_consumed(): a record that grows past EVENT_MAX_RECORD_BYTES
 * stops being written and indexed (its tokens are only counted until its
 * end, so the error can give its size), which bounds the output buffer.
 *
 * Verbatim records: most records arrive compact, and then writing them again
 * only reproduces their bytes. So while a record's bytes are exactly what
 * would be written, nothing is written: each token only checks that the
 * input bytes since the previous token (yajl_get_bytes_consumed() marks
 * token ends) have the length of the token's canonical text with its ','
 * or ':'. That length test is exact because, for every character of a string,
 * its canonical form is its shortest JSON form (yajl rejects raw control
 * characters, and a "\/" or "\u00e9" is longer than "/" or the UTF-8 of é),
 * and whitespace only adds bytes: equal lengths mean equal bytes, but for
 * the case of hex digits in a "\u001f", which is why a string holding such
 * a character is always written. So the JSON is byte for byte what writing
 * would give, as it was when yajl_gen wrote it. The first token
 * that fails the test copies the input read so far (canonical, by the test)
 * and writing goes on from there; at the '}' a record still verbatim is
 * copied in one memcpy, the missing fields written after it. The parse and
 * every check are the same either way; only the writing is skipped.
 *
 * Memory, so that the hot path does not allocate after warm-up:
 * - yajl 2.1 cannot reset a parse handle, so each call allocates one. Its
 *   allocations go to a bump arena owned by the parser, emptied before the
 *   next yajl_alloc (yajl_free has then released everything). What does not
 *   fit spills to cairn_malloc and makes the next reset grow the arena, so
 *   after a few similar records no call reaches malloc.
 * - The record's JSON goes to one buffer of EVENT_MAX_RECORD_BYTES plus room
 *   for the filled fields, allocated once. It cannot overflow: a token's
 *   canonical text is no longer than its input text (see above), the tokens
 *   written all end within EVENT_MAX_RECORD_BYTES of the record's '{', and
 *   the room for the filled fields is computed from the defaults.
 * - Indexed strings are copied into one buffer of EVENT_MAX_RECORD_BYTES + 1
 *   bytes, allocated once. It cannot overflow: each copied string, with its
 *   NUL, is no longer than its quoted JSON text inside the record (decoding
 *   escapes only shrinks text), and the record is at most that many bytes
 *   (checked before a token is used).
 *
 * Strings of the Event point into those buffers or into fixed fields of the
 * parser: all valid until the next call.
 *
 * THREADS: a parser belongs to one thread. There is no global mutable state;
 * the tables below are constant.
 */
#include "event.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <yajl/yajl_parse.h>

#include "cairn_log.h"
#include "cairn_mem.h"
#include "cairn_time.h"

#define EVENT_MAX_RESOURCES    64          /* resources kept in the index; the JSON keeps all */
#define EVENT_MAX_DEPTH        127         /* open objects/arrays in a record (event.h) */
#define ARENA_ALIGN_BYTES      16          /* alignment of every arena allocation */
#define ARENA_HEADER_BYTES     16          /* size_t length before each allocation, padded */
#define ARENA_INITIAL_BYTES    (16 * 1024) /* enough for yajl's handle, lexer and stacks */
#define FIELD_NOT_STORED       SIZE_MAX    /* field_info_t.offset of a field not indexed */
#define CHAR_PTR_AT(base, off) ((char **)((char *)(base) + (off)))

/* Bump allocator behind one yajl parse handle. */
typedef struct {
    unsigned char *block; /* serves the allocations of one parse */
    size_t cap_bytes;     /* size of block */
    size_t used_bytes;    /* handed out since the last reset */
    size_t last_offset;   /* header offset of the latest allocation: it may grow in place */
    size_t spilled_bytes; /* asked for since the last reset that did not fit block */
} arena_t;

typedef enum {
    TOK_NULL,
    TOK_BOOL,
    TOK_NUMBER,
    TOK_STRING,
    TOK_KEY,
    TOK_MAP_START,
    TOK_MAP_END,
    TOK_ARRAY_START,
    TOK_ARRAY_END,
} token_type_t;

/* One yajl callback. text points into the input or yajl's decode buffer:
 * valid only during the callback. */
typedef struct {
    token_type_t type;
    const unsigned char *text; /* TOK_STRING, TOK_KEY, TOK_NUMBER */
    size_t len;                /* bytes in text */
    int boolean;               /* TOK_BOOL */
} token_t;

/* The top-level fields cairn reads. Their order in s_fields is this order. */
typedef enum {
    FIELD_EVENT_VERSION,
    FIELD_EVENT_ID,
    FIELD_EVENT_TIME,
    FIELD_EVENT_NAME,
    FIELD_EVENT_SOURCE,
    FIELD_AWS_REGION,
    FIELD_EVENT_TYPE,
    FIELD_RECIPIENT_ACCOUNT_ID,
    FIELD_READ_ONLY,
    FIELD_USER_IDENTITY,
    FIELD_RESOURCES,
    FIELD_EVENT_CATEGORY,
    FIELD_MANAGEMENT_EVENT,
    FIELD_COUNT,
    FIELD_NONE = FIELD_COUNT, /* a key cairn does not read */
} field_t;

typedef struct {
    const char *name;  /* JSON key */
    size_t len;        /* strlen(name) */
    token_type_t type; /* what its value must be */
    const char *kind;  /* that type, for messages */
    size_t offset;     /* of the char * it fills in Cairn__Event, or FIELD_NOT_STORED */
} field_info_t;

/* A string inside userIdentity or a resource that cairn indexes. */
typedef struct {
    const char *name; /* JSON key */
    size_t len;       /* strlen(name) */
    size_t offset;    /* of the char * it fills, in Cairn__Event or Cairn__Resource */
} nested_key_t;

typedef enum {
    ENVELOPE_START,       /* nothing read yet */
    ENVELOPE_OBJECT,      /* body is an object: its first key decides its form */
    ENVELOPE_RECORDS,     /* first key was "Records": its value must be an array */
    ENVELOPE_ARRAY,       /* inside the array of records, bare or wrapped */
    ENVELOPE_WRAPPER_END, /* the wrapper's array has closed: only '}' may follow */
    ENVELOPE_DONE,        /* the top-level value is complete */
} envelope_t;

typedef enum {
    CONTAINER_NONE,      /* not inside a top-level object or array cairn reads */
    CONTAINER_USER,      /* inside userIdentity */
    CONTAINER_RESOURCES, /* inside resources */
} container_t;

struct event_parser {
    char *region;                 /* default awsRegion (owned) */
    char *account_id;             /* default recipientAccountId, maybe "" (owned) */
    yajl_alloc_funcs arena_funcs; /* the arena, for the per-call parse handle */
    arena_t arena;                /* backs yajl_handle */
    char *json;                   /* the current record's compact JSON */
    size_t json_cap;              /* size of json: EVENT_MAX_RECORD_BYTES + fill room */
    yajl_handle yajl;             /* parse handle of the current call, else NULL */
    char *strings;                /* indexed strings, EVENT_MAX_RECORD_BYTES + 1 bytes */
    size_t strings_used;          /* bytes of strings used by the current record */
    char event_id[37];            /* filled eventID */
    char event_time[21];          /* filled eventTime */
    Cairn__Event event;           /* what parse_body hands to its callback */
    Cairn__Resource resources[EVENT_MAX_RESOURCES];      /* indexed resources */
    Cairn__Resource *resource_ptrs[EVENT_MAX_RESOURCES]; /* &resources[i], for the Event */

    /* The current call. */
    bool is_body;        /* parse_body rather than parse */
    const char *text;    /* the input */
    event_record_fn *fn; /* parse_body's callback */
    void *fn_ctx;        /* its context */
    char *err;           /* caller's message buffer, may be NULL */
    size_t errlen;       /* its size */
    bool has_err;        /* a message was set: the first error wins */
    envelope_t envelope; /* where the parse is outside records */
    bool is_wrapped;     /* the body is {"Records":[...]} */
    size_t object_start; /* offset of a top-level '{' of a body */
    size_t record_index; /* position of the current record in the body */
    long record_count;   /* records delivered */

    /* The current record. */
    Cairn__Event *out;     /* the Event being filled */
    bool in_record;        /* between the record's '{' and '}' */
    size_t record_start;   /* offset of its '{' */
    bool is_oversize;      /* over EVENT_MAX_RECORD_BYTES: count tokens, nothing else */
    size_t record_depth;   /* open objects/arrays, the record itself included */
    unsigned seen_fields;  /* bit per field_t met so far */
    field_t top_field;     /* the last top-level key */
    container_t container; /* the top-level container being read */
    int nested_key;        /* index in s_user_keys or s_resource_keys, or -1 */
    unsigned seen_nested;  /* bit per nested key met in the current object */
    size_t resource_count; /* objects seen in resources */
    size_t token_end;      /* input offset just past the current token */
    size_t json_len;       /* bytes of json written */
    char separator;        /* ',' or ':' owed before the next key or value, or 0 */
    bool is_verbatim;      /* the input so far is the JSON: nothing written yet */
    size_t verbatim_end;   /* while is_verbatim: input offset the JSON runs to */
};

#define FIELD(name, type, kind, offset)                                                            \
    {                                                                                              \
        name, sizeof name - 1, type, kind, offset                                                  \
    }
#define STRING_FIELD(name, member)                                                                 \
    FIELD(name, TOK_STRING, "a string", offsetof(Cairn__Event, member))

static const field_info_t s_fields[FIELD_COUNT] = {
    [FIELD_EVENT_VERSION] = FIELD("eventVersion", TOK_STRING, "a string", FIELD_NOT_STORED),
    [FIELD_EVENT_ID] = STRING_FIELD("eventID", event_id),
    [FIELD_EVENT_TIME] = FIELD("eventTime", TOK_STRING, "a string", FIELD_NOT_STORED),
    [FIELD_EVENT_NAME] = STRING_FIELD("eventName", event_name),
    [FIELD_EVENT_SOURCE] = STRING_FIELD("eventSource", event_source),
    [FIELD_AWS_REGION] = STRING_FIELD("awsRegion", aws_region),
    [FIELD_EVENT_TYPE] = FIELD("eventType", TOK_STRING, "a string", FIELD_NOT_STORED),
    [FIELD_RECIPIENT_ACCOUNT_ID] = STRING_FIELD("recipientAccountId", recipient_account_id),
    [FIELD_READ_ONLY] = FIELD("readOnly", TOK_BOOL, "a boolean", FIELD_NOT_STORED),
    [FIELD_USER_IDENTITY] = FIELD("userIdentity", TOK_MAP_START, "an object", FIELD_NOT_STORED),
    [FIELD_RESOURCES] = FIELD("resources", TOK_ARRAY_START, "an array", FIELD_NOT_STORED),
    [FIELD_EVENT_CATEGORY] = STRING_FIELD("eventCategory", event_category),
    [FIELD_MANAGEMENT_EVENT] = FIELD("managementEvent", TOK_BOOL, "a boolean", FIELD_NOT_STORED),
};

#define NESTED(name, type, member)                                                                 \
    {                                                                                              \
        name, sizeof name - 1, offsetof(type, member)                                              \
    }

static const nested_key_t s_user_keys[] = {
    NESTED("type", Cairn__Event, user_type),
    NESTED("arn", Cairn__Event, user_arn),
    NESTED("userName", Cairn__Event, user_name),
    NESTED("accessKeyId", Cairn__Event, access_key_id),
};

static const nested_key_t s_resource_keys[] = {
    NESTED("ARN", Cairn__Resource, arn),
    NESTED("type", Cairn__Resource, type),
    NESTED("accountId", Cairn__Resource, account_id),
};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

static const Cairn__Event s_empty_event = CAIRN__EVENT__INIT;
static const Cairn__Resource s_empty_resource = CAIRN__RESOURCE__INIT;

/* ---- the allocator given to yajl ---- */

static size_t s_round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

static bool s_arena_owns(const arena_t *arena, const void *p)
{
    uintptr_t at = (uintptr_t)p, start = (uintptr_t)arena->block;
    return at >= start && at < start + arena->cap_bytes;
}

static void *s_arena_malloc(void *ctx, size_t n)
{
    arena_t *arena = ctx;
    size_t need = ARENA_HEADER_BYTES + s_round_up(n, ARENA_ALIGN_BYTES);
    unsigned char *header;
    if (arena->cap_bytes - arena->used_bytes >= need) {
        header = arena->block + arena->used_bytes;
        arena->last_offset = arena->used_bytes;
        arena->used_bytes += need;
    } else {
        /* malloc aligns to 16 on the platforms cairn runs on, as the header needs. */
        header = cairn_malloc(ARENA_HEADER_BYTES + n);
        arena->spilled_bytes += need;
    }
    memcpy(header, &n, sizeof n);
    return header + ARENA_HEADER_BYTES;
}

/* Memory inside the block is reclaimed only by s_arena_reset. */
static void s_arena_free(void *ctx, void *p)
{
    arena_t *arena = ctx;
    if (p && !s_arena_owns(arena, p))
        free((unsigned char *)p - ARENA_HEADER_BYTES);
}

static void *s_arena_realloc(void *ctx, void *p, size_t n)
{
    arena_t *arena = ctx;
    void *out;
    unsigned char *header = p ? (unsigned char *)p - ARENA_HEADER_BYTES : NULL;
    size_t need = ARENA_HEADER_BYTES + s_round_up(n, ARENA_ALIGN_BYTES);
    if (!p) {
        out = s_arena_malloc(ctx, n);
    } else if (s_arena_owns(arena, p) && header == arena->block + arena->last_offset &&
               arena->cap_bytes - arena->last_offset >= need) {
        /* The latest allocation grows in place: yajl's stacks and buffers grow this way. */
        arena->used_bytes = arena->last_offset + need;
        memcpy(header, &n, sizeof n);
        out = p;
    } else {
        size_t old_n;
        memcpy(&old_n, header, sizeof old_n);
        out = s_arena_malloc(ctx, n);
        memcpy(out, p, old_n < n ? old_n : n);
        s_arena_free(ctx, p);
    }
    return out;
}

/* Empties the arena. Call only when nothing allocated from it is live. If the
 * last parse spilled, grows the block so that a parse like it fits. */
static void s_arena_reset(arena_t *arena)
{
    if (arena->spilled_bytes > 0) {
        size_t cap = 2 * (arena->used_bytes + arena->spilled_bytes);
        cairn_free(&arena->block);
        arena->block = cairn_malloc(cap);
        arena->cap_bytes = cap;
    }
    arena->used_bytes = 0;
    arena->last_offset = 0;
    arena->spilled_bytes = 0;
}

/* ---- errors ---- */

/* Sets the message unless one is set already, and returns -1. names_record
 * prefixes "record N: " in a body. */
__attribute__((format(printf, 3, 4))) static int s_fail(event_parser_t *self, bool names_record,
                                                        const char *fmt, ...)
{
    if (!self->has_err && self->err && self->errlen > 0) {
        size_t used = 0;
        if (names_record && self->is_body) {
            int n = snprintf(self->err, self->errlen, "record %zu: ", self->record_index);
            used = n < 0 ? 0 : (size_t)n >= self->errlen ? self->errlen - 1 : (size_t)n;
        }
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(self->err + used, self->errlen - used, fmt, ap);
        va_end(ap);
    }
    self->has_err = true;
    return -1;
}

static const char *s_token_kind(const token_t *tok)
{
    static const char *const kinds[] = {
        [TOK_NULL] = "null",     [TOK_BOOL] = "boolean",      [TOK_NUMBER] = "number",
        [TOK_STRING] = "string", [TOK_KEY] = "key",           [TOK_MAP_START] = "object",
        [TOK_MAP_END] = "'}'",   [TOK_ARRAY_START] = "array", [TOK_ARRAY_END] = "']'",
    };
    return kinds[tok->type];
}

/* ---- the record's JSON ---- */

/* How yajl_gen escapes each byte of a string, so that the JSON is what it
 * was when yajl_gen wrote it: 0 as it is, 'u' as \u00XX, else '\' and this. */
static const char s_escapes[256] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b', 't', 'n', 'u', 'f', 'r', 'u', 'u',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
    ['"'] = '"', ['\\'] = '\\',
};

/* Length of the escaped text of a string, without its quotes, or SIZE_MAX
 * if it holds a character escaped as \u00XX: the input may write those hex
 * digits in lower case, so such a string is always written. */
static size_t s_escaped_len(const unsigned char *text, size_t len)
{
    size_t out = len;
    for (size_t i = 0; i < len && out != SIZE_MAX; i++)
        out = s_escapes[text[i]] == 0 ? out : s_escapes[text[i]] == 'u' ? SIZE_MAX : out + 1;
    return out;
}

static void s_write(event_parser_t *self, const void *data, size_t len)
{
    assert(self->json_len + len <= self->json_cap); /* see DESIGN for why it fits */
    memcpy(self->json + self->json_len, data, len);
    self->json_len += len;
}

/* Writes a string quoted and escaped. */
static void s_write_string(event_parser_t *self, const unsigned char *text, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t run = 0; /* start of the bytes not yet written */
    s_write(self, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        char escape = s_escapes[text[i]];
        if (escape) {
            char seq[6] = {'\\', escape, '0', '0', hex[text[i] >> 4], hex[text[i] & 0x0f]};
            s_write(self, text + run, i - run);
            s_write(self, seq, escape == 'u' ? 6 : 2);
            run = i + 1;
        }
    }
    s_write(self, text + run, len - run);
    s_write(self, "\"", 1);
}

/* Whether the input since the previous token is tok's canonical text with
 * sep_len bytes of separator before it. */
static bool s_is_canonical(const event_parser_t *self, const token_t *tok, size_t sep_len)
{
    size_t span = self->token_end - self->verbatim_end;
    switch (tok->type) {
    case TOK_NULL:
        return span == sep_len + 4;
    case TOK_BOOL:
        return span == sep_len + (tok->boolean ? 4 : 5);
    case TOK_NUMBER:
        return span == sep_len + tok->len;
    case TOK_STRING:
    case TOK_KEY:
        /* Without escapes in the input the first test decides; the scan is
         * for strings that have some. */
        return span == sep_len + 2 + tok->len ||
               (span > sep_len + 2 + tok->len &&
                span - sep_len - 2 == s_escaped_len(tok->text, tok->len));
    default:
        return span == sep_len + 1;
    }
}

/* Ends the verbatim run: writes the input read so far, which is canonical. */
static void s_stop_verbatim(event_parser_t *self)
{
    if (self->is_verbatim) {
        self->is_verbatim = false;
        s_write(self, self->text + self->record_start, self->verbatim_end - self->record_start);
    }
}

/* Writes tok with the separator it needs, or checks that the input already
 * holds exactly that (see "Verbatim records" in DESIGN). */
static void s_emit(event_parser_t *self, const token_t *tok)
{
    bool is_close = tok->type == TOK_MAP_END || tok->type == TOK_ARRAY_END;
    char sep = is_close ? 0 : self->separator;
    if (self->is_verbatim && s_is_canonical(self, tok, sep != 0))
        self->verbatim_end = self->token_end;
    else {
        s_stop_verbatim(self);
        if (sep)
            s_write(self, &sep, 1);
        switch (tok->type) {
        case TOK_NULL:
            s_write(self, "null", 4);
            break;
        case TOK_BOOL:
            s_write(self, tok->boolean ? "true" : "false", tok->boolean ? 4 : 5);
            break;
        case TOK_NUMBER:
            s_write(self, tok->text, tok->len);
            break;
        case TOK_STRING:
        case TOK_KEY:
            s_write_string(self, tok->text, tok->len);
            break;
        case TOK_MAP_START:
            s_write(self, "{", 1);
            break;
        case TOK_MAP_END:
            s_write(self, "}", 1);
            break;
        case TOK_ARRAY_START:
            s_write(self, "[", 1);
            break;
        case TOK_ARRAY_END:
            s_write(self, "]", 1);
            break;
        }
    }
    self->separator = tok->type == TOK_KEY                                       ? ':'
                      : tok->type == TOK_MAP_START || tok->type == TOK_ARRAY_START ? 0
                                                                                   : ',';
}

/* Writes "key":"value" after what the record holds (never verbatim). */
static void s_emit_pair(event_parser_t *self, const char *key, const char *value)
{
    s_stop_verbatim(self);
    if (self->separator)
        s_write(self, &self->separator, 1);
    s_write_string(self, (const unsigned char *)key, strlen(key));
    s_write(self, ":", 1);
    s_write_string(self, (const unsigned char *)value, strlen(value));
    self->separator = ',';
}

/* Copies a string of the record into self->strings (see DESIGN for why it fits). */
static char *s_keep(event_parser_t *self, const token_t *tok)
{
    char *copy = self->strings + self->strings_used;
    assert(self->strings_used + tok->len + 1 <= EVENT_MAX_RECORD_BYTES + 1);
    memcpy(copy, tok->text, tok->len);
    copy[tok->len] = '\0';
    self->strings_used += tok->len + 1;
    return copy;
}

static int s_lookup(const nested_key_t *keys, size_t count, const token_t *tok)
{
    int found = -1;
    for (size_t i = 0; found < 0 && i < count; i++)
        if (keys[i].len == tok->len && memcmp(keys[i].name, tok->text, tok->len) == 0)
            found = (int)i;
    return found;
}

static field_t s_lookup_field(const token_t *tok)
{
    field_t found = FIELD_NONE;
    for (int i = 0; found == FIELD_NONE && i < FIELD_COUNT; i++)
        if (s_fields[i].len == tok->len && memcmp(s_fields[i].name, tok->text, tok->len) == 0)
            found = (field_t)i;
    return found;
}

static int s_record_begin(event_parser_t *self, size_t start)
{
    *self->out = s_empty_event;
    self->in_record = true;
    self->record_start = start;
    self->is_oversize = false;
    self->record_depth = 1;
    self->seen_fields = 0;
    self->top_field = FIELD_NONE;
    self->container = CONTAINER_NONE;
    self->nested_key = -1;
    self->resource_count = 0;
    self->strings_used = 0;
    self->json_len = 0;
    self->separator = 0;
    self->is_verbatim = true;
    self->verbatim_end = start + 1; /* the '{' */
    return 0;
}

static int s_top_string(event_parser_t *self, field_t field, const token_t *tok)
{
    const field_info_t *info = &s_fields[field];
    int rc = 0;
    if (tok->len == 0)
        rc = s_fail(self, true, "%s is empty", info->name);
    else if (memchr(tok->text, '\0', tok->len))
        /* The index would keep only what precedes it, unlike the JSON. */
        rc = s_fail(self, true, "%s contains a NUL character", info->name);
    else if (field == FIELD_EVENT_ID && tok->len > EVENT_ID_MAX_BYTES)
        rc = s_fail(self, true, "eventID is %zu bytes, over the %d-byte limit", tok->len,
                    EVENT_ID_MAX_BYTES);
    else if (field == FIELD_EVENT_TIME &&
             cairn_time_parse_iso8601((const char *)tok->text, tok->len,
                                      &self->out->event_time_ms) != 0)
        rc = s_fail(self, true, "eventTime is not an ISO-8601 UTC time");
    else if (info->offset != FIELD_NOT_STORED)
        *CHAR_PTR_AT(self->out, info->offset) = s_keep(self, tok);
    return rc;
}

/* A value (scalar or opening) of a top-level key. */
static int s_top_value(event_parser_t *self, const token_t *tok)
{
    field_t field = self->top_field;
    int rc = 0;
    if (field == FIELD_NONE)
        rc = 0;
    else if (tok->type != s_fields[field].type)
        rc = s_fail(self, true, "%s is not %s (found %s)", s_fields[field].name,
                    s_fields[field].kind, s_token_kind(tok));
    else if (tok->type == TOK_STRING)
        rc = s_top_string(self, field, tok);
    else if (field == FIELD_READ_ONLY)
        self->out->read_only =
            tok->boolean ? CAIRN__READ_ONLY__READ_ONLY_TRUE : CAIRN__READ_ONLY__READ_ONLY_FALSE;
    else if (field == FIELD_MANAGEMENT_EVENT)
        self->out->management_event = tok->boolean != 0;
    else if (field == FIELD_USER_IDENTITY) {
        self->container = CONTAINER_USER;
        self->seen_nested = 0;
    } else if (field == FIELD_RESOURCES)
        self->container = CONTAINER_RESOURCES;
    return rc;
}

static int s_top_key(event_parser_t *self, const token_t *tok)
{
    int rc = 0;
    self->top_field = s_lookup_field(tok);
    if (self->top_field != FIELD_NONE) {
        unsigned bit = 1u << self->top_field;
        if (self->seen_fields & bit)
            rc = s_fail(self, true, "duplicate field %s", s_fields[self->top_field].name);
        self->seen_fields |= bit;
    }
    return rc;
}

/* A key of userIdentity or of a resource. path names the object in messages. */
static int s_nested_key(event_parser_t *self, const nested_key_t *keys, size_t count,
                        const token_t *tok, const char *path, size_t index)
{
    int rc = 0;
    self->nested_key = s_lookup(keys, count, tok);
    if (self->nested_key >= 0) {
        unsigned bit = 1u << self->nested_key;
        if ((self->seen_nested & bit) && self->container == CONTAINER_USER)
            rc = s_fail(self, true, "duplicate field %s.%s", path, keys[self->nested_key].name);
        else if (self->seen_nested & bit)
            rc = s_fail(self, true, "duplicate field %s[%zu].%s", path, index,
                        keys[self->nested_key].name);
        self->seen_nested |= bit;
    }
    return rc;
}

/* A value inside userIdentity or a resource. Values cairn indexes but that are
 * not strings are left out of the index (the JSON keeps them): only the
 * top-level fields have types the header promises to check. */
static int s_nested_value(event_parser_t *self, const nested_key_t *keys, void *base,
                          const token_t *tok, const char *path, size_t index)
{
    int rc = 0;
    if (self->nested_key < 0 || tok->type != TOK_STRING || !base)
        rc = 0;
    else if (memchr(tok->text, '\0', tok->len) && self->container == CONTAINER_USER)
        rc =
            s_fail(self, true, "%s.%s contains a NUL character", path, keys[self->nested_key].name);
    else if (memchr(tok->text, '\0', tok->len))
        rc = s_fail(self, true, "%s[%zu].%s contains a NUL character", path, index,
                    keys[self->nested_key].name);
    else
        *CHAR_PTR_AT(base, keys[self->nested_key].offset) = s_keep(self, tok);
    return rc;
}

/* An element of resources. */
static int s_resource_begin(event_parser_t *self, const token_t *tok)
{
    int rc = 0;
    if (tok->type != TOK_MAP_START)
        rc = s_fail(self, true, "resources[%zu] is not an object (found %s)", self->resource_count,
                    s_token_kind(tok));
    else {
        if (self->resource_count < EVENT_MAX_RESOURCES)
            self->resources[self->resource_count] = s_empty_resource;
        self->resource_count++;
        self->seen_nested = 0;
        self->nested_key = -1;
    }
    return rc;
}

/* A value (scalar or opening) at the current depth of the record. */
static int s_record_value(event_parser_t *self, const token_t *tok)
{
    int rc = 0;
    size_t index = self->resource_count - 1;
    Cairn__Resource *resource = index < EVENT_MAX_RESOURCES ? &self->resources[index] : NULL;
    if (self->record_depth == 1)
        rc = s_top_value(self, tok);
    else if (self->record_depth == 2 && self->container == CONTAINER_USER)
        rc = s_nested_value(self, s_user_keys, self->out, tok, "userIdentity", 0);
    else if (self->record_depth == 2 && self->container == CONTAINER_RESOURCES)
        rc = s_resource_begin(self, tok);
    else if (self->record_depth == 3 && self->container == CONTAINER_RESOURCES)
        rc = s_nested_value(self, s_resource_keys, resource, tok, "resources", index);
    if (rc == 0)
        s_emit(self, tok);
    return rc;
}

static int s_record_key(event_parser_t *self, const token_t *tok)
{
    int rc = 0;
    if (self->record_depth == 1)
        rc = s_top_key(self, tok);
    else if (self->record_depth == 2 && self->container == CONTAINER_USER)
        rc = s_nested_key(self, s_user_keys, COUNT_OF(s_user_keys), tok, "userIdentity", 0);
    else if (self->record_depth == 3 && self->container == CONTAINER_RESOURCES)
        rc = s_nested_key(self, s_resource_keys, COUNT_OF(s_resource_keys), tok, "resources",
                          self->resource_count - 1);
    if (rc == 0)
        s_emit(self, tok);
    return rc;
}

static int s_record_open(event_parser_t *self, const token_t *tok)
{
    int rc = 0;
    /* Checked even for an oversize record: yajl's stack grows with depth. */
    if (self->record_depth >= EVENT_MAX_DEPTH)
        rc = s_fail(self, true, "record nests objects and arrays more than %d levels deep",
                    EVENT_MAX_DEPTH);
    else if (!self->is_oversize)
        rc = s_record_value(self, tok);
    if (rc == 0)
        self->record_depth++;
    return rc;
}

/* Appends what the record lacks, in the documented order. */
static void s_fill(event_parser_t *self)
{
    Cairn__Event *out = self->out;
    unsigned seen = self->seen_fields;
    if (!(seen & 1u << FIELD_EVENT_VERSION))
        s_emit_pair(self, "eventVersion", EVENT_VERSION_DEFAULT);
    if (!(seen & 1u << FIELD_EVENT_ID)) {
        event_uuid_v4(self->event_id);
        out->event_id = self->event_id;
        s_emit_pair(self, "eventID", self->event_id);
    }
    if (!(seen & 1u << FIELD_EVENT_TIME)) {
        /* Whole seconds, as CloudTrail writes them, so that the index holds
         * exactly what the JSON says. */
        int64_t now_ms = cairn_time_now_ms();
        out->event_time_ms = now_ms - now_ms % 1000;
        cairn_time_format_iso8601(out->event_time_ms, self->event_time);
        s_emit_pair(self, "eventTime", self->event_time);
    }
    if (!(seen & 1u << FIELD_AWS_REGION)) {
        out->aws_region = self->region;
        s_emit_pair(self, "awsRegion", self->region);
    }
    if (!(seen & 1u << FIELD_EVENT_TYPE))
        s_emit_pair(self, "eventType", EVENT_TYPE_DEFAULT);
    if (!(seen & 1u << FIELD_RECIPIENT_ACCOUNT_ID) && self->account_id[0]) {
        out->recipient_account_id = self->account_id;
        s_emit_pair(self, "recipientAccountId", self->account_id);
    }
}

/* The record's closing '}'. */
static int s_record_end(event_parser_t *self)
{
    Cairn__Event *out = self->out;
    int rc = 0;
    if (self->is_oversize)
        rc = s_fail(self, true, "record is %zu bytes, over the %d-byte limit",
                    yajl_get_bytes_consumed(self->yajl) - self->record_start,
                    EVENT_MAX_RECORD_BYTES);
    else if (!(self->seen_fields & 1u << FIELD_EVENT_NAME))
        rc = s_fail(self, true, "missing required field eventName");
    else if (!(self->seen_fields & 1u << FIELD_EVENT_SOURCE))
        rc = s_fail(self, true, "missing required field eventSource");
    if (rc == 0) {
        s_fill(self);
        s_emit(self, &(token_t){.type = TOK_MAP_END});
        s_stop_verbatim(self);
        out->json.data = (uint8_t *)self->json;
        out->json.len = self->json_len;
        out->n_resources =
            self->resource_count < EVENT_MAX_RESOURCES ? self->resource_count : EVENT_MAX_RESOURCES;
        out->resources = out->n_resources ? self->resource_ptrs : NULL;
        self->record_count++;
        if (self->is_body && self->fn(self->fn_ctx, self->record_index, out) != 0)
            rc = s_fail(self, false, "stopped at record %zu", self->record_index);
    }
    self->in_record = false;
    self->record_index++;
    if (self->envelope != ENVELOPE_ARRAY)
        self->envelope = ENVELOPE_DONE;
    return rc;
}

static int s_record_close(event_parser_t *self, const token_t *tok)
{
    int rc = 0;
    self->record_depth--;
    if (self->record_depth == 0)
        rc = s_record_end(self);
    else {
        if (self->record_depth == 1)
            self->container = CONTAINER_NONE;
        if (!self->is_oversize)
            s_emit(self, tok);
    }
    return rc;
}

static int s_record_token(event_parser_t *self, const token_t *tok)
{
    int rc = 0;
    self->token_end = yajl_get_bytes_consumed(self->yajl);
    /* Written as a sum: inside yajl_complete_parse the count restarts from 0. */
    if (self->token_end > self->record_start + EVENT_MAX_RECORD_BYTES)
        self->is_oversize = true;
    switch (tok->type) {
    case TOK_MAP_START:
    case TOK_ARRAY_START:
        rc = s_record_open(self, tok);
        break;
    case TOK_MAP_END:
    case TOK_ARRAY_END:
        rc = s_record_close(self, tok);
        break;
    case TOK_KEY:
        rc = self->is_oversize ? 0 : s_record_key(self, tok);
        break;
    default:
        rc = self->is_oversize ? 0 : s_record_value(self, tok);
        break;
    }
    return rc;
}

/* ---- the envelope ---- */

static bool s_is_records_key(const token_t *tok)
{
    return tok->type == TOK_KEY && tok->len == 7 && memcmp(tok->text, "Records", 7) == 0;
}

static int s_envelope_token(event_parser_t *self, const token_t *tok)
{
    int rc = 0;
    /* Just past the token: for '{' the object starts one byte before. */
    size_t offset = yajl_get_bytes_consumed(self->yajl);
    switch (self->envelope) {
    case ENVELOPE_START:
        if (tok->type == TOK_MAP_START && !self->is_body)
            rc = s_record_begin(self, offset - 1);
        else if (tok->type == TOK_MAP_START) {
            self->object_start = offset - 1;
            self->envelope = ENVELOPE_OBJECT;
        } else if (tok->type == TOK_ARRAY_START && self->is_body)
            self->envelope = ENVELOPE_ARRAY;
        else if (self->is_body)
            rc = s_fail(self, false, "body is not a JSON object or array (found %s)",
                        s_token_kind(tok));
        else
            rc = s_fail(self, false, "record is not a JSON object (found %s)", s_token_kind(tok));
        break;
    case ENVELOPE_OBJECT:
        if (s_is_records_key(tok))
            self->envelope = ENVELOPE_RECORDS;
        else {
            /* A record: this token (a key or '}') is its first after '{'. */
            rc = s_record_begin(self, self->object_start);
            if (rc == 0)
                rc = s_record_token(self, tok);
        }
        break;
    case ENVELOPE_RECORDS:
        if (tok->type == TOK_ARRAY_START) {
            self->envelope = ENVELOPE_ARRAY;
            self->is_wrapped = true;
        } else
            rc = s_fail(self, false, "Records is not an array (found %s)", s_token_kind(tok));
        break;
    case ENVELOPE_ARRAY:
        if (tok->type == TOK_MAP_START)
            rc = s_record_begin(self, offset - 1);
        else if (tok->type == TOK_ARRAY_END)
            self->envelope = self->is_wrapped ? ENVELOPE_WRAPPER_END : ENVELOPE_DONE;
        else
            rc = s_fail(self, true, "not a JSON object (found %s)", s_token_kind(tok));
        break;
    case ENVELOPE_WRAPPER_END:
        if (tok->type == TOK_MAP_END)
            self->envelope = ENVELOPE_DONE;
        else
            rc = s_fail(self, false, "the {\"Records\":[...]} wrapper has a key besides Records");
        break;
    case ENVELOPE_DONE:
        /* yajl reports anything after the top-level value as trailing garbage. */
        break;
    }
    return rc;
}

/* ---- yajl callbacks: non-zero goes on ---- */

static int s_on_token(void *ctx, const token_t *tok)
{
    event_parser_t *self = ctx;
    int rc = self->in_record ? s_record_token(self, tok) : s_envelope_token(self, tok);
    return rc == 0;
}

static int s_on_null(void *ctx)
{
    return s_on_token(ctx, &(token_t){.type = TOK_NULL});
}

static int s_on_boolean(void *ctx, int boolean)
{
    return s_on_token(ctx, &(token_t){.type = TOK_BOOL, .boolean = boolean});
}

static int s_on_number(void *ctx, const char *text, size_t len)
{
    return s_on_token(
        ctx, &(token_t){.type = TOK_NUMBER, .text = (const unsigned char *)text, .len = len});
}

static int s_on_string(void *ctx, const unsigned char *text, size_t len)
{
    return s_on_token(ctx, &(token_t){.type = TOK_STRING, .text = text, .len = len});
}

static int s_on_map_key(void *ctx, const unsigned char *text, size_t len)
{
    return s_on_token(ctx, &(token_t){.type = TOK_KEY, .text = text, .len = len});
}

static int s_on_start_map(void *ctx)
{
    return s_on_token(ctx, &(token_t){.type = TOK_MAP_START});
}

static int s_on_end_map(void *ctx)
{
    return s_on_token(ctx, &(token_t){.type = TOK_MAP_END});
}

static int s_on_start_array(void *ctx)
{
    return s_on_token(ctx, &(token_t){.type = TOK_ARRAY_START});
}

static int s_on_end_array(void *ctx)
{
    return s_on_token(ctx, &(token_t){.type = TOK_ARRAY_END});
}

/* yajl_number set: numbers reach us as their original text. */
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

/* ---- one call ---- */

/* Parses text with the state set up by the caller. Returns the records
 * delivered, or -1 with the message set. */
static long s_run(event_parser_t *self, const char *text, size_t len)
{
    s_arena_reset(&self->arena);
    /* Defaults kept on purpose: UTF-8 validated, no comments, one value,
     * no trailing garbage, no partial values. */
    self->yajl = yajl_alloc(&s_callbacks, &self->arena_funcs, self);
    self->text = text;
    self->has_err = false;
    self->envelope = ENVELOPE_START;
    self->is_wrapped = false;
    self->in_record = false;
    self->record_index = 0;
    self->record_count = 0;

    yajl_status status = yajl_parse(self->yajl, (const unsigned char *)text, len);
    size_t offset = yajl_get_bytes_consumed(self->yajl);
    if (status == yajl_status_ok) {
        status = yajl_complete_parse(self->yajl);
        offset = len; /* the count restarted for the parse's final " " */
    }
    if (status == yajl_status_error) {
        unsigned char *msg = yajl_get_error(self->yajl, 0, (const unsigned char *)text, len);
        int msg_len = (int)strcspn((const char *)msg, "\r\n");
        s_fail(self, self->in_record, "invalid JSON at byte %zu: %.*s", offset, msg_len, msg);
        yajl_free_error(self->yajl, msg);
    }
    assert(status != yajl_status_client_canceled || self->has_err);
    yajl_free(self->yajl);
    self->yajl = NULL;
    return self->has_err ? -1 : self->record_count;
}

/* ---- public ---- */

event_parser_t *event_parser_new(const event_defaults_t *defaults)
{
    event_parser_t *self = NULL;
    if (!defaults || !defaults->region || !defaults->region[0]) {
        cairn_log_error("event parser: no default region (awsRegion) given");
    } else {
        self = cairn_calloc(1, sizeof *self);
        self->region = cairn_strdup(defaults->region);
        self->account_id = cairn_strdup(defaults->account_id ? defaults->account_id : "");
        self->arena_funcs =
            (yajl_alloc_funcs){s_arena_malloc, s_arena_realloc, s_arena_free, &self->arena};
        self->arena.block = cairn_malloc(ARENA_INITIAL_BYTES);
        self->arena.cap_bytes = ARENA_INITIAL_BYTES;
        /* Room for the filled fields: their keys and fixed values, and the
         * defaults escaped at worst (6 bytes a byte). */
        self->json_cap = EVENT_MAX_RECORD_BYTES + 256 +
                         6 * (strlen(self->region) + strlen(self->account_id));
        self->json = cairn_malloc(self->json_cap);
        self->strings = cairn_malloc(EVENT_MAX_RECORD_BYTES + 1);
        self->event = s_empty_event;
        for (size_t i = 0; i < EVENT_MAX_RESOURCES; i++) {
            self->resources[i] = s_empty_resource;
            self->resource_ptrs[i] = &self->resources[i];
        }
    }
    return self;
}

void event_parser_destroy(event_parser_t **self_p)
{
    if (self_p && *self_p) {
        event_parser_t *self = *self_p;
        cairn_free(&self->json);
        cairn_free(&self->strings);
        cairn_free(&self->arena.block);
        cairn_free(&self->account_id);
        cairn_free(&self->region);
        cairn_free(self_p);
    }
}

int event_parser_parse(event_parser_t *self, const char *json, size_t len, Cairn__Event *event,
                       char *err, size_t errlen)
{
    int rc = 0;
    self->is_body = false;
    self->out = event;
    self->err = err;
    self->errlen = errlen;
    self->has_err = false;
    *event = s_empty_event;
    if (len > EVENT_MAX_RECORD_BYTES)
        rc = s_fail(self, false, "record is %zu bytes, over the %d-byte limit", len,
                    EVENT_MAX_RECORD_BYTES);
    else if (s_run(self, json, len) < 0)
        rc = -1;
    if (rc != 0)
        *event = s_empty_event;
    return rc;
}

long event_parser_parse_body(event_parser_t *self, const char *body, size_t len,
                             event_record_fn *fn, void *ctx, char *err, size_t errlen)
{
    assert(fn);
    self->is_body = true;
    self->fn = fn;
    self->fn_ctx = ctx;
    self->out = &self->event;
    self->err = err;
    self->errlen = errlen;
    return s_run(self, body, len);
}

void event_uuid_v4(char out[37])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char bytes[16];
    /* The kernel's generator (getrandom, blocking only until it is seeded at
     * boot), not OpenSSL's: RAND_bytes initialised OpenSSL in every agent,
     * whose spool id is a UUID, and that alone kept 3.3 MB of libcrypto
     * resident in a process that otherwise uses it only for SigV4. */
    ssize_t got = 0;
    while (got >= 0 && (size_t)got < sizeof bytes) {
        ssize_t n = getrandom(bytes + got, sizeof bytes - (size_t)got, 0);
        if (n < 0 && errno != EINTR)
            got = -1;
        else if (n > 0)
            got += n;
    }
    if (got < 0) {
        /* An eventID that is not random would break deduplication, so this
         * is as fatal as OOM. */
        cairn_log_error("event: getrandom failed (%s), cannot make an eventID; aborting",
                        strerror(errno));
        abort();
    }
    bytes[6] = (unsigned char)((bytes[6] & 0x0f) | 0x40); /* version 4 */
    bytes[8] = (unsigned char)((bytes[8] & 0x3f) | 0x80); /* variant 10 (RFC 4122) */
    size_t j = 0;
    for (size_t i = 0; i < sizeof bytes; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[j++] = '-';
        out[j++] = hex[bytes[i] >> 4];
        out[j++] = hex[bytes[i] & 0x0f];
    }
    out[j] = '\0';
}
