/* cairn_buf.h: a growing text buffer for answers built piece by piece
 * (JSON documents, Prometheus expositions). Not for the hot path. */
#ifndef CAIRN_BUF_H
#define CAIRN_BUF_H

#include <stddef.h>

typedef struct {
    char *text; /* always NUL-terminated */
    size_t len;
    size_t cap;
} cairn_buf_t;

void cairn_buf_init(cairn_buf_t *self);
void cairn_buf_fini(cairn_buf_t *self);

/* Hands the text over (caller frees it) and empties self. */
char *cairn_buf_take(cairn_buf_t *self, size_t *len);

void cairn_buf_printf(cairn_buf_t *self, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends s as a JSON string, quotes included. */
void cairn_buf_json_string(cairn_buf_t *self, const char *s);

#endif
