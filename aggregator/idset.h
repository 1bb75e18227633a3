/* idset.h: an in-memory set of store keys (bytes) with their seqs.
 *
 * The store's recent eventIDs (see "DEDUP" in store.c): keys are appended,
 * found by a hash table, tombstoned, rolled back to an earlier count, and
 * sorted for a merge into the ids database in key order. Not thread-safe:
 * the store guards it. */
#ifndef CAIRN_IDSET_H
#define CAIRN_IDSET_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t hash;
    uint64_t seq; /* 0: deleted */
    uint32_t key_at; /* in the set's key bytes (a set holds far less than 4 GB) */
    uint32_t key_len;
} idset_item_t;

typedef struct {
    idset_item_t *items; /* in order of idset_add until idset_sort */
    size_t count, cap;
    uint8_t *keys; /* the items' key bytes, back to back */
    size_t keys_len, keys_cap;
    uint32_t *table; /* open addressing: item index + 1, 0 empty; a power of 2 */
    size_t table_cap;
    uint64_t max_seq; /* highest seq ever added */
} idset_t;

/* An empty set; idset_fini frees one. Both leave it empty and usable. */
void idset_init(idset_t *self);
void idset_fini(idset_t *self);

/* The item of key whose seq is not 0, or NULL. */
idset_item_t *idset_find(const idset_t *self, const uint8_t *key, size_t len);

/* Adds key with seq (not 0); a key may be added again once its item is
 * deleted (seq 0). */
void idset_add(idset_t *self, const uint8_t *key, size_t len, uint64_t seq);

/* Forgets the items added after the first count (an aborted transaction). */
void idset_truncate(idset_t *self, size_t count);

/* Sorts the items by key in LMDB's default order (memcmp, then shorter
 * first), so that a merge writes the ids database in one forward pass. */
void idset_sort(idset_t *self);

static inline const uint8_t *idset_key(const idset_t *self, const idset_item_t *item)
{
    return self->keys + item->key_at;
}

#endif
