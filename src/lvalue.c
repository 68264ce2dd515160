#include "lvalue.h"
#include "hdb_dtoa.h"

#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ------------------------------------------------------------------ */
/* Numbers in the "C" locale                                           */
/* ------------------------------------------------------------------ */

/* JSON numbers have a '.' whatever the program's locale says, but printf and
 * strtod follow LC_NUMERIC, whose decimal point may be ',' or several bytes
 * (U+066B in ps_AF). So both run with the calling thread switched to a "C"
 * locale object: uselocale() acts on this thread only and is undone before
 * the codec returns, so neither the program's setlocale() nor other threads
 * see anything, and the cost is a few stores per number, none per digit.
 * The object is made once per process and never changes after that, which is
 * why it may be shared by every store and thread. */
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static locale_t c_locale = (locale_t)0;

static void c_locale_make(void)
{
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

/* Switches this thread to the "C" locale. Returns the locale to hand back to
 * c_locale_leave() afterwards, or (locale_t)0 (nothing switched) when the "C"
 * locale could not be made. No Lua call may come before the switch back: a
 * Lua error would jump past it and leave the thread in the "C" locale. */
static locale_t c_locale_enter(void)
{
    if (pthread_once(&c_locale_once, c_locale_make) != 0 || c_locale == (locale_t)0)
        return (locale_t)0;
    return uselocale(c_locale);
}

/* Gives this thread back the locale c_locale_enter returned. That locale came
 * from uselocale() itself, so switching back to it cannot fail. */
static void c_locale_leave(locale_t prev)
{
    (void)uselocale(prev);
}

/* ------------------------------------------------------------------ */
/* Encoding                                                            */
/* ------------------------------------------------------------------ */

/* One step of the path from the root to the value being encoded: an object
 * key (still on the Lua stack while it is in use) or an array index. */
typedef struct path_step {
    const char *key;    /* NULL for an array index */
    size_t key_len;
    size_t index;
} path_step;

typedef struct enc_ctx {
    lua_State *L;
    hdb_buf *out;
    size_t max_len; /* limit on the value's text */
    size_t end;     /* out->len may not pass this: the value's start + max_len */
    size_t stop;    /* the smaller of out->cap and end: one compare per byte
                     * tells whether the buffer must grow or the value is
                     * too long */
    char *err;
    size_t errlen;
    int status;     /* what lvalue_encode returns once a step failed */
    int depth;
    const void *open_tables[LVALUE_MAX_DEPTH + 1]; /* ancestors, for cycles */
    path_step path[LVALUE_MAX_DEPTH + 1];
} enc_ctx;

static int is_ident_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_ident_char(unsigned char c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9');
}

/* Appends printf output to a bounded string, tracking the used length. */
static void str_addf(char *dst, size_t cap, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void str_addf(char *dst, size_t cap, size_t *used, const char *fmt, ...)
{
    if (*used >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst + *used, cap - *used, fmt, ap);
    va_end(ap);
    if (n > 0)
        *used = *used + (size_t)n < cap ? *used + (size_t)n : cap - 1;
}

/* Renders the current path like "$.a[\"odd key\"][3]" into buf. Long keys
 * and deep paths are shortened: the message must stay readable. */
static void enc_format_path(const enc_ctx *c, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    str_addf(buf, cap, &used, "$");
    for (int i = 0; i < c->depth; i++) {
        const path_step *p = &c->path[i];
        if (used > cap - 16) {
            str_addf(buf, cap, &used, "...");
            break;
        }
        if (p->key == NULL && p->index == 0)
            continue; /* a table not yet into its first item ("value too long" at its '{') */
        if (p->key == NULL) {
            str_addf(buf, cap, &used, "[%zu]", p->index);
            continue;
        }
        int ident = p->key_len > 0 && p->key_len <= 40 &&
                    is_ident_start((unsigned char)p->key[0]);
        for (size_t k = 1; ident && k < p->key_len; k++)
            ident = is_ident_char((unsigned char)p->key[k]);
        if (ident) {
            str_addf(buf, cap, &used, ".%.*s", (int)p->key_len, p->key);
            continue;
        }
        str_addf(buf, cap, &used, "[\"");
        size_t shown = p->key_len > 40 ? 40 : p->key_len;
        for (size_t k = 0; k < shown; k++) {
            unsigned char ch = (unsigned char)p->key[k];
            if (ch == '"' || ch == '\\')
                str_addf(buf, cap, &used, "\\%c", ch);
            else if (ch < 0x20 || ch >= 0x7f)
                str_addf(buf, cap, &used, "\\x%02x", ch);
            else
                str_addf(buf, cap, &used, "%c", ch);
        }
        str_addf(buf, cap, &used, "%s\"]", p->key_len > shown ? "..." : "");
    }
}

/* Fills the error as "cannot store <what> at <path><detail>". */
static int enc_fail(enc_ctx *c, const char *what, const char *detail)
{
    char path[200];
    enc_format_path(c, path, sizeof path);
    snprintf(c->err, c->errlen, "cannot store %s at %s%s", what, path,
             detail ? detail : "");
    c->status = LVALUE_REFUSED;
    return -1;
}

static int enc_nomem(enc_ctx *c)
{
    snprintf(c->err, c->errlen, "out of memory encoding the value");
    c->status = LVALUE_NO_MEMORY;
    return -1;
}

static int enc_too_long(enc_ctx *c)
{
    char path[200];
    enc_format_path(c, path, sizeof path);
    snprintf(c->err, c->errlen, "value too long (its JSON text passes the limit of %zu bytes at %s)",
             c->max_len, path);
    c->status = LVALUE_TOO_LONG;
    return -1;
}

/* Makes room for n more bytes. The limit is checked here, before the buffer
 * grows, and the buffer never grows past it: a value of any size costs at
 * most the limit in memory before it is refused. */
static int enc_reserve(enc_ctx *c, size_t n)
{
    if (n > c->end - c->out->len)
        return enc_too_long(c);
    if (hdb_buf_reserve_max(c->out, n, c->end) != 0)
        return enc_nomem(c);
    c->stop = c->out->cap < c->end ? c->out->cap : c->end;
    return 0;
}

static inline int enc_put(enc_ctx *c, const char *s, size_t n)
{
    if (n > c->stop - c->out->len && enc_reserve(c, n) != 0)
        return -1;
    memcpy(c->out->data + c->out->len, s, n);
    c->out->len += n;
    return 0;
}

static inline int enc_putc(enc_ctx *c, char ch)
{
    if (c->out->len == c->stop && enc_reserve(c, 1) != 0)
        return -1;
    c->out->data[c->out->len++] = ch;
    return 0;
}

/* Bytes that must be escaped inside a JSON string: the quote, the backslash
 * and the control characters. Every other byte, including invalid UTF-8, is
 * copied as is, so a Lua string of any bytes comes back unchanged. */
static inline int needs_escape(unsigned char ch)
{
    return ch < 0x20 || ch == '"' || ch == '\\';
}

/* The letter of the two-byte escape of a byte that needs one ('n' for
 * \n), or 0 for the control characters written as \u00XX. */
static char short_escape(unsigned char ch)
{
    switch (ch) {
    case '"': return '"';
    case '\\': return '\\';
    case '\b': return 'b';
    case '\f': return 'f';
    case '\n': return 'n';
    case '\r': return 'r';
    case '\t': return 't';
    default: return 0;
    }
}

/* Length of the escaped text of s without its quotes, counted only as far as
 * it takes to pass `bound`: any result above bound means "too long". */
static size_t escaped_len(const char *s, size_t len, size_t bound)
{
    size_t n = len;
    for (size_t i = 0; i < len && n <= bound; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (needs_escape(ch))
            n += short_escape(ch) ? 1 : 5;
    }
    return n;
}

/* True if one of the eight bytes of w is a control character, '"' or '\\'
 * (exact for the word as a whole, not byte by byte). */
static inline int word_needs_escape(uint64_t w)
{
    const uint64_t ones = UINT64_C(0x0101010101010101);
    const uint64_t highs = UINT64_C(0x8080808080808080);
    uint64_t control = (w - ones * 0x20) & ~w & highs;
    uint64_t quote = w ^ (ones * '"');
    uint64_t backslash = w ^ (ones * '\\');
    quote = (quote - ones) & ~quote & highs;
    backslash = (backslash - ones) & ~backslash & highs;
    return (control | quote | backslash) != 0;
}

/* Copies the longest prefix of s that needs no escape to out (which has room
 * for len bytes) and returns its length. Eight bytes at a time: each word is
 * stored before it is tested, so a plain string is copied by the same pass
 * that checks it; a word that holds a byte to escape is then redone byte by
 * byte, and what was stored past the prefix is overwritten by the caller. */
#if defined(__SSE2__)
/* A mask with a bit set for each of the 16 bytes of v that is a control
 * character, '"' or '\\'. */
static inline int sse_special_bytes(__m128i v)
{
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    const __m128i last_control = _mm_set1_epi8(0x1f);
    /* a byte is a control character when max(byte, 0x1f) is 0x1f */
    __m128i special = _mm_or_si128(
        _mm_cmpeq_epi8(_mm_max_epu8(v, last_control), last_control),
        _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)));
    return _mm_movemask_epi8(special);
}
#endif

static size_t copy_plain(char *out, const char *s, size_t len)
{
    size_t i = 0;
#if defined(__SSE2__)
    /* Sixteen bytes at a time where the processor has SSE2 (every x86-64):
     * a long string costs a few instructions per 16 bytes instead of per
     * byte. The same store-then-test as the words below. */
    for (; len - i >= 16; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        _mm_storeu_si128((__m128i *)(void *)(out + i), v);
        if (sse_special_bytes(v) != 0)
            break;
    }
#endif
    for (; len - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        memcpy(out + i, &w, 8);
        if (word_needs_escape(w))
            break;
    }
    while (i < len && !needs_escape((unsigned char)s[i])) {
        out[i] = s[i];
        i++;
    }
    return i;
}

/* Length of the longest prefix of s that needs no escape: copy_plain's
 * test without the copy, for the decoder, which looks for the end of a
 * string's plain run. */
static size_t plain_span(const char *s, size_t len)
{
    size_t i = 0;
#if defined(__SSE2__)
    for (; len - i >= 16; i += 16) {
        int mask = sse_special_bytes(_mm_loadu_si128((const __m128i *)(const void *)(s + i)));
        if (mask != 0)
            return i + (size_t)__builtin_ctz((unsigned)mask);
    }
#endif
    for (; len - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (word_needs_escape(w))
            break;
    }
    while (i < len && !needs_escape((unsigned char)s[i]))
        i++;
    return i;
}

static int enc_string(enc_ctx *c, const char *s, size_t len)
{
    /* The text is the bytes, up to 5 more per escaped byte, and the quotes.
     * Where the escapes could take it past the limit, its length is counted
     * first: a string too long is refused before any of it is copied (a
     * 100 MiB string of control characters would otherwise fill the buffer
     * to the limit first). The buffer is then sized once for the usual case
     * of few escapes. (A shift, not a division by 6, picks the strings to
     * count: a few more are counted, none is missed.) */
    size_t room = c->end - c->out->len;
    if (room < 2 || len > room - 2 ||
        (len > (room - 2) / 8 && escaped_len(s, len, room - 2) > room - 2))
        return enc_too_long(c);
    if (len + 2 > c->stop - c->out->len && enc_reserve(c, len + 2) != 0)
        return -1;
    char *out = c->out->data + c->out->len;
    out[0] = '"';
    /* Room for the bytes and both quotes is reserved: a string with nothing
     * to escape (the usual one) is copied in one piece. */
    size_t i = copy_plain(out + 1, s, len);
    if (i == len) {
        out[len + 1] = '"';
        c->out->len += len + 2;
        return 0;
    }
    c->out->len += 1 + i;
    while (i < len) {
        unsigned char ch = (unsigned char)s[i++];
        char esc[6] = {'\\', short_escape(ch), '0', '0', 0, 0};
        size_t n = 2;
        if (esc[1] == 0) {
            esc[1] = 'u';
            esc[4] = "0123456789abcdef"[ch >> 4];
            esc[5] = "0123456789abcdef"[ch & 0xF];
            n = 6;
        }
        if (enc_put(c, esc, n) != 0)
            return -1;
        /* The plain run after the escape, copied the same way, once there
         * is room for all that is left. */
        if (len - i > c->stop - c->out->len && enc_reserve(c, len - i) != 0)
            return -1;
        size_t run = copy_plain(c->out->data + c->out->len, s + i, len - i);
        c->out->len += run;
        i += run;
    }
    return enc_putc(c, '"');
}

/* Writes v in decimal; handles the most negative value without overflow. */
static size_t format_int64(char *buf, int64_t v)
{
    char tmp[24];
    size_t n = 0, len = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        buf[len++] = '-';
    while (n)
        buf[len++] = tmp[--n];
    buf[len] = '\0';
    return len;
}

size_t lvalue_format_integer(char *buf, int64_t v)
{
    return format_int64(buf, v);
}

int lvalue_integer_text(const char *text, size_t len, int64_t *v)
{
    size_t i = len > 0 && text[0] == '-';
    if (i == len || len - i > 19 || (text[i] == '0' && len - i > 1))
        return 0;
    uint64_t u = 0;
    for (size_t j = i; j < len; j++) {
        if (text[j] < '0' || text[j] > '9')
            return 0;
        u = u * 10 + (uint64_t)(text[j] - '0'); /* 19 digits fit in 64 bits */
    }
    if (i ? u > (uint64_t)INT64_MAX + 1 : u > (uint64_t)INT64_MAX)
        return 0;
    if (i && u == 0)
        return 0; /* "-0" is not what the encoder writes for an integer */
    *v = !i ? (int64_t)u : u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)u;
    return 1;
}

/* 2^53: below it every integer is exactly a double. */
#define EXACT_INT_LIMIT 9007199254740992.0

/* Formats a finite double with the fewest significant digits (15 to 17)
 * that read back as the same double, then makes sure the text still looks
 * like a float (has '.', 'e' or is "-0.0") so that it decodes as one.
 * `as_float` is 0 on a Lua without integers, where integral values are
 * written as plain integers. Returns the length written to buf (which has
 * room for 32 bytes), or 0 if there is no "C" locale to format it in. */
static size_t format_double(char *buf, double d, int as_float)
{
    size_t n;
    if (d == 0.0) {
        strcpy(buf, signbit(d) ? "-0.0" : (as_float ? "0.0" : "0"));
        return strlen(buf);
    }
    if (fabs(d) < EXACT_INT_LIMIT && d == (double)(int64_t)d) {
        n = format_int64(buf, (int64_t)d);
        if (as_float) {
            memcpy(buf + n, ".0", 3);
            n += 2;
        }
        return n;
    }
    n = dtoa_shortest_g(buf, d);
    if (n == 0) {
        /* Outside the range hdb_dtoa computes exactly: the same text from
         * printf, checked by strtod. */
        locale_t prev = c_locale_enter();
        if (prev == (locale_t)0)
            return 0;
        for (int prec = 15; prec <= 17; prec++) {
            n = (size_t)snprintf(buf, 32, "%.*g", prec, d);
            if (prec == 17 || strtod(buf, NULL) == d)
                break;
        }
        c_locale_leave(prev);
    }
    /* In the "C" locale the text is digits, '-', '.' and 'e+'/'e-' only. */
    if (memchr(buf, '.', n) == NULL && memchr(buf, 'e', n) == NULL) {
        memcpy(buf + n, ".0", 3);
        n += 2;
    }
    return n;
}

static int enc_number(enc_ctx *c, int idx)
{
    char buf[40];
    size_t n;
#if LCOMPAT_HAS_INTEGERS
    if (lua_isinteger(c->L, idx)) {
        n = format_int64(buf, (int64_t)lua_tointeger(c->L, idx));
        return enc_put(c, buf, n);
    }
#endif
    double d = (double)lua_tonumber(c->L, idx);
    if (isnan(d))
        return enc_fail(c, "NaN", " (JSON has no NaN)");
    if (isinf(d))
        return enc_fail(c, d > 0 ? "inf" : "-inf", " (JSON has no infinities)");
    n = format_double(buf, d, LCOMPAT_HAS_INTEGERS);
    if (n == 0)
        return enc_fail(c, "a float", " (the \"C\" locale to write it in could not be made)");
    return enc_put(c, buf, n);
}

static int enc_value(enc_ctx *c, int idx);

/* Describes a table key that has no place in a JSON array or object. */
static int enc_bad_key(enc_ctx *c, int key_idx, int has_string_keys, size_t array_len)
{
    lua_State *L = c->L;
    char detail[160];
    int t = lua_type(L, key_idx);
    if (t == LUA_TNUMBER) {
        double k = (double)lua_tonumber(L, key_idx);
        int integral = k == floor(k) && fabs(k) < EXACT_INT_LIMIT;
        if (integral && has_string_keys) {
            snprintf(detail, sizeof detail,
                     " (integer key %.0f beside string keys: JSON objects have only string keys)", k);
            return enc_fail(c, "a mixed table", detail);
        }
        if (integral && k >= 1) {
            snprintf(detail, sizeof detail,
                     " (key %.0f, but the keys of an array must run from 1 to n without holes%s)",
                     k, array_len ? "" : "; there is no key 1");
            return enc_fail(c, "a sparse array", detail);
        }
        snprintf(detail, sizeof detail,
                 " (key %.17g: only string keys and array indices 1..n can be stored)", k);
        return enc_fail(c, "a table with a number key", detail);
    }
    if (t == LUA_TSTRING) {
        snprintf(detail, sizeof detail,
                 " (string key beside array items 1..%zu: JSON has no mixed arrays)", array_len);
        return enc_fail(c, "a mixed table", detail);
    }
    snprintf(detail, sizeof detail, " (only string keys and array indices 1..n can be stored)");
    char what[64];
    snprintf(what, sizeof what, "a table with a %s key", lua_typename(L, t));
    return enc_fail(c, what, detail);
}

/* The common case in one pass: a traversal that meets exactly the keys 1..n,
 * in that order, proves the table is an array and encodes it on the way.
 * Returns 1 if it did, 0 if the table must take the checking path
 * (enc_array; the caller drops what this call wrote), -1 on error. */
static int enc_array_in_order(enc_ctx *c, int idx, size_t n)
{
    lua_State *L = c->L;
    path_step *step = &c->path[c->depth - 1];
    size_t i = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        int next_index;
#if LCOMPAT_HAS_INTEGERS
        next_index = lua_isinteger(L, -2) && lua_tointeger(L, -2) == (lua_Integer)(i + 1);
#else
        next_index = lua_type(L, -2) == LUA_TNUMBER &&
                     lua_tonumber(L, -2) == (lua_Number)(i + 1);
#endif
        if (!next_index || i == n) {
            lua_pop(L, 2);
            return 0;
        }
        i++;
        step->key = NULL;
        step->index = i;
        if ((i > 1 && enc_putc(c, ',') != 0) || enc_value(c, lua_gettop(L)) != 0) {
            lua_pop(L, 2);
            return -1;
        }
        lua_pop(L, 1);
    }
    return i == n;
}

static int enc_array(enc_ctx *c, int idx, size_t n)
{
    lua_State *L = c->L;
    path_step *step = &c->path[c->depth - 1];
    size_t start = c->out->len;
    if (enc_putc(c, '[') != 0)
        return -1;
    int fast = enc_array_in_order(c, idx, n);
    if (fast < 0)
        return -1;
    if (fast)
        return enc_putc(c, ']');
    c->out->len = start + 1; /* keep the '[' */
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i);
        step->key = NULL;
        step->index = i;
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            return enc_fail(c, "a sparse array", " (a hole: the keys of an array must run from 1 to n)");
        }
        if ((i > 1 && enc_putc(c, ',') != 0) || enc_value(c, lua_gettop(L)) != 0) {
            lua_pop(L, 1);
            return -1;
        }
        lua_pop(L, 1);
    }
    /* Items 1..n are all there; any further key makes the table something
     * JSON cannot hold. Counting is cheaper than checking each key. */
    size_t count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        count++;
    }
    if (count != n) {
        lua_pushnil(L);
        while (lua_next(L, idx) != 0) {
            lua_pop(L, 1);
            int is_index = 0;
            if (lua_type(L, -1) == LUA_TNUMBER) {
                double k = (double)lua_tonumber(L, -1);
                is_index = k >= 1 && k <= (double)n && k == floor(k);
            }
            if (!is_index) {
                step->key = NULL; /* the problem is the table itself */
                c->depth--;
                int rc = enc_bad_key(c, lua_gettop(L), 0, n);
                c->depth++;
                lua_pop(L, 1);
                return rc;
            }
        }
    }
    return enc_putc(c, ']');
}

static int enc_object(enc_ctx *c, int idx)
{
    lua_State *L = c->L;
    path_step *step = &c->path[c->depth - 1];
    int first = 1;
    if (enc_putc(c, '{') != 0)
        return -1;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        int key_idx = lua_gettop(L) - 1;
        if (lua_type(L, key_idx) != LUA_TSTRING) {
            c->depth--;
            int rc = enc_bad_key(c, key_idx, !first, 0);
            c->depth++;
            lua_pop(L, 2);
            return rc;
        }
        size_t klen;
        const char *k = lua_tolstring(L, key_idx, &klen);
        step->key = k;
        step->key_len = klen;
        if ((!first && enc_putc(c, ',') != 0) || enc_string(c, k, klen) != 0 ||
            enc_putc(c, ':') != 0 || enc_value(c, key_idx + 1) != 0) {
            lua_pop(L, 2);
            return -1;
        }
        first = 0;
        lua_pop(L, 1);
    }
    return enc_putc(c, '}');
}

/* ---- lua-cjson's markers ----
 *
 * OpenResty's lua-cjson marks tables that must encode as JSON arrays with
 * the metatables cjson.array_mt and cjson.empty_array_mt, and stands for an
 * empty array with the light userdata cjson.empty_array. The encoder knows
 * them by identity: lvalue_markers_refresh copies them from the loaded cjson
 * module into a table of the registry (which also keeps them alive, so that
 * no other table can come to have one's address), and the encoder reads
 * that table with raw accesses, which allocate nothing. A metatable or light
 * userdata the encoder does not know makes it return LVALUE_UNKNOWN_MARK, so
 * that the caller can refresh the markers (that allocates) and try again. */

enum { MARK_ARRAY_MT = 1, MARK_EMPTY_ARRAY_MT = 2, MARK_EMPTY_ARRAY = 3 };

static const char markers_key = 'm'; /* its address keys the registry table */

/* Pushes the registry's table of markers, or nil. Allocates nothing. */
static void push_markers(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&markers_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
}

/* Tells whether the value at idx is the marker `which`. Allocates nothing. */
static int is_marker(lua_State *L, int idx, int which)
{
    idx = lua_absindex(L, idx);
    push_markers(L);
    int same = 0;
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, which);
        same = !lua_isnil(L, -1) && lua_rawequal(L, -1, idx);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return same;
}

/* Raw field `name` of the table at idx, kept if its type is `type`. */
static int take_field(lua_State *L, int idx, const char *name, int type, int slot)
{
    lua_pushstring(L, name);
    lua_rawget(L, idx);
    if (lua_type(L, -1) == type && (type != LUA_TLIGHTUSERDATA || lua_touserdata(L, -1) != NULL)) {
        lua_rawseti(L, -2, slot); /* into the markers table, just below */
        return 1;
    }
    lua_pop(L, 1);
    return 0;
}

int lvalue_markers_refresh(lua_State *L)
{
    static const char *const modules[] = {"cjson", "cjson.safe"};
    luaL_checkstack(L, 8, "reading lua-cjson's markers");
    int top = lua_gettop(L), found = 0;
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    int loaded = lua_gettop(L);
    lua_createtable(L, 3, 0);
    int markers = lua_gettop(L);
    for (size_t i = 0; i < sizeof modules / sizeof *modules && !found && lua_istable(L, loaded); i++) {
        lua_pushstring(L, modules[i]);
        lua_rawget(L, loaded);
        if (lua_istable(L, -1)) {
            int module = lua_gettop(L);
            lua_pushvalue(L, markers);
            found |= take_field(L, module, "array_mt", LUA_TTABLE, MARK_ARRAY_MT);
            found |= take_field(L, module, "empty_array_mt", LUA_TTABLE, MARK_EMPTY_ARRAY_MT);
            found |= take_field(L, module, "empty_array", LUA_TLIGHTUSERDATA, MARK_EMPTY_ARRAY);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_pushlightuserdata(L, (void *)&markers_key);
    if (found)
        lua_pushvalue(L, markers);
    else
        lua_pushnil(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_settop(L, top);
    return found;
}

/* A table without a next key. */
static int table_is_empty(lua_State *L, int idx)
{
    lua_pushnil(L);
    if (lua_next(L, idx) == 0)
        return 1;
    lua_pop(L, 2);
    return 0;
}

static int enc_table(enc_ctx *c, int idx)
{
    lua_State *L = c->L;
    if (c->depth >= LVALUE_MAX_DEPTH)
        return enc_fail(c, "a table", " (nested deeper than 1000 levels)");
    if (!lua_checkstack(L, 6))
        return enc_fail(c, "a table", " (nested too deeply for the Lua stack)");
    int as_array = 0;
    if (lua_getmetatable(L, idx)) {
        /* cjson.array_mt: an array, even when empty; empty_array_mt: an
         * array when empty, else as if it had no metatable (as cjson does). */
        if (is_marker(L, -1, MARK_ARRAY_MT))
            as_array = 1;
        else if (is_marker(L, -1, MARK_EMPTY_ARRAY_MT))
            as_array = table_is_empty(L, idx);
        else {
            lua_pop(L, 1);
            enc_fail(c, "a table with a metatable",
                     " (the metatable would not come back; of metatables, only"
                     " lua-cjson's array_mt and empty_array_mt are taken)");
            c->status = LVALUE_UNKNOWN_MARK;
            return -1;
        }
        lua_pop(L, 1);
    }
    const void *self = lua_topointer(L, idx);
    for (int i = 0; i < c->depth; i++) {
        if (c->open_tables[i] == self)
            return enc_fail(c, "a cycle", " (the table contains itself)");
    }
    c->open_tables[c->depth] = self;
    c->path[c->depth].key = NULL;
    c->path[c->depth].index = 0;
    c->depth++;
    size_t n = lua_rawlen(L, idx);
    int rc = n > 0 || as_array ? enc_array(c, idx, n) : enc_object(c, idx);
    c->depth--;
    return rc;
}

static int enc_value(enc_ctx *c, int idx)
{
    lua_State *L = c->L;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        return enc_string(c, s, len);
    }
    case LUA_TNUMBER:
        return enc_number(c, idx);
    case LUA_TBOOLEAN:
        return lua_toboolean(L, idx) ? enc_put(c, "true", 4) : enc_put(c, "false", 5);
    case LUA_TTABLE:
        return enc_table(c, idx);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL)
            return enc_put(c, "null", 4);
        if (is_marker(L, idx, MARK_EMPTY_ARRAY))
            return enc_put(c, "[]", 2);
        enc_fail(c, "a light userdata",
                 " (only the null sentinel and lua-cjson's empty_array can be stored)");
        c->status = LVALUE_UNKNOWN_MARK;
        return -1;
    case LUA_TNIL:
        return enc_fail(c, "nil", NULL);
    default: {
        char what[40];
        const char *tn = lua_typename(L, lua_type(L, idx));
        snprintf(what, sizeof what, "a %s", tn);
        return enc_fail(c, what, NULL);
    }
    }
}

int lvalue_encode(lua_State *L, int idx, hdb_buf *out, size_t max_len, char *err, size_t errlen)
{
    enc_ctx c;
    c.L = L;
    c.out = out;
    c.max_len = max_len;
    c.end = out->len + (max_len < SIZE_MAX - out->len ? max_len : SIZE_MAX - out->len);
    c.stop = out->cap < c.end ? out->cap : c.end;
    c.err = err;
    c.errlen = errlen;
    c.status = LVALUE_OK;
    c.depth = 0;
    return enc_value(&c, lua_absindex(L, idx)) == 0 ? LVALUE_OK : c.status;
}

/* ------------------------------------------------------------------ */
/* Decoding                                                            */
/* ------------------------------------------------------------------ */

typedef struct dec_ctx {
    lua_State *L;
    const char *s;
    size_t len;
    size_t pos;
    int depth;
    char *err;
    size_t errlen;
} dec_ctx;

static int dec_fail(dec_ctx *d, const char *what)
{
    snprintf(d->err, d->errlen, "cannot decode stored value: %s at byte %zu", what, d->pos);
    return -1;
}

static inline void dec_skip_space(dec_ctx *d)
{
    while (d->pos < d->len) {
        char ch = d->s[d->pos];
        if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r')
            break;
        d->pos++;
    }
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static int dec_hex4(dec_ctx *d, unsigned *out)
{
    if (d->len - d->pos < 4)
        return dec_fail(d, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_digit(d->s[d->pos + (size_t)i]);
        if (h < 0)
            return dec_fail(d, "bad \\u escape");
        v = v << 4 | (unsigned)h;
    }
    d->pos += 4;
    *out = v;
    return 0;
}

static void add_utf8(luaL_Buffer *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | cp >> 6);
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | cp >> 12);
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | cp >> 18);
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    luaL_addlstring(b, u, n);
}

/* Pushes the string starting at the opening quote. */
static int dec_string(dec_ctx *d)
{
    const char *s = d->s;
    size_t start = ++d->pos, p = start + plain_span(s + start, d->len - start);
    if (p < d->len && s[p] == '"') {
        lua_pushlstring(d->L, s + start, p - start);
        d->pos = p + 1;
        return 0;
    }
    luaL_Buffer b;
    luaL_buffinit(d->L, &b);
    luaL_addlstring(&b, s + start, p - start);
    d->pos = p;
    for (;;) {
        if (d->pos >= d->len)
            return dec_fail(d, "unterminated string");
        unsigned char ch = (unsigned char)s[d->pos];
        if (ch == '"') {
            d->pos++;
            break;
        }
        if (ch < 0x20)
            return dec_fail(d, "control character in string");
        if (ch != '\\') {
            size_t run = d->pos + plain_span(s + d->pos, d->len - d->pos);
            luaL_addlstring(&b, s + d->pos, run - d->pos);
            d->pos = run;
            continue;
        }
        if (++d->pos >= d->len)
            return dec_fail(d, "unterminated string");
        char e = s[d->pos++];
        switch (e) {
        case '"': luaL_addchar(&b, '"'); break;
        case '\\': luaL_addchar(&b, '\\'); break;
        case '/': luaL_addchar(&b, '/'); break;
        case 'b': luaL_addchar(&b, '\b'); break;
        case 'f': luaL_addchar(&b, '\f'); break;
        case 'n': luaL_addchar(&b, '\n'); break;
        case 'r': luaL_addchar(&b, '\r'); break;
        case 't': luaL_addchar(&b, '\t'); break;
        case 'u': {
            unsigned cp, lo;
            if (dec_hex4(d, &cp) != 0)
                return -1;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return dec_fail(d, "lone low surrogate in \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (d->len - d->pos < 2 || s[d->pos] != '\\' || s[d->pos + 1] != 'u')
                    return dec_fail(d, "lone high surrogate in \\u escape");
                d->pos += 2;
                if (dec_hex4(d, &lo) != 0)
                    return -1;
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return dec_fail(d, "bad surrogate pair in \\u escape");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            add_utf8(&b, cp);
            break;
        }
        default:
            d->pos--;
            return dec_fail(d, "bad escape in string");
        }
    }
    luaL_pushresult(&b);
    return 0;
}

/* Parses a JSON number. A token with no fraction and no exponent is an
 * integer (a Lua integer where the Lua has them); anything else is a float. */
static int dec_number(dec_ctx *d)
{
    const char *s = d->s;
    size_t start = d->pos, p = d->pos;
    int is_float = 0;
    if (p < d->len && s[p] == '-')
        p++;
    if (p >= d->len || s[p] < '0' || s[p] > '9')
        return dec_fail(d, "bad number");
    if (s[p] == '0' && p + 1 < d->len && s[p + 1] >= '0' && s[p + 1] <= '9')
        return dec_fail(d, "number with a leading zero");
    while (p < d->len && s[p] >= '0' && s[p] <= '9')
        p++;
    if (p < d->len && s[p] == '.') {
        is_float = 1;
        p++;
        if (p >= d->len || s[p] < '0' || s[p] > '9')
            return dec_fail(d, "bad number");
        while (p < d->len && s[p] >= '0' && s[p] <= '9')
            p++;
    }
    if (p < d->len && (s[p] == 'e' || s[p] == 'E')) {
        is_float = 1;
        p++;
        if (p < d->len && (s[p] == '+' || s[p] == '-'))
            p++;
        if (p >= d->len || s[p] < '0' || s[p] > '9')
            return dec_fail(d, "bad number");
        while (p < d->len && s[p] >= '0' && s[p] <= '9')
            p++;
    }
    size_t n = p - start;

    if (!is_float && n > 20) {
#if !LCOMPAT_HAS_INTEGERS
        return dec_fail(d, "integer that this Lua cannot hold exactly (it has no 64-bit integers)");
#endif
        /* Beyond 64 bits: read as a float, as Lua's own reader does. */
    } else if (!is_float) {
        /* Accumulate as a negative number, whose range includes INT64_MIN. */
        int neg = s[start] == '-';
        int64_t v = 0;
        int overflow = 0;
        for (size_t i = start + (size_t)neg; i < p; i++) {
            int digit = s[i] - '0';
            if (v < (INT64_MIN + digit) / 10) {
                overflow = 1;
                break;
            }
            v = v * 10 - digit;
        }
        if (!overflow && (neg || v != INT64_MIN)) {
            if (!neg)
                v = -v;
            d->pos = p;
#if LCOMPAT_HAS_INTEGERS
            lua_pushinteger(d->L, (lua_Integer)v);
#else
            double dv = (double)v;
            if (dv >= 9223372036854775808.0 || (int64_t)dv != v)
                return dec_fail(d, "integer that this Lua cannot hold exactly (it has no 64-bit integers)");
            lua_pushnumber(d->L, (lua_Number)dv);
#endif
            return 0;
        }
#if !LCOMPAT_HAS_INTEGERS
        return dec_fail(d, "integer that this Lua cannot hold exactly (it has no 64-bit integers)");
#endif
    }

    double exact;
    if (dtoa_parse(s + start, n, &exact)) {
        d->pos = p;
        lua_pushnumber(d->L, (lua_Number)exact);
        return 0;
    }
    char buf[64];
    if (n >= sizeof buf)
        return dec_fail(d, "number too long");
    memcpy(buf, s + start, n);
    buf[n] = '\0';
    locale_t prev = c_locale_enter();
    if (prev == (locale_t)0)
        return dec_fail(d, "the \"C\" locale to read a number in could not be made");
    char *end;
    double v = strtod(buf, &end);
    c_locale_leave(prev);
    if ((size_t)(end - buf) != n)
        return dec_fail(d, "bad number");
    /* Past the largest double, strtod gives an infinity, which no stored
     * value holds (the encoder refuses it). A number too small for a double
     * reads as the nearest one, 0 included, as every JSON reader does. */
    if (!isfinite(v))
        return dec_fail(d, "number out of the range of a double");
    d->pos = p;
    lua_pushnumber(d->L, (lua_Number)v);
    return 0;
}

static int dec_literal(dec_ctx *d, const char *word, size_t n)
{
    if (d->len - d->pos < n || memcmp(d->s + d->pos, word, n) != 0)
        return dec_fail(d, "unexpected character");
    d->pos += n;
    return 0;
}

static int dec_value(dec_ctx *d);

static int dec_array(dec_ctx *d)
{
    lua_State *L = d->L;
    d->pos++;
    dec_skip_space(d);
    if (d->pos < d->len && d->s[d->pos] == ']') {
        d->pos++;
        /* The encoder writes "[]" only for cjson's markers (an empty table
         * of its own is "{}"): give what cjson would, if it is loaded. */
        lua_createtable(L, 0, 0);
        lvalue_markers_refresh(L);
        push_markers(L);
        if (lua_istable(L, -1)) {
            lua_rawgeti(L, -1, MARK_EMPTY_ARRAY_MT);
            lua_remove(L, -2);
            if (lua_istable(L, -1))
                lua_setmetatable(L, -2);
            else
                lua_pop(L, 1);
        } else {
            lua_pop(L, 1);
        }
        return 0;
    }
    lua_createtable(L, 4, 0);
    for (lua_Integer i = 1;; i++) {
        if (dec_value(d) != 0)
            return -1;
        lua_rawseti(L, -2, i);
        dec_skip_space(d);
        if (d->pos >= d->len)
            return dec_fail(d, "unterminated array");
        char ch = d->s[d->pos++];
        if (ch == ']')
            return 0;
        if (ch != ',') {
            d->pos--;
            return dec_fail(d, "expected ',' or ']'");
        }
    }
}

static int dec_object(dec_ctx *d)
{
    lua_State *L = d->L;
    d->pos++;
    lua_createtable(L, 0, 4);
    dec_skip_space(d);
    if (d->pos < d->len && d->s[d->pos] == '}') {
        d->pos++;
        return 0;
    }
    for (;;) {
        dec_skip_space(d);
        if (d->pos >= d->len || d->s[d->pos] != '"')
            return dec_fail(d, "expected a string key");
        if (dec_string(d) != 0)
            return -1;
        dec_skip_space(d);
        if (d->pos >= d->len || d->s[d->pos] != ':')
            return dec_fail(d, "expected ':'");
        d->pos++;
        if (dec_value(d) != 0)
            return -1;
        lua_rawset(L, -3);
        dec_skip_space(d);
        if (d->pos >= d->len)
            return dec_fail(d, "unterminated object");
        char ch = d->s[d->pos++];
        if (ch == '}')
            return 0;
        if (ch != ',') {
            d->pos--;
            return dec_fail(d, "expected ',' or '}'");
        }
    }
}

static int dec_value(dec_ctx *d)
{
    dec_skip_space(d);
    if (d->pos >= d->len)
        return dec_fail(d, "unexpected end");
    if (!lua_checkstack(d->L, 3))
        return dec_fail(d, "nesting too deep for the Lua stack");
    char ch = d->s[d->pos];
    switch (ch) {
    case '"':
        return dec_string(d);
    case '{':
    case '[': {
        if (d->depth >= LVALUE_MAX_DEPTH)
            return dec_fail(d, "nesting deeper than 1000 levels");
        d->depth++;
        int rc = ch == '{' ? dec_object(d) : dec_array(d);
        d->depth--;
        return rc;
    }
    case 't':
        if (dec_literal(d, "true", 4) != 0)
            return -1;
        lua_pushboolean(d->L, 1);
        return 0;
    case 'f':
        if (dec_literal(d, "false", 5) != 0)
            return -1;
        lua_pushboolean(d->L, 0);
        return 0;
    case 'n':
        if (dec_literal(d, "null", 4) != 0)
            return -1;
        lua_pushlightuserdata(d->L, NULL);
        return 0;
    default:
        if (ch == '-' || (ch >= '0' && ch <= '9'))
            return dec_number(d);
        return dec_fail(d, "unexpected character");
    }
}

int lvalue_decode(lua_State *L, const char *text, size_t len, char *err, size_t errlen)
{
    dec_ctx d = {L, text, len, 0, 0, err, errlen};
    int top = lua_gettop(L);
    if (dec_value(&d) == 0) {
        dec_skip_space(&d);
        if (d.pos == d.len)
            return 0;
        dec_fail(&d, "trailing characters");
    }
    lua_settop(L, top);
    return -1;
}
