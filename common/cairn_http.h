/* cairn_http.h: the embedded HTTP server of both daemons (libmicrohttpd).
 *
 * It reads each request's whole body (up to max_body_bytes; larger gets 413
 * without calling the handler) and calls one handler per request from a
 * pool thread. The handler fills a response; the server sends it. Used by
 * the agent's intake and the aggregator's health (later metrics and query)
 * endpoints, so MHD's callback protocol lives only here. */
#ifndef CAIRN_HTTP_H
#define CAIRN_HTTP_H

#include <stddef.h>

typedef struct cairn_http cairn_http_t;

typedef struct {
    const char *method;       /* "GET", "POST", ... */
    const char *path;         /* "/v1/events" (no query string) */
    const char *body;         /* request body, NUL-terminated; "" when none */
    size_t body_len;
    void *connection;         /* for cairn_http_header/cairn_http_query */
    const char *uri;          /* request target as sent: raw path and query (for SigV4) */
} cairn_http_request_t;

typedef struct {
    int status;               /* HTTP status; 200 by default */
    const char *content_type; /* default "application/json" */
    char *body;               /* owned by the server once set: cairn_malloc'd */
    size_t body_len;
    int retry_after_s;        /* > 0 adds Retry-After */
} cairn_http_response_t;

/* Called once per request on a pool thread; ctx is the server's. */
typedef void(cairn_http_handler_fn)(void *ctx, const cairn_http_request_t *request,
                                    cairn_http_response_t *response);

/* Starts a server on listen ("HOST:PORT"). name labels log lines. Returns
 * NULL after logging why. Same as cairn_http_new_timed with 60 s. */
cairn_http_t *cairn_http_new(const char *name, const char *listen, unsigned thread_count,
                             size_t max_body_bytes, cairn_http_handler_fn *handler, void *ctx);

/* Like cairn_http_new, with request_timeout_s (>= 1): a connection idle that
 * long is closed, and so is one whose request (from its request line to the
 * end of its body) takes longer, without an answer: a client that stops
 * sending, or trickles, cannot hold a pool thread's connection slot. */
cairn_http_t *cairn_http_new_timed(const char *name, const char *listen, unsigned thread_count,
                                   size_t max_body_bytes, unsigned request_timeout_s,
                                   cairn_http_handler_fn *handler, void *ctx);

/* Requests dropped because they timed out (see cairn_http_new_timed). Any thread. */
unsigned long long cairn_http_timeout_count(const cairn_http_t *self);

/* Stops the server, waiting for requests in progress, and frees it. */
void cairn_http_destroy(cairn_http_t **self_p);

/* The bound port. */
int cairn_http_port(const cairn_http_t *self);

/* Request header or query argument by name, or NULL. Borrowed. */
const char *cairn_http_header(const cairn_http_request_t *request, const char *name);
const char *cairn_http_query(const cairn_http_request_t *request, const char *name);

/* Sets a response body from printf-style text. */
void cairn_http_respond(cairn_http_response_t *response, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets a JSON error body {"error":"<message>"} (message JSON-escaped). */
void cairn_http_respond_error(cairn_http_response_t *response, int status, const char *message);

/* Appends s to out[pos..size) as the inside of a JSON string; returns new pos. */
size_t cairn_json_escape(char *out, size_t size, size_t pos, const char *s);

#endif
