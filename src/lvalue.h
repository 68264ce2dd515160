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
#include <stdint.h>

#include "lcompat.h"
#include "hdb_buf.h"

/* Deepest nesting of tables accepted (and decoded). */
#define LVALUE_MAX_DEPTH 1000

/* What lvalue_encode returns. */
#define LVALUE_OK 0
#define LVALUE_REFUSED (-1)      /* the value cannot be stored (err says why and where) */
#define LVALUE_NO_MEMORY (-2)
#define LVALUE_TOO_LONG (-3)     /* its text would pass max_len */
#define LVALUE_UNKNOWN_MARK (-4) /* a metatable or light userdata that is not one of
                                    lua-cjson's markers as last refreshed: refresh
                                    them, then encode again */

/* Appends the JSON text of the value at idx to out. Returns LVALUE_OK, or one
 * of the codes above with err naming the problem and its path ("$.a.b[3]");
 * out may then hold a partial text the caller discards. The value must not be
 * nil. A value whose text would pass max_len bytes is refused as soon as the
 * encoder gets there, so out never grows by more than max_len. Makes no Lua
 * allocation: nothing can run between its start and the caller's use of out.
 * Tables carrying lua-cjson's array_mt (and empty ones carrying empty_array_mt)
 * are written as arrays, and cjson.empty_array as "[]". */
int lvalue_encode(lua_State *L, int idx, hdb_buf *out, size_t max_len, char *err,
                  size_t errlen);

/* Copies lua-cjson's markers (array_mt, empty_array_mt, empty_array) from the
 * loaded "cjson" module, else "cjson.safe", for lvalue_encode; none if neither
 * is loaded or has them. Returns whether any was found. Allocates, so may run
 * the collector; raises only on memory errors. Never loads a module. */
int lvalue_markers_refresh(lua_State *L);

/* Pushes the value of the JSON text. Returns 0, or -1 with nothing pushed and
 * err naming the problem and its byte offset. "[]" becomes an empty table
 * carrying cjson.empty_array_mt when lua-cjson is loaded and has it, else a
 * plain one. */
int lvalue_decode(lua_State *L, const char *text, size_t len, char *err, size_t errlen);

/* Whether text is the JSON of an integer as lvalue_encode writes one
 * (-?[1-9][0-9]* or 0) within the int64 range; if so, its value in *v.
 * What it accepts decodes to that integer (a whole double under LuaJIT). */
int lvalue_integer_text(const char *text, size_t len, int64_t *v);

/* Writes v as lvalue_encode writes an integer; buf has room for 24 bytes.
 * Returns the length. */
size_t lvalue_format_integer(char *buf, int64_t v);

#endif
