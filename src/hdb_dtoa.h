/*
 * hdb_dtoa: the text of a double, without printf or strtod where it can.
 *
 * The value codec writes a float with the fewest of 15, 16 or 17 significant
 * digits whose text reads back as the same double, in the form printf's
 * "%.15g", "%.16g" or "%.17g" gives. Done with snprintf, that is up to three
 * formattings and two strtod calls, in multiple precision: most of the cost
 * of encoding a value with a float in it. This unit computes the same text
 * with exact 128-bit integer arithmetic for the doubles whose digits fit it
 * (magnitudes from about 1e-5 to 1e21, where nearly all stored floats are),
 * and says when it cannot, so that the caller falls back to printf. Reading
 * numbers back is done the same way (strtod where it cannot). It does no I/O
 * and needs no locale: its text always has '.' as decimal point.
 */
#ifndef HDB_DTOA_H
#define HDB_DTOA_H

#include <stddef.h>

/* Room dtoa_shortest_g needs: sign, 17 digits, point, "e-308", NUL. */
#define DTOA_BUF 32

/* Writes into buf the text "%.Pg" gives for d, for the smallest P in 15..17
 * whose text reads back as d (P = 17 always does), and returns its length;
 * or returns 0, writing nothing useful, when d is outside what the exact
 * path covers (zero, subnormal, infinite or NaN included): the caller then
 * formats it with printf. */
size_t dtoa_shortest_g(char *buf, double d);

/* Reads the n bytes at s, a number in JSON's syntax (already checked: an
 * optional '-', digits, an optional fraction, an optional exponent), into
 * *out, rounded to the nearest double (ties to even) exactly as strtod
 * would, and returns 1; or returns 0 when the number is outside what the
 * exact path covers (more than 19 significant digits, or a magnitude far
 * from 1): the caller then reads it with strtod. */
int dtoa_parse(const char *s, size_t n, double *out);

#endif
