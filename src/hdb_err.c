#include "hdb_err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

/* Indexed by enum hdb_code. These strings are the binding's API: programs
 * compare them, so they never change once released. */
static const char *const code_names[] = {
    [HDB_CODE_NONE] = "none",
    [HDB_CODE_IO] = "io",
    [HDB_CODE_NO_MEMORY] = "no memory",
    [HDB_CODE_LOCKED] = "locked",
    [HDB_CODE_ALREADY_OPEN] = "already open",
    [HDB_CODE_DAMAGED] = "damaged",
    [HDB_CODE_FORKED] = "forked",
    [HDB_CODE_BUSY] = "busy",
    [HDB_CODE_MEMORY_ONLY] = "memory only",
    [HDB_CODE_OUTPACED] = "outpaced",
    [HDB_CODE_MOVED] = "moved",
    [HDB_CODE_CANCELLED] = "cancelled",
    [HDB_CODE_TOO_LARGE] = "too large",
    [HDB_CODE_INVALID] = "invalid",
    [HDB_CODE_EXITING] = "exiting",
    [HDB_CODE_VALUE] = "value",
    [HDB_CODE_CODEC] = "codec",
    [HDB_CODE_NOT_FOUND] = "not found",
    [HDB_CODE_NOT_A_NUMBER] = "not a number",
    [HDB_CODE_OVERFLOW] = "overflow",
};

const char *hdb_code_name(int code)
{
    if (code < 0 || (size_t)code >= sizeof code_names / sizeof *code_names ||
        code_names[code] == NULL)
        return "unknown";
    return code_names[code];
}

int hdb_fail(hdb_err *e, int code, const char *fmt, ...)
{
    if (e != NULL) {
        e->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return HDB_ERR;
}

int hdb_errno_code(int errnum)
{
    return errnum == ENOMEM ? HDB_CODE_NO_MEMORY : HDB_CODE_IO;
}
