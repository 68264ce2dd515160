#include "hdb_buf.h"

#include <stdlib.h>
#include <string.h>

void hdb_buf_init(hdb_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void hdb_buf_free(hdb_buf *b)
{
    free(b->data);
    hdb_buf_init(b);
}

int hdb_buf_reserve(hdb_buf *b, size_t extra)
{
    return hdb_buf_reserve_max(b, extra, ((size_t)-1) / 2);
}

int hdb_buf_reserve_max(hdb_buf *b, size_t extra, size_t max)
{
    if (extra <= b->cap - b->len)
        return 0;
    if (b->len > max || extra > max - b->len)
        return -1;
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : (max < 256 ? max : 256);
    while (cap < need)
        cap = cap > max / 2 ? max : cap * 2;
    char *data = realloc(b->data, cap);
    if (data == NULL)
        return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

int hdb_buf_append(hdb_buf *b, const void *data, size_t len)
{
    if (hdb_buf_reserve(b, len) != 0)
        return -1;
    if (len > 0)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

void hdb_buf_swap(hdb_buf *a, hdb_buf *b)
{
    hdb_buf t = *a;
    *a = *b;
    *b = t;
}

void hdb_buf_shrink_if_idle(hdb_buf *b, size_t keep)
{
    if (b->len == 0 && b->cap > keep)
        hdb_buf_free(b);
}
