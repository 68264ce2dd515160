/*
 * hdb_table: the in-memory hash table of a store.
 *
 * Two structures share the entries:
 *  - an index of bucket chains (SipHash-1-3 with a per-store key), resized by
 *    incremental rehashing: while it grows or shrinks, two bucket arrays exist
 *    and every operation moves a bounded number of buckets, so no single call
 *    pays for the whole table;
 *  - a slot array giving each entry a fixed position for its whole life. The
 *    iteration cursor walks slots, not buckets, so rehashing never moves what
 *    an iterator is about to visit: a key present for a whole loop is seen
 *    exactly once, however much the index grows meanwhile. Freed slots are
 *    reused by later inserts.
 * The table is touched only by the thread that owns the store.
 */
#ifndef HDB_TABLE_H
#define HDB_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "hurrahdb.h" /* HDB_MAX_ITEM_LEN */

typedef struct hdb_entry {
    struct hdb_entry *next; /* bucket chain */
    uint32_t hash;          /* kept so that rehashing never rereads keys; 32 bits
                               index every bucket a table of 2^31 slots has,
                               and keep the header at 24 bytes */
    uint32_t slot;          /* the slot, and ENTRY_HAS_TTL */
    uint32_t key_len;
    uint32_t val_len;
    unsigned char data[];   /* key bytes, then value bytes, then (ENTRY_HAS_TTL)
                               the trailer: the expiry (int64, Unix ms) and the
                               entry's place in the expiry heap (uint32), unaligned */
} hdb_entry;

/* The top bit of `slot` says that the entry has an expiry: an entry without
 * one costs nothing more than before expiry existed. Slots are below 2^31. */
#define ENTRY_HAS_TTL 0x80000000u
#define ENTRY_SLOT_MASK 0x7fffffffu
#define ENTRY_TTL_TRAILER 12

static inline const char *entry_key(const hdb_entry *e) { return (const char *)e->data; }
static inline const char *entry_val(const hdb_entry *e) { return (const char *)e->data + e->key_len; }

/* The entry's expiry in Unix milliseconds, 0 if it has none. */
static inline int64_t entry_expiry(const hdb_entry *e)
{
    int64_t ms = 0;
    if (e->slot & ENTRY_HAS_TTL)
        memcpy(&ms, e->data + e->key_len + e->val_len, sizeof ms);
    return ms;
}

/* The clock of expiries: Unix time in ms. The wall clock, so that an
 * expiry written to a file means the same time after a restart, on
 * another machine, or to Redis. */
static inline int64_t expiry_clock_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether the entry has expired at `now_ms` (Unix ms). */
static inline int entry_expired(const hdb_entry *e, int64_t now_ms)
{
    return (e->slot & ENTRY_HAS_TTL) && entry_expiry(e) <= now_ms;
}

typedef struct table_index {
    hdb_entry **buckets;
    size_t mask; /* bucket count - 1; buckets == NULL when unused */
    size_t used;
} table_index;

typedef struct hdb_table {
    uint64_t seed[2];
    table_index idx[2];  /* idx[1] is in use only while rehashing */
    size_t rehash_pos;   /* next bucket of idx[0] to move */
    size_t count;
    uintptr_t **slot_chunks;
    size_t slot_nchunks;
    uint32_t slot_high;  /* slots handed out so far (live or free) */
    uint32_t slot_free;  /* 1 + index of the first free slot, 0 if none */
    size_t bytes;        /* memory held by the table, for stats */
    size_t bytes_limit;  /* 0, or a bound on `bytes` that no resize of the
                            index passes (the caller bounds the rest) */
    size_t entry_bytes;  /* of it, the entries' (what deleting them all frees) */
    size_t ttl_entry_bytes; /* of that, the entries that have an expiry */
    int reserved;        /* between table_reserve and table_fit: never shrink */
    /* The entries that have an expiry, in a binary min-heap by expiry: the
     * next to expire is at [0], found without a scan. Each node keeps the
     * expiry beside the entry, so that sifting compares without reading
     * the entries (a cache miss each, in a large table). */
    struct ttl_node {
        int64_t expire_ms;
        struct hdb_entry *entry;
    } *ttl_heap;
    uint32_t ttl_count, ttl_cap;
    /* Set before the first entry: every entry then ends with a 4-byte
     * stamp of its last use (a count of uses of the table, which wraps),
     * for eviction of the least recently used. */
    int lru;
    uint32_t lru_clock;
    /* Counts every change of an entry (written, removed, its expiry
     * changed), across table_free too: a caller that ran other code between
     * reading an entry and writing the key learns whether it changed. */
    uint64_t changes;
} hdb_table;

/* Per operation, a rehash moves at most this many non-empty buckets and
 * looks at no more than REHASH_EMPTY_VISITS empty ones: a small, fixed cost
 * per call whatever the table's size. */
#define REHASH_BUCKETS_PER_OP 2
#define REHASH_EMPTY_VISITS 20

/* Prepares an empty table. `seed` keys the hash; pass random bytes. */
void table_init(hdb_table *t, const uint64_t seed[2]);

/* Frees every entry and array. The table may be reinitialised afterwards. */
void table_free(hdb_table *t);

/* Sizes the bucket array of an empty table for n keys, so that inserting up
 * to n keys starts no rehash, and until table_fit removals start none either:
 * for the load of a file, whose number of SETs is known before its replay.
 * A failed allocation is not an error: the table grows as usual. */
void table_reserve(hdb_table *t, uint64_t n);

/* Ends a table_reserve: if the bucket array is larger than the one the
 * table's count would have grown to, it is rebuilt at that size at once (one
 * pass over the entries; the caller is loading, not serving calls). */
void table_fit(hdb_table *t);

/* Returns the entry holding `key`, or NULL, and the key's hash in *hash for a
 * following table_entry_new. Advances a pending rehash by a bounded step. */
hdb_entry *table_lookup(hdb_table *t, const char *key, size_t key_len, uint32_t *hash);

/* The same as table_lookup, for a hash from table_hash_key. */
hdb_entry *table_lookup_hashed(hdb_table *t, const char *key, size_t key_len, uint32_t hash);

/* The hash table_lookup computes for key. */
uint32_t table_hash_key(const hdb_table *t, const char *key, size_t key_len);

/* Hints the processor to fetch, for a key of this hash, its bucket (depth 0)
 * or the first entry of its chain (depth 1, which reads the bucket): a
 * caller about to look up many keys issues these for all of them first, so
 * that their cache misses overlap instead of following one another. */
void table_prefetch(const hdb_table *t, uint32_t hash, int depth);

/* Builds an entry for (key, value) without touching the table, so that the
 * caller can do fallible work (the AOF append) before anything changes.
 * `replaces` is the entry of the key it will replace, NULL for a new key;
 * `hash` comes from table_lookup; `expire_ms` is the expiry (Unix ms), or 0
 * for none. Returns NULL when memory is exhausted or a length passes
 * HDB_MAX_ITEM_LEN. It also makes sure that table_commit will not need to
 * allocate. */
hdb_entry *table_entry_new(hdb_table *t, const hdb_entry *replaces, uint32_t hash,
                           const char *key, size_t key_len, const char *val, size_t val_len,
                           int64_t expire_ms);

/* The memory an entry of these lengths takes, with or without an expiry. */
size_t table_entry_size(const hdb_table *t, size_t key_len, size_t val_len, int has_ttl);

/* The memory the table's structures would add, besides the entry, for a
 * new key (new_key) and for one more entry in the expiry heap (heap_add: an
 * entry with an expiry that replaces none with one):
 * they grow in steps (the bucket array doubles, the slots and the heap grow
 * by chunks). */
size_t table_insert_growth(const hdb_table *t, int new_key, int heap_add);

/* The memory the index would allocate for the shrink its keys call for (a
 * new, smaller bucket array, alive beside the old one until the keys are
 * moved), or 0 if none is due. */
size_t table_shrink_room(const hdb_table *t);

/* Marks the entry as just used (with t->lru). */
static inline void table_touch(hdb_table *t, hdb_entry *e)
{
    if (t->lru) {
        uint32_t stamp = ++t->lru_clock;
        size_t at = e->key_len + e->val_len + ((e->slot & ENTRY_HAS_TTL) ? ENTRY_TTL_TRAILER : 0);
        memcpy(e->data + at, &stamp, sizeof stamp);
    }
}

/* With t->lru: of about `samples` entries taken at random, other than
 * `keep` (which may be NULL), the least recently used (rng: the caller's
 * state for a xorshift generator). NULL only when the table holds no
 * other entry. */
hdb_entry *table_sample_lru(hdb_table *t, int samples, const hdb_entry *keep, uint64_t *rng);

/* Changes the expiry of an entry that has one (expire_ms > 0). */
void table_set_expiry(hdb_table *t, hdb_entry *e, int64_t expire_ms);

/* The entry that expires first, or NULL if none has an expiry. */
static inline hdb_entry *table_first_to_expire(const hdb_table *t)
{
    return t->ttl_count > 0 ? t->ttl_heap[0].entry : NULL;
}

/* The entry that expires second first (the lesser child of the heap's
 * top), or NULL. */
static inline hdb_entry *table_next_to_expire(const hdb_table *t)
{
    if (t->ttl_count < 2)
        return NULL;
    uint32_t i = t->ttl_count > 2 && t->ttl_heap[2].expire_ms < t->ttl_heap[1].expire_ms ? 2 : 1;
    return t->ttl_heap[i].entry;
}

/* Removes an entry that is in the table and frees it. */
void table_remove_entry(hdb_table *t, hdb_entry *e);

/* Frees an entry built by table_entry_new that was never committed. */
void table_entry_discard(hdb_table *t, hdb_entry *e);

/* Links a prepared entry in. `old` is what table_lookup returned for the
 * same key: if not NULL, the new entry takes its place and its slot (so an
 * iteration in progress sees the key where it was), and `old` is freed.
 * Cannot fail. Call it with no other table call since the lookup. */
void table_commit(hdb_table *t, hdb_entry *e, hdb_entry *old);

/* Overwrites the value of `e` with one of the same length, in place. */
void table_update_value(hdb_table *t, hdb_entry *e, const char *val, size_t val_len);

/* Removes `key`. Returns 1 if it was present, 0 if not. */
int table_remove(hdb_table *t, const char *key, size_t key_len);

/* Iteration: start with *cursor = 0; each call returns the next live entry at
 * or after the cursor and moves the cursor past it, or NULL at the end.
 * Safe across any table change between calls (see the header comment). */
hdb_entry *table_next(const hdb_table *t, uint32_t *cursor);

#endif
