#include "hdb_aof.h"
#include "hdb_crc32c.h"
#include "hdb_table.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define TRAILER_PREFIX "#hdb batch "
#define TRAILER_PREFIX_LEN (sizeof(TRAILER_PREFIX) - 1)

static size_t decimal_len(size_t n)
{
    size_t d = 1;
    while (n >= 10) {
        n /= 10;
        d++;
    }
    return d;
}

/* Writes n in decimal at p, returns the end. */
static char *put_decimal(char *p, size_t n)
{
    size_t d = decimal_len(n);
    char *end = p + d;
    do {
        *--end = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    return p + d;
}

static char *put_bulk(char *p, const char *s, size_t len)
{
    *p++ = '$';
    p = put_decimal(p, len);
    *p++ = '\r';
    *p++ = '\n';
    if (len)
        memcpy(p, s, len);
    p += len;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

static size_t bulk_len(size_t len)
{
    return 1 + decimal_len(len) + 2 + len + 2;
}

size_t aof_set_record_len(size_t key_len, size_t val_len)
{
    return 4 + bulk_len(3) + bulk_len(key_len) + bulk_len(val_len);
}

int aof_append_set(hdb_buf *b, const char *key, size_t key_len,
                   const char *val, size_t val_len)
{
    size_t n = aof_set_record_len(key_len, val_len);
    if (hdb_buf_reserve(b, n) != 0)
        return -1;
    char *p = b->data + b->len;
    memcpy(p, "*3\r\n$3\r\nSET\r\n", 13);
    p = put_bulk(p + 13, key, key_len);
    p = put_bulk(p, val, val_len);
    b->len += n;
    return 0;
}

int aof_append_del(hdb_buf *b, const char *key, size_t key_len)
{
    size_t n = 4 + bulk_len(3) + bulk_len(key_len);
    if (hdb_buf_reserve(b, n) != 0)
        return -1;
    char *p = b->data + b->len;
    memcpy(p, "*2\r\n$3\r\nDEL\r\n", 13);
    put_bulk(p + 13, key, key_len);
    b->len += n;
    return 0;
}

size_t aof_format_trailer(char *out, const char *batch, size_t len)
{
    uint32_t crc = crc32c_update(0, batch, len);
    int n = snprintf(out, AOF_TRAILER_MAX, TRAILER_PREFIX "%zu %08" PRIx32 "\r\n",
                     len, crc);
    return (size_t)n;
}

/* ---- loading ---- */

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

typedef struct aof_cursor {
    const char *data;
    size_t len;
    size_t pos;
    int hit_end; /* the last parse failed only because the data ran out */
} aof_cursor;

/* True if n more bytes are available at p; else notes that the data ran out. */
static inline int have(aof_cursor *c, size_t p, size_t n)
{
    if (p <= c->len && c->len - p >= n)
        return 1;
    c->hit_end = 1;
    return 0;
}

/* Parses an unsigned decimal (no sign, no leading zeros, at most `max`)
 * ending at `term`, which is consumed: "\r\n" for RESP lengths. */
static int parse_decimal(aof_cursor *c, size_t max, const char *term, size_t *out)
{
    size_t p = c->pos, v = 0, digits = 0, tlen = strlen(term);
    while (have(c, p, 1) && c->data[p] >= '0' && c->data[p] <= '9') {
        if (digits > 0 && v == 0)
            return -1;
        v = v * 10 + (size_t)(c->data[p] - '0');
        if (v > max)
            return -1;
        digits++;
        p++;
    }
    if (!have(c, p, 1))
        return -1;
    if (digits == 0)
        return -1;
    for (size_t i = 0; i < tlen; i++) {
        if (!have(c, p + i, 1) || c->data[p + i] != term[i])
            return -1;
    }
    c->pos = p + tlen;
    *out = v;
    return 0;
}

static int parse_bulk(aof_cursor *c, const char **s, size_t *len)
{
    if (!have(c, c->pos, 1) || c->data[c->pos] != '$')
        return -1;
    c->pos++;
    if (parse_decimal(c, HDB_MAX_ITEM_LEN, "\r\n", len) != 0)
        return -1;
    if (!have(c, c->pos, *len + 2))
        return -1;
    *s = c->data + c->pos;
    if (c->data[c->pos + *len] != '\r' || c->data[c->pos + *len + 1] != '\n')
        return -1;
    c->pos += *len + 2;
    return 0;
}

typedef struct aof_record {
    int is_set;
    const char *key, *val;
    size_t key_len, val_len;
} aof_record;

/* Parses one command at c->pos: exactly what aof_append_set/del write. */
static int parse_record(aof_cursor *c, aof_record *r)
{
    size_t argc, cmd_len;
    const char *cmd;
    if (!have(c, c->pos, 1) || c->data[c->pos] != '*')
        return -1;
    c->pos++;
    if (parse_decimal(c, 3, "\r\n", &argc) != 0 || argc < 2)
        return -1;
    if (parse_bulk(c, &cmd, &cmd_len) != 0 || cmd_len != 3)
        return -1;
    if (argc == 3 && memcmp(cmd, "SET", 3) == 0)
        r->is_set = 1;
    else if (argc == 2 && memcmp(cmd, "DEL", 3) == 0)
        r->is_set = 0;
    else
        return -1;
    if (parse_bulk(c, &r->key, &r->key_len) != 0)
        return -1;
    r->val = NULL;
    r->val_len = 0;
    if (r->is_set && parse_bulk(c, &r->val, &r->val_len) != 0)
        return -1;
    return 0;
}

/* Parses a batch trailer line at c->pos. */
static int parse_trailer(aof_cursor *c, size_t *batch_len, uint32_t *crc)
{
    for (size_t i = 0; i < TRAILER_PREFIX_LEN; i++) {
        if (!have(c, c->pos + i, 1) || c->data[c->pos + i] != TRAILER_PREFIX[i])
            return -1;
    }
    c->pos += TRAILER_PREFIX_LEN;
    if (parse_decimal(c, SIZE_MAX / 10 - 1, " ", batch_len) != 0)
        return -1;
    uint32_t x = 0;
    for (size_t i = 0; i < 8; i++) {
        if (!have(c, c->pos + i, 1))
            return -1;
        int d = hex_value(c->data[c->pos + i]);
        if (d < 0)
            return -1;
        x = x << 4 | (uint32_t)d;
    }
    c->pos += 8;
    if (!have(c, c->pos, 2))
        return -1;
    if (c->data[c->pos] != '\r' || c->data[c->pos + 1] != '\n')
        return -1;
    c->pos += 2;
    *crc = x;
    return 0;
}

static int check_header(const char *data, size_t len, char *err, size_t errlen)
{
    static const char prefix[] = "#hurrahdb aof ";
    size_t plen = sizeof(prefix) - 1;
    if (len < plen || memcmp(data, prefix, plen) != 0) {
        snprintf(err, errlen, "not a hurrahdb AOF (no '#hurrahdb aof' header at offset 0)");
        return AOF_LOAD_NOT_AOF;
    }
    if (len < AOF_HEADER_LEN || memcmp(data, AOF_HEADER, AOF_HEADER_LEN) != 0) {
        snprintf(err, errlen, "unsupported hurrahdb AOF version (this build reads version %d)",
                 AOF_FORMAT_VERSION);
        return AOF_LOAD_VERSION;
    }
    return AOF_LOAD_OK;
}

/* True if a whole batch with a valid checksum starts after `from`. Used
 * once the batch at `from` is found bad: if a good batch follows, the file
 * is damaged in the middle (dropping the rest would lose good data); if none
 * does, the bad batch is the torn end of the last append. Any later trailer
 * line is tried as the end of a batch: its length says where that batch
 * would start, and its checksum says whether it is one. */
static int good_batch_follows(const char *data, size_t len, size_t from)
{
    static const char mark[] = "\n" TRAILER_PREFIX;
    size_t mlen = sizeof(mark) - 1;
    for (size_t p = from; p + mlen <= len; p++) {
        const char *hit = memchr(data + p, '\n', len - p);
        if (hit == NULL)
            break;
        p = (size_t)(hit - data);
        if (len - p < mlen || memcmp(data + p, mark, mlen) != 0)
            continue;
        aof_cursor c = {data, len, p + 1, 0};
        size_t batch_len;
        uint32_t crc;
        if (parse_trailer(&c, &batch_len, &crc) != 0)
            continue;
        size_t trailer_at = p + 1;
        if (batch_len == 0 || batch_len > trailer_at - from)
            continue;
        if (crc32c_update(0, data + trailer_at - batch_len, batch_len) == crc)
            return 1;
    }
    return 0;
}

int aof_load(const char *data, size_t len, const aof_replay *replay,
             aof_load_result *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    if (len == 0)
        return AOF_LOAD_OK;
    if (len < AOF_HEADER_LEN && memcmp(data, AOF_HEADER, len) == 0) {
        /* A crash while the header of a new file was being written. */
        res->torn_bytes = len;
        return AOF_LOAD_OK;
    }
    int rc = check_header(data, len, err, errlen);
    if (rc != AOF_LOAD_OK)
        return rc;

    aof_cursor c = {data, len, AOF_HEADER_LEN, 0};
    res->good_len = AOF_HEADER_LEN;
    while (c.pos < len) {
        size_t batch_start = c.pos, at = c.pos;
        aof_record r;
        int bad = 0;
        /* First pass: find the trailer, checking only the structure. */
        while (c.pos < len && data[c.pos] == '*') {
            at = c.pos;
            if (parse_record(&c, &r) != 0) {
                bad = 1;
                break;
            }
        }
        size_t batch_end = c.pos, batch_len = 0;
        uint32_t crc = 0;
        if (!bad) {
            at = c.pos;
            if (c.pos >= len) {
                c.hit_end = 1;
                bad = 1;
            } else if (parse_trailer(&c, &batch_len, &crc) != 0) {
                bad = 1;
            }
        }
        if (!bad && (batch_len != batch_end - batch_start || batch_len == 0 ||
                     crc32c_update(0, data + batch_start, batch_len) != crc)) {
            bad = 2;
        }
        if (bad) {
            if (!good_batch_follows(data, len, batch_start)) {
                res->torn_bytes = len - batch_start;
                return AOF_LOAD_OK;
            }
            res->damage_at = batch_start;
            if (bad == 2)
                snprintf(err, errlen, "checksum mismatch in batch at offset %zu (%zu bytes), "
                         "followed by good batches", batch_start, batch_end - batch_start);
            else
                snprintf(err, errlen, "damaged record at offset %zu (batch at offset %zu), "
                         "followed by good batches", at, batch_start);
            return AOF_LOAD_DAMAGED;
        }
        /* Second pass: the batch is intact; replay it. */
        aof_cursor b = {data, batch_end, batch_start, 0};
        while (b.pos < batch_end) {
            parse_record(&b, &r);
            int cb = r.is_set ? replay->on_set(replay->ud, r.key, r.key_len, r.val, r.val_len)
                              : replay->on_del(replay->ud, r.key, r.key_len);
            if (cb != 0) {
                snprintf(err, errlen, "out of memory replaying the batch at offset %zu",
                         batch_start);
                return AOF_LOAD_NOMEM;
            }
            res->records++;
        }
        res->batches++;
        res->good_len = c.pos;
    }
    return AOF_LOAD_OK;
}
