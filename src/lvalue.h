/*
 * lvalue: converts Lua values to and from the JSON text the store keeps.
 *
 * The rule is "what you get is what you set": every value the encoder accepts
 * decodes to a value equal under ==, with the same number subtypes, or the
 * encoder refuses it and names where in the value the problem is. Numbers are
 * written exactly (integers as integers, floats with enough digits to read
 * back the same double, and a ".0" when they look like integers), which is
 * why hurrahdb writes its own JSON instead of lua-cjson 2.1.0's, whose
 * encoder keeps 14 digits and whose decoder returns every number as a float.
 * Numbers are written and read the same in every locale. Strings are written
 * byte for byte (only '"', '\\' and bytes below 0x20 escaped), so a string
 * that is not UTF-8 gives text that cjson and Redis take but strict JSON
 * readers refuse.
 */
#ifndef LVALUE_H
#define LVALUE_H

#include <stddef.h>

#include "lcompat.h"
#include "hdb_buf.h"

/* Deepest nesting of tables accepted (and decoded). */
#define LVALUE_MAX_DEPTH 1000

/* Appends the JSON text of the value at idx to out. Returns 0, or -1 with err
 * naming the problem and its path ("$.a.b[3]"); out may then hold a partial
 * text the caller discards. The value must not be nil. A value whose text
 * would pass max_len bytes is refused ("value too long ...") as soon as the
 * encoder gets there, so out never grows by more than max_len. */
int lvalue_encode(lua_State *L, int idx, hdb_buf *out, size_t max_len, char *err,
                  size_t errlen);

/* Pushes the value of the JSON text. Returns 0, or -1 with nothing pushed and
 * err naming the problem and its byte offset. */
int lvalue_decode(lua_State *L, const char *text, size_t len, char *err, size_t errlen);

#endif
