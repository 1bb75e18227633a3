/* sigv4.h: verifies AWS Signature Version 4 on requests that cairn serves.
 *
 * The agent's intake (service "cloudtrail-data") and, later, the aggregator's
 * LookupEvents API (service "cloudtrail") accept requests signed the way the
 * AWS CLI and SDKs sign them: an Authorization header
 *
 *     AWS4-HMAC-SHA256 Credential=KEYID/YYYYMMDD/REGION/SERVICE/aws4_request,
 *         SignedHeaders=content-type;host;x-amz-date, Signature=<64 hex>
 *
 * plus an X-Amz-Date header. The verifier rebuilds the canonical request from
 * what was received (method, raw path, raw query, the signed headers, the
 * body), signs it with the secret of KEYID from a sigv4_keys_t, and compares
 * in constant time. Not supported: query-string (presigned) signatures, the
 * Date header instead of X-Amz-Date, session tokens, chunked (streaming)
 * payloads, repeated headers (only the first value of a header is used).
 *
 * THREADS: a sigv4_keys_t is filled before serving starts and only read
 * afterwards, so sigv4_verify may run on many threads at once. */
#ifndef CAIRN_SIGV4_H
#define CAIRN_SIGV4_H

#include <stddef.h>
#include <stdint.h>

#define SIGV4_MAX_SKEW_MS        (15 * 60 * 1000) /* X-Amz-Date may differ from now by this */
#define SIGV4_MAX_KEY_ID_BYTES   128              /* longest access key id */
#define SIGV4_MAX_SECRET_BYTES   1024             /* longest secret access key */
#define SIGV4_MAX_PATH_BYTES     4096             /* longest raw path verified */
#define SIGV4_MAX_QUERY_BYTES    8192             /* longest raw query string verified */
#define SIGV4_MAX_QUERY_PARAMS   128              /* most query parameters verified */
#define SIGV4_MAX_SIGNED_HEADERS 32               /* most names in SignedHeaders */

/* The access keys a server accepts: access key id -> secret. */
typedef struct sigv4_keys sigv4_keys_t;

/* Why a request was refused, for counters. */
typedef enum {
    SIGV4_MISSING = 1,   /* no Authorization header: MissingAuthenticationToken */
    SIGV4_INCOMPLETE,    /* malformed Authorization or X-Amz-Date: IncompleteSignature */
    SIGV4_UNKNOWN_KEY,   /* access key id not configured: UnrecognizedClientException */
    SIGV4_BAD_SIGNATURE, /* wrong signature, scope or payload hash: SignatureDoesNotMatch,
                            XAmzContentSHA256Mismatch */
    SIGV4_EXPIRED,       /* X-Amz-Date more than 15 minutes off: InvalidSignatureException */
} sigv4_reason_t;

/* What sigv4_verify says when it refuses a request. code and message are
 * AWS's (message for the response body, code for its "__type"). */
typedef struct {
    sigv4_reason_t reason;
    const char *code;  /* static string, e.g. "SignatureDoesNotMatch" */
    char message[512]; /* e.g. "Signature expired: ..." */
    char access_key_id[SIGV4_MAX_KEY_ID_BYTES + 1]; /* key the request claimed, or "" */
} sigv4_error_t;

/* Returns the value of request header name (given lower-case; the lookup
 * must ignore case), or NULL if the request has none. Borrowed. */
typedef const char *(sigv4_header_fn)(void *ctx, const char *name);

/* One received request, exactly as it came. */
typedef struct {
    const char *method;      /* "POST" */
    const char *path;        /* raw path as sent, not percent-decoded, without '?' */
    const char *query;       /* raw query string after '?', not decoded; NULL or "" if none */
    sigv4_header_fn *header; /* header lookup */
    void *header_ctx;        /* passed to header */
    const char *body;        /* the body ("" when none) */
    size_t body_len;
} sigv4_request_t;

/* An empty table. Destroy with sigv4_keys_destroy. */
sigv4_keys_t *sigv4_keys_new(void);

/* Frees the table (wiping the secrets) and sets *self_p to NULL. Accepts NULL. */
void sigv4_keys_destroy(sigv4_keys_t **self_p);

/* Adds one key (copied). The id must be 1..128 characters of [A-Za-z0-9_],
 * the secret 1..1024 printable characters without spaces, and the id not
 * already present. Returns 0, or -1 with the reason in err. */
int sigv4_keys_add(sigv4_keys_t *self, const char *access_key_id, const char *secret, char *err,
                   size_t errlen);

/* Adds every key of a credentials file: one "ACCESS_KEY_ID SECRET" a line
 * (separated by spaces or tabs), blank lines and lines starting with '#'
 * ignored. The file must be a regular file owned by the effective user and
 * not accessible to group or others (mode 0600 or 0400): secrets must not be
 * readable by other users. Returns the number of keys added (>= 1), or -1
 * with the reason in err ("creds:3: expected ACCESS_KEY_ID SECRET",
 * "creds is readable by group or others (mode 0644); chmod 600 it"); after
 * -1 the table may hold the keys of the lines before the bad one. */
int sigv4_keys_load(sigv4_keys_t *self, const char *path, char *err, size_t errlen);

/* Keys in the table. */
size_t sigv4_keys_count(const sigv4_keys_t *self);

/* Verifies request's SigV4 signature against keys. service is the signing
 * name the credential scope must carry ("cloudtrail-data"); region, if not
 * NULL, the region it must carry (NULL: any region). now_ms is the current
 * time (ms since the epoch); X-Amz-Date must be within SIGV4_MAX_SKEW_MS of
 * it. The payload hash is the hex SHA-256 of the body; an
 * x-amz-content-sha256 header, when present, must equal it.
 *
 * Returns 0 if the request is signed by a key of the table, or -1 with
 * *error filled (reason, AWS code and message). Does not log. Any thread. */
int sigv4_verify(const sigv4_keys_t *keys, const sigv4_request_t *request, const char *service,
                 const char *region, int64_t now_ms, sigv4_error_t *error);

#endif
