/* cairn_arena.c: see cairn_arena.h. */
#include "cairn_arena.h"

#include "cairn_mem.h"

#include <stddef.h>
#include <stdlib.h>

struct cairn_arena_block {
    cairn_arena_block_t *next; /* older, smaller block */
    size_t cap_bytes;
    size_t used_bytes;
    max_align_t data[]; /* cap_bytes */
};

static void *s_alloc(void *ctx, size_t size)
{
    cairn_arena_t *arena = ctx;
    size = (size + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    cairn_arena_block_t *block = arena->head;
    if (!block || block->cap_bytes - block->used_bytes < size) {
        size_t cap = block ? block->cap_bytes * 2 : 64 * 1024;
        while (cap < size)
            cap *= 2;
        cairn_arena_block_t *bigger = cairn_malloc(sizeof *bigger + cap);
        *bigger = (cairn_arena_block_t){block, cap, 0};
        arena->head = block = bigger;
    }
    void *p = (char *)block->data + block->used_bytes;
    block->used_bytes += size;
    return p;
}

static void s_free(void *ctx, void *p)
{
    /* everything goes at the next reset */
}

void cairn_arena_init(cairn_arena_t *arena)
{
    arena->head = NULL;
    arena->allocator = (ProtobufCAllocator){s_alloc, s_free, arena};
}

void cairn_arena_reset(cairn_arena_t *arena)
{
    cairn_arena_block_t *block = arena->head;
    if (!block)
        return;
    block->used_bytes = 0;
    for (cairn_arena_block_t *older = block->next; older;) {
        cairn_arena_block_t *next = older->next;
        free(older);
        older = next;
    }
    block->next = NULL;
}

void cairn_arena_fini(cairn_arena_t *arena)
{
    cairn_arena_reset(arena);
    free(arena->head);
    arena->head = NULL;
}
