/*
 * shm_fuzz.c — libFuzzer target for the headers conc keeps inside named
 * SharedMemory segments (src/ipc/shm.c trailer, src/ipc/array.c Value /
 * Array header with its RLock). One Value/Array segment is made per
 * process; a hostile peer writes input-chosen bytes into its header and
 * trailer between the victim's operations: attach by name (as a Value
 * and as plain SharedMemory), touch every byte the handle claims, lock
 * and unlock. Touching past the mapping would fault; a handle that grew
 * after attach traps.
 *
 * Build and run: tests/fuzz/run [seconds] shm
 */
#include <stdlib.h>

#include "fuzz_util.h"
#include "ipc/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ES 4
#define N 10
#define TOTAL 192 /* 64 header + 40 elements, rounded to 64, + 64 trailer */

static conc_array_t *g_a;
static unsigned char pristine[TOTAL];

static void cleanup(void) { conc_array_free(g_a); }

static void touch(unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] ^= 0; /* a read and a write of every byte */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_a) {
        if (conc_array_new(ES, N, NULL, true, &g_a) != 0)
            return 0;
        memcpy(pristine, (char *)conc_array_ptr(g_a) - 64, TOTAL);
        atexit(cleanup);
    }
    unsigned char *base = (unsigned char *)conc_array_ptr(g_a) - 64;
    memcpy(base, pristine, TOTAL);
    fz_t f = {data, size};
    while (f.n) {
        switch (fz_u8(&f) % 5) {
        case 0: { /* the peer: mostly the header and the trailer */
            size_t off = fz_u8(&f) % (TOTAL - 8);
            if (off >= 64 && off < 128)
                off += 64; /* past the elements: the trailer */
            uint64_t v = fz_u64(&f);
            memcpy(base + off, &v, 8);
            uint32_t *word = (uint32_t *)(void *)(base + 32); /* the RLock's owner id */
            *word = fz_dead_id(*word);
            break;
        }
        case 1: {
            conc_array_t *b;
            if (conc_array_attach(conc_array_name(g_a), &b) == 0) {
                size_t n = conc_array_len(b), es = conc_array_elem_size(b);
                if (es == 0 || n > (TOTAL - 64) / es)
                    __builtin_trap(); /* attach let through a size past the segment */
                touch(conc_array_ptr(b), n * es);
                int rc = conc_array_acquire(b, false, CONC_FOREVER);
                if (rc == 0 || rc == CONC_EOWNERDEAD)
                    (void)conc_array_release(b);
                conc_array_free(b);
            }
            break;
        }
        case 2: {
            conc_shm_t *s;
            if (conc_shm_attach(conc_array_name(g_a), &s) == 0) {
                if (conc_shm_size(s) > TOTAL)
                    __builtin_trap();
                touch(conc_shm_buf(s), conc_shm_size(s));
                conc_shm_close(s);
            }
            break;
        }
        case 3:
            if (conc_array_acquire(g_a, false, CONC_FOREVER) == 0)
                (void)conc_array_release(g_a);
            break;
        case 4:
            if (conc_array_len(g_a) != N || conc_array_elem_size(g_a) != ES)
                __builtin_trap(); /* the creator's copies never change */
            break;
        }
    }
    return 0;
}
