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

typedef struct aof_cursor {
    const char *data;
    size_t len;
    size_t pos;
} aof_cursor;

/* Parses an unsigned decimal terminated by CRLF, no sign, no leading zeros,
 * at most `max`. Returns 0 on success. */
static int parse_length_line(aof_cursor *c, size_t max, size_t *out)
{
    size_t p = c->pos, v = 0, digits = 0;
    while (p < c->len && c->data[p] >= '0' && c->data[p] <= '9') {
        if (digits > 0 && v == 0)
            return -1;
        v = v * 10 + (size_t)(c->data[p] - '0');
        if (v > max)
            return -1;
        digits++;
        p++;
    }
    if (digits == 0 || p + 2 > c->len || c->data[p] != '\r' || c->data[p + 1] != '\n')
        return -1;
    c->pos = p + 2;
    *out = v;
    return 0;
}

static int parse_bulk(aof_cursor *c, const char **s, size_t *len)
{
    if (c->pos >= c->len || c->data[c->pos] != '$')
        return -1;
    c->pos++;
    if (parse_length_line(c, HDB_MAX_ITEM_LEN, len) != 0)
        return -1;
    if (*len > c->len - c->pos || c->len - c->pos - *len < 2)
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
    if (c->pos >= c->len || c->data[c->pos] != '*')
        return -1;
    c->pos++;
    if (parse_length_line(c, 3, &argc) != 0 || argc < 2)
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
    size_t p = c->pos;
    if (c->len - p < TRAILER_PREFIX_LEN ||
        memcmp(c->data + p, TRAILER_PREFIX, TRAILER_PREFIX_LEN) != 0)
        return -1;
    c->pos += TRAILER_PREFIX_LEN;
    size_t len_end = c->pos;
    while (len_end < c->len && c->data[len_end] != ' ')
        len_end++;
    if (len_end >= c->len)
        return -1;
    /* Reuse the strict decimal parser by pretending the space is a CRLF. */
    size_t v = 0, digits = 0;
    for (size_t i = c->pos; i < len_end; i++) {
        char ch = c->data[i];
        if (ch < '0' || ch > '9' || (digits > 0 && v == 0))
            return -1;
        if (v > (SIZE_MAX - 9) / 10)
            return -1;
        v = v * 10 + (size_t)(ch - '0');
        digits++;
    }
    if (digits == 0)
        return -1;
    size_t h = len_end + 1;
    if (c->len - h < 10)
        return -1;
    uint32_t x = 0;
    for (size_t i = h; i < h + 8; i++) {
        char ch = c->data[i];
        int d;
        if (ch >= '0' && ch <= '9')
            d = ch - '0';
        else if (ch >= 'a' && ch <= 'f')
            d = ch - 'a' + 10;
        else
            return -1;
        x = x << 4 | (uint32_t)d;
    }
    if (c->data[h + 8] != '\r' || c->data[h + 9] != '\n')
        return -1;
    c->pos = h + 10;
    *batch_len = v;
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

int aof_load(const char *data, size_t len, const aof_replay *replay,
             aof_load_result *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    if (len == 0)
        return AOF_LOAD_OK;
    int rc = check_header(data, len, err, errlen);
    if (rc != AOF_LOAD_OK)
        return rc;

    aof_cursor c = {data, len, AOF_HEADER_LEN};
    res->good_len = AOF_HEADER_LEN;
    while (c.pos < len) {
        size_t batch_start = c.pos;
        aof_record r;
        /* First pass: find the trailer, checking only the structure. */
        while (c.pos < len && data[c.pos] == '*') {
            size_t at = c.pos;
            if (parse_record(&c, &r) != 0) {
                snprintf(err, errlen, "damaged record at offset %zu (batch at offset %zu)",
                         at, batch_start);
                return AOF_LOAD_DAMAGED;
            }
        }
        size_t batch_end = c.pos, batch_len;
        uint32_t crc;
        if (c.pos >= len) {
            snprintf(err, errlen, "incomplete batch at offset %zu (no checksum line before the end of the file)",
                     batch_start);
            return AOF_LOAD_DAMAGED;
        }
        if (parse_trailer(&c, &batch_len, &crc) != 0) {
            snprintf(err, errlen, "damaged record at offset %zu (batch at offset %zu)",
                     batch_end, batch_start);
            return AOF_LOAD_DAMAGED;
        }
        if (batch_len != batch_end - batch_start || batch_len == 0 ||
            crc32c_update(0, data + batch_start, batch_len) != crc) {
            snprintf(err, errlen, "checksum mismatch in batch at offset %zu (%zu bytes)",
                     batch_start, batch_end - batch_start);
            return AOF_LOAD_DAMAGED;
        }
        /* Second pass: the batch is intact; replay it. */
        aof_cursor b = {data, batch_end, batch_start};
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
