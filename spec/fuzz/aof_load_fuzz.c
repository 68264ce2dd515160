/*
 * libFuzzer target for the AOF loader: any bytes, as a file's contents, are
 * checked and replayed into a table. Besides the sanitizers' own checks, it
 * traps when the loader's result contradicts itself. Run by `make fuzz`.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hdb_aof.h"
#include "hdb_table.h"

typedef struct fuzz_state {
    hdb_table table;
    uint64_t calls;
    uint64_t sets; /* what the loader announced */
} fuzz_state;

static size_t fuzz_apply(void *ud, const aof_record *r, size_t n)
{
    fuzz_state *st = ud;
    if (n == 0 || n > AOF_REPLAY_GROUP)
        __builtin_trap();
    for (size_t i = 0; i < n; i++) {
        if (r[i].kind == AOF_FLUSHALL) {
            table_free(&st->table);
        } else if (r[i].kind == AOF_DEL) {
            table_remove(&st->table, r[i].key, r[i].key_len);
        } else {
            uint32_t h;
            hdb_entry *old = table_lookup(&st->table, r[i].key, r[i].key_len, &h);
            const char *val = r[i].val;
            size_t val_len = r[i].val_len;
            int64_t ms = r[i].expire_ms; /* SET's PXAT, PEXPIREAT's time, PERSIST's 0 */
            if (r[i].kind != AOF_SET) {
                if (old == NULL)
                    goto next;
                val = entry_val(old);
                val_len = old->val_len;
            }
            hdb_entry *e = table_entry_new(&st->table, old, h, r[i].key, r[i].key_len, val, val_len,
                                           ms);
            if (e == NULL)
                return i;
            table_commit(&st->table, e, old);
        }
    next:
        st->calls++;
    }
    return n;
}

/* The expiry heap holds exactly the entries that have an expiry, each
 * where its trailer says, none expiring before its parent. */
static void check_expiry_heap(const hdb_table *t)
{
    uint64_t with_ttl = 0;
    uint32_t cursor = 0;
    hdb_entry *e;
    while ((e = table_next(t, &cursor)) != NULL)
        with_ttl += (e->slot & ENTRY_HAS_TTL) != 0;
    if (with_ttl != t->ttl_count)
        __builtin_trap();
    for (uint32_t i = 0; i < t->ttl_count; i++) {
        const hdb_entry *h = t->ttl_heap[i].entry;
        uint32_t pos;
        memcpy(&pos, h->data + h->key_len + h->val_len + 8, sizeof pos);
        if (!(h->slot & ENTRY_HAS_TTL) || pos != i || t->ttl_heap[i].expire_ms != entry_expiry(h) ||
            (i > 0 && t->ttl_heap[(i - 1) / 2].expire_ms > t->ttl_heap[i].expire_ms))
            __builtin_trap();
    }
}

static void fuzz_reserve(void *ud, uint64_t set_records)
{
    fuzz_state *st = ud;
    st->sets = set_records;
    table_reserve(&st->table, set_records);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy, so that any read past the end is caught by ASan. */
    char *copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    if (size)
        memcpy(copy, data, size);
    fuzz_state st;
    uint64_t seed[2] = {0x1234, 0x5678};
    table_init(&st.table, seed);
    st.calls = 0;
    st.sets = UINT64_MAX;
    aof_replay replay = {&st, fuzz_apply, fuzz_reserve, NULL, 0};
    aof_load_result res;
    hdb_err err;
    int rc = aof_load(copy, size, &replay, &res, &err);
    char codec[AOF_CODEC_NAME_MAX + 1] = "";
    if (rc == AOF_LOAD_CODEC) {
        /* A file of another codec is refused before anything is replayed;
         * loaded with that codec, it goes through every check below. */
        if (err.code != HDB_CODE_CODEC || res.codec[0] == '\0' || st.calls != 0)
            __builtin_trap();
        memcpy(codec, res.codec, sizeof codec);
        replay.codec = codec;
        st.sets = UINT64_MAX;
        rc = aof_load(copy, size, &replay, &res, &err);
        if (rc == AOF_LOAD_CODEC || strcmp(res.codec, codec) != 0)
            __builtin_trap();
    }
    table_fit(&st.table);

    if (res.records != st.calls)
        __builtin_trap();
    /* The announced SETs are those replayed (no callback fails here), and
     * an upper bound of the keys. */
    if (rc != AOF_LOAD_NOMEM && res.version != 0 &&
        (st.sets != res.set_records || st.table.count > st.sets || res.records < st.sets))
        __builtin_trap();
    if (res.good_len > size)
        __builtin_trap();
    if (rc == AOF_LOAD_OK && size > 0 && res.good_len + res.tail_bytes != size)
        __builtin_trap();
    if (rc == AOF_LOAD_OK && (res.tail == AOF_TAIL_NONE) != (res.tail_bytes == 0))
        __builtin_trap();
    if (rc == AOF_LOAD_DAMAGED && (res.damage_at != res.good_len || res.damage_at >= size))
        __builtin_trap();
    if (rc != AOF_LOAD_OK && memchr(err.msg, '\0', sizeof err.msg) == NULL)
        __builtin_trap();
    /* Every refusal says what kind it is: no memory, or a file to repair. */
    if (rc != AOF_LOAD_OK &&
        err.code != (rc == AOF_LOAD_NOMEM ? HDB_CODE_NO_MEMORY : HDB_CODE_DAMAGED))
        __builtin_trap();
    /* Loading the good prefix alone must replay the same records, cleanly. */
    if (rc == AOF_LOAD_OK || rc == AOF_LOAD_DAMAGED) {
        fuzz_state again;
        table_init(&again.table, seed);
        again.calls = 0;
        aof_replay replay2 = {&again, fuzz_apply, fuzz_reserve, codec, 0};
        aof_load_result res2;
        int rc2 = aof_load(copy, res.good_len, &replay2, &res2, &err);
        if (rc2 != AOF_LOAD_OK || res2.records != res.records || again.table.count != st.table.count)
            __builtin_trap();
        table_free(&again.table);
    }
    check_expiry_heap(&st.table);
    table_free(&st.table);
    free(copy);
    return 0;
}
