/* cairn_buf.c: growing text buffer (see cairn_buf.h). */
#include "cairn_buf.h"

#include "cairn_mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void cairn_buf_init(cairn_buf_t *self)
{
    self->cap = 4096;
    self->text = cairn_malloc(self->cap);
    self->text[0] = '\0';
    self->len = 0;
}

void cairn_buf_fini(cairn_buf_t *self)
{
    free(self->text);
    self->text = NULL;
    self->len = self->cap = 0;
}

char *cairn_buf_take(cairn_buf_t *self, size_t *len)
{
    char *text = self->text;
    *len = self->len;
    self->text = NULL;
    self->len = self->cap = 0;
    return text;
}

void cairn_buf_printf(cairn_buf_t *self, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(self->text + self->len, self->cap - self->len, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n >= self->cap - self->len) {
        self->cap = (self->len + (size_t)n + 1) * 2;
        self->text = cairn_realloc(self->text, self->cap);
        va_start(ap, fmt);
        n = vsnprintf(self->text + self->len, self->cap - self->len, fmt, ap);
        va_end(ap);
    }
    if (n > 0)
        self->len += (size_t)n;
}

void cairn_buf_json_string(cairn_buf_t *self, const char *s)
{
    cairn_buf_printf(self, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            cairn_buf_printf(self, "\\%c", c);
        else if (c < 0x20)
            cairn_buf_printf(self, "\\u%04x", c);
        else
            cairn_buf_printf(self, "%c", c);
    }
    cairn_buf_printf(self, "\"");
}
