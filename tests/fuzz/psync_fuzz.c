/*
 * psync_fuzz.c — libFuzzer target for the process-shared primitives
 * (src/ipc/psync.c, pcond.c): Lock, RLock, Semaphore, Event, Condition
 * (over an outside Lock and over its own RLock) and Barrier (with an
 * action), side by side in one shared mapping. A hostile peer writes
 * input-chosen bytes anywhere in it between the victim's operations
 * (acquire/release, notify, wait(0), barrier wait(0), reset, abort...).
 * The victim must not crash, touch memory outside the mapping (ASan;
 * the condition's lock offset), call an action the peer chose, or hang.
 * See fuzz_util.h for forged lock words.
 *
 * Build and run: tests/fuzz/run [seconds] psync
 */
#include "fuzz_util.h"
#include "ipc/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    conc_plock_t lock;
    conc_prlock_t rlock;
    conc_psemaphore_t sem;
    conc_pevent_t ev;
    conc_plock_t clock;
    conc_pcond_t cond;
    conc_pcond_t cond2;
    conc_pbarrier_t bar;
} prims_t;

static int actions;
static void act(void *arg) { ++*(int *)arg; }

static void sanitize(uint32_t *word) { *word = fz_dead_id(*word); }

static bool pred_true(void *arg)
{
    (void)arg;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static prims_t *p;
    if (!p && conc_shared_alloc(sizeof *p, (void **)&p) != 0)
        return 0;
    fz_t f = {data, size};
    conc_plock_init(&p->lock);
    conc_prlock_init(&p->rlock);
    conc_psemaphore_init(&p->sem, 1);
    conc_pevent_init(&p->ev);
    conc_plock_init(&p->clock);
    conc_pcond_init(&p->cond, &p->clock);
    conc_pcond_init_rlock(&p->cond2, NULL);
    conc_pbarrier_init(&p->bar, 1 + fz_u8(&f) % 2, act, &actions, 0.0);
    int before = actions;
    while (f.n) {
        switch (fz_u8(&f) % 22) {
        case 0: { /* the peer */
            size_t off = fz_u16(&f) % (sizeof *p - 8);
            uint64_t v = fz_u64(&f);
            memcpy((char *)p + off, &v, 8);
            sanitize(&p->lock.word);
            sanitize(&p->rlock.word);
            sanitize(&p->clock.word);
            sanitize(&p->cond.own.word);
            sanitize(&p->cond2.own.word);
            sanitize(&p->bar.lock.word);
            sanitize(&p->bar.cond.own.word);
            break;
        }
        case 1: (void)conc_plock_acquire(&p->lock, false, CONC_FOREVER); break;
        case 2: (void)conc_plock_release(&p->lock); break;
        case 3: (void)conc_prlock_acquire(&p->rlock, false, CONC_FOREVER); break;
        case 4: (void)conc_prlock_release(&p->rlock); break;
        case 5: (void)conc_prlock_level(&p->rlock); break;
        case 6: (void)conc_psemaphore_acquire(&p->sem, false, CONC_FOREVER); break;
        case 7: (void)conc_psemaphore_release(&p->sem, 1 + fz_u8(&f)); break;
        case 8: (void)conc_pevent_set(&p->ev); break;
        case 9: (void)conc_pevent_clear(&p->ev); break;
        case 10: (void)conc_pevent_wait(&p->ev, 0); break;
        case 11: (void)conc_pcond_acquire(&p->cond, false, CONC_FOREVER); break;
        case 12: (void)conc_pcond_release(&p->cond); break;
        case 13: (void)conc_pcond_notify(&p->cond, fz_u8(&f)); break;
        case 14: (void)conc_pcond_notify_all(&p->cond); break;
        case 15: (void)conc_pcond_wait(&p->cond, 0); break;
        case 16: (void)conc_pcond_wait_for(&p->cond, pred_true, NULL, 0); break;
        case 17: (void)conc_pcond_acquire(&p->cond2, false, CONC_FOREVER); break;
        case 18: (void)conc_pcond_wait(&p->cond2, 0); break;
        case 19: (void)conc_pcond_release(&p->cond2); break;
        case 20: /* the barrier's calls wait for its lock: only when free */
            if (p->bar.lock.word == 0)
                (void)conc_pbarrier_wait(&p->bar, 0.0, NULL);
            break;
        case 21:
            if (p->bar.lock.word == 0) {
                switch (fz_u8(&f) % 4) {
                case 0: (void)conc_pbarrier_reset(&p->bar); break;
                case 1: (void)conc_pbarrier_abort(&p->bar); break;
                case 2: (void)conc_pbarrier_broken(&p->bar); break;
                default: (void)conc_pbarrier_n_waiting(&p->bar); break;
                }
            }
            break;
        }
    }
    if (actions < before)
        __builtin_trap();
    return 0;
}
