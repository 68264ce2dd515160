#include "hdb_dtoa.h"

#include <stdint.h>
#include <string.h>

#if defined(__SIZEOF_INT128__)

/* A GCC and Clang extension on 64-bit targets; without it every double goes
 * to the caller's printf path. */
typedef unsigned __int128 u128;

static const uint64_t pow10_u64[20] = {
    UINT64_C(1), UINT64_C(10), UINT64_C(100), UINT64_C(1000), UINT64_C(10000),
    UINT64_C(100000), UINT64_C(1000000), UINT64_C(10000000), UINT64_C(100000000),
    UINT64_C(1000000000), UINT64_C(10000000000), UINT64_C(100000000000),
    UINT64_C(1000000000000), UINT64_C(10000000000000), UINT64_C(100000000000000),
    UINT64_C(1000000000000000), UINT64_C(10000000000000000),
    UINT64_C(100000000000000000), UINT64_C(1000000000000000000),
    UINT64_C(10000000000000000000),
};

static int bit_length(u128 x)
{
    uint64_t hi = (uint64_t)(x >> 64), lo = (uint64_t)x;
    if (hi != 0)
        return 128 - __builtin_clzll(hi);
    return lo != 0 ? 64 - __builtin_clzll(lo) : 0;
}

/* The exact decimal scaling of a double: d * 10^q == A / B, both below
 * 2^126 and B below 2^71, so that the products below cannot overflow.
 * Returns 0 when they would not fit. */
typedef struct scaled {
    u128 a, b;
} scaled;

static int scale(uint64_t m, int e2, int q, scaled *s)
{
    u128 a = m, b = 1;
    if (q > 0) {
        if (q > 22) /* 10^22 < 2^73: m * 10^q stays below 2^126 */
            return 0;
        a *= (u128)pow10_u64[q > 19 ? 19 : q] * (q > 19 ? pow10_u64[q - 19] : 1);
    } else if (q < 0) {
        if (-q > 21) /* 10^21 < 2^70 */
            return 0;
        b = (u128)pow10_u64[-q > 19 ? 19 : -q] * (-q > 19 ? pow10_u64[-q - 19] : 1);
    }
    if (e2 > 0) {
        if (bit_length(a) + e2 > 126)
            return 0;
        a <<= e2;
    } else if (e2 < 0) {
        if (bit_length(b) - e2 > 70)
            return 0;
        b <<= -e2;
    }
    s->a = a;
    s->b = b;
    return 1;
}

/* Writes the P significant digits of n (10^(P-1) <= n < 10^P), as printf's
 * "%.Pg" would lay out a value whose first digit is at 10^x: trailing zeros
 * dropped, exponent form when x < -4 or x >= P. */
static size_t layout_g(char *buf, int negative, uint64_t n, int p, int x)
{
    char digits[20];
    for (int i = p - 1; i >= 0; i--) {
        digits[i] = (char)('0' + n % 10);
        n /= 10;
    }
    int len = p;
    while (len > 1 && digits[len - 1] == '0')
        len--;
    char *o = buf;
    if (negative)
        *o++ = '-';
    if (x < -4 || x >= p) {
        *o++ = digits[0];
        if (len > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)len - 1);
            o += len - 1;
        }
        *o++ = 'e';
        *o++ = x < 0 ? '-' : '+';
        int ax = x < 0 ? -x : x;
        if (ax >= 100)
            *o++ = (char)('0' + ax / 100);
        *o++ = (char)('0' + ax / 10 % 10);
        *o++ = (char)('0' + ax % 10);
    } else if (x >= 0) {
        for (int i = 0; i <= x; i++)
            *o++ = i < len ? digits[i] : '0';
        if (len > x + 1) {
            *o++ = '.';
            memcpy(o, digits + x + 1, (size_t)(len - x - 1));
            o += len - x - 1;
        }
    } else {
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -x - 1; i++)
            *o++ = '0';
        memcpy(o, digits, (size_t)len);
        o += len;
    }
    *o = '\0';
    return (size_t)(o - buf);
}

size_t dtoa_shortest_g(char *buf, double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    int negative = (int)(bits >> 63);
    int biased = (int)((bits >> 52) & 0x7ff);
    if (biased == 0 || biased == 0x7ff)
        return 0; /* zero, subnormal, infinite, NaN */
    uint64_t m = (bits & ((UINT64_C(1) << 52) - 1)) | (UINT64_C(1) << 52);
    int e2 = biased - 1075; /* |d| = m * 2^e2, 2^52 <= m < 2^53 */

    /* x, the power of ten of the first digit, from the binary exponent
     * (off by one at most), then made exact by the 17 digits themselves:
     * t = floor(|d| * 10^(16 - x)) has 17 digits exactly when x is right. */
    int k = e2 + 52; /* 2^k <= |d| < 2^(k+1); 315653 / 2^20 is log10(2) to 6 digits */
    int x = k >= 0 ? (k * 315653) >> 20 : -((-k * 315653 + (1 << 20) - 1) >> 20);
    scaled s;
    u128 t = 0;
    for (int tries = 0; tries < 3; tries++) {
        if (!scale(m, e2, 16 - x, &s))
            return 0;
        t = s.a / s.b;
        if (t >= pow10_u64[17])
            x++;
        else if (t < pow10_u64[16])
            x--;
        else
            break;
    }
    if (t < pow10_u64[16] || t >= pow10_u64[17])
        return 0;
    u128 r = s.a % s.b;
    /* A candidate's text reads back as d when it lies inside d's rounding
     * interval: half a unit in the last place each side (a quarter below
     * a power of two, whose lower neighbour is closer), the ends included
     * only for an even m (reading rounds halves to even). Scaled by B,
     * half a unit is A / (2m) = w / 2. */
    u128 w = (u128)1;
    if (16 - x > 0)
        w = (u128)pow10_u64[16 - x > 19 ? 19 : 16 - x] * (16 - x > 19 ? pow10_u64[16 - x - 19] : 1);
    if (e2 > 0)
        w <<= e2;
    int even = (m & 1) == 0;
    int closer_below = m == (UINT64_C(1) << 52) && biased > 1;

    for (int p = 15; p <= 17; p++) {
        int drop = 17 - p;
        uint64_t unit = pow10_u64[drop];
        uint64_t head = (uint64_t)(t / unit), rest = (uint64_t)(t % unit);
        /* Round head by the exact rest (rest + r/B, in units of 10^-drop of
         * the head's last digit): up above half, to even at half. */
        u128 frac2 = ((u128)rest * s.b + r) * 2, whole = (u128)unit * s.b;
        int up = frac2 > whole || (frac2 == whole && (head & 1) != 0);
        uint64_t n = head + (uint64_t)up;
        if (p < 17) {
            u128 cb = (u128)n * unit * s.b; /* the candidate, in 17-digit units, times B */
            int ok;
            if (cb >= s.a) {
                u128 diff2 = (cb - s.a) * 2;
                ok = diff2 < w || (diff2 == w && even);
            } else {
                u128 diff = (s.a - cb) * (closer_below ? 4 : 2);
                ok = diff < w || (diff == w && even);
            }
            if (!ok)
                continue;
        }
        int px = x;
        if (n == pow10_u64[p]) { /* rounded up to the next power of ten */
            n = pow10_u64[p - 1];
            px++;
        }
        return layout_g(buf, negative, n, p, px);
    }
    return 0; /* not reached: 17 digits always read back */
}

/* The double nearest to mant * 2^exp2 (mant < 2^53, the result normal),
 * built from its bits: exact, no rounding. */
static double make_double(uint64_t mant, int exp2, int negative)
{
    /* normalise to 2^52 <= mant < 2^53 */
    while (mant < (UINT64_C(1) << 52)) {
        mant <<= 1;
        exp2--;
    }
    uint64_t bits = ((uint64_t)(exp2 + 52 + 1023) << 52) | (mant & ((UINT64_C(1) << 52) - 1));
    bits |= (uint64_t)negative << 63;
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* Rounds v * 2^exp2 (plus a fraction below v's last bit, present when
 * `sticky`) to 53 bits, ties to even; v >= 2^53. */
static double round_to_double(u128 v, int exp2, int sticky, int negative)
{
    int shift = bit_length(v) - 53;
    uint64_t mant = (uint64_t)(v >> shift);
    u128 rest = v & (((u128)1 << shift) - 1), half = (u128)1 << (shift - 1);
    if (rest > half || (rest == half && (sticky || (mant & 1) != 0))) {
        mant++;
        if (mant == (UINT64_C(1) << 53)) {
            mant >>= 1;
            shift++;
        }
    }
    return make_double(mant, exp2 + shift, negative);
}

int dtoa_parse(const char *s, size_t n, double *out)
{
    size_t i = 0;
    int negative = 0;
    if (i < n && s[i] == '-') {
        negative = 1;
        i++;
    }
    uint64_t m = 0;
    int digits = 0, exp10 = 0, seen_point = 0;
    for (; i < n; i++) {
        char ch = s[i];
        if (ch == '.') {
            seen_point = 1;
            continue;
        }
        if (ch < '0' || ch > '9')
            break;
        if (m == 0 && ch == '0') { /* leading zeros count for nothing */
            if (seen_point)
                exp10--;
            continue;
        }
        if (digits == 19)
            return 0;
        m = m * 10 + (uint64_t)(ch - '0');
        digits++;
        if (seen_point)
            exp10--;
    }
    if (i < n) { /* 'e' or 'E' */
        i++;
        int exp_negative = 0;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            exp_negative = s[i++] == '-';
        int e = 0;
        for (; i < n; i++) {
            if (e > 10000)
                return 0;
            e = e * 10 + (s[i] - '0');
        }
        exp10 += exp_negative ? -e : e;
    }
    if (m == 0) {
        *out = negative ? -0.0 : 0.0;
        return 1;
    }
    if (exp10 >= 0) {
        if (exp10 > 19) /* m * 10^19 < 2^128 */
            return 0;
        u128 v = (u128)m * pow10_u64[exp10];
        if (v < ((u128)1 << 53)) {
            *out = make_double((uint64_t)v, 0, negative);
            return 1;
        }
        *out = round_to_double(v, 0, 0, negative);
        return 1;
    }
    if (-exp10 > 21) /* 10^21 < 2^70, so the quotient keeps 54 bits or more */
        return 0;
    u128 divisor = pow10_u64[-exp10 > 19 ? 19 : -exp10];
    if (-exp10 > 19)
        divisor *= pow10_u64[-exp10 - 19];
    int shift = 127 - bit_length(m);
    u128 num = (u128)m << shift;
    u128 q = num / divisor, r = num % divisor;
    *out = round_to_double(q, -shift, r != 0, negative);
    return 1;
}

#else

int dtoa_parse(const char *s, size_t n, double *out)
{
    (void)s;
    (void)n;
    (void)out;
    return 0;
}

size_t dtoa_shortest_g(char *buf, double d)
{
    (void)buf;
    (void)d;
    return 0;
}

#endif
