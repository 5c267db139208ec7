/*
 * queue_fuzz.c — libFuzzer target for the cross-process queue's segment
 * (src/ipc/queue.c, queue_internal.h): a hostile peer writes input-chosen
 * bytes anywhere in the header or the ring between the victim's
 * operations; the victim puts, gets, joins and attaches anew (never
 * waiting more than a millisecond). It must not crash, read or write
 * outside the mapping (ASan/UBSan; the ring ends the mapping), or hang;
 * a bad field is CONC_EBROKEN. See fuzz_util.h for forged lock words.
 *
 * Build and run: tests/fuzz/run [seconds] queue
 */
#include <stdlib.h>
#include <sys/mman.h>

#include "fuzz_util.h"
#include "ipc/queue_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void sanitize_lock(uint64_t *w)
{
    uint64_t v = *w;
    *w = (v & ~(uint64_t)0xffffffffu) | fz_dead_id((uint32_t)v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_t f = {data, size};
    int kind = fz_u8(&f) % 3;
    long maxsize = fz_u8(&f) % 5;
    conc_mpqueue_t *q, *v = NULL;
    if (conc_mpqueue_new(&q, (conc_mpqueue_kind_t)kind, maxsize, 512) != 0)
        return 0;
    unsigned char *seg = (unsigned char *)q->shm; /* the peer writes through this */
    size_t map = q->map_size;
    static unsigned char buf[1024];
    while (f.n) {
        conc_mpqueue_t *h = v && (f.n & 1) ? v : q; /* the victim: either handle */
        size_t n = 0;
        void *d = NULL;
        switch (fz_u8(&f) % 12) {
        case 0: { /* the peer: 8 bytes somewhere; mostly the header */
            uint16_t sel = fz_u16(&f);
            size_t off = sel & 1 ? (size_t)(sel >> 1) % sizeof(conc__mpq_shm_t)
                                 : (size_t)(sel >> 1) % (map - 8);
            if (off + 8 > map)
                off = map - 8;
            uint64_t val = fz_u64(&f);
            memcpy(seg + off, &val, 8);
            sanitize_lock(&q->shm->put.lock);
            sanitize_lock(&q->shm->get.lock);
            break;
        }
        case 1:
        case 2:
            (void)conc_mpqueue_put(h, buf, fz_u16(&f) % 600, false, 0);
            break;
        case 3:
            (void)conc_mpqueue_get(h, buf, sizeof buf, &n, false, 0);
            break;
        case 4:
            if (conc_mpqueue_get_alloc(h, &d, &n, false, 0) == 0)
                free(d);
            break;
        case 5:
            (void)conc_mpqueue_qsize(h);
            (void)conc_mpqueue_full(h);
            (void)conc_mpqueue_unfinished_tasks(h);
            break;
        case 6:
            (void)conc_mpqueue_task_done(h);
            break;
        case 7:
            (void)conc_mpqueue_join(h, 0);
            break;
        case 8: /* a fresh victim attaches the (maybe scribbled) segment */
            conc_mpqueue_free(v);
            v = NULL;
            /* the capacity is pinned by the (sealed) file size; maxsize is
             * whatever the header said at attach (a peer may have changed
             * it before: a fresh handle believes it, within range) */
            if (conc_mpqueue_attach(&v, q->fd) == 0 &&
                (conc_mpqueue_capacity(v) != 512 || conc_mpqueue_maxsize(v) < 0))
                __builtin_trap();
            break;
        case 9:
            (void)conc_mpqueue_put(h, buf, fz_u8(&f), true, 0.001);
            break;
        case 10:
            (void)conc_mpqueue_get(h, buf, sizeof buf, &n, true, 0.001);
            break;
        case 11: { /* a well-formed journal entry at a chosen place */
            conc__mpq_side_t *sd = fz_u8(&f) & 1 ? &q->shm->put : &q->shm->get;
            sd->j.pos = fz_u16(&f) & ~7u;
            sd->j.size = fz_u8(&f) & ~7u;
            sd->j.count = fz_u8(&f);
            sd->j.valid = 1;
            sd->revoked = 1;
            sd->lock = FZ_DEAD_ID; /* its writer died */
            break;
        }
        }
    }
    conc_mpqueue_free(v);
    conc_mpqueue_free(q);
    return 0;
}
