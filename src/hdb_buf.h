/*
 * hdb_buf: a growable byte buffer owned by its user.
 *
 * Used for the AOF pending and writing buffers. Growth is geometric so that
 * appends are amortised O(1); a failed allocation leaves the buffer as it was.
 */
#ifndef HDB_BUF_H
#define HDB_BUF_H

#include <stddef.h>

typedef struct hdb_buf {
    char *data;
    size_t len;
    size_t cap;
} hdb_buf;

void hdb_buf_init(hdb_buf *b);
void hdb_buf_free(hdb_buf *b);

/* Makes room for at least `extra` more bytes. Returns 0, or -1 on ENOMEM with
 * the buffer unchanged. */
int hdb_buf_reserve(hdb_buf *b, size_t extra);

/* The same for a buffer whose contents may never pass `max` bytes: growth
 * stays geometric but stops at `max`, so a buffer that is refused there has
 * never asked for more (doubling would overshoot to nearly twice the bound).
 * Returns -1, with the buffer unchanged, on ENOMEM or when len + extra would
 * pass max; the caller that must tell the two apart checks the bound first. */
int hdb_buf_reserve_max(hdb_buf *b, size_t extra, size_t max);

/* Appends bytes; same failure contract as hdb_buf_reserve. */
int hdb_buf_append(hdb_buf *b, const void *data, size_t len);

/* Exchanges contents, so the flusher can take the pending bytes in O(1). */
void hdb_buf_swap(hdb_buf *a, hdb_buf *b);

/* Releases the memory of a large, now empty buffer so that one burst of
 * writes does not pin its peak size forever. */
void hdb_buf_shrink_if_idle(hdb_buf *b, size_t keep);

#endif
