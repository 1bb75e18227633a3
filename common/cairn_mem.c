/* cairn_mem.c: aborting allocators with a call counter (see cairn_mem.h). */
#include "cairn_mem.h"

#include <stdatomic.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

static atomic_uint_fast64_t s_count;

static void *s_check(void *p, size_t n, const char *file, int line)
{
    if (!p && n) {
        fprintf(stderr, "cairn: out of memory allocating %zu bytes at %s:%d\n", n, file, line);
        abort();
    }
    atomic_fetch_add_explicit(&s_count, 1, memory_order_relaxed);
    return p;
}

void *cairn_malloc_at(size_t n, const char *file, int line)
{
    return s_check(malloc(n ? n : 1), n ? n : 1, file, line);
}

void *cairn_calloc_at(size_t count, size_t n, const char *file, int line)
{
    return s_check(calloc(count ? count : 1, n ? n : 1), count * n + 1, file, line);
}

void *cairn_realloc_at(void *p, size_t n, const char *file, int line)
{
    return s_check(realloc(p, n ? n : 1), n ? n : 1, file, line);
}

char *cairn_strdup_at(const char *s, const char *file, int line)
{
    size_t n = strlen(s) + 1;
    char *copy = cairn_malloc_at(n, file, line);
    memcpy(copy, s, n);
    return copy;
}

uint64_t cairn_alloc_count(void)
{
    return atomic_load_explicit(&s_count, memory_order_relaxed);
}

int cairn_mem_trim_timer(struct _zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    (void)arg;
    malloc_trim(0);
    return 0;
}
