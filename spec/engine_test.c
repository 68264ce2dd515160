/*
 * engine_test: checks of the C engine that the Lua API cannot see: the hash
 * and checksum against published vectors, the incremental rehash's bound on
 * the work done by any single call, and the bound on a buffer's growth. Run by spec/00-engine_spec.lua;
 * prints one "ok <name>" or "not ok <name>: <why>" line per check.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hurrahdb.h"
#include "hdb_aof.h"
#include "hdb_buf.h"
#include "hdb_crc32c.h"
#include "hdb_siphash.h"
#include "hdb_table.h"

static int failures;

#define CHECK(name, cond, ...)                                                 \
    do {                                                                       \
        if (cond) {                                                            \
            printf("ok %s\n", name);                                           \
        } else {                                                               \
            printf("not ok %s: ", name);                                       \
            printf(__VA_ARGS__);                                               \
            printf("\n");                                                      \
            failures++;                                                        \
        }                                                                      \
    } while (0)

static void check_siphash(void)
{
    /* Reference vectors of SipHash-2-4 (key 00..0f, message 00..len-1),
     * which shares every step with SipHash-1-3 but the round counts. */
    static const struct { size_t len; uint64_t want; } vectors[] = {
        {0, UINT64_C(0x726fdb47dd0e0e31)},
        {1, UINT64_C(0x74f839c593dc67fd)},
        {7, UINT64_C(0xab0200f58b01d137)},
        {8, UINT64_C(0x93f5f5799a932462)},
        {15, UINT64_C(0xa129ca6149be45e5)},
        {63, UINT64_C(0x958a324ceb064572)},
    };
    uint64_t key[2] = {UINT64_C(0x0706050403020100), UINT64_C(0x0f0e0d0c0b0a0908)};
    unsigned char msg[64];
    for (int i = 0; i < 64; i++)
        msg[i] = (unsigned char)i;
    int bad = -1;
    for (size_t i = 0; i < sizeof vectors / sizeof *vectors; i++) {
        if (siphash24(key, msg, vectors[i].len) != vectors[i].want)
            bad = (int)i;
    }
    CHECK("siphash-2-4 reference vectors", bad < 0, "vector of length %zu differs",
          bad < 0 ? 0 : vectors[bad].len);
    /* A different key must move the hash: the seed is what resists flooding. */
    uint64_t other[2] = {key[0] ^ 1, key[1]};
    CHECK("siphash-1-3 depends on the key",
          siphash13(key, "user:1", 6) != siphash13(other, "user:1", 6), "same hash");
}

static void check_crc32c(void)
{
    CHECK("crc32c check value", crc32c_update(0, "123456789", 9) == 0xe3069283u,
          "got %08x", crc32c_update(0, "123456789", 9));
    uint32_t split = crc32c_update(crc32c_update(0, "1234", 4), "56789", 5);
    CHECK("crc32c in pieces equals one pass", split == 0xe3069283u, "got %08x", split);
    unsigned char buf[4099];
    srand(7);
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)rand();
    int same = 1;
    for (size_t off = 0; off < 9; off++) {
        for (size_t len = 0; len + off < sizeof buf; len += 97)
            same &= crc32c_update(0, buf + off, len) == crc32c_update_portable(0, buf + off, len);
    }
    CHECK("crc32c hardware and software paths agree", same, "they differ");
}

static void put(hdb_table *t, const char *key, size_t len)
{
    uint32_t h;
    hdb_entry *old = table_lookup(t, key, len, &h);
    hdb_entry *e = table_entry_new(t, h, key, len, "1", 1);
    if (e == NULL) {
        printf("not ok out of memory\n");
        exit(1);
    }
    table_commit(t, e, old);
}

static void check_incremental_rehash(void)
{
    const size_t n = 1u << 20;
    uint64_t seed[2] = {1, 2};
    hdb_table t;
    table_init(&t, seed);
    char key[32];
    size_t max_step = 0, rehash_ops = 0, longest_rehash = 0, current = 0, lost = 0;

    for (size_t i = 0; i < n; i++) {
        int len = snprintf(key, sizeof key, "key:%zu", i);
        int was_rehashing = t.idx[1].buckets != NULL;
        size_t pos_before = t.rehash_pos;
        put(&t, key, (size_t)len);
        if (was_rehashing && t.idx[1].buckets != NULL) {
            size_t step = t.rehash_pos - pos_before;
            if (step > max_step)
                max_step = step;
        }
        if (t.idx[1].buckets != NULL) {
            rehash_ops++;
            if (++current > longest_rehash)
                longest_rehash = current;
            /* Mid-rehash, every key is still found. Check a sample. */
            if (i % 4099 == 0) {
                for (size_t j = 0; j <= i; j += 613) {
                    uint32_t h;
                    int l = snprintf(key, sizeof key, "key:%zu", j);
                    if (table_lookup(&t, key, (size_t)l, &h) == NULL)
                        lost++;
                }
            }
        } else {
            current = 0;
        }
    }
    CHECK("table holds every key", t.count == n, "count %zu", t.count);
    CHECK("no key is missed while the table is being rehashed", lost == 0, "%zu lookups failed", lost);
    /* One call looks at a bounded number of buckets, however big the table. */
    CHECK("a call advances the rehash by a bounded number of buckets",
          max_step <= REHASH_BUCKETS_PER_OP + REHASH_EMPTY_VISITS,
          "one call moved %zu buckets", max_step);
    /* The last growth (to 2^20 buckets) is spread over many calls. */
    CHECK("the largest growth is spread over many calls", longest_rehash > n / 8,
          "longest rehash took %zu calls", longest_rehash);

    uint32_t cursor = 0;
    size_t visited = 0;
    while (table_next(&t, &cursor) != NULL)
        visited++;
    CHECK("iteration visits every entry once", visited == n, "visited %zu", visited);

    for (size_t i = 0; i < n; i++) {
        int len = snprintf(key, sizeof key, "key:%zu", i);
        if (i % 16 != 0)
            table_remove(&t, key, (size_t)len);
    }
    size_t found = 0;
    for (size_t i = 0; i < n; i += 16) {
        uint32_t h;
        int len = snprintf(key, sizeof key, "key:%zu", i);
        found += table_lookup(&t, key, (size_t)len, &h) != NULL;
    }
    CHECK("the table shrinks back and keeps the rest", found == n / 16 && t.count == n / 16 &&
          (t.idx[0].mask + 1) <= n / 4, "found %zu, count %zu, buckets %zu", found, t.count,
          t.idx[0].mask + 1);
    table_free(&t);
}

static void check_bounded_growth(void)
{
    /* Filled in steps towards a bound that is not a power of two: doubling
     * from 256 bytes would end at 1 MiB; the capacity must stop at the bound. */
    const size_t max = 1000000;
    hdb_buf b;
    hdb_buf_init(&b);
    size_t largest = 0;
    int ok = 1;
    while (ok && b.len < max) {
        size_t n = max - b.len < 4096 ? max - b.len : 4096;
        ok = hdb_buf_reserve_max(&b, n, max) == 0;
        if (ok) {
            memset(b.data + b.len, 'x', n);
            b.len += n;
        }
        if (b.cap > largest)
            largest = b.cap;
    }
    CHECK("a bounded buffer grows to its bound and no further",
          ok && b.len == max && largest == max, "len %zu, largest capacity %zu", b.len, largest);
    char *data = b.data;
    int refused = hdb_buf_reserve_max(&b, 1, max) != 0;
    CHECK("a bounded buffer refuses to pass its bound and is left as it was",
          refused && b.data == data && b.len == max && b.cap == max,
          "refused %d, len %zu, cap %zu", refused, b.len, b.cap);
    hdb_buf_free(&b);
}

/* The example of doc/aof-format.md, byte for byte: the document's
 * checksums and tags are the ones the code computes. */
static void check_format_example(void)
{
    uint64_t key[2] = {UINT64_C(0x6f0c4a1d2b3e5f7a), UINT64_C(0x8c9d0e1f2a3b4c5d)};
    char header[AOF_HEADER_LEN + 1], line1[AOF_BEGIN_MAX + 1], line2[AOF_BEGIN_MAX + 1];
    const char *set = "*3\r\n$3\r\nSET\r\n$1\r\na\r\n$8\r\n{\"n\":42}\r\n";
    const char *del = "*2\r\n$3\r\nDEL\r\n$1\r\na\r\n";
    aof_format_header(header, key);
    line1[aof_format_begin(line1, key, 1, set, strlen(set))] = '\0';
    line2[aof_format_begin(line2, key, 2, del, strlen(del))] = '\0';
    CHECK("the header of the format document's example",
          strcmp(header, "#hurrahdb aof 2 6f0c4a1d2b3e5f7a8c9d0e1f2a3b4c5d 6d673cd1\r\n") == 0,
          "got %s", header);
    CHECK("the batch lines of the format document's example",
          strcmp(line1, "#hdb 1 34 dd3125e4 343bb3780e5ce5fc\r\n") == 0 &&
              strcmp(line2, "#hdb 2 20 dedfaad8 a9fec5f75e7a91b1\r\n") == 0,
          "got %s and %s", line1, line2);
}

/* ---- exit() in one thread while another closes the store ---- */

static hdb_store *race_store;
static volatile int race_closing;

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *race_close_thread(void *arg)
{
    char err[HDB_ERRLEN];
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        char key[32];
        int len = snprintf(key, sizeof key, "late:%d", i);
        if (hdb_set(race_store, key, (size_t)len, "1", 1, err, sizeof err) != HDB_OK) {
            fprintf(stderr, "set: %s\n", err);
            _exit(3);
        }
    }
    race_closing = 1;
    hdb_close(race_store, err, sizeof err);
    return NULL;
}

/* Sets a key, waits until the flusher is inside a slow fdatasync (the fault
 * shim's "fdatasync delay" rule, whose hits file shows it began), makes 1000
 * more writes and closes the store in a thread, and calls exit() from this
 * one while that close waits for the flush in progress. Every write must be
 * in the file: exit() writes what close had not yet written. */
static int exit_while_closing(const char *path, const char *hits)
{
    hdb_options opt = {0};
    char err[HDB_ERRLEN];
    opt.path = path;
    opt.sync_time_ms = 1;
    opt.use_fsync = 1;
    race_store = hdb_open(&opt, err, sizeof err);
    if (race_store == NULL) {
        fprintf(stderr, "open: %s\n", err);
        return 2;
    }
    if (hdb_set(race_store, "first", 5, "1", 1, err, sizeof err) != HDB_OK)
        return 2;
    for (int i = 0; i < 5000; i++) {
        FILE *f = fopen(hits, "r");
        int began = f != NULL && fgetc(f) != EOF;
        if (f != NULL)
            fclose(f);
        if (began)
            break;
        pause_ms(1);
    }
    pthread_t t;
    if (pthread_create(&t, NULL, race_close_thread, NULL) != 0)
        return 2;
    while (!race_closing)
        pause_ms(1);
    pause_ms(20);
    exit(0);
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "exit-while-closing") == 0)
        return exit_while_closing(argv[2], argv[3]);
    check_siphash();
    check_crc32c();
    check_incremental_rehash();
    check_bounded_growth();
    check_format_example();
    return failures ? 1 : 0;
}
