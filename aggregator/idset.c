/* idset.c: see idset.h. Linear probing; items are never removed from the
 * table one by one (a delete sets seq 0), so probing needs no tombstones of
 * its own, and a rollback or a sort rebuilds the table. */
#include "idset.h"

#include "cairn_mem.h"

#include <stdlib.h>
#include <string.h>

static uint64_t s_hash(const uint8_t *key, size_t len)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a, then a 64-bit finalizer */
    for (size_t i = 0; i < len; i++) {
        h ^= key[i];
        h *= UINT64_C(0x100000001b3);
    }
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    return h;
}

void idset_init(idset_t *self)
{
    memset(self, 0, sizeof *self);
}

void idset_fini(idset_t *self)
{
    free(self->items);
    free(self->keys);
    free(self->table);
    idset_init(self);
}

static void s_table_insert(idset_t *self, size_t index)
{
    size_t mask = self->table_cap - 1;
    for (size_t at = self->items[index].hash & mask;; at = (at + 1) & mask)
        if (self->table[at] == 0) {
            self->table[at] = (uint32_t)(index + 1);
            return;
        }
}

/* Makes the table anew for the first count items, with room for cap. */
static void s_rebuild(idset_t *self, size_t cap)
{
    size_t table_cap = 1024;
    while (table_cap < 2 * cap)
        table_cap *= 2;
    if (table_cap != self->table_cap) {
        free(self->table);
        self->table = cairn_malloc(table_cap * sizeof *self->table);
        self->table_cap = table_cap;
    }
    memset(self->table, 0, table_cap * sizeof *self->table);
    for (size_t i = 0; i < self->count; i++)
        s_table_insert(self, i);
}

idset_item_t *idset_find(const idset_t *self, const uint8_t *key, size_t len)
{
    if (self->count == 0)
        return NULL;
    uint64_t hash = s_hash(key, len);
    size_t mask = self->table_cap - 1;
    for (size_t at = hash & mask; self->table[at]; at = (at + 1) & mask) {
        idset_item_t *item = &self->items[self->table[at] - 1];
        if (item->hash == hash && item->seq && item->key_len == len &&
            memcmp(self->keys + item->key_at, key, len) == 0)
            return item;
    }
    return NULL;
}

void idset_add(idset_t *self, const uint8_t *key, size_t len, uint64_t seq)
{
    if (self->count == self->cap) {
        self->cap = self->cap ? 2 * self->cap : 1024;
        self->items = cairn_realloc(self->items, self->cap * sizeof *self->items);
    }
    if (self->keys_len + len > self->keys_cap) {
        while (self->keys_len + len > self->keys_cap)
            self->keys_cap = self->keys_cap ? 2 * self->keys_cap : 64 << 10;
        self->keys = cairn_realloc(self->keys, self->keys_cap);
    }
    memcpy(self->keys + self->keys_len, key, len);
    self->items[self->count] = (idset_item_t){
        .hash = s_hash(key, len), .seq = seq, .key_at = (uint32_t)self->keys_len,
        .key_len = (uint32_t)len};
    self->keys_len += len;
    self->count++;
    if (seq > self->max_seq)
        self->max_seq = seq;
    if (2 * self->count > self->table_cap)
        s_rebuild(self, 2 * self->count);
    else
        s_table_insert(self, self->count - 1);
}

void idset_truncate(idset_t *self, size_t count)
{
    if (count >= self->count)
        return;
    self->count = count;
    self->keys_len = count ? self->items[count - 1].key_at + self->items[count - 1].key_len : 0;
    self->max_seq = 0;
    for (size_t i = 0; i < count; i++)
        if (self->items[i].seq > self->max_seq)
            self->max_seq = self->items[i].seq;
    s_rebuild(self, count);
}

static int s_compare(const void *a, const void *b, void *keys)
{
    const idset_item_t *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp((const uint8_t *)keys + x->key_at, (const uint8_t *)keys + y->key_at, n);
    return c ? c : x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

void idset_sort(idset_t *self)
{
    qsort_r(self->items, self->count, sizeof *self->items, s_compare, self->keys);
    s_rebuild(self, self->count);
}
