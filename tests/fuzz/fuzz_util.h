/*
 * fuzz_util.h — what the shared-memory fuzz targets share: a cursor over
 * libFuzzer's input, and the rule for forged lock words.
 *
 * Each target plays two roles over one segment: a hostile peer that
 * writes input-chosen bytes at input-chosen offsets, and a victim that
 * runs the structure's operations (never blocking) between the writes.
 * The victim must not crash, touch memory outside its mappings (ASan,
 * UBSan, and a trap on any broken invariant the harness can see), or
 * hang (libFuzzer's -timeout).
 *
 * Forged lock words: a word that names a live thread makes every victim
 * wait for it, as a real peer holding the lock would (a block, not a
 * fault: docs/security.md). So a forged holder id is always made one that
 * no thread has; the victim must then take the lock over (and replay or
 * refuse the journal, for the queue) as from a dead holder.
 */
#ifndef CONC_FUZZ_UTIL_H
#define CONC_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const uint8_t *p;
    size_t n;
} fz_t;

static inline uint64_t fz_take(fz_t *f, size_t bytes)
{
    uint64_t v = 0;
    size_t k = bytes < f->n ? bytes : f->n;
    memcpy(&v, f->p, k); /* little-endian hosts: the low bytes */
    f->p += k;
    f->n -= k;
    return v;
}

static inline uint8_t fz_u8(fz_t *f) { return (uint8_t)fz_take(f, 1); }
static inline uint16_t fz_u16(fz_t *f) { return (uint16_t)fz_take(f, 2); }
static inline uint32_t fz_u32(fz_t *f) { return (uint32_t)fz_take(f, 4); }
static inline uint64_t fz_u64(fz_t *f) { return fz_take(f, 8); }

/* Above PID_MAX_LIMIT (2^22): no process or thread has this id. */
#define FZ_DEAD_ID 0x7ffffff0u

/* A forged 32-bit holder id: keep 0 (free), else a dead one. */
static inline uint32_t fz_dead_id(uint32_t id) { return id ? FZ_DEAD_ID : 0; }

#endif
