/* cairn_arena.h: a bump allocator for protobuf-c's unpacking.
 *
 * Unpacking a message with protobuf-c's default allocator costs a malloc and
 * a free per string and sub-message; a store read or a receiver turn unpacks
 * thousands. An arena hands out memory from large blocks and forgets it all
 * at cairn_arena_reset: give &arena.allocator to *_unpack and never call
 * *_free_unpacked on what it returned. What does not fit goes to a new,
 * larger block; a reset keeps only the largest, so after warm-up an arena
 * allocates nothing. One thread at a time. */
#ifndef CAIRN_ARENA_H
#define CAIRN_ARENA_H

#include <protobuf-c/protobuf-c.h>

typedef struct cairn_arena_block cairn_arena_block_t;

typedef struct {
    cairn_arena_block_t *head;     /* the current (largest) block */
    ProtobufCAllocator allocator;  /* hand this to protobuf-c */
} cairn_arena_t;

void cairn_arena_init(cairn_arena_t *arena);

/* Forgets everything allocated; keeps the largest block for reuse. */
void cairn_arena_reset(cairn_arena_t *arena);

/* Frees every block. The arena may be initialized again. */
void cairn_arena_fini(cairn_arena_t *arena);

#endif
