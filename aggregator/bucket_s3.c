/* bucket_s3.c: a bucket that is an S3 bucket (AWS S3 or S3-compatible).
 *
 * DESIGN: one libcurl easy handle per bucket, kept for its life, so puts
 * reuse the connection. Each put is one PUT of the whole object, signed by
 * libcurl (CURLOPT_AWS_SIGV4 "aws:amz:<region>:s3"; nothing is signed by
 * hand here). libcurl signs every header we add, so the headers are exactly:
 * Content-Type, Content-Encoding (".gz" keys), Content-MD5 (S3 refuses a
 * body that does not match it), x-amz-content-sha256 (the body's real
 * SHA-256: libcurl 7.88 does not add it, and when it is there libcurl uses
 * it as the payload hash) and x-amz-security-token with temporary
 * credentials. Never an "Expect:" removal entry: it would be signed but not
 * sent, and every request would fail with 403. The body goes by
 * CURLOPT_POSTFIELDS with CUSTOMREQUEST "PUT", not CURLOPT_UPLOAD, whose
 * read callback libcurl would hash as an empty body.
 *
 * Addressing: https://<bucket>.s3.<region>.amazonaws.com/<key> on AWS
 * (virtual-host style, path style when the bucket name is not a DNS label),
 * <endpoint>/<bucket>/<key> (path style) on a custom endpoint unless told
 * otherwise. The key, under the bucket's prefix, is percent-encoded as S3's
 * SigV4 wants (unreserved characters and '/' kept) and sent as is
 * (CURLOPT_PATH_AS_IS), so the path libcurl signs is the path S3 checks.
 *
 * Secrets (secret access key, session token) go only to libcurl; the
 * description, every error and every log line show the access key id
 * masked and nothing else of the credentials.
 *
 * THREADS: any one thread at a time (the delivery actor), except
 * bucket_s3_cancel, which only raises an atomic flag: libcurl's progress
 * callback, called at least once a second during a transfer (connecting
 * included), sees it and aborts the put. */
#include "bucket_s3.h"

#include "cairn_log.h"
#include "cairn_mem.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S3_DEFAULT_REGION             "us-east-1"
#define S3_DEFAULT_CONNECT_TIMEOUT_MS 10000
#define S3_DEFAULT_TIMEOUT_MS         300000
#define S3_RESPONSE_MAX               8192 /* bytes of an answer kept for its error */
#define S3_KEY_MAX                    1024 /* S3's limit on a key, in bytes */
#define S3_MESSAGE_MAX                400  /* bytes of S3's <Message> put in an error */

struct bucket_s3 {
    char *name;          /* bucket name */
    char *prefix;        /* without leading or trailing '/'; "" when none */
    char *region;        /* "eu-west-1" */
    char *base_url;      /* everything before the encoded key, ending in '/' */
    char *access_key_id; /* given to libcurl */
    char *secret;        /* given to libcurl; never shown */
    char *session_token; /* NULL when none; never shown */
    char *sigv4;         /* "aws:amz:<region>:s3" */
    char *description;   /* for bucket_describe: no secret */
    CURL *curl;
    bool has_curl_global; /* curl_global_init succeeded (reference counted) */
    char curl_error[CURL_ERROR_SIZE];
    char response[S3_RESPONSE_MAX + 1]; /* start of the last answer's body */
    size_t response_len;
    atomic_bool is_cancelled; /* bucket_s3_cancel was called */
};

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} s_str_t;

static void s_str_append(s_str_t *str, const char *data, size_t len)
{
    if (str->cap - str->len < len + 1) {
        size_t cap = str->cap ? str->cap : 128;
        while (cap - str->len < len + 1)
            cap *= 2;
        str->data = cairn_realloc(str->data, cap);
        str->cap = cap;
    }
    memcpy(str->data + str->len, data, len);
    str->len += len;
    str->data[str->len] = '\0';
}

/* Hands over the string (caller frees) and leaves str empty. */
static char *s_str_take(s_str_t *str)
{
    char *data = str->data;
    *str = (s_str_t){0};
    return data;
}

static void s_str_printf(s_str_t *str, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_str_printf(s_str_t *str, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof buf) {
        s_str_append(str, buf, (size_t)n);
        return;
    }
    char *big = cairn_malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s_str_append(str, big, (size_t)n);
    free(big);
}

/* Appends data percent-encoded the way S3 SigV4 canonicalizes a path:
 * A-Z a-z 0-9 - _ . ~ stay, '/' stays when is_slash_kept, every other byte
 * becomes %XX (upper-case hex). */
static void s_str_append_encoded(s_str_t *str, const char *data, bool is_slash_kept)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)data; *p; p++) {
        unsigned char c = *p;
        bool is_unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                             (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
                             c == '~' || (c == '/' && is_slash_kept);
        if (is_unreserved) {
            s_str_append(str, (const char *)p, 1);
        } else {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            s_str_append(str, esc, 3);
        }
    }
}

/* The option if set, else the first of the environment variables that is
 * set and not empty, else NULL. *is_from_env tells which. */
static const char *s_setting(const char *option, const char *var1, const char *var2,
                             bool *is_from_env)
{
    *is_from_env = false;
    if (option && option[0])
        return option;
    *is_from_env = true;
    const char *value = var1 ? getenv(var1) : NULL;
    if ((!value || !value[0]) && var2)
        value = getenv(var2);
    return value && value[0] ? value : NULL;
}

static bool s_has_control_chars(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* "AKIA...WXYZ": enough to tell keys apart, not enough to use one. */
static void s_mask(const char *secretish, char out[16])
{
    size_t len = strlen(secretish);
    if (len >= 12)
        snprintf(out, 16, "%.4s...%s", secretish, secretish + len - 4);
    else
        snprintf(out, 16, "****");
}

/* A name that can be a DNS label: 3-63 of [a-z0-9.-], starting and ending
 * with a letter or digit, no "..". */
static bool s_is_dns_compatible(const char *name)
{
    size_t len = strlen(name);
    if (len < 3 || len > 63)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool is_alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!is_alnum && c != '.' && c != '-')
            return false;
        if ((i == 0 || i == len - 1) && !is_alnum)
            return false;
        if (c == '.' && name[i + 1] == '.')
            return false;
    }
    return true;
}

/* S3-compatible services accept more than AWS does; take what can be in a
 * URL path segment unescaped and is not a dot segment. */
static bool s_is_bucket_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len < 1 || len > 255 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return false;
    for (const char *p = name; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_'))
            return false;
    }
    return true;
}

static bool s_is_region_valid(const char *region)
{
    size_t len = strlen(region);
    if (len < 1 || len > 64)
        return false;
    for (const char *p = region; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
            return false;
    return true;
}

/* Splits an endpoint URL "http(s)://authority[/path]" into its scheme
 * ("http" or "https"), authority and path (without trailing '/'). Returns 0,
 * or -1 with the reason in err. */
static int s_parse_endpoint(const char *endpoint, s_str_t *scheme, s_str_t *authority,
                            s_str_t *path, char *err, size_t errlen)
{
    const char *rest = NULL;
    if (strncasecmp(endpoint, "https://", 8) == 0) {
        s_str_append(scheme, "https", 5);
        rest = endpoint + 8;
    } else if (strncasecmp(endpoint, "http://", 7) == 0) {
        s_str_append(scheme, "http", 4);
        rest = endpoint + 7;
    } else {
        snprintf(err, errlen, "endpoint \"%s\" is not an http:// or https:// URL", endpoint);
        return -1;
    }
    size_t authority_len = strcspn(rest, "/?#");
    const char *after = rest + authority_len;
    if (authority_len == 0 || memchr(rest, '@', authority_len) || *after == '?' || *after == '#' ||
        strchr(after, '?') || strchr(after, '#') || s_has_control_chars(endpoint) ||
        strchr(endpoint, ' ')) {
        snprintf(err, errlen,
                 "endpoint \"%s\": expected http(s)://host[:port][/path], without user, query "
                 "or fragment",
                 endpoint);
        return -1;
    }
    s_str_append(authority, rest, authority_len);
    size_t path_len = strlen(after);
    while (path_len > 0 && after[path_len - 1] == '/')
        path_len--;
    s_str_append(path, after, path_len);
    return 0;
}

void bucket_s3_destroy(bucket_s3_t **self_p)
{
    bucket_s3_t *self = *self_p;
    if (!self)
        return;
    if (self->curl)
        curl_easy_cleanup(self->curl);
    if (self->has_curl_global)
        curl_global_cleanup();
    free(self->name);
    free(self->prefix);
    free(self->region);
    free(self->base_url);
    free(self->access_key_id);
    free(self->secret);
    free(self->session_token);
    free(self->sigv4);
    free(self->description);
    free(self);
    *self_p = NULL;
}

static size_t s_on_response(char *data, size_t size, size_t count, void *ctx)
{
    bucket_s3_t *self = ctx;
    size_t len = size * count;
    size_t room = S3_RESPONSE_MAX - self->response_len;
    size_t take = len < room ? len : room; /* the rest is dropped, not an error */
    memcpy(self->response + self->response_len, data, take);
    self->response_len += take;
    self->response[self->response_len] = '\0';
    return len;
}

/* libcurl's progress callback: non-zero aborts the transfer. */
static int s_on_progress(void *ctx, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                         curl_off_t ulnow)
{
    bucket_s3_t *self = ctx;
    return atomic_load(&self->is_cancelled) ? 1 : 0;
}

/* Sets the options every put shares. Returns 0, or -1 with the reason. */
static int s_setup_curl(bucket_s3_t *self, const bucket_options_t *options, char *err,
                        size_t errlen)
{
    int64_t connect_ms = options && options->connect_timeout_ms > 0 ? options->connect_timeout_ms
                                                                    : S3_DEFAULT_CONNECT_TIMEOUT_MS;
    int64_t timeout_ms =
        options && options->timeout_ms > 0 ? options->timeout_ms : S3_DEFAULT_TIMEOUT_MS;
    bool is_verified = !(options && options->is_insecure);
    CURL *h = self->curl;
    CURLcode rc = curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* we run in a thread */
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_ERRORBUFFER, self->curl_error);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_AWS_SIGV4, self->sigv4);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_USERNAME, self->access_key_id);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_PASSWORD, self->secret);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, is_verified ? 1L : 0L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, is_verified ? 2L : 0L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_USERAGENT, "cairn-aggregator/" CAIRN_VERSION);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s_on_response);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_WRITEDATA, self);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, s_on_progress);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_XFERINFODATA, self);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "libcurl %s cannot be set up for S3: %s", curl_version(),
                 curl_easy_strerror(rc));
        return -1;
    }
    return 0;
}

/* Reads s3://bucket[/prefix] into self->name and self->prefix. */
static int s_parse_url(bucket_s3_t *self, const char *url, char *err, size_t errlen)
{
    const char *rest = url + 5; /* after "s3://" */
    size_t name_len = strcspn(rest, "/");
    self->name = cairn_malloc(name_len + 1);
    memcpy(self->name, rest, name_len);
    self->name[name_len] = '\0';
    if (!s_is_bucket_name_valid(self->name)) {
        snprintf(err, errlen,
                 "bucket URL \"%s\": \"%s\" is not a bucket name (letters, digits, '.', '-', "
                 "'_'; AWS wants 3-63 of a-z 0-9 . -)",
                 url, self->name);
        return -1;
    }
    const char *prefix = rest + name_len;
    while (*prefix == '/')
        prefix++;
    size_t prefix_len = strlen(prefix);
    while (prefix_len > 0 && prefix[prefix_len - 1] == '/')
        prefix_len--;
    self->prefix = cairn_malloc(prefix_len + 1);
    memcpy(self->prefix, prefix, prefix_len);
    self->prefix[prefix_len] = '\0';
    if (s_has_control_chars(self->prefix) || prefix_len > S3_KEY_MAX / 2) {
        snprintf(err, errlen,
                 "bucket URL \"%s\": the prefix has control characters or is longer "
                 "than %d bytes",
                 url, S3_KEY_MAX / 2);
        return -1;
    }
    return 0;
}

bucket_s3_t *bucket_s3_new(const char *url, const bucket_options_t *options, char *err,
                           size_t errlen)
{
    static const bucket_options_t defaults = {0};
    if (!options)
        options = &defaults;
    bucket_s3_t *self = cairn_calloc(1, sizeof *self);
    s_str_t scheme = {0}, authority = {0}, path = {0}, base = {0}, description = {0};
    bool is_region_from_env, is_endpoint_from_env, is_key_from_env, is_secret_from_env,
        is_token_from_env;
    int rc = s_parse_url(self, url, err, errlen);

    const char *region =
        s_setting(options->region, "AWS_REGION", "AWS_DEFAULT_REGION", &is_region_from_env);
    if (!region)
        region = S3_DEFAULT_REGION;
    if (rc == 0 && !s_is_region_valid(region)) {
        snprintf(err, errlen, "region \"%s\"%s is not a region name (a-z, 0-9, '-')", region,
                 is_region_from_env ? " (from the environment)" : "");
        rc = -1;
    }
    const char *endpoint = s_setting(options->endpoint, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL",
                                     &is_endpoint_from_env);
    const char *key_id =
        s_setting(options->access_key_id, "AWS_ACCESS_KEY_ID", NULL, &is_key_from_env);
    const char *secret =
        s_setting(options->secret_access_key, "AWS_SECRET_ACCESS_KEY", NULL, &is_secret_from_env);
    const char *token =
        options->session_token && options->session_token[0] ? options->session_token : NULL;
    is_token_from_env = false;
    if (!token && is_key_from_env)
        token = s_setting(NULL, "AWS_SESSION_TOKEN", NULL, &is_token_from_env);
    if (rc == 0 && (!key_id || !secret)) {
        snprintf(err, errlen,
                 "no S3 credentials: set s3_access_key_id and s3_secret_access_key, or "
                 "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (%s is missing)",
                 !key_id ? "the access key id" : "the secret access key");
        rc = -1;
    }
    if (rc == 0 && (s_has_control_chars(key_id) || s_has_control_chars(secret) ||
                    (token && s_has_control_chars(token)))) {
        snprintf(err, errlen, "S3 credentials hold control characters (a stray newline?)");
        rc = -1;
    }
    if (rc == 0) {
        self->region = cairn_strdup(region);
        self->access_key_id = cairn_strdup(key_id);
        self->secret = cairn_strdup(secret);
        self->session_token = token ? cairn_strdup(token) : NULL;
    }

    /* Where requests go. */
    bool is_path_style = options->path_style == BUCKET_PATH_STYLE_ON;
    if (rc == 0 && endpoint) {
        rc = s_parse_endpoint(endpoint, &scheme, &authority, &path, err, errlen);
        if (options->path_style == BUCKET_PATH_STYLE_AUTO)
            is_path_style = true;
    } else if (rc == 0) {
        s_str_append(&scheme, "https", 5);
        s_str_printf(&authority, "s3.%s.amazonaws.com%s", region,
                     strncmp(region, "cn-", 3) == 0 ? ".cn" : "");
        s_str_append(&path, "", 0);
        if (options->path_style == BUCKET_PATH_STYLE_AUTO)
            is_path_style = !s_is_dns_compatible(self->name) || strchr(self->name, '.');
    }
    if (rc == 0 && !is_path_style && !s_is_dns_compatible(self->name)) {
        snprintf(err, errlen,
                 "bucket \"%s\" cannot be addressed virtual-host style (not a DNS name): set "
                 "s3_path_style = true",
                 self->name);
        rc = -1;
    }
    if (rc == 0) {
        s_str_printf(&base, "%s://", scheme.data);
        if (!is_path_style)
            s_str_printf(&base, "%s.", self->name);
        s_str_printf(&base, "%s%s/", authority.data, path.data);
        if (is_path_style) {
            s_str_append_encoded(&base, self->name, false);
            s_str_append(&base, "/", 1);
        }
        if (self->prefix[0]) {
            s_str_append_encoded(&base, self->prefix, true);
            s_str_append(&base, "/", 1);
        }
        self->base_url = s_str_take(&base);
        s_str_printf(&base, "aws:amz:%s:s3", region);
        self->sigv4 = s_str_take(&base);

        char masked[16];
        s_mask(key_id, masked);
        s_str_printf(
            &description,
            "s3://%s%s%s (region %s, endpoint %s://%s%s, %s style, access "
            "key %s%s, credentials from the %s%s)",
            self->name, self->prefix[0] ? "/" : "", self->prefix, region, scheme.data,
            authority.data, path.data, is_path_style ? "path" : "virtual-host", masked,
            token ? " with a session token" : "", is_key_from_env ? "environment" : "configuration",
            options->is_insecure && strcmp(scheme.data, "https") == 0 ? ", TLS NOT VERIFIED" : "");
        self->description = s_str_take(&description);
    }

    if (rc == 0) {
        self->has_curl_global = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
        self->curl = self->has_curl_global ? curl_easy_init() : NULL;
        if (!self->curl) {
            snprintf(err, errlen, "libcurl cannot start");
            rc = -1;
        }
    }
    if (rc == 0)
        rc = s_setup_curl(self, options, err, errlen);
    free(scheme.data);
    free(authority.data);
    free(path.data);
    free(base.data);
    free(description.data);
    if (rc != 0)
        bucket_s3_destroy(&self);
    return self;
}

const char *bucket_s3_describe(const bucket_s3_t *self)
{
    return self->description;
}

void bucket_s3_cancel(bucket_s3_t *self)
{
    atomic_store(&self->is_cancelled, true);
}

const char *bucket_s3_name(const bucket_s3_t *self)
{
    return self->name;
}

/* prefix/key, or key when there is no prefix. */
static void s_full_key(const bucket_s3_t *self, const char *key, s_str_t *out)
{
    if (self->prefix[0])
        s_str_printf(out, "%s/", self->prefix);
    s_str_append(out, key, strlen(key));
}

int bucket_s3_object_key(const bucket_s3_t *self, const char *key, char *out, size_t size)
{
    s_str_t full_key = {0};
    s_full_key(self, key, &full_key);
    int rc = full_key.len < size ? 0 : -1;
    if (rc == 0)
        memcpy(out, full_key.data, full_key.len + 1);
    free(full_key.data);
    return rc;
}

int bucket_s3_locate(const bucket_s3_t *self, const char *key, char *out, size_t size)
{
    if (!key[0])
        return -1;
    s_str_t url = {0};
    s_str_append(&url, self->base_url, strlen(self->base_url));
    s_str_append_encoded(&url, key, true);
    int rc = url.len < size ? 0 : -1;
    if (rc == 0)
        memcpy(out, url.data, url.len + 1);
    free(url.data);
    return rc;
}

/* Copies the text of <tag>...</tag> from xml into out, entities decoded, at
 * most size - 1 bytes. Returns false when the tag is not there. */
static bool s_xml_text(const char *xml, const char *tag, char *out, size_t size)
{
    char open[32], close[32];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    const char *start = strstr(xml, open);
    if (!start)
        return false;
    start += strlen(open);
    const char *end = strstr(start, close);
    if (!end)
        end = start + strlen(start);
    static const struct {
        const char *entity;
        char c;
    } entities[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    size_t n = 0;
    for (const char *p = start; p < end && n + 1 < size;) {
        char c = *p;
        size_t skip = 1;
        for (size_t i = 0; c == '&' && i < sizeof entities / sizeof entities[0]; i++) {
            size_t len = strlen(entities[i].entity);
            if (strncmp(p, entities[i].entity, len) == 0) {
                c = entities[i].c;
                skip = len;
                break;
            }
        }
        out[n++] = (unsigned char)c < 0x20 ? ' ' : c;
        p += skip;
    }
    out[n] = '\0';
    return true;
}

/* Hex SHA-256 and base64 MD5 of the body. */
static void s_digests(const void *data, size_t len, char sha256_hex[65], char md5_base64[25])
{
    unsigned char sha[EVP_MAX_MD_SIZE], md5[EVP_MAX_MD_SIZE];
    unsigned int sha_len = 0, md5_len = 0;
    if (!EVP_Digest(data, len, sha, &sha_len, EVP_sha256(), NULL) ||
        !EVP_Digest(data, len, md5, &md5_len, EVP_md5(), NULL)) {
        /* fails only when OpenSSL cannot allocate: fatal, as everywhere */
        cairn_log_error("bucket: SHA-256 or MD5 failed");
        abort();
    }
    for (unsigned int i = 0; i < sha_len; i++)
        snprintf(sha256_hex + 2 * i, 3, "%02x", sha[i]);
    EVP_EncodeBlock((unsigned char *)md5_base64, md5, (int)md5_len);
}

int bucket_s3_put(bucket_s3_t *self, const char *key, const void *data, size_t len,
                  const char *content_type, char *err, size_t errlen)
{
    s_str_t full_key = {0}, url = {0}, header = {0};
    struct curl_slist *headers = NULL;
    int rc = -1;
    s_full_key(self, key, &full_key);
    if (!key[0] || key[0] == '/' || full_key.len > S3_KEY_MAX || s_has_control_chars(key)) {
        snprintf(err, errlen, "s3://%s: invalid key \"%s\"", self->name, full_key.data);
        goto out;
    }
    if (atomic_load(&self->is_cancelled)) {
        snprintf(err, errlen, "s3://%s/%s: cancelled", self->name, full_key.data);
        goto out;
    }
    s_str_append(&url, self->base_url, strlen(self->base_url));
    s_str_append_encoded(&url, key, true);

    char sha256_hex[65], md5_base64[25];
    s_digests(data, len, sha256_hex, md5_base64);
    size_t key_len = strlen(key);
    bool is_gzip = key_len > 3 && strcmp(key + key_len - 3, ".gz") == 0;
    /* Every header here is signed; none may be a removal ("Name:"). */
    s_str_printf(&header, "Content-Type: %s",
                 content_type && content_type[0] ? content_type : "binary/octet-stream");
    headers = curl_slist_append(headers, header.data);
    if (is_gzip)
        headers = curl_slist_append(headers, "Content-Encoding: gzip");
    header.len = 0;
    s_str_printf(&header, "Content-MD5: %s", md5_base64);
    headers = curl_slist_append(headers, header.data);
    header.len = 0;
    s_str_printf(&header, "x-amz-content-sha256: %s", sha256_hex);
    headers = curl_slist_append(headers, header.data);
    if (self->session_token) {
        header.len = 0;
        s_str_printf(&header, "x-amz-security-token: %s", self->session_token);
        headers = curl_slist_append(headers, header.data);
    }
    if (!headers) {
        cairn_log_error("bucket: out of memory in curl_slist_append");
        abort();
    }

    self->response_len = 0;
    self->response[0] = '\0';
    self->curl_error[0] = '\0';
    CURL *h = self->curl;
    CURLcode code = curl_easy_setopt(h, CURLOPT_URL, url.data);
    if (code == CURLE_OK)
        code = curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    if (code == CURLE_OK)
        code = curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    if (code == CURLE_OK)
        code = curl_easy_setopt(h, CURLOPT_POSTFIELDS, len ? data : "");
    if (code == CURLE_OK)
        code = curl_easy_perform(h);
    /* The handle keeps the option pointers: clear the ones freed below. */
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
    if (code != CURLE_OK) {
        snprintf(err, errlen, "s3://%s/%s: %s", self->name, full_key.data,
                 self->curl_error[0] ? self->curl_error : curl_easy_strerror(code));
        goto out;
    }
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status == 200) {
        rc = 0;
        goto out;
    }
    char s3_code[64], message[S3_MESSAGE_MAX];
    if (s_xml_text(self->response, "Code", s3_code, sizeof s3_code)) {
        if (!s_xml_text(self->response, "Message", message, sizeof message))
            message[0] = '\0';
        snprintf(err, errlen, "s3://%s/%s: %ld %s%s%s", self->name, full_key.data, status, s3_code,
                 message[0] ? ": " : "", message);
    } else {
        snprintf(err, errlen, "s3://%s/%s: HTTP %ld without an S3 error in the answer", self->name,
                 full_key.data, status);
    }
out:
    curl_slist_free_all(headers);
    free(header.data);
    free(url.data);
    free(full_key.data);
    return rc;
}
