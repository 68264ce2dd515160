#include "hdb_siphash.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/random.h>
#endif


#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

/* Reads 8 bytes as little-endian regardless of host order, so that a store's
 * bucket layout does not depend on the machine (only on the random key). */
static inline uint64_t load_le64(const unsigned char *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
           (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
           (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

#define SIP_ROUND(v0, v1, v2, v3)                                              \
    do {                                                                       \
        v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);          \
        v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                               \
        v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                               \
        v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);          \
    } while (0)

static inline uint64_t siphash_rounds(const uint64_t key[2], const void *data,
                                      size_t len, int c_rounds, int d_rounds)
{
    const unsigned char *p = data;
    uint64_t v0 = key[0] ^ UINT64_C(0x736f6d6570736575);
    uint64_t v1 = key[1] ^ UINT64_C(0x646f72616e646f6d);
    uint64_t v2 = key[0] ^ UINT64_C(0x6c7967656e657261);
    uint64_t v3 = key[1] ^ UINT64_C(0x7465646279746573);
    size_t blocks = len / 8;

    for (size_t i = 0; i < blocks; i++, p += 8) {
        uint64_t m = load_le64(p);
        v3 ^= m;
        for (int r = 0; r < c_rounds; r++)
            SIP_ROUND(v0, v1, v2, v3);
        v0 ^= m;
    }

    /* The last 0 to 7 bytes, little-endian, without a call to memcpy: keys
     * are short, so this is a good part of each hash. */
    uint64_t last = (uint64_t)len << 56;
    switch (len % 8) {
    case 7: last |= (uint64_t)p[6] << 48; /* fall through */
    case 6: last |= (uint64_t)p[5] << 40; /* fall through */
    case 5: last |= (uint64_t)p[4] << 32; /* fall through */
    case 4: last |= (uint64_t)p[3] << 24; /* fall through */
    case 3: last |= (uint64_t)p[2] << 16; /* fall through */
    case 2: last |= (uint64_t)p[1] << 8;  /* fall through */
    case 1: last |= (uint64_t)p[0];       /* fall through */
    default: break;
    }
    v3 ^= last;
    for (int r = 0; r < c_rounds; r++)
        SIP_ROUND(v0, v1, v2, v3);
    v0 ^= last;

    v2 ^= 0xff;
    for (int r = 0; r < d_rounds; r++)
        SIP_ROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t siphash13(const uint64_t key[2], const void *data, size_t len)
{
    return siphash_rounds(key, data, len, 1, 3);
}

uint64_t siphash24(const uint64_t key[2], const void *data, size_t len)
{
    return siphash_rounds(key, data, len, 2, 4);
}

/* Fills the hash key. A predictable key would let an attacker who controls
 * keys (HTTP input) build long chains, so the kernel's generator is used;
 * the clock-and-address fallback only serves systems without one. */
void siphash_random_key(uint64_t seed[2])
{
    unsigned char bytes[16];
    size_t got = 0;
#if defined(__linux__)
    while (got < sizeof bytes) {
        ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        got += (size_t)n;
    }
#endif
    if (got < sizeof bytes) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t n = read(fd, bytes, sizeof bytes);
            got = n == (ssize_t)sizeof bytes ? sizeof bytes : 0;
            close(fd);
        }
    }
    if (got < sizeof bytes) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t a = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
        uint64_t b = (uint64_t)(uintptr_t)&ts ^ (uint64_t)(uintptr_t)seed;
        memcpy(bytes, &a, 8);
        memcpy(bytes + 8, &b, 8);
    }
    memcpy(&seed[0], bytes, 8);
    memcpy(&seed[1], bytes + 8, 8);
}
