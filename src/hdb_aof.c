#include "hdb_aof.h"
#include "hdb_crc32c.h"
#include "hdb_siphash.h"
#include "hdb_table.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define HEADER_PREFIX "#hurrahdb aof "
#define HEADER_PREFIX_LEN (sizeof(HEADER_PREFIX) - 1)
#define HEADER_V1 "#hurrahdb aof 1\r\n"
#define HEADER_V1_LEN (sizeof(HEADER_V1) - 1)
#define HEADER_V2_PREFIX "#hurrahdb aof 2 "
#define HEADER_V2_PREFIX_LEN (sizeof(HEADER_V2_PREFIX) - 1)
/* Version 3 is version 2 with a codec field in the header: a file whose
 * values are not JSON. Builds that read only version 2 refuse it as made by
 * a newer hurrahdb, and never repair it away as a damaged header. */
#define HEADER_V3_PREFIX "#hurrahdb aof 3 "
/* Version 4: the header of version 2 or 3 (the codec field optional), and
 * records of expiries and FLUSHALL among the SETs and DELs. */
#define HEADER_V4_PREFIX "#hurrahdb aof 4 "
#define NEWEST_VERSION 4
#define BEGIN_PREFIX "#hdb "
#define BEGIN_PREFIX_LEN (sizeof(BEGIN_PREFIX) - 1)
#define V1_TRAILER_PREFIX "#hdb batch "
#define V1_TRAILER_PREFIX_LEN (sizeof(V1_TRAILER_PREFIX) - 1)

static const char hex_digits[] = "0123456789abcdef";

static char *put_hex(char *p, uint64_t v, int digits)
{
    for (int i = digits - 1; i >= 0; i--)
        *p++ = hex_digits[(v >> (4 * i)) & 0xf];
    return p;
}

static inline size_t decimal_len(uint64_t n)
{
    size_t d = 1;
    for (; n >= 100; n /= 100)
        d += 2;
    return d + (n >= 10);
}

/* Writes n in decimal at p and returns the end. Record lengths are mostly
 * below 100: those take no loop. */
static inline char *put_decimal(char *p, uint64_t n)
{
    if (n < 10) {
        *p = (char)('0' + n);
        return p + 1;
    }
    if (n < 100) {
        p[0] = (char)('0' + n / 10);
        p[1] = (char)('0' + n % 10);
        return p + 2;
    }
    char *end = p + decimal_len(n);
    for (char *q = end; n != 0; n /= 10)
        *--q = (char)('0' + n % 10);
    return end;
}

/* "$<len>\r\n<bytes>\r\n" */
static inline char *put_bulk(char *p, const char *s, size_t len)
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

static inline size_t bulk_len(size_t len)
{
    return 1 + decimal_len(len) + 2 + len + 2;
}

size_t aof_set_record_len(size_t key_len, size_t val_len)
{
    return 13 + bulk_len(key_len) + bulk_len(val_len);
}

int aof_append_set(hdb_buf *b, const char *key, size_t key_len,
                   const char *val, size_t val_len)
{
    size_t n = aof_set_record_len(key_len, val_len);
    if (n > b->cap - b->len && hdb_buf_reserve(b, n) != 0)
        return -1;
    char *p = b->data + b->len;
    memcpy(p, "*3\r\n$3\r\nSET\r\n", 13);
    p = put_bulk(p + 13, key, key_len);
    put_bulk(p, val, val_len);
    b->len += n;
    return 0;
}

/* "$4\r\nPXAT\r\n", then the time as a bulk string */
#define PXAT_WORD_LEN 10

size_t aof_set_px_record_len(size_t key_len, size_t val_len, int64_t expire_ms)
{
    size_t n = aof_set_record_len(key_len, val_len);
    if (expire_ms > 0)
        n += PXAT_WORD_LEN + bulk_len(decimal_len((uint64_t)expire_ms));
    return n;
}

/* A time as a bulk string of its decimal digits. */
static char *put_time_bulk(char *p, int64_t ms)
{
    char digits[24];
    size_t n = (size_t)(put_decimal(digits, (uint64_t)ms) - digits);
    return put_bulk(p, digits, n);
}

int aof_append_set_px(hdb_buf *b, const char *key, size_t key_len,
                      const char *val, size_t val_len, int64_t expire_ms)
{
    if (expire_ms <= 0)
        return aof_append_set(b, key, key_len, val, val_len);
    size_t n = aof_set_px_record_len(key_len, val_len, expire_ms);
    if (hdb_buf_reserve(b, n) != 0)
        return -1;
    char *p = b->data + b->len;
    memcpy(p, "*5\r\n$3\r\nSET\r\n", 13);
    p = put_bulk(p + 13, key, key_len);
    p = put_bulk(p, val, val_len);
    memcpy(p, "$4\r\nPXAT\r\n", PXAT_WORD_LEN);
    put_time_bulk(p + PXAT_WORD_LEN, expire_ms);
    b->len += n;
    return 0;
}

int aof_append_pexpireat(hdb_buf *b, const char *key, size_t key_len, int64_t expire_ms)
{
    size_t n = 19 + bulk_len(key_len) + bulk_len(decimal_len((uint64_t)expire_ms));
    if (hdb_buf_reserve(b, n) != 0)
        return -1;
    char *p = b->data + b->len;
    memcpy(p, "*3\r\n$9\r\nPEXPIREAT\r\n", 19);
    p = put_bulk(p + 19, key, key_len);
    put_time_bulk(p, expire_ms);
    b->len += n;
    return 0;
}

/* Appends a command of one argument, the key: `head` is the array's and
 * the command's own framing ("*2\r\n$3\r\nDEL\r\n"). */
static int append_key_command(hdb_buf *b, const char *head, size_t head_len, const char *key,
                              size_t key_len)
{
    size_t n = head_len + bulk_len(key_len);
    if (hdb_buf_reserve(b, n) != 0)
        return -1;
    char *p = b->data + b->len;
    memcpy(p, head, head_len);
    put_bulk(p + head_len, key, key_len);
    b->len += n;
    return 0;
}

int aof_append_persist(hdb_buf *b, const char *key, size_t key_len)
{
    return append_key_command(b, "*2\r\n$7\r\nPERSIST\r\n", 17, key, key_len);
}

int aof_append_flushall(hdb_buf *b)
{
    if (hdb_buf_reserve(b, 18) != 0)
        return -1;
    memcpy(b->data + b->len, "*1\r\n$8\r\nFLUSHALL\r\n", 18);
    b->len += 18;
    return 0;
}

int aof_append_del(hdb_buf *b, const char *key, size_t key_len)
{
    return append_key_command(b, "*2\r\n$3\r\nDEL\r\n", 13, key, key_len);
}

#define CODEC_FIELD " codec "
#define CODEC_FIELD_LEN (sizeof(CODEC_FIELD) - 1)

static int is_codec_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-' || ch == '+';
}

int aof_codec_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > AOF_CODEC_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!is_codec_char(name[i]))
            return 0;
    }
    return 1;
}

int aof_codec_is_json(const char *codec)
{
    return codec == NULL || codec[0] == '\0' || strcmp(codec, "json") == 0;
}

size_t aof_header_len(const char *codec)
{
    return AOF_HEADER_LEN + (aof_codec_is_json(codec) ? 0 : CODEC_FIELD_LEN + strlen(codec) + 1 + 8);
}

size_t aof_format_header(char *out, const uint64_t key[2], const char *codec, int expiry)
{
    char *p = out;
    int with_codec = !aof_codec_is_json(codec);
    memcpy(p, expiry ? HEADER_V4_PREFIX : with_codec ? HEADER_V3_PREFIX : HEADER_V2_PREFIX,
           HEADER_V2_PREFIX_LEN);
    p += HEADER_V2_PREFIX_LEN;
    p = put_hex(p, key[0], 16);
    p = put_hex(p, key[1], 16);
    *p++ = ' ';
    p = put_hex(p, crc32c_update(0, out + HEADER_V2_PREFIX_LEN, 32), 8);
    if (with_codec) {
        size_t n = strlen(codec);
        memcpy(p, CODEC_FIELD, CODEC_FIELD_LEN);
        p += CODEC_FIELD_LEN;
        memcpy(p, codec, n);
        p += n;
        *p++ = ' ';
        p = put_hex(p, crc32c_update(0, codec, n), 8);
    }
    *p++ = '\r';
    *p++ = '\n';
    *p = '\0';
    return (size_t)(p - out);
}

static void put_le(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* The tag of a batch's line: a keyed hash (a MAC) of what the line says, so
 * that only a writer holding the file's key can produce a line that passes. */
static uint64_t begin_tag(const uint64_t key[2], uint64_t seq, uint64_t len, uint32_t crc)
{
    unsigned char msg[20];
    put_le(msg, seq, 8);
    put_le(msg + 8, len, 8);
    put_le(msg + 16, crc, 4);
    return siphash24(key, msg, sizeof msg);
}

size_t aof_format_begin(char *out, const uint64_t key[2], uint64_t seq,
                        const char *records, size_t len)
{
    uint32_t crc = crc32c_update(0, records, len);
    char *p = out;
    memcpy(p, BEGIN_PREFIX, BEGIN_PREFIX_LEN);
    p += BEGIN_PREFIX_LEN;
    p = put_decimal(p, seq);
    *p++ = ' ';
    p = put_decimal(p, len);
    *p++ = ' ';
    p = put_hex(p, crc, 8);
    *p++ = ' ';
    p = put_hex(p, begin_tag(key, seq, len, crc), 16);
    *p++ = '\r';
    *p++ = '\n';
    return (size_t)(p - out);
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
 * followed by the byte `term`, which is consumed. */
static int parse_decimal(aof_cursor *c, uint64_t max, char term, uint64_t *out)
{
    size_t p = c->pos, digits = 0;
    uint64_t v = 0;
    while (have(c, p, 1) && c->data[p] >= '0' && c->data[p] <= '9') {
        if (digits > 0 && v == 0)
            return -1;
        uint64_t d = (uint64_t)(c->data[p] - '0');
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
        digits++;
        p++;
    }
    if (!have(c, p, 1) || digits == 0 || c->data[p] != term)
        return -1;
    c->pos = p + 1;
    *out = v;
    return 0;
}

static int parse_crlf(aof_cursor *c)
{
    if (!have(c, c->pos, 1) || c->data[c->pos] != '\r')
        return -1;
    if (!have(c, c->pos + 1, 1) || c->data[c->pos + 1] != '\n')
        return -1;
    c->pos += 2;
    return 0;
}

static int parse_hex(aof_cursor *c, int digits, uint64_t *out)
{
    uint64_t x = 0;
    for (int i = 0; i < digits; i++) {
        if (!have(c, c->pos, 1))
            return -1;
        int d = hex_value(c->data[c->pos]);
        if (d < 0)
            return -1;
        x = x << 4 | (uint64_t)d;
        c->pos++;
    }
    *out = x;
    return 0;
}

static int parse_literal(aof_cursor *c, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!have(c, c->pos, 1) || c->data[c->pos] != lit[i])
            return -1;
        c->pos++;
    }
    return 0;
}

static int parse_bulk(aof_cursor *c, const char **s, size_t *len)
{
    uint64_t n;
    if (parse_literal(c, "$", 1) != 0 || parse_decimal(c, HDB_MAX_ITEM_LEN, '\r', &n) != 0)
        return -1;
    if (!have(c, c->pos, 1) || c->data[c->pos] != '\n')
        return -1;
    c->pos++;
    if (!have(c, c->pos, n + 2))
        return -1;
    *s = c->data + c->pos;
    *len = (size_t)n;
    if (c->data[c->pos + n] != '\r' || c->data[c->pos + n + 1] != '\n')
        return -1;
    c->pos += n + 2;
    return 0;
}

/* Parses a bulk string holding a time in Unix ms: decimal digits, no
 * leading zero, 1 to AOF_EXPIRE_MAX_MS. */
static int parse_time_bulk(aof_cursor *c, int64_t *ms)
{
    const char *s;
    size_t len;
    if (parse_bulk(c, &s, &len) != 0 || len == 0 || len > 16 || s[0] == '0')
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > (uint64_t)AOF_EXPIRE_MAX_MS)
        return -1;
    *ms = (int64_t)v;
    return 0;
}

/* Parses one command at c->pos: exactly what the aof_append_* functions
 * write, in their argument counts and spelling. */
static int parse_record(aof_cursor *c, aof_record *r)
{
    uint64_t argc;
    size_t cmd_len;
    const char *cmd;
    if (parse_literal(c, "*", 1) != 0 || parse_decimal(c, 5, '\r', &argc) != 0)
        return -1;
    if (!have(c, c->pos, 1) || c->data[c->pos] != '\n')
        return -1;
    c->pos++;
    if (parse_bulk(c, &cmd, &cmd_len) != 0)
        return -1;
    r->key = r->val = NULL;
    r->key_len = r->val_len = 0;
    r->expire_ms = 0;
    if (cmd_len == 3 && memcmp(cmd, "SET", 3) == 0 && (argc == 3 || argc == 5)) {
        r->kind = AOF_SET;
        if (parse_bulk(c, &r->key, &r->key_len) != 0 || parse_bulk(c, &r->val, &r->val_len) != 0)
            return -1;
        if (argc == 5 && (parse_literal(c, "$4\r\nPXAT\r\n", PXAT_WORD_LEN) != 0 ||
                          parse_time_bulk(c, &r->expire_ms) != 0))
            return -1;
        return 0;
    }
    if (cmd_len == 3 && memcmp(cmd, "DEL", 3) == 0 && argc == 2)
        r->kind = AOF_DEL;
    else if (cmd_len == 9 && memcmp(cmd, "PEXPIREAT", 9) == 0 && argc == 3)
        r->kind = AOF_PEXPIREAT;
    else if (cmd_len == 7 && memcmp(cmd, "PERSIST", 7) == 0 && argc == 2)
        r->kind = AOF_PERSIST;
    else if (cmd_len == 8 && memcmp(cmd, "FLUSHALL", 8) == 0 && argc == 1)
        r->kind = AOF_FLUSHALL;
    else
        return -1;
    if (argc >= 2 && parse_bulk(c, &r->key, &r->key_len) != 0)
        return -1;
    if (r->kind == AOF_PEXPIREAT && parse_time_bulk(c, &r->expire_ms) != 0)
        return -1;
    return 0;
}

/* Checks that [from, to) is made of whole records and counts the SETs
 * among them. Returns 0, or -1 if a record does not parse (*bad_at says
 * where). */
static int check_records(const char *data, size_t from, size_t to, uint64_t *sets,
                         size_t *bad_at)
{
    aof_cursor c = {data, to, from, 0};
    aof_record r;
    uint64_t n = 0;
    while (c.pos < to) {
        *bad_at = c.pos;
        if (parse_record(&c, &r) != 0)
            return -1;
        n += (uint64_t)(r.kind == AOF_SET);
    }
    *sets += n;
    return 0;
}

/* Reads a bulk length that check_records has already accepted: digits, then
 * CRLF. */
static inline size_t checked_decimal(const char *data, size_t *pos)
{
    size_t p = *pos, v = 0;
    while (data[p] != '\r')
        v = v * 10 + (size_t)(data[p++] - '0');
    *pos = p + 2;
    return v;
}

/* Replays the records of [from, to), a stretch the check has accepted whole:
 * at every record boundary there is either a record ('*') or a line of the
 * format ('#': the header, a batch's line, a version-1 trailer), which ends
 * at its first LF. So this walk needs no bounds checks and finds no framing
 * in content: a record is stepped over by the lengths it gives. Records go
 * to the replay in groups. Returns 0, or -1 if the replay failed (*at says
 * where). */
static int replay_checked(const char *data, size_t from, size_t to, const aof_replay *replay,
                          uint64_t *records, size_t *at)
{
    aof_record group[AOF_REPLAY_GROUP];
    size_t offsets[AOF_REPLAY_GROUP];
    size_t n = 0, p = from;
    for (;;) {
        if (p < to && data[p] == '#') {
            const char *lf = memchr(data + p, '\n', to - p);
            p = (size_t)(lf - data) + 1;
            continue;
        }
        if (n == AOF_REPLAY_GROUP || (p >= to && n > 0)) {
            size_t done = replay->apply(replay->ud, group, n);
            *records += done;
            if (done < n) {
                *at = offsets[done];
                return -1;
            }
            n = 0;
        }
        if (p >= to)
            return 0;
        aof_record *r = &group[n];
        offsets[n++] = p;
        /* "*<argc>\r\n$<n>\r\n<command>\r\n": every argument count and
         * command length the check accepts is one digit. */
        char argc = data[p + 1];
        size_t cmd_len = (size_t)(data[p + 5] - '0');
        char cmd = data[p + 8];
        p += 8 + cmd_len + 2;
        r->kind = cmd_len == 3 ? (cmd == 'S' ? AOF_SET : AOF_DEL)
                : cmd_len == 9 ? AOF_PEXPIREAT
                : cmd_len == 7 ? AOF_PERSIST : AOF_FLUSHALL;
        r->key = r->val = NULL;
        r->key_len = r->val_len = 0;
        r->expire_ms = 0;
        if (r->kind == AOF_FLUSHALL)
            continue;
        p++; /* '$' */
        r->key_len = checked_decimal(data, &p);
        r->key = data + p;
        p += r->key_len + 2;
        if (r->kind == AOF_SET) {
            p++;
            r->val_len = checked_decimal(data, &p);
            r->val = data + p;
            p += r->val_len + 2;
        }
        if (argc == '5' || r->kind == AOF_PEXPIREAT) {
            if (argc == '5')
                p += PXAT_WORD_LEN;
            p++;
            size_t len = checked_decimal(data, &p);
            int64_t ms = 0;
            for (size_t i = 0; i < len; i++)
                ms = ms * 10 + (data[p + i] - '0');
            r->expire_ms = ms;
            p += len + 2;
        }
    }
}

/* A file that ends before its first line does, whose bytes all fit a
 * header's pattern and that holds at least "#hurrahdb aof " (so that it is
 * surely hurrahdb's: a shorter file, even "#", is refused, never written), is
 * one whose creation was cut short. */
static int is_header_prefix(const char *data, size_t len)
{
    static const char v1[] = HEADER_V1;
    if (len < HEADER_PREFIX_LEN)
        return 0;
    if (len < HEADER_V1_LEN && memcmp(data, v1, len) == 0)
        return 1;
    if (len >= AOF_HEADER_MAX)
        return 0;
    size_t fixed = len < HEADER_V2_PREFIX_LEN ? len : HEADER_V2_PREFIX_LEN;
    if (memcmp(data, HEADER_V2_PREFIX, fixed) != 0 && memcmp(data, HEADER_V3_PREFIX, fixed) != 0 &&
        memcmp(data, HEADER_V4_PREFIX, fixed) != 0)
        return 0;
    size_t i = HEADER_V2_PREFIX_LEN;
    for (; i < len && i < HEADER_V2_PREFIX_LEN + 41; i++) {
        size_t at = i - HEADER_V2_PREFIX_LEN; /* 32 hex, ' ', 8 hex */
        int ok = at == 32 ? data[i] == ' ' : hex_value(data[i]) >= 0;
        if (!ok)
            return 0;
    }
    if (i < len && data[i] == ' ') {
        /* " codec " name " " 8 hex */
        for (size_t j = 0; j < CODEC_FIELD_LEN && i < len; j++, i++) {
            if (data[i] != CODEC_FIELD[j])
                return 0;
        }
        size_t name = 0;
        while (i < len && is_codec_char(data[i]) && name < AOF_CODEC_NAME_MAX) {
            i++;
            name++;
        }
        if (i < len && (name == 0 || data[i++] != ' '))
            return 0;
        for (size_t digits = 0; i < len && digits < 8; i++, digits++) {
            if (hex_value(data[i]) < 0)
                return 0;
        }
    }
    for (size_t j = 0; i < len; i++, j++) {
        if (j >= 2 || data[i] != "\r\n"[j])
            return 0;
    }
    /* A whole line is a header, whole or damaged, not a cut one. */
    return len < 2 || data[len - 2] != '\r' || data[len - 1] != '\n';
}

/* Reads the header; sets res->version (and the key) and returns the
 * header's length, or 0 with the status in *rc and err filled. */
/* Parses a version-2 header line at the start of data, ended by `eol`
 * ("\r\n", or "\n" to recognise a file whose line endings were converted).
 * Returns its length, or 0. */
static size_t parse_v2_header(const char *data, size_t len, const char *eol, uint64_t key[2],
                              char codec[AOF_CODEC_NAME_MAX + 1])
{
    aof_cursor c = {data, len, HEADER_V2_PREFIX_LEN, 0};
    uint64_t check;
    codec[0] = '\0';
    if (len < HEADER_V2_PREFIX_LEN)
        return 0;
    int v3 = memcmp(data, HEADER_V3_PREFIX, HEADER_V2_PREFIX_LEN) == 0;
    int v4 = memcmp(data, HEADER_V4_PREFIX, HEADER_V2_PREFIX_LEN) == 0;
    if ((!v3 && !v4 && memcmp(data, HEADER_V2_PREFIX, HEADER_V2_PREFIX_LEN) != 0) ||
        parse_hex(&c, 16, &key[0]) != 0 || parse_hex(&c, 16, &key[1]) != 0 ||
        parse_literal(&c, " ", 1) != 0 || parse_hex(&c, 8, &check) != 0 ||
        crc32c_update(0, data + HEADER_V2_PREFIX_LEN, 32) != (uint32_t)check)
        return 0;
    if (len - c.pos >= CODEC_FIELD_LEN && memcmp(data + c.pos, CODEC_FIELD, CODEC_FIELD_LEN) == 0) {
        size_t start = c.pos + CODEC_FIELD_LEN, end = start;
        while (end < len && end - start <= AOF_CODEC_NAME_MAX && is_codec_char(data[end]))
            end++;
        size_t n = end - start;
        c.pos = end;
        if (!aof_codec_name_valid(data + start, n) || parse_literal(&c, " ", 1) != 0 ||
            parse_hex(&c, 8, &check) != 0 || crc32c_update(0, data + start, n) != (uint32_t)check)
            return 0;
        memcpy(codec, data + start, n);
        codec[n] = '\0';
        if (aof_codec_is_json(codec))
            return 0; /* JSON is written without a name: this one was not written by us */
    }
    if (!v4 && v3 != (codec[0] != '\0'))
        return 0; /* the field, and only it, makes a version-3 header */
    if (parse_literal(&c, eol, strlen(eol)) != 0)
        return 0;
    return c.pos;
}

static size_t parse_header(const char *data, size_t len, aof_load_result *res, int *rc,
                           hdb_err *err)
{
    if (len < HEADER_PREFIX_LEN || memcmp(data, HEADER_PREFIX, HEADER_PREFIX_LEN) != 0) {
        hdb_fail(err, HDB_CODE_DAMAGED,
                 "not a hurrahdb AOF (no '#hurrahdb aof' header at offset 0)");
        *rc = AOF_LOAD_NOT_AOF;
        return 0;
    }
    if (len >= HEADER_V1_LEN && memcmp(data, HEADER_V1, HEADER_V1_LEN) == 0) {
        res->version = 1;
        return HEADER_V1_LEN;
    }
    size_t n = parse_v2_header(data, len, "\r\n", res->key, res->codec);
    if (n > 0) {
        res->version = data[AOF_VERSION_OFFSET] == '4' ? 4 : res->codec[0] != '\0' ? 3 : 2;
        return n;
    }
    uint64_t ignored[2];
    char ignored_codec[AOF_CODEC_NAME_MAX + 1];
    int converted = parse_v2_header(data, len, "\n", ignored, ignored_codec) > 0 ||
                    (len >= HEADER_V1_LEN - 1 && memcmp(data, "#hurrahdb aof 1\n", HEADER_V1_LEN - 1) == 0);
    *rc = AOF_LOAD_VERSION;
    if (converted) {
        hdb_fail(err, HDB_CODE_DAMAGED, "a hurrahdb AOF of version %c whose line endings were "
                 "converted from CRLF to LF (by a text-mode copy, a git checkout or an editor): "
                 "its records and checksums no longer match; restore a byte-for-byte copy",
                 data[HEADER_PREFIX_LEN]);
        return 0;
    }
    if (len >= HEADER_V2_PREFIX_LEN && (memcmp(data, HEADER_V2_PREFIX, HEADER_V2_PREFIX_LEN) == 0 ||
                                        memcmp(data, HEADER_V3_PREFIX, HEADER_V2_PREFIX_LEN) == 0 ||
                                        memcmp(data, HEADER_V4_PREFIX, HEADER_V2_PREFIX_LEN) == 0)) {
        /* Without the key no batch can be checked: nothing after the
         * header can be trusted, nor taken for a torn tail. */
        *rc = AOF_LOAD_DAMAGED;
        res->damage_at = 0;
        hdb_fail(err, HDB_CODE_DAMAGED, "damaged header at offset 0 (its key does not match "
                 "its checksum, so no batch of the file can be checked)");
        return 0;
    }
    size_t v = HEADER_PREFIX_LEN, digits = 0;
    unsigned long version = 0;
    while (v < len && digits < 6 && data[v] >= '0' && data[v] <= '9') {
        version = version * 10 + (unsigned long)(data[v] - '0');
        v++;
        digits++;
    }
    if (digits > 0 && version > NEWEST_VERSION && v < len && (data[v] == ' ' || data[v] == '\r'))
        hdb_fail(err, HDB_CODE_DAMAGED, "made by a newer hurrahdb (file format version %lu; "
                 "this build reads versions 1 to %d)", version, NEWEST_VERSION);
    else
        hdb_fail(err, HDB_CODE_DAMAGED, "a hurrahdb AOF header this build cannot read (it "
                 "reads format versions 1 to %d)", NEWEST_VERSION);
    return 0;
}

typedef struct aof_begin {
    uint64_t seq, len;
    uint32_t crc;
    size_t line_len;
} aof_begin;

/* Parses a batch's line at pos. Returns 1 if it is well formed and its tag
 * is right, 0 if the data ends inside what is so far a well-formed line, -1
 * otherwise. Reads at most AOF_BEGIN_MAX bytes. */
static int parse_begin(const char *data, size_t len, size_t pos, const uint64_t key[2],
                       aof_begin *b)
{
    aof_cursor c = {data, len, pos, 0};
    uint64_t crc, tag;
    if (parse_literal(&c, BEGIN_PREFIX, BEGIN_PREFIX_LEN) != 0 ||
        parse_decimal(&c, UINT64_MAX, ' ', &b->seq) != 0 ||
        parse_decimal(&c, SIZE_MAX / 2, ' ', &b->len) != 0 ||
        parse_hex(&c, 8, &crc) != 0 || parse_literal(&c, " ", 1) != 0 ||
        parse_hex(&c, 16, &tag) != 0 || parse_crlf(&c) != 0)
        return c.hit_end ? 0 : -1;
    b->crc = (uint32_t)crc;
    b->line_len = c.pos - pos;
    return begin_tag(key, b->seq, b->len, b->crc) == tag ? 1 : -1;
}

/* True if a batch line of this file (its tag right) starts anywhere after
 * `from`. Any '#' is tried, not only those at a line start, since the byte
 * before a line may be the damaged one. Each candidate costs at most one
 * line's parse (AOF_BEGIN_MAX bytes) and one tag, so the search is linear in
 * the bytes searched. */
static int genuine_line_follows(const char *data, size_t len, size_t from, const uint64_t key[2])
{
    size_t p = from;
    while (p < len) {
        const char *hash = memchr(data + p, '#', len - p);
        if (hash == NULL)
            return 0;
        p = (size_t)(hash - data);
        aof_begin b;
        if (parse_begin(data, len, p, key, &b) == 1)
            return 1;
        p++;
    }
    return 0;
}

/* Checks the batches of a version-2 file from pos on: sets good_len,
 * batches, next_seq, set_records and the tail, or returns AOF_LOAD_DAMAGED.
 * Replays nothing. */
static int check_v2(const char *data, size_t len, size_t pos, aof_load_result *res,
                    hdb_err *err)
{
    uint64_t expect = 1;
    res->good_len = pos;
    while (pos < len) {
        aof_begin b;
        int line = parse_begin(data, len, pos, res->key, &b);
        if (line == 0) {
            res->tail = AOF_TAIL_TORN;
            snprintf(res->why, sizeof res->why, "the file ends inside the line of a batch");
            break;
        }
        size_t start = pos + b.line_len, bad_at = pos;
        if (line < 0) {
            snprintf(res->why, sizeof res->why, "no valid batch line at offset %zu", pos);
        } else if (b.seq != expect) {
            /* A line this file's writer wrote, in the wrong place: a batch
             * is missing, repeated or out of order. Never a crash's doing. */
            res->damage_at = pos;
            hdb_fail(err, HDB_CODE_DAMAGED, "batch at offset %zu is number %" PRIu64
                     ", expected %" PRIu64 ": a batch is missing, repeated or out of order",
                     pos, b.seq, expect);
            return AOF_LOAD_DAMAGED;
        } else if (b.len > len - start) {
            res->tail = AOF_TAIL_TORN;
            snprintf(res->why, sizeof res->why, "the last batch (%" PRIu64 " bytes) is cut short "
                     "after %zu bytes", b.len, len - start);
            break;
        } else if (b.len == 0) {
            snprintf(res->why, sizeof res->why, "empty batch at offset %zu", pos);
        } else if (crc32c_update(0, data + start, (size_t)b.len) != b.crc) {
            snprintf(res->why, sizeof res->why, "checksum mismatch in batch at offset %zu "
                     "(%" PRIu64 " bytes)", pos, b.len);
        } else if (check_records(data, start, start + (size_t)b.len, &res->set_records,
                                 &bad_at) == 0) {
            pos = start + (size_t)b.len;
            res->good_len = pos;
            res->batches++;
            res->next_seq = ++expect;
            continue;
        } else {
            snprintf(res->why, sizeof res->why, "damaged record at offset %zu (batch at offset "
                     "%zu)", bad_at, pos);
        }
        /* The batch at pos is bad. */
        if (genuine_line_follows(data, len, pos + 1, res->key)) {
            res->damage_at = pos;
            hdb_fail(err, HDB_CODE_DAMAGED, "%s, followed by good batches", res->why);
            return AOF_LOAD_DAMAGED;
        }
        res->tail = AOF_TAIL_BAD;
        break;
    }
    if (res->tail != AOF_TAIL_NONE)
        res->tail_bytes = len - res->good_len;
    return AOF_LOAD_OK;
}

/* Parses a version-1 batch trailer at c->pos. */
static int parse_v1_trailer(aof_cursor *c, uint64_t *batch_len, uint32_t *crc)
{
    uint64_t x;
    if (parse_literal(c, V1_TRAILER_PREFIX, V1_TRAILER_PREFIX_LEN) != 0 ||
        parse_decimal(c, SIZE_MAX / 2, ' ', batch_len) != 0 || parse_hex(c, 8, &x) != 0 ||
        parse_crlf(c) != 0)
        return -1;
    *crc = (uint32_t)x;
    return 0;
}

/* The same for a version-1 file (records, then a trailer line). */
static int check_v1(const char *data, size_t len, size_t pos, aof_load_result *res)
{
    res->good_len = pos;
    while (pos < len) {
        aof_cursor c = {data, len, pos, 0};
        aof_record r;
        size_t at = pos;
        uint64_t sets = 0;
        int bad = 0;
        while (c.pos < len && data[c.pos] == '*') {
            at = c.pos;
            if (parse_record(&c, &r) != 0) {
                bad = 1;
                break;
            }
            sets += (uint64_t)(r.kind == AOF_SET);
        }
        size_t batch_end = c.pos;
        uint64_t batch_len = 0;
        uint32_t crc = 0;
        if (!bad && (c.pos >= len || parse_v1_trailer(&c, &batch_len, &crc) != 0)) {
            at = batch_end;
            bad = 1;
        }
        if (!bad && (batch_len != batch_end - pos || batch_len == 0 ||
                     crc32c_update(0, data + pos, (size_t)batch_len) != crc))
            bad = 2;
        if (bad) {
            if (bad == 2)
                snprintf(res->why, sizeof res->why, "checksum mismatch in batch at offset %zu "
                         "(%zu bytes)", pos, batch_end - pos);
            else
                snprintf(res->why, sizeof res->why, "damaged or incomplete record at offset %zu "
                         "(batch at offset %zu)", at, pos);
            res->tail = AOF_TAIL_BAD;
            res->tail_bytes = len - pos;
            return AOF_LOAD_OK;
        }
        res->set_records += sets;
        res->batches++;
        pos = c.pos;
        res->good_len = pos;
    }
    return AOF_LOAD_OK;
}

int aof_load(const char *data, size_t len, const aof_replay *replay,
             aof_load_result *res, hdb_err *err)
{
    memset(res, 0, sizeof *res);
    res->next_seq = 1;
    if (len == 0)
        return AOF_LOAD_OK;
    if (is_header_prefix(data, len)) {
        /* A crash while the header of a new file was being written. */
        res->tail = AOF_TAIL_TORN_HEADER;
        res->tail_bytes = len;
        return AOF_LOAD_OK;
    }
    int rc = AOF_LOAD_OK;
    size_t header_len = parse_header(data, len, res, &rc, err);
    if (header_len == 0)
        return rc;
    const char *want = aof_codec_is_json(replay->codec) ? "" : replay->codec;
    if (!replay->any_codec && strcmp(res->codec, want) != 0) {
        hdb_fail(err, HDB_CODE_CODEC, "the file was written with codec '%s'%s; open it with "
                 "%s (option codec)", res->codec[0] ? res->codec : "json",
                 res->codec[0] ? "" : " (its values are JSON)",
                 res->codec[0] ? "the codec of that name" : "\"json\", \"cjson\" or a codec "
                 "table named \"json\"");
        return AOF_LOAD_CODEC;
    }
    /* The whole file is checked before anything is replayed: the replay then
     * knows how many SETs it will see (the table is sized once, never
     * rehashed during the load), and replays only what the check accepted. */
    rc = res->version == 1 ? check_v1(data, len, header_len, res)
                           : check_v2(data, len, header_len, res, err);
    if (replay->reserve != NULL)
        replay->reserve(replay->ud, res->set_records);
    size_t at = 0;
    if (replay_checked(data, header_len, res->good_len, replay, &res->records, &at) != 0) {
        hdb_fail(err, HDB_CODE_NO_MEMORY, "out of memory replaying the record at offset %zu", at);
        return AOF_LOAD_NOMEM;
    }
    return rc;
}
