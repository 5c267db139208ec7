/*
 * fence.h — asymmetric fences for "fast side / slow side" handshakes
 * (private).
 *
 * A Dekker-style handshake (A: write x, read y; B: write y, read x — one
 * of them must see the other) normally needs a full fence on both sides.
 * When one side is hot (a submit) and the other is rare and already slow
 * (a worker about to sleep), the hot side can use conc__fence_light() — a
 * compiler barrier only — if the slow side uses conc__fence_heavy(), which
 * makes every running thread of the process execute a full barrier
 * (membarrier(2), MEMBARRIER_CMD_PRIVATE_EXPEDITED). Where membarrier is
 * not available both become ordinary seq_cst fences.
 * Known gap: the choice is made once, at registration. If membarrier
 * registers and later fails (a seccomp filter installed after start-up),
 * the heavy side falls back to a full fence while light sides keep their
 * compiler barrier, and the pairing no longer holds (the queue ring's
 * owner path, segq, the hub's live list depend on it). Not handled yet.
 */
#ifndef CONC_CORE_FENCE_H
#define CONC_CORE_FENCE_H

#include <stdatomic.h>
#include <stdbool.h>

#include "core/sanitize.h"

/* A full fence. ThreadSanitizer does not model stand-alone fences (and gcc
 * warns about them), so under TSan it is a seq_cst RMW on a dummy word. */
#ifdef CONC__TSAN
extern atomic_uint conc__fence_word;
#define conc__fence_full() ((void)atomic_fetch_add_explicit(&conc__fence_word, 0, memory_order_seq_cst))
#else
#define conc__fence_full() atomic_thread_fence(memory_order_seq_cst)
#endif

extern int conc__membarrier_state; /* 0 unknown, 1 usable, -1 not usable */
bool conc__membarrier_init(void);

static inline void conc__fence_light(void)
{
    if (__builtin_expect(conc__membarrier_state == 1, 1))
        atomic_signal_fence(memory_order_seq_cst);
    else
        conc__fence_full();
}

void conc__fence_heavy(void);

#endif
