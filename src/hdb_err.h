/*
 * hdb_err: what the engine's units share to fill an hdb_err (hurrahdb.h).
 */
#ifndef HDB_ERR_H
#define HDB_ERR_H

#include "hurrahdb.h"

/* The code of a failed system call by its errno: HDB_CODE_NO_MEMORY for
 * ENOMEM (the kernel's memory, or a buffer of ours behind an errno), else
 * HDB_CODE_IO. */
int hdb_errno_code(int errnum);

#endif
