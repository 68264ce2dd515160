#include "hdb_table.h"
#include "hdb_siphash.h"

#include <stdlib.h>
#include <string.h>

#define TABLE_MIN_BUCKETS 16
/* The most buckets table_reserve asks for: 2^27, 1 GiB of address space. */
#define TABLE_RESERVE_MAX (UINT64_C(1) << 27)
#define SLOTS_PER_CHUNK 4096

/* A hint to the processor that *p (p may be NULL) will be read soon. */
static inline void prefetch(const void *p)
{
#if defined(__GNUC__)
    if (p != NULL)
        __builtin_prefetch(p);
#else
    (void)p;
#endif
}

static inline int table_is_rehashing(const hdb_table *t)
{
    return t->idx[1].buckets != NULL;
}

static inline int slot_is_free(uintptr_t v) { return (v & 1) != 0; }

static inline uintptr_t *slot_at(const hdb_table *t, uint32_t i)
{
    return &t->slot_chunks[i / SLOTS_PER_CHUNK][i % SLOTS_PER_CHUNK];
}

void table_init(hdb_table *t, const uint64_t seed[2])
{
    memset(t, 0, sizeof *t);
    t->seed[0] = seed[0];
    t->seed[1] = seed[1];
}

/* ---- the expiry heap ---- */

static inline uint32_t heap_pos(const hdb_entry *e)
{
    uint32_t i;
    memcpy(&i, e->data + e->key_len + e->val_len + 8, sizeof i);
    return i;
}

static inline void heap_put(hdb_table *t, uint32_t i, struct ttl_node node)
{
    t->ttl_heap[i] = node;
    hdb_entry *e = node.entry;
    memcpy(e->data + e->key_len + e->val_len + 8, &i, sizeof i);
}

static void heap_up(hdb_table *t, uint32_t i)
{
    struct ttl_node node = t->ttl_heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (t->ttl_heap[parent].expire_ms <= node.expire_ms)
            break;
        heap_put(t, i, t->ttl_heap[parent]);
        i = parent;
    }
    heap_put(t, i, node);
}

static void heap_down(hdb_table *t, uint32_t i)
{
    struct ttl_node node = t->ttl_heap[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= t->ttl_count)
            break;
        if (child + 1 < t->ttl_count &&
            t->ttl_heap[child + 1].expire_ms < t->ttl_heap[child].expire_ms)
            child++;
        if (t->ttl_heap[child].expire_ms >= node.expire_ms)
            break;
        heap_put(t, i, t->ttl_heap[child]);
        i = child;
    }
    heap_put(t, i, node);
}

/* Makes room for one more entry in the heap, so that commit cannot fail. */
static int heap_reserve_one(hdb_table *t)
{
    if (t->ttl_count < t->ttl_cap)
        return 0;
    uint32_t cap = t->ttl_cap ? t->ttl_cap * 2 : 64;
    if (cap <= t->ttl_cap) /* cannot pass 2^31 entries: slots are fewer */
        return -1;
    struct ttl_node *h = realloc(t->ttl_heap, (size_t)cap * sizeof *h);
    if (h == NULL)
        return -1;
    t->bytes += (size_t)(cap - t->ttl_cap) * sizeof *h;
    t->ttl_heap = h;
    t->ttl_cap = cap;
    return 0;
}

/* Puts node i where it belongs after its expiry changed (or it moved). */
static void heap_fix(hdb_table *t, uint32_t i)
{
    if (i > 0 && t->ttl_heap[i].expire_ms < t->ttl_heap[(i - 1) / 2].expire_ms)
        heap_up(t, i);
    else
        heap_down(t, i);
}

static void heap_insert(hdb_table *t, hdb_entry *e)
{
    uint32_t i = t->ttl_count++;
    t->ttl_heap[i] = (struct ttl_node){entry_expiry(e), e};
    heap_up(t, i);
}

static void heap_remove(hdb_table *t, hdb_entry *e)
{
    uint32_t i = heap_pos(e), last = --t->ttl_count;
    if (i == last)
        return;
    heap_put(t, i, t->ttl_heap[last]);
    heap_fix(t, i);
}

/* `e` takes the place in the heap of `old` (both have an expiry). */
static void heap_replace(hdb_table *t, hdb_entry *old, hdb_entry *e)
{
    uint32_t i = heap_pos(old);
    heap_put(t, i, (struct ttl_node){entry_expiry(e), e});
    heap_fix(t, i);
}

void table_set_expiry(hdb_table *t, hdb_entry *e, int64_t expire_ms)
{
    memcpy(e->data + e->key_len + e->val_len, &expire_ms, sizeof expire_ms);
    heap_replace(t, e, e);
    t->changes++;
}

void table_free(hdb_table *t)
{
    for (uint32_t i = 0; i < t->slot_high; i++) {
        uintptr_t v = *slot_at(t, i);
        if (!slot_is_free(v))
            free((hdb_entry *)v);
    }
    for (size_t c = 0; c < t->slot_nchunks; c++)
        free(t->slot_chunks[c]);
    free(t->slot_chunks);
    free(t->idx[0].buckets);
    free(t->idx[1].buckets);
    free(t->ttl_heap);
    uint64_t seed[2] = {t->seed[0], t->seed[1]};
    int lru = t->lru;
    uint64_t changes = t->changes + 1;
    size_t bytes_limit = t->bytes_limit;
    table_init(t, seed);
    t->lru = lru; /* an emptied table keeps its kind of entry, and its bound */
    t->bytes_limit = bytes_limit;
    t->changes = changes;
}

/* Starts moving to a bucket array of `size` buckets (a power of two). A failed
 * allocation is not an error: the table keeps working with longer chains and
 * tries again on a later insert or delete. */
static void table_start_rehash(hdb_table *t, size_t size)
{
    hdb_entry **b = calloc(size, sizeof *b);
    if (b == NULL)
        return;
    t->bytes += size * sizeof *b;
    if (t->idx[0].buckets == NULL) {
        t->idx[0].buckets = b;
        t->idx[0].mask = size - 1;
        t->idx[0].used = 0;
        return;
    }
    t->idx[1].buckets = b;
    t->idx[1].mask = size - 1;
    t->idx[1].used = 0;
    t->rehash_pos = 0;
}

static void table_rehash_step(hdb_table *t)
{
    table_index *from = &t->idx[0], *to = &t->idx[1];
    int moved = 0;
    size_t empty = 0;
    /* An array left mostly empty (most keys deleted at once: a shrink)
     * would take thousands of calls to cross at a fixed number of empty
     * buckets per call, all the while beside the new one. Each call then
     * crosses as many as lie, on average, before each entry left: the
     * whole walk costs what the deletions that emptied it already paid. */
    size_t empty_max = REHASH_EMPTY_VISITS;
    size_t ahead_buckets = from->mask + 1 - t->rehash_pos;
    if (ahead_buckets / (from->used + 1) * REHASH_BUCKETS_PER_OP > empty_max)
        empty_max = ahead_buckets / (from->used + 1) * REHASH_BUCKETS_PER_OP;

    while (moved < REHASH_BUCKETS_PER_OP && t->rehash_pos <= from->mask) {
        hdb_entry *e = from->buckets[t->rehash_pos];
        if (e == NULL) {
            t->rehash_pos++;
            if (++empty >= empty_max)
                break;
            continue;
        }
        while (e != NULL) {
            hdb_entry *next = e->next;
            size_t b = e->hash & to->mask;
            e->next = to->buckets[b];
            to->buckets[b] = e;
            from->used--;
            to->used++;
            e = next;
        }
        from->buckets[t->rehash_pos++] = NULL;
        moved++;
    }
    if (t->rehash_pos <= from->mask) {
        /* The entries the next step moves are in no cache yet (each is a
         * miss when its `next` is read): ask for them now, so that they
         * arrive while the caller goes on. */
        size_t ahead = from->mask - t->rehash_pos + 1;
        if (ahead > REHASH_BUCKETS_PER_OP * 2)
            ahead = REHASH_BUCKETS_PER_OP * 2;
        for (size_t i = 0; i < ahead; i++)
            prefetch(from->buckets[t->rehash_pos + i]);
        return;
    }
    /* Every bucket has moved: idx[1] becomes the table's only array. */
    t->bytes -= (from->mask + 1) * sizeof *from->buckets;
    free(from->buckets);
    *from = *to;
    to->buckets = NULL;
    to->mask = 0;
    to->used = 0;
    t->rehash_pos = 0;
}

/* The smallest power of two, at least TABLE_MIN_BUCKETS, not below n; 0 if
 * it would not fit a size_t of bucket pointers. */
static size_t buckets_for(uint64_t n)
{
    size_t size = TABLE_MIN_BUCKETS;
    while (size < n) {
        if (size > SIZE_MAX / 2 / sizeof(hdb_entry *))
            return 0;
        size *= 2;
    }
    return size;
}

/* Moves every entry into a new bucket array of `size` buckets at once, found
 * through the slot array: the work is in proportion to the entries, not to
 * the old buckets, which are never read (a bucket array reserved for many
 * more keys than the file left is mostly pages never touched, and reading
 * them would make the kernel back them). On a failed allocation the table
 * stays as it is. */
static void table_rebuild(hdb_table *t, size_t size)
{
    hdb_entry **b = calloc(size, sizeof *b);
    if (b == NULL)
        return;
    uint32_t cursor = 0;
    for (hdb_entry *e; (e = table_next(t, &cursor)) != NULL;) {
        e->next = b[e->hash & (size - 1)];
        b[e->hash & (size - 1)] = e;
    }
    for (int i = 0; i < 2; i++) {
        table_index *ix = &t->idx[i];
        if (ix->buckets != NULL)
            t->bytes -= (ix->mask + 1) * sizeof *ix->buckets;
        free(ix->buckets);
        ix->buckets = NULL;
        ix->mask = 0;
        ix->used = 0;
    }
    t->idx[0].buckets = b;
    t->idx[0].mask = size - 1;
    t->idx[0].used = t->count;
    t->rehash_pos = 0;
    t->bytes += size * sizeof *b;
}

void table_reserve(hdb_table *t, uint64_t n)
{
    /* A file of many SETs may hold few keys: the reservation is capped, so
     * that its array (untouched but for the buckets the keys use) stays a
     * reservation of address space a 64-bit process can afford. Past the
     * cap the table grows as usual. */
    if (n > TABLE_RESERVE_MAX)
        n = TABLE_RESERVE_MAX;
    size_t size = buckets_for(n);
    if (t->count == 0 && size > 0 && size > t->idx[0].mask + 1)
        table_rebuild(t, size);
    t->reserved = 1;
}

void table_fit(hdb_table *t)
{
    t->reserved = 0;
    size_t want = buckets_for(t->count);
    if (!table_is_rehashing(t) && t->idx[0].buckets != NULL && t->idx[0].mask + 1 > want)
        table_rebuild(t, want);
}

/* SipHash-1-3 of the key under the store's seed, folded to the 32 bits an
 * entry keeps. */
uint32_t table_hash_key(const hdb_table *t, const char *key, size_t len)
{
    uint64_t h = siphash13(t->seed, key, len);
    return (uint32_t)(h ^ (h >> 32));
}

/* The one bucket array that holds (or would hold) a key of hash h. While
 * a rehash runs, the buckets of idx[0] before rehash_pos have been moved to
 * idx[1]; a key whose idx[0] bucket has not been moved yet is in idx[0],
 * new keys included (table_commit follows the same rule). So every lookup,
 * of a present key or an absent one, walks exactly one chain. */
static inline table_index *table_index_for(hdb_table *t, uint32_t h)
{
    if (table_is_rehashing(t) && (h & t->idx[0].mask) < t->rehash_pos)
        return &t->idx[1];
    return &t->idx[0];
}

void table_prefetch(const hdb_table *t, uint32_t hash, int depth)
{
    const table_index *ix = table_index_for((hdb_table *)t, hash);
    if (ix->buckets == NULL)
        return;
    hdb_entry *const *bucket = &ix->buckets[hash & ix->mask];
    prefetch(depth == 0 ? (const void *)bucket : (const void *)*bucket);
}

/* Returns the link that points at the entry for key (so that the caller can
 * unlink or replace it), or NULL. */
static hdb_entry **table_find_link(hdb_table *t, uint32_t h, const char *key,
                                   size_t len, table_index **in)
{
    table_index *ix = table_index_for(t, h);
    if (ix->buckets == NULL)
        return NULL;
    hdb_entry **link = &ix->buckets[h & ix->mask];
    for (hdb_entry *e = *link; e != NULL; link = &e->next, e = e->next) {
        if (e->hash == h && e->key_len == len && memcmp(e->data, key, len) == 0) {
            if (in)
                *in = ix;
            return link;
        }
    }
    return NULL;
}

hdb_entry *table_lookup(hdb_table *t, const char *key, size_t key_len, uint32_t *hash)
{
    *hash = table_hash_key(t, key, key_len);
    return table_lookup_hashed(t, key, key_len, *hash);
}

hdb_entry *table_lookup_hashed(hdb_table *t, const char *key, size_t key_len, uint32_t h)
{
    if (t->count == 0)
        return NULL;
    if (table_is_rehashing(t))
        table_rehash_step(t);
    hdb_entry **link = table_find_link(t, h, key, key_len, NULL);
    return link ? *link : NULL;
}

/* Makes sure a new slot can be taken without allocating, so that commit
 * cannot fail. */
static int slots_reserve_one(hdb_table *t)
{
    if (t->slot_free != 0)
        return 0;
    if (t->slot_high == ENTRY_SLOT_MASK)
        return -1;
    size_t chunk = t->slot_high / SLOTS_PER_CHUNK;
    if (chunk < t->slot_nchunks)
        return 0;
    uintptr_t **dir = realloc(t->slot_chunks, (chunk + 1) * sizeof *dir);
    if (dir == NULL)
        return -1;
    t->slot_chunks = dir;
    dir[chunk] = malloc(SLOTS_PER_CHUNK * sizeof **dir);
    if (dir[chunk] == NULL)
        return -1;
    t->slot_nchunks = chunk + 1;
    t->bytes += SLOTS_PER_CHUNK * sizeof **dir + sizeof *dir;
    return 0;
}

static uint32_t slots_take(hdb_table *t)
{
    if (t->slot_free != 0) {
        uint32_t i = t->slot_free - 1;
        t->slot_free = (uint32_t)(*slot_at(t, i) >> 1);
        return i;
    }
    return t->slot_high++;
}

static void slots_release(hdb_table *t, uint32_t i)
{
    *slot_at(t, i) = ((uintptr_t)t->slot_free << 1) | 1;
    t->slot_free = i + 1;
}

/* The stamp of last use (with t->lru) follows the expiry's trailer. */
#define ENTRY_LRU_TRAILER 4

size_t table_entry_size(const hdb_table *t, size_t key_len, size_t val_len, int has_ttl)
{
    return sizeof(hdb_entry) + key_len + val_len + (has_ttl ? ENTRY_TTL_TRAILER : 0) +
           (t->lru ? ENTRY_LRU_TRAILER : 0);
}

static size_t entry_size(const hdb_table *t, const hdb_entry *e)
{
    return table_entry_size(t, e->key_len, e->val_len, (e->slot & ENTRY_HAS_TTL) != 0);
}

/* Counts the entry in (sign 1) or out of (sign -1) the table's memory. */
static void table_account(hdb_table *t, const hdb_entry *e, int sign)
{
    size_t n = entry_size(t, e);
    if (sign > 0) {
        t->bytes += n;
        t->entry_bytes += n;
        if (e->slot & ENTRY_HAS_TTL)
            t->ttl_entry_bytes += n;
    } else {
        t->bytes -= n;
        t->entry_bytes -= n;
        if (e->slot & ENTRY_HAS_TTL)
            t->ttl_entry_bytes -= n;
    }
}

size_t table_insert_growth(const hdb_table *t, int new_key, int heap_add)
{
    size_t n = 0;
    if (heap_add && t->ttl_count == t->ttl_cap)
        n += (size_t)(t->ttl_cap ? t->ttl_cap : 64) * sizeof(struct ttl_node);
    if (!new_key)
        return n;
    if (t->slot_free == 0 && t->slot_high / SLOTS_PER_CHUNK >= t->slot_nchunks)
        n += SLOTS_PER_CHUNK * sizeof(uintptr_t) + sizeof(uintptr_t *);
    if (t->idx[0].buckets == NULL)
        n += TABLE_MIN_BUCKETS * sizeof(hdb_entry *);
    else if (!table_is_rehashing(t) && t->count + 1 > t->idx[0].mask + 1)
        n += (t->idx[0].mask + 1) * 2 * sizeof(hdb_entry *);
    return n;
}

static uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9e3779b97f4a7c15u;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

static const unsigned char *entry_stamp_at(const hdb_entry *e)
{
    return e->data + e->key_len + e->val_len + ((e->slot & ENTRY_HAS_TTL) ? ENTRY_TTL_TRAILER : 0);
}

static uint32_t entry_stamp(const hdb_entry *e)
{
    uint32_t stamp;
    memcpy(&stamp, entry_stamp_at(e), sizeof stamp);
    return stamp;
}

/* Samples table_sample_lru reads with prefetches. */
#define LRU_SAMPLES_PREFETCHED 8

/* Buckets the fallback walk of table_sample_lru visits, at most, once it
 * has a candidate. */
#define SAMPLE_WALK_MAX 1024u

/* The older (by stamp) of *best and e, e only if it is not `keep`. */
static void lru_consider(const hdb_table *t, hdb_entry *e, const hdb_entry *keep,
                         hdb_entry **best, uint32_t *best_age, int *found)
{
    if (e == keep)
        return;
    uint32_t age = t->lru_clock - entry_stamp(e);
    if (*best == NULL || age > *best_age) {
        *best = e;
        *best_age = age;
    }
    (*found)++;
}

hdb_entry *table_sample_lru(hdb_table *t, int samples, const hdb_entry *keep, uint64_t *rng)
{
    if (t->count <= (keep != NULL ? 1u : 0u))
        return NULL;
    hdb_entry *best = NULL;
    uint32_t best_age = 0;
    int found = 0;
    /* Random slots, a uniform sample of the keys. The first are read in
     * steps, each prefetching what the next reads (the slots, the entries'
     * headers, their stamps, which follow a value and may lie lines away):
     * in a table larger than the caches the misses then overlap instead of
     * coming one after another. */
    hdb_entry *picked[LRU_SAMPLES_PREFETCHED];
    uint32_t at[LRU_SAMPLES_PREFETCHED];
    int first = samples < LRU_SAMPLES_PREFETCHED ? samples : LRU_SAMPLES_PREFETCHED;
    for (int i = 0; i < first; i++) {
        at[i] = (uint32_t)(xorshift64(rng) % t->slot_high);
        prefetch(slot_at(t, at[i]));
    }
    int n = 0;
    for (int i = 0; i < first; i++) {
        uintptr_t v = *slot_at(t, at[i]);
        if (!slot_is_free(v)) {
            picked[n] = (hdb_entry *)v;
            prefetch(picked[n++]);
        }
    }
    for (int i = 0; i < n; i++)
        prefetch(entry_stamp_at(picked[i]));
    for (int i = 0; i < n; i++)
        lru_consider(t, picked[i], keep, &best, &best_age, &found);
    for (int tries = first; found < samples && tries < samples * 4; tries++) {
        uintptr_t v = *slot_at(t, (uint32_t)(xorshift64(rng) % t->slot_high));
        if (!slot_is_free(v))
            lru_consider(t, (hdb_entry *)v, keep, &best, &best_age, &found);
    }
    if (found >= samples)
        return best;
    /* Most slots are free (after many deletions): the rest of the sample
     * is the entries of the buckets from a random one, in each array (both
     * during a rehash), the walk going on past the first entry so that a
     * table of few keys gives all of them and no key is the whole sample
     * for lying after the longest empty run. Bounded once it has a
     * candidate (a walk long enough to meet `samples` entries on average,
     * however sparse); without one it goes on (wrapping) until it finds
     * one, which exists: the table holds a key other than `keep`. A store
     * that deleted most of its keys shrinks its index (store_make_room
     * leaves room for that), so the walks stay short. */
    for (int k = 0; k < 2 && found < samples; k++) {
        table_index *ix = &t->idx[k];
        if (ix->buckets == NULL || ix->used == 0)
            continue;
        size_t size = ix->mask + 1;
        size_t walk_max = (size_t)samples * 4 * (size / ix->used);
        if (walk_max < SAMPLE_WALK_MAX)
            walk_max = SAMPLE_WALK_MAX;
        size_t b = (size_t)(xorshift64(rng) % size);
        for (size_t seen = 0; found < samples && seen < size && !(best != NULL && seen >= walk_max);
             seen++) {
            for (hdb_entry *e = ix->buckets[b]; e != NULL && found < samples; e = e->next)
                lru_consider(t, e, keep, &best, &best_age, &found);
            b = (b + 1) & ix->mask;
        }
    }
    return best;
}

/* The bucket count the index should shrink to, or 0 if no shrink is due
 * (count under an eighth of the buckets). */
static size_t table_shrink_target(const hdb_table *t)
{
    size_t size = t->idx[0].mask + 1;
    if (t->idx[0].buckets == NULL || size <= TABLE_MIN_BUCKETS || t->count >= size / 8)
        return 0;
    size_t want = TABLE_MIN_BUCKETS;
    while (want < t->count * 2)
        want *= 2;
    return want;
}

size_t table_shrink_room(const hdb_table *t)
{
    return table_is_rehashing(t) ? 0 : table_shrink_target(t) * sizeof(hdb_entry *);
}

hdb_entry *table_entry_new(hdb_table *t, const hdb_entry *replaces, uint32_t hash,
                           const char *key, size_t key_len, const char *val, size_t val_len,
                           int64_t expire_ms)
{
    if (key_len > HDB_MAX_ITEM_LEN || val_len > HDB_MAX_ITEM_LEN)
        return NULL;
    /* A replacement takes the slot, and the heap node, of the entry it
     * replaces: nothing grows for it (table_insert_growth counts the same). */
    if (replaces == NULL && slots_reserve_one(t) != 0)
        return NULL;
    if (expire_ms > 0 && !(replaces != NULL && (replaces->slot & ENTRY_HAS_TTL)) &&
        heap_reserve_one(t) != 0)
        return NULL;
    if (t->idx[0].buckets == NULL) {
        table_start_rehash(t, TABLE_MIN_BUCKETS);
        if (t->idx[0].buckets == NULL)
            return NULL;
    }
    hdb_entry *e = malloc(table_entry_size(t, key_len, val_len, expire_ms > 0));
    if (e == NULL)
        return NULL;
    e->next = NULL;
    e->hash = hash;
    e->slot = expire_ms > 0 ? ENTRY_HAS_TTL : 0;
    e->key_len = (uint32_t)key_len;
    e->val_len = (uint32_t)val_len;
    if (key_len)
        memcpy(e->data, key, key_len);
    if (val_len)
        memcpy(e->data + key_len, val, val_len);
    if (expire_ms > 0)
        memcpy(e->data + key_len + val_len, &expire_ms, sizeof expire_ms);
    table_touch(t, e);
    return e;
}

void table_entry_discard(hdb_table *t, hdb_entry *e)
{
    (void)t;
    free(e);
}

static void table_maybe_resize(hdb_table *t)
{
    if (table_is_rehashing(t))
        return;
    size_t size = t->idx[0].mask + 1, want = 0;
    if (t->count > size)
        want = size * 2;
    else if (!t->reserved)
        want = table_shrink_target(t);
    /* Both arrays live while the rehash runs: under a bound, a resize that
     * would pass it is not started (a shrink saves memory only once done;
     * the chains of a table that may not grow just get longer). */
    if (want != 0 && !(t->bytes_limit != 0 && t->bytes + want * sizeof(hdb_entry *) > t->bytes_limit))
        table_start_rehash(t, want);
}

/* Returns the link pointing at `e`, which is in the table. */
static hdb_entry **table_link_of(hdb_table *t, const hdb_entry *e, table_index **in)
{
    table_index *ix = table_index_for(t, e->hash);
    *in = ix;
    hdb_entry **link = &ix->buckets[e->hash & ix->mask];
    while (*link != e)
        link = &(*link)->next;
    return link;
}

void table_commit(hdb_table *t, hdb_entry *e, hdb_entry *old)
{
    table_index *ix;
    t->changes++;
    uint32_t ttl = e->slot & ENTRY_HAS_TTL;
    if (old != NULL) {
        hdb_entry **link = table_link_of(t, old, &ix);
        e->next = old->next;
        e->slot = (old->slot & ENTRY_SLOT_MASK) | ttl;
        *link = e;
        *slot_at(t, e->slot & ENTRY_SLOT_MASK) = (uintptr_t)e;
        if ((old->slot & ENTRY_HAS_TTL) && ttl)
            heap_replace(t, old, e);
        else if (old->slot & ENTRY_HAS_TTL)
            heap_remove(t, old);
        else if (ttl)
            heap_insert(t, e);
        table_account(t, old, -1);
        table_account(t, e, 1);
        free(old);
        return;
    }
    t->count++;
    e->slot = slots_take(t) | ttl;
    *slot_at(t, e->slot & ENTRY_SLOT_MASK) = (uintptr_t)e;
    if (ttl)
        heap_insert(t, e);
    table_account(t, e, 1);
    /* After the entry is counted: a resize under a bound sees all it holds. */
    table_maybe_resize(t);
    ix = table_index_for(t, e->hash);
    size_t b = e->hash & ix->mask;
    e->next = ix->buckets[b];
    ix->buckets[b] = e;
    ix->used++;
}

void table_update_value(hdb_table *t, hdb_entry *e, const char *val, size_t val_len)
{
    t->changes++;
    if (val_len)
        memcpy(e->data + e->key_len, val, val_len);
}

/* Takes the entry *link points at (in ix) out of the table and frees it. */
static void table_unlink(hdb_table *t, hdb_entry **link, table_index *ix)
{
    hdb_entry *e = *link;
    *link = e->next;
    ix->used--;
    t->changes++;
    slots_release(t, e->slot & ENTRY_SLOT_MASK);
    if (e->slot & ENTRY_HAS_TTL)
        heap_remove(t, e);
    table_account(t, e, -1);
    t->count--;
    free(e);
    table_maybe_resize(t);
}

int table_remove(hdb_table *t, const char *key, size_t key_len)
{
    if (t->count == 0)
        return 0;
    if (table_is_rehashing(t))
        table_rehash_step(t);
    table_index *ix;
    hdb_entry **link = table_find_link(t, table_hash_key(t, key, key_len), key,
                                       key_len, &ix);
    if (link == NULL)
        return 0;
    table_unlink(t, link, ix);
    return 1;
}

void table_remove_entry(hdb_table *t, hdb_entry *e)
{
    table_index *ix;
    hdb_entry **link = table_link_of(t, e, &ix);
    table_unlink(t, link, ix);
}

hdb_entry *table_next(const hdb_table *t, uint32_t *cursor)
{
    for (uint32_t i = *cursor; i < t->slot_high; i++) {
        uintptr_t v = *slot_at(t, i);
        if (!slot_is_free(v)) {
            *cursor = i + 1;
            return (hdb_entry *)v;
        }
    }
    *cursor = t->slot_high;
    return NULL;
}
