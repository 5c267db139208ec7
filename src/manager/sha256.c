/*
 * sha256.c — SHA-256 (FIPS 180-4, section 6.2) and HMAC (RFC 2104).
 *
 * The compression function runs the 64 rounds over a 16-word message
 * schedule expanded in place (W[t] for t >= 16 kept in a ring of 16).
 * Padding: a 1 bit, zeros, then the message length in bits as a 64-bit
 * big-endian number, so the total is a multiple of 512 bits.
 * HMAC(K, m) = H((K0 ^ opad) || H((K0 ^ ipad) || m)), K0 = K padded with
 * zeros to the block size (or H(K) padded, when K is longer than a block).
 */
#include <string.h>

#include "manager/sha256.h"

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static inline uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void compress(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[16];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t wt;
        if (t < 16) {
            wt = w[t];
        } else {
            uint32_t w15 = w[(t - 15) & 15], w2 = w[(t - 2) & 15];
            uint32_t s0 = ror(w15, 7) ^ ror(w15, 18) ^ (w15 >> 3);
            uint32_t s1 = ror(w2, 17) ^ ror(w2, 19) ^ (w2 >> 10);
            wt = w[t & 15] = w[t & 15] + s0 + w[(t - 7) & 15] + s1;
        }
        uint32_t S1 = ror(e, 6) ^ ror(e, 11) ^ ror(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = k + S1 + ch + K[t] + wt;
        uint32_t S0 = ror(a, 2) ^ ror(a, 13) ^ ror(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = S0 + maj;
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
}

void conc__sha256_init(conc__sha256_t *s)
{
    static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, H0, sizeof H0);
    s->total = 0;
    s->used = 0;
}

void conc__sha256_update(conc__sha256_t *s, const void *data, size_t n)
{
    const uint8_t *p = data;
    s->total += n;
    if (s->used) {
        size_t take = CONC__SHA256_BLOCK - s->used;
        if (take > n)
            take = n;
        memcpy(s->buf + s->used, p, take);
        s->used += take;
        p += take;
        n -= take;
        if (s->used < CONC__SHA256_BLOCK)
            return;
        compress(s->h, s->buf);
        s->used = 0;
    }
    for (; n >= CONC__SHA256_BLOCK; p += CONC__SHA256_BLOCK, n -= CONC__SHA256_BLOCK)
        compress(s->h, p);
    if (n) {
        memcpy(s->buf, p, n);
        s->used = n;
    }
}

void conc__sha256_final(conc__sha256_t *s, uint8_t out[CONC__SHA256_LEN])
{
    uint64_t bits = s->total * 8;
    s->buf[s->used++] = 0x80;
    if (s->used > CONC__SHA256_BLOCK - 8) {
        memset(s->buf + s->used, 0, CONC__SHA256_BLOCK - s->used);
        compress(s->h, s->buf);
        s->used = 0;
    }
    memset(s->buf + s->used, 0, CONC__SHA256_BLOCK - 8 - s->used);
    for (int i = 0; i < 8; i++)
        s->buf[CONC__SHA256_BLOCK - 1 - i] = (uint8_t)(bits >> (8 * i));
    compress(s->h, s->buf);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
    memset(s, 0, sizeof *s);
}

void conc__sha256(const void *data, size_t n, uint8_t out[CONC__SHA256_LEN])
{
    conc__sha256_t s;
    conc__sha256_init(&s);
    conc__sha256_update(&s, data, n);
    conc__sha256_final(&s, out);
}

void conc__hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                       uint8_t out[CONC__SHA256_LEN])
{
    uint8_t k0[CONC__SHA256_BLOCK] = {0}, pad[CONC__SHA256_BLOCK], inner[CONC__SHA256_LEN];
    if (klen > CONC__SHA256_BLOCK)
        conc__sha256(key, klen, k0);
    else if (klen)
        memcpy(k0, key, klen);
    conc__sha256_t s;
    for (int i = 0; i < CONC__SHA256_BLOCK; i++)
        pad[i] = k0[i] ^ 0x36;
    conc__sha256_init(&s);
    conc__sha256_update(&s, pad, sizeof pad);
    conc__sha256_update(&s, msg, mlen);
    conc__sha256_final(&s, inner);
    for (int i = 0; i < CONC__SHA256_BLOCK; i++)
        pad[i] = k0[i] ^ 0x5c;
    conc__sha256_init(&s);
    conc__sha256_update(&s, pad, sizeof pad);
    conc__sha256_update(&s, inner, sizeof inner);
    conc__sha256_final(&s, out);
    memset(k0, 0, sizeof k0);
    memset(pad, 0, sizeof pad);
}

int conc__ct_equal(const void *a, const void *b, size_t n)
{
    const volatile uint8_t *x = a, *y = b;
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= x[i] ^ y[i];
    return d == 0;
}
