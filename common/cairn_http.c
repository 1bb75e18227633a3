/* cairn_http.c: a libmicrohttpd server that hands whole requests to one
 * handler.
 *
 * DESIGN: MHD calls the URI log callback when a request line arrives (we
 * allocate the per-request context there and keep the raw URI, which MHD
 * later decodes in place), then the access handler several times per
 * request: first with the headers (nothing to do yet), then with body chunks
 * (appended, up to max_body_bytes; beyond that the request is marked too big
 * and the rest is discarded), then once with no data (we call the handler and
 * queue the response). The context is freed in the completion callback, which
 * MHD calls however the request ended. MHD's connection timeout closes idle
 * connections; a request that keeps trickling bytes is cut by the deadline
 * checked on each body chunk (MHD_NO closes the connection). MHD runs its own thread pool with
 * epoll, so handlers run in parallel and must be thread-safe. */
#include "cairn_http.h"

#include "cairn_log.h"
#include "cairn_mem.h"
#include "cairn_net.h"
#include "cairn_time.h"

#include <microhttpd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cairn_http {
    struct MHD_Daemon *daemon;
    char *name;
    size_t max_body_bytes;
    cairn_http_handler_fn *handler;
    void *ctx;
    int port;
    unsigned request_timeout_s;  /* idle and whole-request limit */
    atomic_ullong timeout_count; /* requests dropped by either limit */
};

typedef struct {
    char *body;
    size_t len;
    size_t cap;
    int is_too_big;
    char *uri;         /* request target as sent */
    int64_t start_ms;  /* monotonic time of the request line */
    bool is_started;   /* the access handler has seen the headers */
    bool is_timed_out; /* dropped at the request deadline */
} s_request_t;

static void *s_uri_log(void *cls, const char *uri, struct MHD_Connection *conn)
{
    s_request_t *req = cairn_calloc(1, sizeof *req);
    req->uri = cairn_strdup(uri ? uri : "");
    req->start_ms = cairn_time_mono_ms();
    return req;
}

static enum MHD_Result s_send(struct MHD_Connection *conn, cairn_http_response_t *resp)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        resp->body_len, resp->body ? resp->body : (char *)"", MHD_RESPMEM_MUST_COPY);
    free(resp->body);
    resp->body = NULL;
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type",
                            resp->content_type ? resp->content_type : "application/json");
    if (resp->retry_after_s > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", resp->retry_after_s);
        MHD_add_response_header(r, "Retry-After", v);
    }
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)resp->status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result s_access(void *cls, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version, const char *upload,
                                size_t *upload_size, void **con_cls)
{
    cairn_http_t *self = cls;
    s_request_t *req = *con_cls;
    if (!req->is_started) {
        req->is_started = true;
        return MHD_YES;
    }
    if (*upload_size) {
        if (cairn_time_mono_ms() - req->start_ms > (int64_t)self->request_timeout_s * 1000) {
            cairn_log_debug("%s: %s %s: body not complete within %u s; closing the connection",
                            self->name, method, url, self->request_timeout_s);
            req->is_timed_out = true;
            return MHD_NO;
        }
        if (!req->is_too_big && req->len + *upload_size > self->max_body_bytes)
            req->is_too_big = 1;
        if (!req->is_too_big) {
            if (req->len + *upload_size + 1 > req->cap) {
                req->cap = (req->len + *upload_size + 1) * 2;
                if (req->cap > self->max_body_bytes + 1)
                    req->cap = self->max_body_bytes + 1;
                req->body = cairn_realloc(req->body, req->cap);
            }
            memcpy(req->body + req->len, upload, *upload_size);
            req->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    cairn_http_response_t resp = {.status = 200};
    if (req->is_too_big) {
        char msg[128];
        snprintf(msg, sizeof msg, "request body over the %zu-byte limit", self->max_body_bytes);
        cairn_http_respond_error(&resp, 413, msg);
    } else {
        if (req->body)
            req->body[req->len] = '\0';
        cairn_http_request_t request = {method,   url,  req->body ? req->body : "",
                                        req->len, conn, req->uri};
        self->handler(self->ctx, &request, &resp);
    }
    return s_send(conn, &resp);
}

static void s_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                        enum MHD_RequestTerminationCode toe)
{
    cairn_http_t *self = cls;
    s_request_t *req = *con_cls;
    if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED || (req && req->is_timed_out))
        atomic_fetch_add(&self->timeout_count, 1);
    if (req) {
        free(req->uri);
        free(req->body);
        free(req);
        *con_cls = NULL;
    }
}

cairn_http_t *cairn_http_new(const char *name, const char *listen, unsigned thread_count,
                             size_t max_body_bytes, cairn_http_handler_fn *handler, void *ctx)
{
    return cairn_http_new_timed(name, listen, thread_count, max_body_bytes, 60, handler, ctx);
}

cairn_http_t *cairn_http_new_timed(const char *name, const char *listen, unsigned thread_count,
                                   size_t max_body_bytes, unsigned request_timeout_s,
                                   cairn_http_handler_fn *handler, void *ctx)
{
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char err[256];
    if (cairn_net_parse_listen(listen, &addr, &addr_len, err, sizeof err) != 0) {
        cairn_log_error("%s: cannot listen: %s", name, err);
        return NULL;
    }
    cairn_http_t *self = cairn_calloc(1, sizeof *self);
    self->name = cairn_strdup(name);
    self->max_body_bytes = max_body_bytes;
    self->handler = handler;
    self->ctx = ctx;
    self->request_timeout_s = request_timeout_s ? request_timeout_s : 1;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    if (addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    self->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, s_access, self, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(thread_count ? thread_count : 1),
        MHD_OPTION_NOTIFY_COMPLETED, s_completed, self, MHD_OPTION_URI_LOG_CALLBACK, s_uri_log,
        NULL, MHD_OPTION_CONNECTION_TIMEOUT, self->request_timeout_s, MHD_OPTION_END);
    if (!self->daemon) {
        cairn_log_error("%s: cannot listen on %s (address in use or not local?)", name, listen);
        cairn_http_destroy(&self);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(self->daemon, MHD_DAEMON_INFO_BIND_PORT);
    self->port = info ? info->port : 0;
    cairn_log_info("%s: listening on %s (port %d)", name, listen, self->port);
    return self;
}

void cairn_http_destroy(cairn_http_t **self_p)
{
    cairn_http_t *self = *self_p;
    if (!self)
        return;
    if (self->daemon)
        MHD_stop_daemon(self->daemon);
    free(self->name);
    free(self);
    *self_p = NULL;
}

int cairn_http_port(const cairn_http_t *self)
{
    return self->port;
}

unsigned long long cairn_http_timeout_count(const cairn_http_t *self)
{
    return atomic_load(&((cairn_http_t *)self)->timeout_count);
}

const char *cairn_http_header(const cairn_http_request_t *request, const char *name)
{
    return MHD_lookup_connection_value(request->connection, MHD_HEADER_KIND, name);
}

const char *cairn_http_query(const cairn_http_request_t *request, const char *name)
{
    return MHD_lookup_connection_value(request->connection, MHD_GET_ARGUMENT_KIND, name);
}

void cairn_http_respond(cairn_http_response_t *response, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    free(response->body);
    response->body = cairn_malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(response->body, (size_t)n + 1, fmt, ap);
    va_end(ap);
    response->body_len = (size_t)n;
    response->status = status;
}

size_t cairn_json_escape(char *out, size_t size, size_t pos, const char *s)
{
    for (; *s && pos + 7 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[pos++] = '\\';
            out[pos++] = (char)c;
        } else if (c < 0x20)
            pos += (size_t)snprintf(out + pos, size - pos, "\\u%04x", c);
        else
            out[pos++] = (char)c;
    }
    out[pos < size ? pos : size - 1] = '\0';
    return pos;
}

void cairn_http_respond_error(cairn_http_response_t *response, int status, const char *message)
{
    char escaped[1024];
    cairn_json_escape(escaped, sizeof escaped, 0, message);
    cairn_http_respond(response, status, "{\"error\":\"%s\"}", escaped);
}
