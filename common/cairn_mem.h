/* cairn_mem.h: allocation that never returns NULL.
 *
 * Running out of memory is fatal (STYLE.md section 3): these abort with file
 * and line. Nothing is acknowledged before it is committed to LMDB, so a
 * restart loses nothing. cairn_alloc_count() counts calls, for tests that
 * check a hot path does not allocate after warm-up. */
#ifndef CAIRN_MEM_H
#define CAIRN_MEM_H

#include <stddef.h>
#include <stdint.h>

#define cairn_malloc(n)     cairn_malloc_at((n), __FILE__, __LINE__)
#define cairn_calloc(c, n)  cairn_calloc_at((c), (n), __FILE__, __LINE__)
#define cairn_realloc(p, n) cairn_realloc_at((p), (n), __FILE__, __LINE__)
#define cairn_strdup(s)     cairn_strdup_at((s), __FILE__, __LINE__)

void *cairn_malloc_at(size_t n, const char *file, int line);
void *cairn_calloc_at(size_t count, size_t n, const char *file, int line);
void *cairn_realloc_at(void *p, size_t n, const char *file, int line);
char *cairn_strdup_at(const char *s, const char *file, int line);

/* Calls made to the allocators above since the process started. */
uint64_t cairn_alloc_count(void);

/* A zloop timer handler (zloop_timer_fn) for the daemons' loops, every
 * second: hands the pages of freed memory back to the OS (malloc_trim).
 * Batches of a megabyte or more (frames, libzmq's CURVE copies, request
 * bodies, decoded messages) are freed in the arenas of the threads that
 * used them, and glibc keeps those pages: without this a daemon's anonymous
 * memory sits at the high-water mark of every thread's arena. A call costs
 * ~0.1 ms. Always returns 0. */
struct _zloop_t;
int cairn_mem_trim_timer(struct _zloop_t *loop, int timer_id, void *arg);

/* Frees *p and sets it to NULL. */
#define cairn_free(p)                                                                              \
    do {                                                                                           \
        free(*(p));                                                                                \
        *(p) = NULL;                                                                               \
    } while (0)

#endif
