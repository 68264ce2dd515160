/*
 * engine_test: checks of the C engine that the Lua API cannot see: the hash
 * and checksum against published vectors, the incremental rehash's bound on
 * the work done by any single call, the sizing of the table by a load, and
 * the bound on a buffer's growth. Run by spec/00-engine_spec.lua;
 * prints one "ok <name>" or "not ok <name>: <why>" line per check.
 */
#include <math.h>
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
#include "hdb_dtoa.h"
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
    hdb_entry *e = table_entry_new(t, old, h, key, len, "1", 1, 0);
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

/* ---- the text of a double ---- */

/* What the value codec wrote before hdb_dtoa, and still writes where
 * hdb_dtoa declines: the first of "%.15g", "%.16g", "%.17g" that strtod reads
 * back as d. */
static size_t reference_g(char *buf, double d)
{
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(buf, DTOA_BUF, "%.*g", prec, d);
        if (prec == 17 || strtod(buf, NULL) == d)
            break;
    }
    return (size_t)n;
}

static uint64_t rng_state = UINT64_C(0x9e3779b97f4a7c15);

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

typedef struct dtoa_tally {
    long tried, exact, wrong;
    double first_wrong;
    char got[DTOA_BUF], want[DTOA_BUF];
} dtoa_tally;

static void dtoa_try(dtoa_tally *t, double d)
{
    if (d != d || d == 0.0)
        return;
    char got[DTOA_BUF], want[DTOA_BUF];
    t->tried++;
    size_t n = dtoa_shortest_g(got, d);
    if (n == 0)
        return;
    t->exact++;
    reference_g(want, d);
    if (strcmp(got, want) != 0 || strlen(got) != n) {
        if (t->wrong++ == 0) {
            t->first_wrong = d;
            memcpy(t->got, got, sizeof got);
            memcpy(t->want, want, sizeof want);
        }
    }
}

static double from_bits(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

/* Every double hdb_dtoa formats must get exactly printf's text: random
 * doubles of every exponent, decimals of 1 to 17 digits, quotients like
 * i/7, the neighbours of powers of ten and of two, and the doubles nearest
 * to the halfway points of 15, 16 and 17 digits. */
static void check_dtoa(void)
{
    dtoa_tally all;
    memset(&all, 0, sizeof all);
    for (int i = 0; i < 300000; i++)
        dtoa_try(&all, from_bits(rng_next()));
    for (int i = 0; i < 300000; i++) {
        /* a random number of digits, then a power of ten in range */
        uint64_t digits = rng_next() % UINT64_C(100000000000000000) >> (rng_next() % 57);
        int exp10 = (int)(rng_next() % 46) - 23;
        double d = (double)digits;
        d = exp10 < 0 ? d / pow(10, -exp10) : d * pow(10, exp10);
        dtoa_try(&all, (rng_next() & 1) ? -d : d);
    }
    for (int i = 1; i <= 200000; i++) {
        dtoa_try(&all, i / 7.0);
        dtoa_try(&all, i / 3.0);
        dtoa_try(&all, i * 0.1);
        dtoa_try(&all, i / 1000.0 + 0.001);
    }
    for (int e = -30; e <= 30; e++) {
        double p10 = pow(10, e);
        double up = p10, down = p10;
        for (int k = 0; k < 50; k++) {
            dtoa_try(&all, up);
            dtoa_try(&all, down);
            up = nextafter(up, 1e300);
            down = nextafter(down, 0);
        }
    }
    for (int e = -80; e <= 80; e++) {
        double p2 = ldexp(1.0, e), up = p2, down = p2;
        for (int k = 0; k < 20; k++) {
            dtoa_try(&all, up);
            dtoa_try(&all, down);
            up = nextafter(up, 1e300);
            down = nextafter(down, 0);
        }
    }
    char text[64];
    for (int i = 0; i < 200000; i++) {
        /* d.ddd...d5 with 15, 16 or 17 digits before the 5: the halfway
         * points where rounding directions are decided */
        int ndig = 15 + (int)(rng_next() % 3);
        uint64_t lead = rng_next() % UINT64_C(9000000000000000) + UINT64_C(1000000000000000);
        int exp10 = (int)(rng_next() % 40) - 20;
        snprintf(text, sizeof text, "%.*llu5e%d", ndig - 1 > 16 ? 16 : ndig - 1,
                 (unsigned long long)(lead / (ndig == 15 ? 10 : 1)), exp10);
        double d = strtod(text, NULL);
        dtoa_try(&all, d);
        dtoa_try(&all, nextafter(d, 1e300));
        dtoa_try(&all, nextafter(d, -1e300));
    }
    CHECK("doubles get printf's shortest round-trip text from hdb_dtoa", all.wrong == 0,
          "%ld of %ld differ; first %.17g: got %s, printf %s", all.wrong, all.exact,
          all.first_wrong, all.got, all.want);
    /* The exact path must be the one taken for ordinary magnitudes, or the
     * check above would prove little. */
    CHECK("hdb_dtoa formats most of the doubles tried", all.exact > all.tried / 2,
          "%ld of %ld", all.exact, all.tried);
}

typedef struct parse_tally {
    long tried, exact, wrong;
    char first[64];
    double got, want;
} parse_tally;

static void parse_try(parse_tally *t, const char *text)
{
    double got, want = strtod(text, NULL);
    t->tried++;
    if (!dtoa_parse(text, strlen(text), &got))
        return;
    t->exact++;
    if (memcmp(&got, &want, sizeof got) != 0 && t->wrong++ == 0) {
        snprintf(t->first, sizeof t->first, "%s", text);
        t->got = got;
        t->want = want;
    }
}

/* Every number dtoa_parse reads must be strtod's double, bit for bit:
 * decimals of 1 to 19 digits with every exponent it takes, the texts of
 * random doubles (as the codec writes them, and with 17 digits), integers
 * around 2^53 and 2^64 times powers of ten (where ties to even decide),
 * zeros and leading zeros. */
static void check_dtoa_parse(void)
{
    parse_tally all;
    memset(&all, 0, sizeof all);
    char text[64], digits[24];
    for (int i = 0; i < 400000; i++) {
        int ndig = 1 + (int)(rng_next() % 19);
        for (int k = 0; k < ndig; k++)
            digits[k] = (char)('0' + rng_next() % 10);
        digits[ndig] = '\0';
        int point = (int)(rng_next() % (unsigned)(ndig + 1));
        int exp10 = (int)(rng_next() % 60) - 30;
        snprintf(text, sizeof text, "%s%.*s.%s0e%d", (rng_next() & 1) ? "-" : "", point > 0 ? point : 1,
                 point > 0 ? digits : "0", digits + point, exp10);
        parse_try(&all, text);
    }
    for (int i = 0; i < 300000; i++) {
        double d = from_bits(rng_next());
        if (d != d || d == 0.0)
            continue;
        snprintf(text, sizeof text, "%.17g", d);
        parse_try(&all, text);
        char g[DTOA_BUF];
        if (dtoa_shortest_g(g, d) > 0)
            parse_try(&all, g);
    }
    for (int i = 1; i <= 200000; i++) {
        snprintf(text, sizeof text, "%.17g", i / 7.0);
        parse_try(&all, text);
        snprintf(text, sizeof text, "%.15g", i * 0.1);
        parse_try(&all, text);
    }
    for (int e = 0; e <= 19; e++) {
        for (uint64_t base = (UINT64_C(1) << 53) - 3; base < (UINT64_C(1) << 53) + 40; base++) {
            snprintf(text, sizeof text, "%llue%d", (unsigned long long)base, e);
            parse_try(&all, text);
        }
        for (int k = 0; k < 2000; k++) {
            uint64_t big = rng_next() | (UINT64_C(1) << 63);
            snprintf(text, sizeof text, "%llue%d", (unsigned long long)(big % UINT64_C(10000000000000000000)), e);
            parse_try(&all, text);
            snprintf(text, sizeof text, "%llue-%d", (unsigned long long)(big % UINT64_C(10000000000000000000)), e);
            parse_try(&all, text);
        }
    }
    static const char *fixed[] = {"0", "-0", "0.0", "-0.0", "0e5", "0.000", "00.5e1", "0.0001",
                                  "1e-21", "1e-22", "9.999999999999999e22", "1e19", "1e20",
                                  "18446744073709551615", "18446744073709551616", "123456789012345678.9",
                                  "4.9406564584124654e-324", "2.2250738585072014e-308"};
    for (size_t k = 0; k < sizeof fixed / sizeof *fixed; k++)
        parse_try(&all, fixed[k]);
    CHECK("numbers read by dtoa_parse are strtod's doubles", all.wrong == 0,
          "%ld of %ld differ; first %s: got %.17g, strtod %.17g", all.wrong, all.exact, all.first,
          all.got, all.want);
    CHECK("dtoa_parse reads most of the numbers tried", all.exact > all.tried / 2, "%ld of %ld",
          all.exact, all.tried);
}

/* ---- the load: sized once, never rehashed ---- */

typedef struct load_check {
    hdb_table table;
    uint64_t announced;
    size_t rehashing_groups, groups, largest_group;
} load_check;

static size_t load_apply(void *ud, const aof_record *r, size_t n)
{
    load_check *lc = ud;
    lc->groups++;
    if (n > lc->largest_group)
        lc->largest_group = n;
    for (size_t i = 0; i < n; i++) {
        if (r[i].kind == AOF_SET)
            put(&lc->table, r[i].key, r[i].key_len);
        else if (r[i].kind == AOF_DEL)
            table_remove(&lc->table, r[i].key, r[i].key_len);
    }
    lc->rehashing_groups += lc->table.idx[1].buckets != NULL;
    return n;
}

static void load_reserve(void *ud, uint64_t set_records)
{
    load_check *lc = ud;
    lc->announced = set_records;
    table_reserve(&lc->table, set_records);
}

/* Appends one batch of the records in `records` to `file`. */
static void add_batch(hdb_buf *file, const uint64_t key[2], uint64_t seq, hdb_buf *records)
{
    char line[AOF_BEGIN_MAX];
    size_t n = aof_format_begin(line, key, seq, records->data, records->len);
    if (hdb_buf_reserve(file, n + records->len) != 0) {
        printf("not ok out of memory\n");
        exit(1);
    }
    memcpy(file->data + file->len, line, n);
    memcpy(file->data + file->len + n, records->data, records->len);
    file->len += n + records->len;
    records->len = 0;
}

/* Ends a file being built: its last batch, or the run if memory ran out. */
static void end_file(hdb_buf *file, const uint64_t key[2], uint64_t seq, hdb_buf *records, int ok)
{
    if (ok && records->len > 0)
        add_batch(file, key, seq, records);
    if (!ok) {
        printf("not ok out of memory\n");
        exit(1);
    }
}

/* Loads a file into lc's table as the store does: the SETs announced and
 * reserved, the records replayed, the table fitted. Returns aof_load's
 * status. */
static int load_into(load_check *lc, const hdb_buf *file, uint64_t seed)
{
    uint64_t table_seed[2] = {seed, seed + 1};
    memset(lc, 0, sizeof *lc);
    table_init(&lc->table, table_seed);
    aof_replay replay = {lc, load_apply, load_reserve, NULL, 0};
    aof_load_result res;
    hdb_err err;
    int rc = aof_load(file->data, file->len, &replay, &res, &err);
    table_fit(&lc->table);
    return rc;
}

/* A file of 200000 keys, then one of 2000 keys each set 100 times and half
 * of them deleted: the loader announces the SETs before the first record,
 * the table takes them with no rehash, and after table_fit its bucket
 * array is the one its live keys would have grown to, not one sized for
 * every record of the file. */
static void check_load_sizing(void)
{
    uint64_t key[2] = {11, 22};
    for (int shape = 0; shape < 2; shape++) {
        hdb_buf file, records;
        hdb_buf_init(&file);
        hdb_buf_init(&records);
        char header[AOF_HEADER_MAX + 1], k[32];
        aof_format_header(header, key, NULL, 0);
        int ok = hdb_buf_reserve(&file, AOF_HEADER_LEN) == 0;
        if (ok) {
            memcpy(file.data, header, AOF_HEADER_LEN);
            file.len = AOF_HEADER_LEN;
        }
        uint64_t seq = 1, sets = 0;
        size_t live = shape == 0 ? 200000 : 1000;
        for (size_t i = 0; ok && i < 200000; i++) {
            int len = snprintf(k, sizeof k, "k%zu", shape == 0 ? i : i % 2000);
            ok = aof_append_set(&records, k, (size_t)len, "{}", 2) == 0;
            sets++;
            if (i % 977 == 976)
                add_batch(&file, key, seq++, &records);
        }
        for (size_t i = 0; ok && shape == 1 && i < 1000; i++) {
            int len = snprintf(k, sizeof k, "k%zu", i * 2);
            ok = aof_append_del(&records, k, (size_t)len) == 0;
        }
        end_file(&file, key, seq, &records, ok);
        load_check lc;
        int rc = load_into(&lc, &file, 3);
        size_t buckets = lc.table.idx[0].mask + 1;
        const char *name = shape == 0 ? "a load of 200000 keys" : "a load of 1000 keys set 200000 times";
        char title[160];
        snprintf(title, sizeof title, "%s announces its SETs and never rehashes", name);
        CHECK(title, rc == AOF_LOAD_OK && lc.announced == sets && lc.rehashing_groups == 0 &&
                         lc.table.count == live && lc.largest_group == AOF_REPLAY_GROUP,
              "rc %d, announced %llu of %llu, %zu of %zu groups while rehashing, count %zu, "
              "largest group %zu", rc, (unsigned long long)lc.announced,
              (unsigned long long)sets, lc.rehashing_groups, lc.groups, lc.table.count,
              lc.largest_group);
        snprintf(title, sizeof title, "%s ends with buckets for its live keys", name);
        CHECK(title, lc.table.idx[1].buckets == NULL && buckets >= live && buckets < 2 * live &&
                         !lc.table.reserved,
              "%zu buckets for %zu keys", buckets, live);
        size_t found = 0;
        for (size_t i = 0; i < live; i++) {
            uint32_t h;
            int len = snprintf(k, sizeof k, "k%zu", shape == 0 ? i : i * 2 + 1);
            found += table_lookup(&lc.table, k, (size_t)len, &h) != NULL;
        }
        snprintf(title, sizeof title, "%s finds every live key after the load", name);
        CHECK(title, found == live, "found %zu of %zu", found, live);
        table_free(&lc.table);
        hdb_buf_free(&file);
        hdb_buf_free(&records);
    }
}

/* This process's resident memory now (VmRSS) or at its peak (VmHWM), in
 * KiB; -1 where /proc does not tell. */
static long status_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            v = strtol(line + n + 1, NULL, 10);
    }
    fclose(f);
    return v;
}

/* Makes VmHWM start again from the resident memory now (Linux 4.0 on).
 * Returns 0, or -1 where that cannot be done. */
static int reset_peak(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f == NULL)
        return -1;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* A file of 2,000,000 SETs of 4 keys: the table is reserved for 2^21 keys
 * (16 MiB of buckets), of which the load touches the pages of 4 buckets;
 * fitting it to 4 keys must not read the rest (the kernel may back every
 * page read), so the load's memory stays that of 4 keys, at its peak too. */
static void check_load_of_few_keys(void)
{
    uint64_t key[2] = {5, 6};
    hdb_buf file, records;
    hdb_buf_init(&file);
    hdb_buf_init(&records);
    char header[AOF_HEADER_MAX + 1], k[32];
    aof_format_header(header, key, NULL, 0);
    int ok = hdb_buf_append(&file, header, AOF_HEADER_LEN) == 0;
    uint64_t seq = 1;
    for (size_t i = 0; ok && i < 2000000; i++) {
        int len = snprintf(k, sizeof k, "counter:%zu", i % 4);
        ok = aof_append_set(&records, k, (size_t)len, "1", 1) == 0;
        if (ok && records.len > (1u << 20))
            add_batch(&file, key, seq++, &records);
    }
    end_file(&file, key, seq, &records, ok);
    load_check lc;
    /* Under AddressSanitizer, its allocator and shadow memory are in the
     * peak too: the memory is measured only without it. */
#if defined(__SANITIZE_ADDRESS__)
    int measured = 0;
#else
    int measured = 1;
#endif
    measured = measured && reset_peak() == 0;
    long before = status_kib("VmRSS");
    int rc = load_into(&lc, &file, 7);
    long peak = status_kib("VmHWM");
    measured = measured && before >= 0 && peak >= 0;
    CHECK("a load of 2000000 SETs of 4 keys keeps the memory of 4 keys",
          rc == AOF_LOAD_OK && lc.table.count == 4 && lc.announced == 2000000 &&
              lc.table.idx[0].mask + 1 == 16 && (!measured || peak - before < 2048),
          "rc %d, %zu keys, %zu buckets, resident memory grew by %ld KiB at its peak", rc,
          lc.table.count, lc.table.idx[0].mask + 1, peak - before);
    if (!measured)
        printf("# the peak of resident memory is not measured in this build or on this system\n");
    table_free(&lc.table);
    hdb_buf_free(&file);
    hdb_buf_free(&records);
}

/* The example of doc/aof-format.md, byte for byte: the document's
 * checksums and tags are the ones the code computes. */
static void check_format_example(void)
{
    uint64_t key[2] = {UINT64_C(0x6f0c4a1d2b3e5f7a), UINT64_C(0x8c9d0e1f2a3b4c5d)};
    char header[AOF_HEADER_MAX + 1], line1[AOF_BEGIN_MAX + 1], line2[AOF_BEGIN_MAX + 1];
    const char *set = "*3\r\n$3\r\nSET\r\n$1\r\na\r\n$8\r\n{\"n\":42}\r\n";
    const char *del = "*2\r\n$3\r\nDEL\r\n$1\r\na\r\n";
    aof_format_header(header, key, NULL, 0);
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
    hdb_err err;
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        char key[32];
        int len = snprintf(key, sizeof key, "late:%d", i);
        if (hdb_set(race_store, key, (size_t)len, "1", 1, &err) != HDB_OK) {
            fprintf(stderr, "set: %s\n", err.msg);
            _exit(3);
        }
    }
    race_closing = 1;
    hdb_close(race_store, &err);
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
    hdb_err err;
    opt.path = path;
    opt.sync_time_ms = 1;
    opt.use_fsync = 1;
    race_store = hdb_open(&opt, &err);
    if (race_store == NULL) {
        fprintf(stderr, "open: %s\n", err.msg);
        return 2;
    }
    if (hdb_set(race_store, "first", 5, "1", 1, &err) != HDB_OK)
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
    check_load_sizing();
    check_load_of_few_keys();
    check_dtoa();
    check_dtoa_parse();
    return failures ? 1 : 0;
}
