/*
 * hdb_crc32c: CRC-32C (Castagnoli), the checksum closing every AOF batch.
 *
 * CRC-32C detects every burst error up to 32 bits and every odd number of
 * flipped bits, and x86-64 computes it in hardware (SSE 4.2), so checking a
 * large file at open costs little next to parsing it.
 */
#ifndef HDB_CRC32C_H
#define HDB_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues a running checksum: start with crc = 0, feed the pieces in order.
 * Thread-safe; the lookup tables are built once, on first use. */
uint32_t crc32c_update(uint32_t crc, const void *data, size_t len);

/* The same, always computed in software: lets tests check the hardware
 * path against it. */
uint32_t crc32c_update_portable(uint32_t crc, const void *data, size_t len);

#endif
