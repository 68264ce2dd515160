/* MAP_POPULATE is Linux's (_DEFAULT_SOURCE); the rest is POSIX. */
#define _DEFAULT_SOURCE
#include "hdb_check.h"
#include "hdb_err.h"
#include "hdb_siphash.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The keys seen so far, in an open-addressing table (linear probing) that
 * points into the mapped file: enough to tell, at the end, which SET of
 * each key is the one an open keeps. A slot of an older generation is
 * empty: a FLUSHALL empties the table by starting a new one, in O(1), so
 * that a file of many FLUSHALLs is not checked in quadratic time. */
typedef struct check_slot {
    const char *key; /* NULL: empty */
    const char *val;
    uint64_t hash;
    uint32_t key_len;
    uint32_t gen;
    size_t val_len;
    int64_t expire_ms; /* 0: none */
} check_slot;

typedef struct check_keys {
    check_slot *slots;
    size_t mask;     /* capacity - 1; capacity a power of two */
    size_t count;    /* of the current generation */
    uint32_t gen;
    uint64_t seed[2];
    hdb_check_report *r;
    int failed;      /* out of memory */
} check_keys;

#define CHECK_MIN_SLOTS 1024

static int slot_used(const check_keys *k, const check_slot *s)
{
    return s->key != NULL && s->gen == k->gen;
}

/* The slot holding key, or the empty one where it would go. */
static check_slot *keys_find(check_keys *k, const char *key, size_t len, uint64_t h)
{
    size_t i = (size_t)h & k->mask;
    for (;;) {
        check_slot *s = &k->slots[i];
        if (!slot_used(k, s) ||
            (s->hash == h && s->key_len == len && memcmp(s->key, key, len) == 0))
            return s;
        i = (i + 1) & k->mask;
    }
}

/* Doubles the table (or makes the first); keeps the load under a half. */
static int keys_grow(check_keys *k)
{
    size_t cap = k->slots == NULL ? CHECK_MIN_SLOTS : (k->mask + 1) * 2;
    if (cap > SIZE_MAX / sizeof(check_slot))
        return -1;
    check_slot *old = k->slots;
    size_t old_cap = old == NULL ? 0 : k->mask + 1;
    check_slot *slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return -1;
    k->slots = slots;
    k->mask = cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        if (slot_used(k, &old[i]))
            *keys_find(k, old[i].key, old[i].key_len, old[i].hash) = old[i];
    }
    free(old);
    return 0;
}

/* Empties slot s, moving later slots of its run back so that every key
 * stays reachable from its home slot (no tombstones: a file of many
 * deletes does not slow the lookups down). */
static void keys_remove(check_keys *k, check_slot *s)
{
    size_t i = (size_t)(s - k->slots);
    size_t j = i;
    for (;;) {
        j = (j + 1) & k->mask;
        check_slot *next = &k->slots[j];
        if (!slot_used(k, next))
            break;
        size_t home = (size_t)next->hash & k->mask;
        /* next may move to i if its home is not in (i, j], cyclically. */
        int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            k->slots[i] = *next;
            i = j;
        }
    }
    k->slots[i].key = NULL;
    k->count--;
}

static size_t check_apply(void *ud, const aof_record *rec, size_t n)
{
    check_keys *k = ud;
    hdb_check_report *r = k->r;
    for (size_t i = 0; i < n; i++) {
        const aof_record *a = &rec[i];
        r->records++;
        switch (a->kind) {
        case AOF_SET: r->set_records++; break;
        case AOF_DEL: r->del_records++; break;
        case AOF_PEXPIREAT: r->expire_records++; break;
        case AOF_PERSIST: r->persist_records++; break;
        default: r->flushall_records++; break;
        }
        if (a->kind == AOF_FLUSHALL) {
            if (++k->gen == 0) {
                /* Wrapped after 2^32 FLUSHALLs: old slots must not look current. */
                memset(k->slots, 0, (k->mask + 1) * sizeof *k->slots);
                k->gen = 1;
            }
            k->count = 0;
            continue;
        }
        uint64_t h = siphash13(k->seed, a->key, a->key_len);
        check_slot *s = keys_find(k, a->key, a->key_len, h);
        int present = slot_used(k, s);
        if (a->kind == AOF_SET) {
            if (!present) {
                if ((k->count + 1) * 2 > k->mask + 1) {
                    if (keys_grow(k) != 0) {
                        k->failed = 1;
                        return i;
                    }
                    s = keys_find(k, a->key, a->key_len, h);
                }
                s->key = a->key;
                s->hash = h;
                s->key_len = (uint32_t)a->key_len;
                s->gen = k->gen;
                k->count++;
            }
            s->val = a->val;
            s->val_len = a->val_len;
            s->expire_ms = a->expire_ms > 0 ? a->expire_ms : 0;
        } else if (present) {
            if (a->kind == AOF_DEL)
                keys_remove(k, s);
            else
                s->expire_ms = a->kind == AOF_PEXPIREAT ? a->expire_ms : 0;
        }
    }
    return n;
}

static void check_sum_up(check_keys *k, int64_t now_ms)
{
    hdb_check_report *r = k->r;
    for (size_t i = 0; k->slots != NULL && i <= k->mask; i++) {
        const check_slot *s = &k->slots[i];
        if (!slot_used(k, s))
            continue;
        if (s->expire_ms > 0 && s->expire_ms <= now_ms) {
            r->expired_keys++;
            continue;
        }
        r->keys++;
        if (s->expire_ms > 0)
            r->keys_with_ttl++;
        r->live_bytes += aof_set_px_record_len(s->key_len, s->val_len, s->expire_ms);
    }
    uint64_t payload = r->good_len - (r->good_len > 0 ? aof_header_len(r->codec) : 0);
    r->dead_bytes = payload > r->live_bytes ? payload - r->live_bytes : 0;
}

struct hdb_reader {
    void *map;
    size_t size;
    int64_t now_ms;
    check_keys keys;
    hdb_check_report report;
};

void hdb_reader_close(hdb_reader *rd)
{
    if (rd == NULL)
        return;
    free(rd->keys.slots);
    if (rd->map != NULL)
        munmap(rd->map, rd->size);
    free(rd);
}

const hdb_check_report *hdb_reader_report(const hdb_reader *rd)
{
    return &rd->report;
}

int hdb_reader_next(const hdb_reader *rd, size_t *cursor, const char **key, size_t *key_len,
                    const char **val, size_t *val_len, int64_t *expire_ms)
{
    const check_keys *k = &rd->keys;
    while (k->slots != NULL && *cursor <= k->mask) {
        const check_slot *s = &k->slots[(*cursor)++];
        if (!slot_used(k, s) || (s->expire_ms > 0 && s->expire_ms <= rd->now_ms))
            continue;
        *key = s->key;
        *key_len = s->key_len;
        *val = s->val;
        *val_len = s->val_len;
        *expire_ms = s->expire_ms;
        return 1;
    }
    return 0;
}

hdb_reader *hdb_reader_open(const char *path, int64_t now_ms, hdb_err *err)
{
    hdb_reader *rd = calloc(1, sizeof *rd);
    if (rd == NULL) {
        hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory checking %s", path);
        return NULL;
    }
    rd->now_ms = now_ms;
    hdb_check_report *r = &rd->report;
    r->now_ms = now_ms;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        hdb_fail(err, hdb_errno_code(e), "cannot open %s: %s", path, strerror(e));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        hdb_fail(err, hdb_errno_code(e), "cannot stat %s: %s", path, strerror(e));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        hdb_fail(err, HDB_CODE_INVALID, "%s is not a regular file", path);
        goto fail;
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        hdb_fail(err, HDB_CODE_TOO_LARGE, "%s: file too large for this platform", path);
        goto fail;
    }
    r->file_bytes = (uint64_t)st.st_size;
    if (st.st_size == 0) {
        close(fd);
        return rd;
    }
    rd->size = (size_t)st.st_size;
    /* The size read above: a writer appending meanwhile adds batches this
     * reader does not see, which is what "so far" means. Mapped at once:
     * page by page, the faults of a large file cost more than the check. */
#ifdef MAP_POPULATE
    void *map = mmap(NULL, rd->size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
#else
    void *map = mmap(NULL, rd->size, PROT_READ, MAP_PRIVATE, fd, 0);
#endif
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) {
        hdb_fail(err, hdb_errno_code(e), "cannot read %s: %s", path, strerror(e));
        goto fail;
    }
    rd->map = map;
    posix_madvise(map, rd->size, POSIX_MADV_SEQUENTIAL);

    check_keys *keys = &rd->keys;
    keys->gen = 1;
    keys->r = r;
    siphash_random_key(keys->seed);
    if (keys_grow(keys) != 0) {
        hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory checking %s", path);
        goto fail;
    }
    aof_replay replay = {keys, check_apply, NULL, NULL, 1};
    aof_load_result res;
    hdb_err why;
    int status = aof_load(map, rd->size, &replay, &res, &why);
    r->version = res.version;
    memcpy(r->codec, res.codec, sizeof r->codec);
    r->batches = res.batches;
    r->good_len = res.good_len;
    if (status == AOF_LOAD_NOMEM || keys->failed) {
        hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory checking %s", path);
        goto fail;
    }
    if (status == AOF_LOAD_NOT_AOF || status == AOF_LOAD_VERSION) {
        hdb_fail(err, why.code, "%s: %s", path, why.msg);
        goto fail;
    }
    if (status == AOF_LOAD_DAMAGED) {
        r->damaged = 1;
        r->damage_at = res.damage_at;
        snprintf(r->problem, sizeof r->problem, "%s", why.msg);
    } else if (res.tail != AOF_TAIL_NONE) {
        r->tail = res.tail == AOF_TAIL_TORN ? CHECK_TAIL_TORN
                  : res.tail == AOF_TAIL_TORN_HEADER ? CHECK_TAIL_TORN_HEADER
                                                     : CHECK_TAIL_BAD;
        r->tail_bytes = res.tail_bytes;
        snprintf(r->problem, sizeof r->problem, "%s", res.why);
    }
    check_sum_up(keys, now_ms);
    return rd;
fail:
    hdb_reader_close(rd);
    return NULL;
}

int hdb_check_file(const char *path, int64_t now_ms, hdb_check_report *report, hdb_err *err)
{
    hdb_reader *rd = hdb_reader_open(path, now_ms, err);
    if (rd == NULL)
        return HDB_ERR;
    *report = rd->report;
    hdb_reader_close(rd);
    return HDB_OK;
}
