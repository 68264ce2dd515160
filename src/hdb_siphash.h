/*
 * hdb_siphash: SipHash-1-3, a keyed hash for the table.
 *
 * Keys come from untrusted sources (HTTP requests in nginx); a per-store
 * random key makes their bucket positions unpredictable, so an attacker cannot
 * send many keys that collide into one chain.
 */
#ifndef HDB_SIPHASH_H
#define HDB_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t siphash13(const uint64_t key[2], const void *data, size_t len);

/* The same construction with 2 compression and 4 finalisation rounds; kept
 * only so that tests can check the implementation against the published
 * SipHash-2-4 vectors, which share every step but the round counts. */
uint64_t siphash24(const uint64_t key[2], const void *data, size_t len);

/* Fills a random key, from the kernel's generator. */
void siphash_random_key(uint64_t key[2]);

#endif
