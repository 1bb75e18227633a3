/* bucket.h: where delivered log files go: a local directory ("dir:///path",
 * "file:///path" or a plain absolute path) or an S3 bucket
 * ("s3://bucket/optional/prefix", AWS S3 or any S3-compatible service),
 * behind the same calls.
 *
 * A put is atomic for readers: the object appears whole or not at all (a
 * directory writes a temporary name, fsyncs, renames and fsyncs the
 * directory; S3 makes an object visible only once its PUT completed, and
 * Content-MD5 makes it refuse a body damaged on the way). Putting the same
 * key again replaces the object. Thread: any one thread at a time, except
 * bucket_cancel, which any thread may call while another one puts. */
#ifndef CAIRN_BUCKET_H
#define CAIRN_BUCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct bucket bucket_t;

typedef enum {
    BUCKET_PATH_STYLE_AUTO = 0, /* virtual-host on AWS, path style on a custom endpoint */
    BUCKET_PATH_STYLE_ON,       /* http(s)://endpoint/bucket/key */
    BUCKET_PATH_STYLE_OFF,      /* http(s)://bucket.endpoint/key */
} bucket_path_style_t;

/* Settings of an S3 bucket (a directory ignores them). Every string may be
 * NULL or "" to take the standard AWS variable instead:
 *   region             AWS_REGION, then AWS_DEFAULT_REGION, then us-east-1
 *   endpoint           AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL, then AWS
 *                      (https://s3.<region>.amazonaws.com)
 *   access_key_id      AWS_ACCESS_KEY_ID
 *   secret_access_key  AWS_SECRET_ACCESS_KEY
 *   session_token      AWS_SESSION_TOKEN, but only when the access key id
 *                      came from the environment too (a token belongs to
 *                      its key)
 * The strings are copied; options may be NULL (all defaults). */
typedef struct {
    const char *region;            /* "eu-west-1" */
    const char *endpoint;          /* "https://s3.example.com" or "http://127.0.0.1:9000" */
    const char *access_key_id;     /* "AKIA..." */
    const char *secret_access_key; /* never logged */
    const char *session_token;     /* temporary credentials only; never logged */
    bucket_path_style_t path_style;
    bool is_insecure;           /* true: do not verify the TLS certificate (tests only) */
    int64_t connect_timeout_ms; /* per connection; 0: 10 s */
    int64_t timeout_ms;         /* per request, whole; 0: 300 s */
} bucket_options_t;

/* Opens the bucket named by url. A directory is created if needed; an S3
 * bucket is not contacted (the first put finds out whether it exists and
 * the credentials work). Returns NULL with the reason in err: unsupported
 * URL, bad bucket name or region, no credentials, directory not creatable.
 * The reason never holds a secret. */
bucket_t *bucket_new(const char *url, const bucket_options_t *options, char *err, size_t errlen);

void bucket_destroy(bucket_t **self_p);

/* Stores len bytes of data under key ("AWSLogs/..."; an S3 bucket puts it
 * under its prefix). content_type (NULL: binary/octet-stream) goes with an
 * S3 object, and a key ending in ".gz" gets Content-Encoding gzip. Returns
 * 0, or -1 with the reason in err; nothing half-written remains. A
 * directory's reason is the path and errno text; S3's is
 * "s3://bucket/prefix/key: 403 SignatureDoesNotMatch: <S3's message>" or
 * "s3://bucket/prefix/key: <curl's error>" when no answer came. Blocks for
 * at most the options' timeouts. */
int bucket_put(bucket_t *self, const char *key, const void *data, size_t len,
               const char *content_type, char *err, size_t errlen);

/* Makes the put in progress fail within about a second, and every later put
 * fail at once, with "cancelled" in err: for a quick stop (the caller puts
 * the same objects again after a restart). Thread-safe; accepts NULL. */
void bucket_cancel(bucket_t *self);

/* The bucket as CloudTrail's notification names it (its "s3Bucket"), borrowed:
 * the S3 bucket's name, or the directory's absolute path. */
const char *bucket_name(const bucket_t *self);

/* Writes the object key under which key is stored into out, as a
 * notification lists it ("s3ObjectKey"): for S3 the key under the bucket's
 * prefix ("prefix/AWSLogs/..."), for a directory key itself (relative to
 * bucket_name). Returns 0, or -1 if out is too small. */
int bucket_object_key(const bucket_t *self, const char *key, char *out, size_t size);

/* Human-readable location, borrowed: "/var/lib/cairn/bucket", or
 * "s3://bucket/prefix (region eu-west-1, endpoint https://..., virtual-host
 * style, access key AKIA...WXYZ)" with the access key id masked and no
 * secret. */
const char *bucket_describe(const bucket_t *self);

/* Writes where key is stored into out: the file's path, or for S3 the URL
 * a put of key goes to (prefix added, key percent-encoded as S3 wants it,
 * '/' kept). Returns 0, or -1 if out is too small or key is empty. */
int bucket_locate(const bucket_t *self, const char *key, char *out, size_t size);

#endif
