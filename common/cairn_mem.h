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

/* Frees *p and sets it to NULL. */
#define cairn_free(p)                                                                              \
    do {                                                                                           \
        free(*(p));                                                                                \
        *(p) = NULL;                                                                               \
    } while (0)

#endif
