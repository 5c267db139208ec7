/*
 * sha256.h — SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104) for the
 * manager's authentication handshake (private). Written from the
 * standards; checked against the RFC 4231 test vectors in
 * tests/manager_test.c.
 */
#ifndef CONC_MANAGER_SHA256_H
#define CONC_MANAGER_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define CONC__SHA256_LEN 32
#define CONC__SHA256_BLOCK 64

typedef struct conc__sha256 {
    uint32_t h[8];
    uint64_t total;              /* bytes hashed so far */
    uint8_t buf[CONC__SHA256_BLOCK];
    size_t used;                 /* bytes waiting in buf */
} conc__sha256_t;

void conc__sha256_init(conc__sha256_t *s);
void conc__sha256_update(conc__sha256_t *s, const void *data, size_t n);
void conc__sha256_final(conc__sha256_t *s, uint8_t out[CONC__SHA256_LEN]);
void conc__sha256(const void *data, size_t n, uint8_t out[CONC__SHA256_LEN]);

/* HMAC-SHA256(key, msg); any key length (long keys are hashed first). */
void conc__hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                       uint8_t out[CONC__SHA256_LEN]);

/* Compare n bytes in time that does not depend on where they differ
 * (hmac.compare_digest). True when equal. */
int conc__ct_equal(const void *a, const void *b, size_t n);

#endif
