/* sigv4.c: AWS Signature Version 4 verification (see sigv4.h).
 *
 * DESIGN
 *
 * The canonical request is never built as one string: its pieces are hashed
 * as they are produced (s_hash_t batches them into EVP_DigestUpdate), so the
 * only buffers are fixed ones on the stack, bounded by the SIGV4_MAX_*
 * limits. The rules follow the SigV4 specification as botocore implements
 * it for every service but S3:
 *
 * - path: dot segments and empty segments removed, then every byte but the
 *   unreserved ones (A-Z a-z 0-9 - _ . ~) and '/' percent-encoded. The raw
 *   path as sent is already encoded once, so this is the "encode twice" of
 *   the specification.
 * - query: each name and value percent-decoded ('+' stays '+'), encoded
 *   again with the unreserved set, sorted by name then value, joined by '&'.
 * - headers: the names of SignedHeaders, in its order, each "name:value\n"
 *   with the value trimmed and inner runs of white space made one space.
 * - payload: hex SHA-256 of the body (an x-amz-content-sha256 header must
 *   equal it; "UNSIGNED-PAYLOAD" is refused: the body would be unprotected).
 *
 * SHA-256 and HMAC come from OpenSSL; the signatures are compared with
 * CRYPTO_memcmp. Secrets are wiped with OPENSSL_cleanse when the table is
 * destroyed, and the derived signing keys when a check ends.
 *
 * Error codes and messages are AWS's, so the AWS CLI and SDKs show them as
 * they would for AWS itself.
 *
 * THREADS: sigv4_verify keeps all state on its stack; the key table is only
 * read. */
#include "sigv4.h"

#include "cairn_log.h"
#include "cairn_mem.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SHA256_BYTES      32
#define SHA256_HEX_BYTES  64
#define AMZ_DATE_BYTES    16 /* "YYYYMMDDTHHMMSSZ" */
#define SCOPE_TERMINATOR  "aws4_request"
#define ALGORITHM         "AWS4-HMAC-SHA256"
#define MAX_PATH_SEGMENTS 256 /* segments of a path verified */
#define MAX_HEADER_NAME   128 /* bytes in one signed header name */
#define HASH_STAGE_BYTES  1024

typedef struct {
    char *id;          /* access key id */
    char *secret;      /* secret access key */
    size_t secret_len; /* strlen(secret) */
} s_key_t;

struct sigv4_keys {
    s_key_t *keys; /* count used of cap */
    size_t count;
    size_t cap;
};

/* A piece of text that is not NUL-terminated. */
typedef struct {
    const char *p;
    size_t len;
} s_span_t;

/* The parts of an Authorization header. */
typedef struct {
    s_span_t credential;     /* "KEYID/DATE/REGION/SERVICE/aws4_request" */
    s_span_t signed_headers; /* "content-type;host;x-amz-date" */
    s_span_t signature;      /* 64 hex */
    s_span_t key_id;         /* parts of credential */
    s_span_t date;
    s_span_t region;
    s_span_t service;
} s_auth_t;

/* One query parameter, encoded canonically into a scratch buffer. */
typedef struct {
    s_span_t name;
    s_span_t value;
} s_param_t;

/* SHA-256 fed in small pieces, batched. */
typedef struct {
    EVP_MD_CTX *md;
    unsigned char stage[HASH_STAGE_BYTES];
    size_t used;
} s_hash_t;

static const char s_hex[] = "0123456789abcdef";
static const char s_hex_upper[] = "0123456789ABCDEF";

/* ---- small helpers ---- */

static int s_refuse(sigv4_error_t *error, sigv4_reason_t reason, const char *code, const char *fmt,
                    ...) __attribute__((format(printf, 4, 5)));

static int s_refuse(sigv4_error_t *error, sigv4_reason_t reason, const char *code, const char *fmt,
                    ...)
{
    error->reason = reason;
    error->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error->message, sizeof error->message, fmt, ap);
    va_end(ap);
    return -1;
}

static void s_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void s_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static bool s_span_eq(s_span_t span, const char *s)
{
    size_t n = strlen(s);
    return span.len == n && memcmp(span.p, s, n) == 0;
}

static bool s_is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

static bool s_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static void s_to_hex(const unsigned char *bytes, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = s_hex[bytes[i] >> 4];
        out[2 * i + 1] = s_hex[bytes[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

static int s_hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* OpenSSL failing to hash is a broken library, as fatal as running out of
 * memory: a request must never pass because a digest could not be made. */
static void s_crypto_failed(const char *what)
{
    cairn_log_error("sigv4: OpenSSL %s failed; aborting", what);
    abort();
}

/* ---- hashing ---- */

static void s_hash_init(s_hash_t *hash)
{
    hash->md = EVP_MD_CTX_new();
    hash->used = 0;
    if (!hash->md || EVP_DigestInit_ex(hash->md, EVP_sha256(), NULL) != 1)
        s_crypto_failed("EVP_DigestInit_ex");
}

static void s_hash_flush(s_hash_t *hash)
{
    if (hash->used && EVP_DigestUpdate(hash->md, hash->stage, hash->used) != 1)
        s_crypto_failed("EVP_DigestUpdate");
    hash->used = 0;
}

static void s_hash_put(s_hash_t *hash, const void *data, size_t len)
{
    if (hash->used + len > sizeof hash->stage) {
        s_hash_flush(hash);
        if (len > sizeof hash->stage) {
            if (EVP_DigestUpdate(hash->md, data, len) != 1)
                s_crypto_failed("EVP_DigestUpdate");
            return;
        }
    }
    memcpy(hash->stage + hash->used, data, len);
    hash->used += len;
}

static void s_hash_putc(s_hash_t *hash, char c)
{
    s_hash_put(hash, &c, 1);
}

static void s_hash_puts(s_hash_t *hash, const char *s)
{
    s_hash_put(hash, s, strlen(s));
}

/* Puts bytes percent-encoded: all but the unreserved ones (and '/' when
 * keep_slash) become %XX. */
static void s_hash_put_encoded(s_hash_t *hash, const char *p, size_t len, bool keep_slash)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (s_is_unreserved(c) || (keep_slash && c == '/'))
            s_hash_putc(hash, (char)c);
        else {
            char esc[3] = {'%', s_hex_upper[c >> 4], s_hex_upper[c & 0x0f]};
            s_hash_put(hash, esc, 3);
        }
    }
}

/* Finishes and frees the hash; writes 64 hex + NUL into hex. */
static void s_hash_final_hex(s_hash_t *hash, char hex[SHA256_HEX_BYTES + 1])
{
    unsigned char digest[SHA256_BYTES];
    unsigned int len = 0;
    s_hash_flush(hash);
    if (EVP_DigestFinal_ex(hash->md, digest, &len) != 1 || len != SHA256_BYTES)
        s_crypto_failed("EVP_DigestFinal_ex");
    EVP_MD_CTX_free(hash->md);
    hash->md = NULL;
    s_to_hex(digest, SHA256_BYTES, hex);
}

static void s_sha256_hex(const void *data, size_t len, char hex[SHA256_HEX_BYTES + 1])
{
    unsigned char digest[SHA256_BYTES];
    unsigned int n = 0;
    if (EVP_Digest(data, len, digest, &n, EVP_sha256(), NULL) != 1 || n != SHA256_BYTES)
        s_crypto_failed("EVP_Digest");
    s_to_hex(digest, SHA256_BYTES, hex);
}

static void s_hmac(const unsigned char *key, size_t key_len, const void *msg, size_t msg_len,
                   unsigned char out[SHA256_BYTES])
{
    unsigned int n = 0;
    if (!HMAC(EVP_sha256(), key, (int)key_len, msg, msg_len, out, &n) || n != SHA256_BYTES)
        s_crypto_failed("HMAC");
}

/* ---- the key table ---- */

sigv4_keys_t *sigv4_keys_new(void)
{
    return cairn_calloc(1, sizeof(sigv4_keys_t));
}

void sigv4_keys_destroy(sigv4_keys_t **self_p)
{
    sigv4_keys_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    for (size_t i = 0; i < self->count; i++) {
        OPENSSL_cleanse(self->keys[i].secret, self->keys[i].secret_len);
        free(self->keys[i].secret);
        free(self->keys[i].id);
    }
    free(self->keys);
    free(self);
    *self_p = NULL;
}

static const s_key_t *s_find_key(const sigv4_keys_t *self, s_span_t id)
{
    for (size_t i = 0; i < self->count; i++)
        if (s_span_eq(id, self->keys[i].id))
            return &self->keys[i];
    return NULL;
}

int sigv4_keys_add(sigv4_keys_t *self, const char *access_key_id, const char *secret, char *err,
                   size_t errlen)
{
    size_t id_len = strlen(access_key_id), secret_len = strlen(secret);
    bool is_id_ok = id_len >= 1 && id_len <= SIGV4_MAX_KEY_ID_BYTES;
    for (size_t i = 0; is_id_ok && i < id_len; i++) {
        char c = access_key_id[i];
        is_id_ok =
            (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    }
    bool is_secret_ok = secret_len >= 1 && secret_len <= SIGV4_MAX_SECRET_BYTES;
    for (size_t i = 0; is_secret_ok && i < secret_len; i++)
        is_secret_ok = secret[i] > ' ' && secret[i] < 0x7f;
    if (!is_id_ok) {
        s_set_err(err, errlen, "access key id must be 1 to %d characters of A-Z, a-z, 0-9 or _",
                  SIGV4_MAX_KEY_ID_BYTES);
        return -1;
    }
    if (!is_secret_ok) {
        s_set_err(err, errlen,
                  "secret of %s must be 1 to %d printable ASCII characters without spaces",
                  access_key_id, SIGV4_MAX_SECRET_BYTES);
        return -1;
    }
    if (s_find_key(self, (s_span_t){access_key_id, id_len})) {
        s_set_err(err, errlen, "access key id %s is given twice", access_key_id);
        return -1;
    }
    if (self->count == self->cap) {
        self->cap = self->cap ? self->cap * 2 : 4;
        self->keys = cairn_realloc(self->keys, self->cap * sizeof *self->keys);
    }
    s_key_t *key = &self->keys[self->count++];
    key->id = cairn_strdup(access_key_id);
    key->secret = cairn_strdup(secret);
    key->secret_len = secret_len;
    return 0;
}

int sigv4_keys_load(sigv4_keys_t *self, const char *path, char *err, size_t errlen)
{
    int added = 0, rc = 0;
    char line[SIGV4_MAX_KEY_ID_BYTES + SIGV4_MAX_SECRET_BYTES + 64];
    FILE *f = NULL;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        s_set_err(err, errlen, "cannot open %s: %s", path, strerror(errno));
        rc = -1;
    } else if (fstat(fd, &st) != 0) {
        s_set_err(err, errlen, "cannot stat %s: %s", path, strerror(errno));
        rc = -1;
    } else if (!S_ISREG(st.st_mode)) {
        s_set_err(err, errlen, "%s is not a regular file", path);
        rc = -1;
    } else if (st.st_uid != geteuid()) {
        s_set_err(err, errlen, "%s is owned by uid %u, not by this process's user (uid %u)", path,
                  (unsigned)st.st_uid, (unsigned)geteuid());
        rc = -1;
    } else if (st.st_mode & 077) {
        s_set_err(err, errlen,
                  "%s is accessible to group or others (mode %04o); it holds secrets: chmod 600 it",
                  path, (unsigned)(st.st_mode & 07777));
        rc = -1;
    } else if (!(f = fdopen(fd, "r"))) {
        s_set_err(err, errlen, "cannot read %s: %s", path, strerror(errno));
        rc = -1;
    } else
        fd = -1; /* owned by f now */
    for (int line_no = 1; rc == 0 && fgets(line, sizeof line, f); line_no++) {
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            s_set_err(err, errlen, "%s:%d: line too long", path, line_no);
            rc = -1;
            break;
        }
        char *save = NULL;
        char *id = strtok_r(line, " \t\r\n", &save);
        if (!id || id[0] == '#')
            continue;
        char *secret = strtok_r(NULL, " \t\r\n", &save);
        char *extra = secret ? strtok_r(NULL, " \t\r\n", &save) : NULL;
        char why[256];
        if (!secret || extra) {
            s_set_err(err, errlen, "%s:%d: expected ACCESS_KEY_ID SECRET", path, line_no);
            rc = -1;
        } else if (sigv4_keys_add(self, id, secret, why, sizeof why) != 0) {
            s_set_err(err, errlen, "%s:%d: %s", path, line_no, why);
            rc = -1;
        } else
            added++;
    }
    if (rc == 0 && f && ferror(f)) {
        s_set_err(err, errlen, "cannot read %s: %s", path, strerror(errno));
        rc = -1;
    }
    if (rc == 0 && added == 0) {
        s_set_err(err, errlen, "%s holds no keys (expected lines ACCESS_KEY_ID SECRET)", path);
        rc = -1;
    }
    OPENSSL_cleanse(line, sizeof line);
    if (f)
        fclose(f);
    if (fd >= 0)
        close(fd);
    return rc == 0 ? added : -1;
}

size_t sigv4_keys_count(const sigv4_keys_t *self)
{
    return self->count;
}

/* ---- parsing what the request says ---- */

/* Splits the Authorization header into its parts. */
static int s_parse_authorization(const char *header, s_auth_t *auth, sigv4_error_t *error)
{
    size_t alg_len = strlen(ALGORITHM);
    if (strncmp(header, ALGORITHM, alg_len) != 0 || !s_is_space(header[alg_len]))
        return s_refuse(error, SIGV4_INCOMPLETE, "IncompleteSignature",
                        "Authorization header must use the " ALGORITHM " algorithm");
    const char *p = header + alg_len;
    while (*p) {
        while (*p == ',' || s_is_space(*p))
            p++;
        if (!*p)
            break;
        const char *name = p;
        while (*p && *p != '=' && *p != ',')
            p++;
        if (*p != '=')
            return s_refuse(error, SIGV4_INCOMPLETE, "IncompleteSignature",
                            "Authorization header part '%.*s' is not NAME=VALUE",
                            (int)(p - name > 64 ? 64 : p - name), name);
        s_span_t key = {name, (size_t)(p - name)};
        const char *value = ++p;
        while (*p && *p != ',')
            p++;
        s_span_t val = {value, (size_t)(p - value)};
        while (val.len && s_is_space(val.p[val.len - 1]))
            val.len--;
        s_span_t *slot = s_span_eq(key, "Credential")      ? &auth->credential
                         : s_span_eq(key, "SignedHeaders") ? &auth->signed_headers
                         : s_span_eq(key, "Signature")     ? &auth->signature
                                                           : NULL;
        if (!slot)
            return s_refuse(error, SIGV4_INCOMPLETE, "IncompleteSignature",
                            "Authorization header has an unknown part '%.*s'",
                            (int)(key.len > 64 ? 64 : key.len), key.p);
        if (slot->p)
            return s_refuse(error, SIGV4_INCOMPLETE, "IncompleteSignature",
                            "Authorization header gives '%.*s' twice", (int)key.len, key.p);
        *slot = val;
    }
    if (!auth->credential.len || !auth->signed_headers.len || !auth->signature.len)
        return s_refuse(error, SIGV4_INCOMPLETE, "IncompleteSignature",
                        "Authorization header requires %s%s%sparameter(s) with values",
                        auth->credential.len ? "" : "'Credential' ",
                        auth->signed_headers.len ? "" : "'SignedHeaders' ",
                        auth->signature.len ? "" : "'Signature' ");
    /* KEYID/YYYYMMDD/REGION/SERVICE/aws4_request */
    s_span_t parts[5];
    size_t n = 0;
    const char *start = auth->credential.p, *end = start + auth->credential.len;
    for (const char *q = start; n < 5; q++) {
        if (q == end || *q == '/') {
            parts[n++] = (s_span_t){start, (size_t)(q - start)};
            start = q + 1;
            if (q == end)
                break;
        }
    }
    bool is_scope_ok = n == 5 && start > end && parts[0].len && parts[2].len && parts[3].len &&
                       parts[1].len == 8 && strspn(parts[1].p, "0123456789") >= 8 &&
                       s_span_eq(parts[4], SCOPE_TERMINATOR);
    if (!is_scope_ok)
        return s_refuse(error, SIGV4_INCOMPLETE, "IncompleteSignature",
                        "Credential must have exactly 5 slash-delimited elements, e.g. "
                        "keyid/date/region/service/term, got '%.*s'",
                        (int)(auth->credential.len > 200 ? 200 : auth->credential.len),
                        auth->credential.p);
    if (parts[0].len > SIGV4_MAX_KEY_ID_BYTES)
        return s_refuse(error, SIGV4_UNKNOWN_KEY, "UnrecognizedClientException",
                        "The security token included in the request is invalid.");
    auth->key_id = parts[0];
    auth->date = parts[1];
    auth->region = parts[2];
    auth->service = parts[3];
    bool is_hex = auth->signature.len == SHA256_HEX_BYTES;
    for (size_t i = 0; is_hex && i < auth->signature.len; i++)
        is_hex = s_hex_value(auth->signature.p[i]) >= 0;
    if (!is_hex)
        return s_refuse(error, SIGV4_INCOMPLETE, "IncompleteSignature",
                        "Signature must be %d hexadecimal characters", SHA256_HEX_BYTES);
    return 0;
}

/* Parses X-Amz-Date ("YYYYMMDDTHHMMSSZ") into ms since the epoch. */
static int s_parse_amz_date(const char *text, int64_t *ms)
{
    if (strlen(text) != AMZ_DATE_BYTES || text[8] != 'T' || text[15] != 'Z' ||
        strspn(text, "0123456789") != 8 || strspn(text + 9, "0123456789") != 6)
        return -1;
    struct tm tm = {0};
    tm.tm_year = (text[0] - '0') * 1000 + (text[1] - '0') * 100 + (text[2] - '0') * 10 +
                 (text[3] - '0') - 1900;
    tm.tm_mon = (text[4] - '0') * 10 + (text[5] - '0') - 1;
    tm.tm_mday = (text[6] - '0') * 10 + (text[7] - '0');
    tm.tm_hour = (text[9] - '0') * 10 + (text[10] - '0');
    tm.tm_min = (text[11] - '0') * 10 + (text[12] - '0');
    tm.tm_sec = (text[13] - '0') * 10 + (text[14] - '0');
    struct tm check = tm;
    time_t t = timegm(&check);
    /* timegm normalizes 02-30 into 03-02: refuse what it had to change. */
    if (t == (time_t)-1 || check.tm_mday != tm.tm_mday || check.tm_mon != tm.tm_mon ||
        check.tm_hour != tm.tm_hour || check.tm_min != tm.tm_min || check.tm_sec != tm.tm_sec)
        return -1;
    *ms = (int64_t)t * 1000;
    return 0;
}

static void s_format_amz_date(int64_t ms, char out[AMZ_DATE_BYTES + 1])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, AMZ_DATE_BYTES + 1, "%Y%m%dT%H%M%SZ", &tm);
}

/* ---- the canonical request ---- */

/* Hashes the canonical path: dot and empty segments removed, encoded. */
static int s_hash_path(s_hash_t *hash, const char *path, sigv4_error_t *error)
{
    s_span_t segments[MAX_PATH_SEGMENTS];
    size_t count = 0, len = strlen(path);
    if (len == 0) {
        s_hash_putc(hash, '/');
        return 0;
    }
    for (const char *p = path, *end = path + len; p < end;) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *seg_end = slash ? slash : end;
        s_span_t seg = {p, (size_t)(seg_end - p)};
        if (seg.len == 0 || s_span_eq(seg, "."))
            ;
        else if (s_span_eq(seg, "..")) {
            if (count)
                count--;
        } else if (count == MAX_PATH_SEGMENTS)
            return s_refuse(error, SIGV4_INCOMPLETE, "IncompleteSignature",
                            "request path has over %d segments; cannot verify it",
                            MAX_PATH_SEGMENTS);
        else
            segments[count++] = seg;
        p = slash ? slash + 1 : end;
    }
    if (path[0] == '/')
        s_hash_putc(hash, '/');
    for (size_t i = 0; i < count; i++) {
        if (i)
            s_hash_putc(hash, '/');
        s_hash_put_encoded(hash, segments[i].p, segments[i].len, false);
    }
    if (path[len - 1] == '/' && count)
        s_hash_putc(hash, '/');
    return 0;
}

/* Percent-decodes in[0..len) and writes it encoded canonically at out;
 * returns the bytes written (at most 3 * len). A '%' not followed by two hex
 * digits is taken literally. */
static size_t s_recode(const char *in, size_t len, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '%' && i + 2 < len && s_hex_value(in[i + 1]) >= 0 && s_hex_value(in[i + 2]) >= 0) {
            c = (unsigned char)(s_hex_value(in[i + 1]) * 16 + s_hex_value(in[i + 2]));
            i += 2;
        }
        if (s_is_unreserved(c))
            out[n++] = (char)c;
        else {
            out[n++] = '%';
            out[n++] = s_hex_upper[c >> 4];
            out[n++] = s_hex_upper[c & 0x0f];
        }
    }
    return n;
}

static int s_span_cmp(s_span_t a, s_span_t b)
{
    int c = memcmp(a.p, b.p, a.len < b.len ? a.len : b.len);
    return c ? c : (a.len > b.len) - (a.len < b.len);
}

static int s_param_cmp(const void *a, const void *b)
{
    const s_param_t *x = a, *y = b;
    int c = s_span_cmp(x->name, y->name);
    return c ? c : s_span_cmp(x->value, y->value);
}

/* Hashes the canonical query string. */
static int s_hash_query(s_hash_t *hash, const char *query, sigv4_error_t *error)
{
    size_t len = query ? strlen(query) : 0;
    if (len == 0)
        return 0;
    if (len > SIGV4_MAX_QUERY_BYTES)
        return s_refuse(error, SIGV4_INCOMPLETE, "IncompleteSignature",
                        "query string is over %d bytes; cannot verify it", SIGV4_MAX_QUERY_BYTES);
    char scratch[3 * SIGV4_MAX_QUERY_BYTES];
    s_param_t params[SIGV4_MAX_QUERY_PARAMS];
    size_t count = 0, used = 0;
    for (const char *p = query, *end = query + len; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pair_end = amp ? amp : end;
        if (pair_end > p) {
            if (count == SIGV4_MAX_QUERY_PARAMS)
                return s_refuse(error, SIGV4_INCOMPLETE, "IncompleteSignature",
                                "query string has over %d parameters; cannot verify it",
                                SIGV4_MAX_QUERY_PARAMS);
            const char *eq = memchr(p, '=', (size_t)(pair_end - p));
            const char *name_end = eq ? eq : pair_end;
            s_param_t *param = &params[count++];
            param->name.p = scratch + used;
            param->name.len = s_recode(p, (size_t)(name_end - p), scratch + used);
            used += param->name.len;
            param->value.p = scratch + used;
            param->value.len =
                eq ? s_recode(eq + 1, (size_t)(pair_end - eq - 1), scratch + used) : 0;
            used += param->value.len;
        }
        p = amp ? amp + 1 : end;
    }
    qsort(params, count, sizeof *params, s_param_cmp);
    for (size_t i = 0; i < count; i++) {
        if (i)
            s_hash_putc(hash, '&');
        s_hash_put(hash, params[i].name.p, params[i].name.len);
        s_hash_putc(hash, '=');
        s_hash_put(hash, params[i].value.p, params[i].value.len);
    }
    return 0;
}

/* Hashes "name:value\n" for each signed header and checks the list. */
static int s_hash_headers(s_hash_t *hash, const sigv4_request_t *request, s_span_t signed_headers,
                          sigv4_error_t *error)
{
    bool has_host = false;
    size_t count = 0;
    const char *p = signed_headers.p, *end = p + signed_headers.len;
    while (p <= end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *name_end = semi ? semi : end;
        size_t len = (size_t)(name_end - p);
        char name[MAX_HEADER_NAME + 1];
        bool is_name_ok = len >= 1 && len <= MAX_HEADER_NAME;
        for (size_t i = 0; is_name_ok && i < len; i++)
            is_name_ok = p[i] > ' ' && p[i] < 0x7f && p[i] != ':' && !(p[i] >= 'A' && p[i] <= 'Z');
        if (!is_name_ok)
            return s_refuse(error, SIGV4_INCOMPLETE, "IncompleteSignature",
                            "SignedHeaders must be lower-case header names separated by ';', "
                            "got '%.*s'",
                            (int)(signed_headers.len > 200 ? 200 : signed_headers.len),
                            signed_headers.p);
        if (++count > SIGV4_MAX_SIGNED_HEADERS)
            return s_refuse(error, SIGV4_INCOMPLETE, "IncompleteSignature",
                            "SignedHeaders names over %d headers; cannot verify it",
                            SIGV4_MAX_SIGNED_HEADERS);
        memcpy(name, p, len);
        name[len] = '\0';
        has_host |= strcmp(name, "host") == 0;
        const char *value = request->header(request->header_ctx, name);
        if (!value)
            return s_refuse(error, SIGV4_BAD_SIGNATURE, "SignatureDoesNotMatch",
                            "Signed header '%s' is not in the request.", name);
        s_hash_put(hash, name, len);
        s_hash_putc(hash, ':');
        /* Trimmed, with each run of white space made one space. */
        bool is_first = true;
        for (const char *v = value; *v;) {
            while (s_is_space(*v))
                v++;
            const char *word = v;
            while (*v && !s_is_space(*v))
                v++;
            if (v > word) {
                if (!is_first)
                    s_hash_putc(hash, ' ');
                s_hash_put(hash, word, (size_t)(v - word));
                is_first = false;
            }
        }
        s_hash_putc(hash, '\n');
        if (!semi)
            break;
        p = semi + 1;
    }
    if (!has_host)
        return s_refuse(error, SIGV4_INCOMPLETE, "IncompleteSignature",
                        "'Host' must be a 'SignedHeader' in the AWS Authorization.");
    return 0;
}

/* ---- verification ---- */

int sigv4_verify(const sigv4_keys_t *keys, const sigv4_request_t *request, const char *service,
                 const char *region, int64_t now_ms, sigv4_error_t *error)
{
    memset(error, 0, sizeof *error);
    error->code = "";
    const char *authorization = request->header(request->header_ctx, "authorization");
    if (!authorization) {
        if (request->query && strstr(request->query, "X-Amz-Signature="))
            return s_refuse(error, SIGV4_MISSING, "MissingAuthenticationToken",
                            "Query-string (presigned) signatures are not accepted; sign with "
                            "an Authorization header");
        return s_refuse(error, SIGV4_MISSING, "MissingAuthenticationToken",
                        "Request is missing Authentication Token");
    }
    s_auth_t auth;
    memset(&auth, 0, sizeof auth);
    if (s_parse_authorization(authorization, &auth, error) != 0)
        return -1;
    snprintf(error->access_key_id, sizeof error->access_key_id, "%.*s", (int)auth.key_id.len,
             auth.key_id.p);

    const char *amz_date = request->header(request->header_ctx, "x-amz-date");
    int64_t signed_ms = 0;
    if (!amz_date)
        return s_refuse(error, SIGV4_INCOMPLETE, "IncompleteSignature",
                        "Authorization header requires existence of a 'X-Amz-Date' header.");
    if (s_parse_amz_date(amz_date, &signed_ms) != 0)
        return s_refuse(error, SIGV4_INCOMPLETE, "IncompleteSignature",
                        "X-Amz-Date must be in ISO-8601 basic format YYYYMMDD'T'HHMMSS'Z', got "
                        "'%.32s'",
                        amz_date);

    const s_key_t *key = s_find_key(keys, auth.key_id);
    if (!key)
        return s_refuse(error, SIGV4_UNKNOWN_KEY, "UnrecognizedClientException",
                        "The security token included in the request is invalid.");

    char signed_text[AMZ_DATE_BYTES + 1], now_text[AMZ_DATE_BYTES + 1],
        limit_text[AMZ_DATE_BYTES + 1];
    if (signed_ms < now_ms - SIGV4_MAX_SKEW_MS || signed_ms > now_ms + SIGV4_MAX_SKEW_MS) {
        bool is_old = signed_ms < now_ms;
        s_format_amz_date(signed_ms, signed_text);
        s_format_amz_date(now_ms, now_text);
        s_format_amz_date(is_old ? now_ms - SIGV4_MAX_SKEW_MS : now_ms + SIGV4_MAX_SKEW_MS,
                          limit_text);
        if (is_old)
            return s_refuse(error, SIGV4_EXPIRED, "InvalidSignatureException",
                            "Signature expired: %s is now earlier than %s (%s - 15 min.)",
                            signed_text, limit_text, now_text);
        return s_refuse(error, SIGV4_EXPIRED, "InvalidSignatureException",
                        "Signature not yet current: %s is still later than %s (%s + 15 min.)",
                        signed_text, limit_text, now_text);
    }
    if (memcmp(auth.date.p, amz_date, 8) != 0)
        return s_refuse(error, SIGV4_BAD_SIGNATURE, "SignatureDoesNotMatch",
                        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version "
                        "of date from HTTP: '%.8s' != '%.8s', from '%s'.",
                        auth.date.p, amz_date, amz_date);
    if (!s_span_eq(auth.service, service))
        return s_refuse(error, SIGV4_BAD_SIGNATURE, "SignatureDoesNotMatch",
                        "Credential should be scoped to correct service: '%s'.", service);
    if (region && !s_span_eq(auth.region, region))
        return s_refuse(error, SIGV4_BAD_SIGNATURE, "SignatureDoesNotMatch",
                        "Credential should be scoped to a valid region, not '%.*s'.",
                        (int)(auth.region.len > 64 ? 64 : auth.region.len), auth.region.p);
    if (strlen(request->path) > SIGV4_MAX_PATH_BYTES)
        return s_refuse(error, SIGV4_INCOMPLETE, "IncompleteSignature",
                        "request path is over %d bytes; cannot verify it", SIGV4_MAX_PATH_BYTES);

    char payload_hex[SHA256_HEX_BYTES + 1];
    s_sha256_hex(request->body, request->body_len, payload_hex);
    const char *content_sha = request->header(request->header_ctx, "x-amz-content-sha256");
    if (content_sha && strcasecmp(content_sha, payload_hex) != 0)
        return s_refuse(error, SIGV4_BAD_SIGNATURE, "XAmzContentSHA256Mismatch",
                        "The provided 'x-amz-content-sha256' header does not match what was "
                        "computed (unsigned payloads are not accepted).");

    /* The canonical request, hashed as it is produced. */
    s_hash_t hash;
    s_hash_init(&hash);
    s_hash_puts(&hash, request->method);
    s_hash_putc(&hash, '\n');
    int rc = s_hash_path(&hash, request->path, error);
    if (rc == 0) {
        s_hash_putc(&hash, '\n');
        rc = s_hash_query(&hash, request->query, error);
    }
    if (rc == 0) {
        s_hash_putc(&hash, '\n');
        rc = s_hash_headers(&hash, request, auth.signed_headers, error);
    }
    char request_hex[SHA256_HEX_BYTES + 1];
    if (rc == 0) {
        s_hash_putc(&hash, '\n');
        s_hash_put(&hash, auth.signed_headers.p, auth.signed_headers.len);
        s_hash_putc(&hash, '\n');
        s_hash_puts(&hash, content_sha ? content_sha : payload_hex);
    }
    s_hash_final_hex(&hash, request_hex); /* also frees the context after an error */
    if (rc != 0)
        return -1;

    /* The string to sign and the signing key chain. */
    char to_sign[512];
    int to_sign_len =
        snprintf(to_sign, sizeof to_sign, ALGORITHM "\n%s\n%.8s/%.*s/%s/" SCOPE_TERMINATOR "\n%s",
                 amz_date, auth.date.p, (int)auth.region.len, auth.region.p, service, request_hex);
    if (to_sign_len < 0 || (size_t)to_sign_len >= sizeof to_sign)
        return s_refuse(error, SIGV4_INCOMPLETE, "IncompleteSignature",
                        "credential scope is too long");
    unsigned char secret[SIGV4_MAX_SECRET_BYTES + 4], k1[SHA256_BYTES], k2[SHA256_BYTES];
    memcpy(secret, "AWS4", 4);
    memcpy(secret + 4, key->secret, key->secret_len);
    s_hmac(secret, key->secret_len + 4, auth.date.p, 8, k1);
    s_hmac(k1, SHA256_BYTES, auth.region.p, auth.region.len, k2);
    s_hmac(k2, SHA256_BYTES, service, strlen(service), k1);
    s_hmac(k1, SHA256_BYTES, SCOPE_TERMINATOR, strlen(SCOPE_TERMINATOR), k2);
    s_hmac(k2, SHA256_BYTES, to_sign, (size_t)to_sign_len, k1);
    char expected[SHA256_HEX_BYTES + 1], given[SHA256_HEX_BYTES + 1];
    s_to_hex(k1, SHA256_BYTES, expected);
    for (size_t i = 0; i < SHA256_HEX_BYTES; i++) {
        char c = auth.signature.p[i];
        given[i] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
    }
    bool is_match = CRYPTO_memcmp(expected, given, SHA256_HEX_BYTES) == 0;
    OPENSSL_cleanse(secret, sizeof secret);
    OPENSSL_cleanse(k1, sizeof k1);
    OPENSSL_cleanse(k2, sizeof k2);
    OPENSSL_cleanse(expected, sizeof expected);
    if (!is_match)
        return s_refuse(error, SIGV4_BAD_SIGNATURE, "SignatureDoesNotMatch",
                        "The request signature we calculated does not match the signature you "
                        "provided. Check your AWS Secret Access Key and signing method. Consult "
                        "the service documentation for details.");
    return 0;
}
